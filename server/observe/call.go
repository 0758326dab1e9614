package observe

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"log/slog"
	"strconv"
	"sync/atomic"
)

// RequestIDHeader carries the request id on HTTP requests and responses; as
// gRPC metadata it is RequestIDMetadata.
const (
	RequestIDHeader   = "X-Request-Id"
	RequestIDMetadata = "x-request-id"
)

// call is what the interceptor or middleware of one call learns while the
// handler runs, for its log line and metrics. It is written by the handler's
// goroutine and read by the interceptor after the handler returned.
type call struct {
	requestID        string
	ingested         bool   // ObserveIngest saw this call
	rejectReason     string // set by ObserveIngest on a rejection
	otplessRequestID string
	otplessTraceID   string
	unanswered       bool   // set by Unanswered: the server closed the connection
	refusal          string // set by WebhookRefused: the error message a webhook was answered with
	failuresSpent    bool   // set by FailuresSpent: a 429 for the budget of failed credentials
}

type callKey struct{}

func withCall(ctx context.Context, c *call) context.Context {
	return context.WithValue(ctx, callKey{}, c)
}

func callFrom(ctx context.Context) *call {
	c, _ := ctx.Value(callKey{}).(*call)
	return c
}

// Unanswered marks the HTTP request of ctx as one whose connection the
// server closed before answering it (shutdown's grace over): its line says
// answered=false and bytes=0, whatever status the handler chose (503: a
// webhook's is rejected as unavailable).
func (o *Observer) Unanswered(ctx context.Context) {
	if c := callFrom(ctx); c != nil {
		c.unanswered = true
	}
}

// WebhookRefused gives the HTTP request of ctx, a webhook answered with an
// error, that error's message (as its sender got it) for its line's
// error: no gRPC call's line says it, as for the API's requests.
func (o *Observer) WebhookRefused(ctx context.Context, msg string) {
	if c := callFrom(ctx); c != nil {
		c.refusal = msg
	}
}

// FailuresSpent marks the HTTP request of ctx as a webhook answered 429
// because its address has spent its budget of failed credentials
// (--webhook-failure-rate): its reason is failure_rate_limited, not
// rate_limited.
func (o *Observer) FailuresSpent(ctx context.Context) {
	if c := callFrom(ctx); c != nil {
		c.failuresSpent = true
	}
}

// RequestID returns the request id of the call ctx belongs to, or "".
func RequestID(ctx context.Context) string {
	if c := callFrom(ctx); c != nil {
		return c.requestID
	}
	return ""
}

// idSource makes request ids: a random per-process prefix and a counter,
// unique without a random read per request.
type idSource struct {
	prefix string
	n      atomic.Uint64
}

func newIDSource() *idSource {
	b := make([]byte, 6)
	_, _ = rand.Read(b) // crypto/rand.Read never fails
	return &idSource{prefix: hex.EncodeToString(b) + "-"}
}

func (s *idSource) next() string {
	return s.prefix + strconv.FormatUint(s.n.Add(1), 36)
}

// validRequestID accepts a caller's request id when it is short and made of
// characters that are safe in logs and headers.
func validRequestID(id string) bool {
	if id == "" || len(id) > 128 {
		return false
	}
	for i := range len(id) {
		c := id[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_' || c == '.' || c == ':') {
			return false
		}
	}
	return true
}

// RequestIDHandler wraps h so that a line logged with the context of a
// call (LogAttrs(ctx, …) in a handler, or anything it calls) carries the
// call's request_id, when it has none of its own: "webhook not stored"
// and the like can then be matched with their request's line.
func RequestIDHandler(h slog.Handler) slog.Handler { return requestIDHandler{h} }

type requestIDHandler struct{ h slog.Handler }

func (r requestIDHandler) Enabled(ctx context.Context, l slog.Level) bool { return r.h.Enabled(ctx, l) }

func (r requestIDHandler) Handle(ctx context.Context, rec slog.Record) error {
	if id := RequestID(ctx); id != "" {
		has := false
		rec.Attrs(func(a slog.Attr) bool {
			has = a.Key == "request_id"
			return !has
		})
		if !has {
			rec = rec.Clone()
			rec.AddAttrs(slog.String("request_id", id))
		}
	}
	return r.h.Handle(ctx, rec)
}

func (r requestIDHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return requestIDHandler{r.h.WithAttrs(attrs)}
}

func (r requestIDHandler) WithGroup(name string) slog.Handler {
	return requestIDHandler{r.h.WithGroup(name)}
}
