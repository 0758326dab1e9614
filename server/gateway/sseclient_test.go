package gateway_test

import (
	"bufio"
	"context"
	"net/http"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protojson"

	eventsv1 "github.com/otpless-events/otpless-events/gen/otpless/events/v1"
	"github.com/otpless-events/otpless-events/internal/ssetest"
)

// sseEvent is one block of an event stream.
type sseEvent = ssetest.Event

// sseStream reads a text/event-stream response block by block; r is its
// body, buffered.
type sseStream struct {
	resp   *http.Response
	r      *bufio.Reader
	events *ssetest.Reader
}

// openSSE GETs url as an EventSource would, with extra headers.
func openSSE(t *testing.T, ctx context.Context, url string, header http.Header) *sseStream {
	t.Helper()
	return openSSEWith(t, ctx, http.DefaultClient, url, header)
}

// openSSEWith is openSSE through client.
func openSSEWith(t *testing.T, ctx context.Context, client *http.Client, url string, header http.Header) *sseStream {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Accept", "text/event-stream")
	for k, vs := range header {
		req.Header[k] = vs
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	r := bufio.NewReader(resp.Body)
	return &sseStream{resp: resp, r: r, events: ssetest.NewReader(r)}
}

// next returns the next block (event or comments); io.EOF at the end.
func (s *sseStream) next() (sseEvent, error) { return s.events.Next() }

// nextEvent skips comment and retry blocks.
func (s *sseStream) nextEvent(t *testing.T) sseEvent {
	t.Helper()
	ev, err := s.events.NextEvent()
	if err != nil {
		t.Fatalf("reading event stream: %v", err)
	}
	return ev
}

// message decodes a watch event's data.
func message(t *testing.T, ev sseEvent) *eventsv1.WatchRequestResponse {
	t.Helper()
	m := &eventsv1.WatchRequestResponse{}
	if err := protojson.Unmarshal([]byte(ev.Data), m); err != nil {
		t.Fatalf("event %s data %q: %v", ev.Event, ev.Data, err)
	}
	return m
}

// testContext is a context that ends with the test, bounded so a hung
// stream fails the test instead of the whole run.
func testContext(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}
