package loadgen

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"time"

	spb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"

	eventsv1 "github.com/otpless-events/otpless-events/gen/otpless/events/v1"
)

// SSE makes watchers follow requests as Server-Sent Events from the HTTP
// gateway (GET /v1/requests/{id}:watch, Accept: text/event-stream), each on
// a connection of its own, as browsers do.
type SSE struct {
	// BaseURL is the gateway's scheme://host[:port].
	BaseURL string
	// Token is sent as the bearer credential when set.
	Token string
	// TLS, when set, is used for https.
	TLS *tls.Config

	client *http.Client
}

// start makes the HTTP client; call it before the watchers start.
func (c *SSE) start() {
	c.client = &http.Client{Transport: &http.Transport{
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConnsPerHost: 1024,
		TLSClientConfig:     c.TLS,
	}}
}

func (c *SSE) subscribe(ctx context.Context, id string) (watchStream, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.BaseURL+"/v1/requests/"+url.PathEscape(id)+":watch", nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "text/event-stream")
	if c.Token != "" {
		req.Header.Set("Authorization", "Bearer "+c.Token)
	}
	resp, err := c.client.Do(req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		resp.Body.Close()
		return nil, statusError(resp.StatusCode)
	}
	s := &sseStream{body: resp.Body, r: bufio.NewReader(resp.Body)}
	if _, err := s.Recv(); err != nil { // the snapshot
		s.Close()
		return nil, err
	}
	return s, nil
}

// sseStream reads events: "event: NAME", "data: JSON", a blank line.
type sseStream struct {
	body io.ReadCloser
	r    *bufio.Reader
}

func (s *sseStream) Recv() (*eventsv1.WatchRequestResponse, error) {
	var event string
	var data []byte
	for {
		line, err := s.r.ReadBytes('\n')
		if err != nil {
			return nil, err // io.EOF at the end; an unfinished event is dropped
		}
		line = bytes.TrimRight(line, "\r\n")
		switch {
		case len(line) == 0:
			if data == nil {
				continue // after a comment or retry
			}
			if event == "error" {
				return nil, errorEvent(data)
			}
			m := new(eventsv1.WatchRequestResponse)
			if err := (protojson.UnmarshalOptions{DiscardUnknown: true}).Unmarshal(data, m); err != nil {
				return nil, fmt.Errorf("event %q: %w", event, err)
			}
			return m, nil
		case bytes.HasPrefix(line, []byte("event:")):
			event = string(bytes.TrimSpace(line[len("event:"):]))
		case bytes.HasPrefix(line, []byte("data:")):
			data = append(data, bytes.TrimPrefix(line[len("data:"):], []byte(" "))...)
		}
	}
}

func (s *sseStream) Close() { s.body.Close() }

// errorEvent is the error an "error" event's data says: the gRPC status
// that ended the watch (google.rpc.Status, as the gateway writes it), so
// that it is counted by its code as over gRPC; else the data itself.
func errorEvent(data []byte) error {
	st := new(spb.Status)
	if err := (protojson.UnmarshalOptions{DiscardUnknown: true}).Unmarshal(data, st); err != nil || st.GetCode() == 0 {
		return fmt.Errorf("error event: %s", data)
	}
	st.Message = "error event: " + st.GetMessage()
	return status.ErrorProto(st)
}

// statusError is an event stream refused with an HTTP status.
type statusError int

func (e statusError) Error() string { return fmt.Sprintf("http_%d", int(e)) }
