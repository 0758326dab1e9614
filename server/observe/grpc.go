package observe

import (
	"context"
	"errors"
	"log/slog"
	"runtime/debug"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	eventsv1 "github.com/otpless-events/otpless-events/gen/otpless/events/v1"
)

// Transports, the values of the transport labels.
const (
	transportGRPC = "grpc" // a client of the gRPC port
	transportHTTP = "http" // through the HTTP gateway's in-process connection
)

// The HTTP watch streams, the values of watch_streams' transport label
// beside grpc.
const (
	streamSSE    = "sse"    // Server-Sent Events
	streamNDJSON = "ndjson" // newline-delimited JSON
)

// RecoverGRPC is the handler of the grpc-ecosystem recovery interceptor: the
// panic becomes INTERNAL with a generic message. The observe interceptor,
// which must come right after recovery in the chain, has logged it with its
// stack.
func (o *Observer) RecoverGRPC(ctx context.Context, _ any) error {
	o.panics.WithLabelValues(transportOf(ctx)).Inc()
	return status.Error(codes.Internal, "internal error")
}

// UnaryServerInterceptor gives each call a request id (x-request-id from
// the caller's metadata when valid, else a new one, echoed in the response
// header) and logs one line when it ends. A panic is logged, with its
// stack, and passed on to the recovery interceptor outside this one.
func (o *Observer) UnaryServerInterceptor() grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (resp any, err error) {
		start := time.Now()
		markIntercepted(ctx)
		c := o.newGRPCCall(ctx)
		ctx = withCall(ctx, c)
		_ = grpc.SetHeader(ctx, metadata.Pairs(RequestIDMetadata, c.requestID))
		if r, ok := req.(interface{ GetRequestId() string }); ok {
			c.otplessRequestID = r.GetRequestId()
		}
		defer func() {
			if p := recover(); p != nil {
				o.finishGRPC(ctx, c, info.FullMethod, start, status.Error(codes.Internal, "panic"), p, debug.Stack())
				panic(p)
			}
		}()
		resp, err = handler(ctx, req)
		o.finishGRPC(ctx, c, info.FullMethod, start, err, nil, nil)
		return resp, err
	}
}

// StreamServerInterceptor is UnaryServerInterceptor for streams. For
// WatchRequest it also keeps the open-streams gauge and measures the
// delivery latency of every UPDATE sent.
func (o *Observer) StreamServerInterceptor() grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) (err error) {
		start := time.Now()
		markIntercepted(ss.Context())
		c := o.newGRPCCall(ss.Context())
		ctx := withCall(ss.Context(), c)
		_ = ss.SetHeader(metadata.Pairs(RequestIDMetadata, c.requestID))
		stream := &observedStream{ServerStream: ss, ctx: ctx, c: c}
		if info.FullMethod == eventsv1.RequestService_WatchRequest_FullMethodName {
			open := o.watchStreams.WithLabelValues(watchTransportOf(ctx))
			open.Inc()
			defer open.Dec()
			stream.delivery = o
		}
		defer func() {
			if p := recover(); p != nil {
				o.finishGRPC(ctx, c, info.FullMethod, start, status.Error(codes.Internal, "panic"), p, debug.Stack())
				panic(p)
			}
		}()
		err = handler(srv, stream)
		o.finishGRPC(ctx, c, info.FullMethod, start, err, nil, nil)
		return err
	}
}

func (o *Observer) newGRPCCall(ctx context.Context) *call {
	if id := RequestID(ctx); id != "" && ctx.Value(inProcessKey{}) != nil {
		return &call{requestID: id}
	}
	md, _ := metadata.FromIncomingContext(ctx)
	if ids := md.Get(RequestIDMetadata); len(ids) > 0 && validRequestID(ids[0]) {
		return &call{requestID: ids[0]}
	}
	return &call{requestID: o.ids.next()}
}

// InProcess prepares the context of a gRPC call that the HTTP gateway makes
// without a connection (its watch streams): the call counts under the http
// transport, its open stream as Server-Sent Events or newline-delimited
// JSON (eventStream), and its log line carries the HTTP request's id.
func InProcess(ctx context.Context, eventStream bool) context.Context {
	stream := streamNDJSON
	if eventStream {
		stream = streamSSE
	}
	return context.WithValue(ctx, inProcessKey{}, stream)
}

// inProcessKey holds the watch stream's transport label of an in-process
// call.
type inProcessKey struct{}

// watchTransportOf is the transport label of an open watch stream: grpc,
// or the HTTP stream's format.
func watchTransportOf(ctx context.Context) string {
	if s, ok := ctx.Value(inProcessKey{}).(string); ok {
		return s
	}
	return transportOf(ctx)
}

// transportOf tells calls made for the gateway, over its in-process
// connection or without one, from direct gRPC clients.
func transportOf(ctx context.Context) string {
	if ctx.Value(inProcessKey{}) != nil {
		return transportHTTP
	}
	if p, ok := peer.FromContext(ctx); ok && p.Addr != nil && p.Addr.Network() == "bufconn" {
		return transportHTTP
	}
	return transportGRPC
}

