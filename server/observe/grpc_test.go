package observe_test

import (
	"context"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

type healthStream struct{ grpc.ServerStream }

func (healthStream) Context() context.Context    { return context.Background() }
func (healthStream) SetHeader(metadata.MD) error { return nil }

// Health probes log at debug whatever their end: a Watch ends UNAVAILABLE
// at every shutdown, which is no fault to warn of.
func TestHealthCallsLogAtDebug(t *testing.T) {
	t.Parallel()
	o, logs := newObserver(t)
	info := &grpc.StreamServerInfo{FullMethod: "/grpc.health.v1.Health/Watch", IsServerStream: true}
	o.StreamServerInterceptor()(nil, healthStream{}, info, func(any, grpc.ServerStream) error {
		return status.Error(codes.Unavailable, "server is shutting down")
	})
	if lines := logs.Lines(t); len(lines) != 1 || lines[0]["level"] != "DEBUG" || lines[0]["code"] != "Unavailable" {
		t.Errorf("a health watch ended by shutdown logged %v, want one line at DEBUG", lines)
	}
}
