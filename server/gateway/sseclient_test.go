package gateway_test

import (
	"bufio"
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protojson"

	eventsv1 "github.com/otpless-events/otpless-events/gen/otpless/events/v1"
)

// sseEvent is one parsed Server-Sent Event (or, with only comments set, a
// comment block).
type sseEvent struct {
	ID, Event, Data, Retry string
	HasID                  bool
	Comments               []string
}

// sseStream reads a text/event-stream response block by block.
type sseStream struct {
	resp *http.Response
	r    *bufio.Reader
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
	return &sseStream{resp: resp, r: bufio.NewReader(resp.Body)}
}

// next returns the next block (event or comments); io.EOF at the end.
func (s *sseStream) next() (sseEvent, error) {
	var ev sseEvent
	var data []string
	started := false
	for {
		line, err := s.r.ReadString('\n')
		if err != nil {
			if started && err == io.EOF {
				err = io.ErrUnexpectedEOF // a block must end with a blank line
			}
			return ev, err
		}
		line = strings.TrimSuffix(line, "\n")
		if line == "" {
			if !started {
				continue
			}
			ev.Data = strings.Join(data, "\n")
			return ev, nil
		}
		started = true
		field, value, _ := strings.Cut(line, ":")
		value = strings.TrimPrefix(value, " ")
		switch field {
		case "":
			ev.Comments = append(ev.Comments, value)
		case "id":
			ev.ID, ev.HasID = value, true
		case "event":
			ev.Event = value
		case "data":
			data = append(data, value)
		case "retry":
			ev.Retry = value
		}
	}
}

// nextEvent skips comment and retry blocks.
func (s *sseStream) nextEvent(t *testing.T) sseEvent {
	t.Helper()
	for {
		ev, err := s.next()
		if err != nil {
			t.Fatalf("reading event stream: %v", err)
		}
		if ev.Event != "" {
			return ev
		}
	}
}

// message decodes a watch event's data.
func (ev sseEvent) message(t *testing.T) *eventsv1.WatchRequestResponse {
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
