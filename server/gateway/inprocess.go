package gateway

import (
	"context"
	"io"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	eventsv1 "github.com/otpless-events/otpless-events/gen/otpless/events/v1"
)

// WatchFunc runs RequestService.WatchRequest for the event stream, calling
// send with each message. ctx carries the caller's metadata as incoming
// gRPC metadata, and says whether the stream is Server-Sent Events
// (IsEventStream) or newline-delimited JSON. An event stream that resumes
// marks ctx with api.EndQuietlyWhenFinished: a watch that then ends OK
// without a message is answered 204 No Content.
type WatchFunc func(ctx context.Context, req *eventsv1.WatchRequestRequest, send func(*eventsv1.WatchRequestResponse) error) error

// eventStreamKey marks the context of a watch served as Server-Sent Events.
type eventStreamKey struct{}

// IsEventStream reports whether a WatchFunc's ctx is that of a stream
// served as Server-Sent Events rather than newline-delimited JSON.
func IsEventStream(ctx context.Context) bool { return ctx.Value(eventStreamKey{}) != nil }

// InProcess returns a WatchFunc that calls srv's WatchRequest on the
// caller's goroutine, through interceptors in the order a gRPC server
// chains them, with no connection in between. A watch stream then holds
// its HTTP connection and the goroutine running the watch (see
// serveWatch); through the in-process gRPC connection it also held a
// client stream, a server stream and three more goroutines.
func InProcess(srv eventsv1.RequestServiceServer, interceptors ...grpc.StreamServerInterceptor) WatchFunc {
	var handler grpc.StreamHandler
	for _, d := range eventsv1.RequestService_ServiceDesc.Streams {
		if d.StreamName == "WatchRequest" {
			handler = d.Handler
		}
	}
	info := &grpc.StreamServerInfo{FullMethod: eventsv1.RequestService_WatchRequest_FullMethodName, IsServerStream: true}
	for i := len(interceptors) - 1; i >= 0; i-- {
		ic, next := interceptors[i], handler
		handler = func(srv any, ss grpc.ServerStream) error { return ic(srv, ss, info, next) }
	}
	return func(ctx context.Context, req *eventsv1.WatchRequestRequest, send func(*eventsv1.WatchRequestResponse) error) error {
		return handler(srv, &localStream{ctx: ctx, req: req, send: send})
	}
}

// localStream is the server side of a WatchRequest call made in process:
// it hands over the request once and passes each message to send. Headers
// and trailers have no transport to go on and are dropped.
type localStream struct {
	ctx      context.Context
	req      *eventsv1.WatchRequestRequest
	received bool
	send     func(*eventsv1.WatchRequestResponse) error
}

func (s *localStream) Context() context.Context     { return s.ctx }
func (s *localStream) SetHeader(metadata.MD) error  { return nil }
func (s *localStream) SendHeader(metadata.MD) error { return nil }
func (s *localStream) SetTrailer(metadata.MD)       {}

func (s *localStream) RecvMsg(m any) error {
	if s.received {
		return io.EOF
	}
	s.received = true
	dst, ok := m.(*eventsv1.WatchRequestRequest)
	if !ok {
		return status.Errorf(codes.Internal, "in-process watch: cannot receive into %T", m)
	}
	proto.Merge(dst, s.req)
	return nil
}

func (s *localStream) SendMsg(m any) error {
	msg, ok := m.(*eventsv1.WatchRequestResponse)
	if !ok {
		return status.Errorf(codes.Internal, "in-process watch: cannot send %T", m)
	}
	return s.send(msg)
}
