package observe

import (
	"context"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/stats"
	"google.golang.org/grpc/status"

	eventsv1 "github.com/otpless-events/otpless-events/gen/otpless/events/v1"
)

// maxLoggedMethod bounds the method a refused call's or an HTTP request's
// line names, maxLoggedPath an HTTP request's path, and maxLoggedText a
// free text (an error, a cause, which may quote a client's header, as
// grpc-go quotes a grpc-encoding it lacks): a client names them, and they
// can be anything.
const (
	maxLoggedMethod = 128
	maxLoggedPath   = 2048
	maxLoggedText   = 4096
)

// clip cuts s to at most n bytes, at the start of a character, marking the
// cut with "…".
func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "…"
}

// StatsHandler logs and counts the gRPC calls that grpc-go answers before
// any interceptor sees them, which would otherwise leave no trace: a request
// message it cannot decode (INTERNAL) or that is over its size limit
// (RESOURCE_EXHAUSTED), and a method no service has or a compression it
// lacks (UNIMPLEMENTED). known reports whether a full method name is
// served; it is first asked once the server runs.
func (o *Observer) StatsHandler(known func(method string) bool) stats.Handler {
	return &refusedCalls{o: o, known: known}
}

type refusedCalls struct {
	o     *Observer
	known func(string) bool
}

// interceptedKey holds a call's *refusedCall, which the server
// interceptors mark when they see the call.
type interceptedKey struct{}

type refusedCall struct {
	start       time.Time
	method      string
	intercepted atomic.Bool
}

// markIntercepted tells the stats handler that the call of ctx reached the
// interceptors, which log it.
func markIntercepted(ctx context.Context) {
	if c, ok := ctx.Value(interceptedKey{}).(*refusedCall); ok {
		c.intercepted.Store(true)
	}
}

func (h *refusedCalls) TagRPC(ctx context.Context, info *stats.RPCTagInfo) context.Context {
	if !h.known(info.FullMethodName) {
		// grpc-go answers at once, and no stats.End follows.
		h.log(ctx, info.FullMethodName, time.Now(), status.Error(codes.Unimplemented, "unknown method"))
		return ctx
	}
	return context.WithValue(ctx, interceptedKey{}, &refusedCall{start: time.Now(), method: info.FullMethodName})
}

func (h *refusedCalls) HandleRPC(ctx context.Context, s stats.RPCStats) {
	end, ok := s.(*stats.End)
	if !ok {
		return
	}
	c, ok := ctx.Value(interceptedKey{}).(*refusedCall)
	if !ok || c.intercepted.Load() || end.Error == nil {
		return
	}
	h.log(ctx, c.method, c.start, end.Error)
}

func (h *refusedCalls) log(ctx context.Context, method string, start time.Time, err error) {
	code := status.Code(err)
	h.o.grpcRefused.WithLabelValues(code.String()).Inc()
	c := h.o.newGRPCCall(ctx)
	if method == eventsv1.WebhookService_Ingest_FullMethodName && (code == codes.Internal || code == codes.Unimplemented) {
		// grpc-go's INTERNAL before any handler is a message it could not
		// decode or decompress, and its UNIMPLEMENTED for a method it
		// serves a compression it lacks (grpc-encoding): the sender's fault.
		c.ingested, c.rejectReason = true, ReasonInvalidBody
		h.o.rejected.WithLabelValues(ReasonInvalidBody).Inc()
	}
	h.o.finishGRPC(ctx, c, clip(method, maxLoggedMethod), start, err, nil, nil)
}

// Refused logs and counts a call refused before grpc-go began it (by a tap
// handle, with err: a call without a valid credential, or one that needs
// none over its bound), as the stats handler does the calls it answers
// itself.
func (o *Observer) Refused(ctx context.Context, method string, err error) {
	(&refusedCalls{o: o}).log(ctx, method, time.Now(), err)
}

func (*refusedCalls) TagConn(ctx context.Context, _ *stats.ConnTagInfo) context.Context { return ctx }

func (*refusedCalls) HandleConn(context.Context, stats.ConnStats) {}