// finishGRPC records an ended call: ingest metrics for Ingest, and its log
// line. panicked and stack are set when the handler panicked.
func (o *Observer) finishGRPC(ctx context.Context, c *call, method string, start time.Time, err error, panicked any, stack []byte) {
	took := time.Since(start)
	code := status.Code(err)
	if method == eventsv1.WebhookService_Ingest_FullMethodName {
		result := "accepted"
		if err != nil {
			result = "rejected"
			if !c.ingested {
				c.rejectReason = reasonForCode(code)
				o.rejected.WithLabelValues(c.rejectReason).Inc()
			}
		}
		o.ingestSeconds.WithLabelValues(transportGRPC, result).Observe(took.Seconds())
	}

	level := slog.LevelInfo
	switch {
	case panicked != nil:
		level = slog.LevelError
	case strings.HasPrefix(method, "/grpc.health.v1.Health/"):
		// Probes, as /healthz and /readyz; a Watch ends UNAVAILABLE at
		// every shutdown.
		level = slog.LevelDebug
	case serverFault(code):
		level = slog.LevelWarn
	}
	if !o.log.Enabled(ctx, level) {
		return
	}
	attrs := make([]slog.Attr, 0, 10)
	attrs = append(attrs,
		slog.String("request_id", c.requestID),
		slog.String("method", method),
		slog.String("code", code.String()),
		slog.Duration("duration", took),
		slog.String("transport", transportOf(ctx)),
	)
	attrs = appendOTPLESS(attrs, c)
	if err != nil && panicked == nil {
		attrs = append(attrs, slog.String("error", status.Convert(err).Message()))
		if cause := errors.Unwrap(err); cause != nil { // what the client is not told
			attrs = append(attrs, slog.String("cause", cause.Error()))
		}
	}
	if panicked != nil {
		attrs = append(attrs, slog.Any("panic", panicked), slog.String("stack", string(stack)))
	}
	o.log.LogAttrs(ctx, level, "grpc call", attrs...)
}

// serverFault reports codes that say the server, not the caller, failed.
// UNIMPLEMENTED is not one: every method the server registers is served,
// so it is a caller's method or compression the server does not know (a
// client built from other protos), a caller's mistake as INVALID_ARGUMENT
// is.
func serverFault(c codes.Code) bool {
	switch c {
	case codes.Internal, codes.Unknown, codes.DataLoss, codes.Unavailable:
		return true
	}
	return false
}

func appendOTPLESS(attrs []slog.Attr, c *call) []slog.Attr {
	if c.otplessRequestID != "" {
		attrs = append(attrs, slog.String("otpless_request_id", c.otplessRequestID))
	}
	if c.otplessTraceID != "" {
		attrs = append(attrs, slog.String("otpless_trace_id", c.otplessTraceID))
	}
	if c.rejectReason != "" {
		attrs = append(attrs, slog.String("reason", c.rejectReason))
	}
	return attrs
}

// observedStream carries the call in its context, notes the request id of
// the request message, and for watch streams measures delivery latency.
type observedStream struct {
	grpc.ServerStream
	ctx      context.Context
	c        *call
	delivery *Observer // nil: not a watch stream
}

func (s *observedStream) Context() context.Context { return s.ctx }

func (s *observedStream) RecvMsg(m any) error {
	if err := s.ServerStream.RecvMsg(m); err != nil {
		return err
	}
	if r, ok := m.(interface{ GetRequestId() string }); ok && s.c.otplessRequestID == "" {
		s.c.otplessRequestID = r.GetRequestId()
	}
	return nil
}

// SendMsg measures, for an UPDATE, the time since the webhook that made the
// change arrived (the snapshot's update_time), or none when that is ahead:
// another replica's clock can be.
func (s *observedStream) SendMsg(m any) error {
	if s.delivery != nil {
		if w, ok := m.(*eventsv1.WatchRequestResponse); ok && w.GetType() == eventsv1.WatchMessageType_WATCH_MESSAGE_TYPE_UPDATE {
			if t := w.GetRequest().GetUpdateTime(); t != nil {
				s.delivery.deliverySecs.Observe(max(0, since(t.AsTime())))
			}
		}
	}
	return s.ServerStream.SendMsg(m)
}

// UnaryClientInterceptor sends the request id of the call in ctx (an HTTP
// request the gateway is serving) as x-request-id metadata, so that the gRPC
// call's log line carries it too.
func (o *Observer) UnaryClientInterceptor() grpc.UnaryClientInterceptor {
	return func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		return invoker(outgoingRequestID(ctx), method, req, reply, cc, opts...)
	}
}

// StreamClientInterceptor is UnaryClientInterceptor for streams.
func (o *Observer) StreamClientInterceptor() grpc.StreamClientInterceptor {
	return func(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
		return streamer(outgoingRequestID(ctx), desc, cc, method, opts...)
	}
}

func outgoingRequestID(ctx context.Context) context.Context {
	if id := RequestID(ctx); id != "" {
		return metadata.AppendToOutgoingContext(ctx, RequestIDMetadata, id)
	}
	return ctx
}
