package api

import (
	"context"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	eventsv1 "github.com/otpless-events/otpless-events/gen/otpless/events/v1"
	"github.com/otpless-events/otpless-events/server/broker"
	"github.com/otpless-events/otpless-events/server/store"
)

type emptyReader struct{}

func (emptyReader) GetRequest(context.Context, string) (*eventsv1.AuthRequest, error) {
	return nil, store.ErrNotFound
}

func (emptyReader) ListEvents(context.Context, string, store.Page) ([]*eventsv1.Event, string, error) {
	return nil, "", store.ErrNotFound
}

type recordingStream struct {
	grpc.ServerStream
	sent []*eventsv1.WatchRequestResponse
}

func (r *recordingStream) Context() context.Context { return context.Background() }
func (r *recordingStream) Send(m *eventsv1.WatchRequestResponse) error {
	r.sent = append(r.sent, m)
	return nil
}

// Once shutdown has begun, a new watch is refused with UNAVAILABLE instead of
// an immediate RECONNECT that fast clients would loop on.
func TestWatchRefusedWhileShuttingDown(t *testing.T) {
	t.Parallel()
	b := broker.New(0)
	b.Close()
	s := NewRequestServer(emptyReader{}, b, WatchOptions{Heartbeat: time.Hour, MaxDuration: time.Hour})
	stream := &recordingStream{}
	err := s.WatchRequest(&eventsv1.WatchRequestRequest{RequestId: "r"}, stream)
	if status.Code(err) != codes.Unavailable || len(stream.sent) != 0 {
		t.Fatalf("WatchRequest during shutdown = %v after %d messages, want UNAVAILABLE and none", err, len(stream.sent))
	}
}
