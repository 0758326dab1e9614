package observe

import (
	"log/slog"
	"net/http"
	"net/url"
	"path"
	"runtime/debug"
	"strconv"
	"strings"
	"time"

	"github.com/otpless-events/otpless-events/server/auth"
)

// webhookPath is gateway.WebhookPath (a test keeps them equal); webhook
// keys follow it as one more path segment.
const webhookPath = "/v1/webhooks/otpless"

// HTTP wraps next with what every HTTP request gets: a request id
// (X-Request-Id from the request when valid, else a new one; echoed in the
// response, and sent on by the client interceptors to the gRPC calls the
// gateway makes for the request),
// metrics by route, one log line when the request ends, and recovery: a
// panic is logged with its stack and answered 500, and the server goes on.
// Only the path is logged, never the query, and a webhook key in the path
// is masked.
func (o *Observer) HTTP(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		c := &call{requestID: r.Header.Get(RequestIDHeader)}
		if !validRequestID(c.requestID) {
			c.requestID = o.ids.next()
		}
		w.Header().Set(RequestIDHeader, c.requestID)
		rw := &responseWriter{ResponseWriter: w}
		r = r.WithContext(withCall(r.Context(), c))
		defer func() {
			p := recover()
			if p == nil {
				o.finishHTTP(r, rw, c, start, nil, nil)
				return
			}
			stack := debug.Stack()
			if p == http.ErrAbortHandler {
				o.finishHTTP(r, rw, c, start, nil, nil)
				panic(p) // net/http's way to abort a response; it logs nothing for it
			}
			o.panics.WithLabelValues(transportHTTP).Inc()
			if !rw.wroteHeader {
				rw.Header().Set("Content-Type", "application/json")
				rw.WriteHeader(http.StatusInternalServerError)
				_, _ = rw.Write([]byte(`{"code":13,"message":"internal error","details":[]}`))
			}
			o.finishHTTP(r, rw, c, start, p, stack)
		}()
		next.ServeHTTP(rw, r)
	})
}

// WatchPanicked counts, under transport http, a panic an HTTP watch
// stream's own goroutine recovered (gateway.Options.Panicked): it runs
// after its handler has left this middleware, outside any interceptor.
func (o *Observer) WatchPanicked() { o.panics.WithLabelValues(transportHTTP).Inc() }

func (o *Observer) finishHTTP(r *http.Request, rw *responseWriter, c *call, start time.Time, panicked any, stack []byte) {
	took := time.Since(start)
	code := rw.code()
	route := routeOf(routePath(r.URL))
	o.httpRequests.WithLabelValues(route, strconv.Itoa(code)).Inc()
	o.httpSeconds.WithLabelValues(route).Observe(took.Seconds())
	if route == "webhook" && r.Method == http.MethodPost {
		result := "accepted"
		if code >= 300 || panicked != nil {
			result = "rejected"
			if !c.ingested {
				reason := reasonForHTTP(code)
				switch {
				case panicked != nil:
					reason = ReasonInternal
				case code == http.StatusTooManyRequests && c.failuresSpent:
					reason = ReasonFailureRateLimited
				}
				o.rejected.WithLabelValues(reason).Inc()
				c.rejectReason = reason
			}
		}
		o.ingestSeconds.WithLabelValues(transportHTTP, result).Observe(took.Seconds())
	}

	level := slog.LevelInfo
	switch {
	case panicked != nil:
		level = slog.LevelError
	case route == "healthz" || route == "readyz": // a 503 while not ready too: probes come every few seconds
		level = slog.LevelDebug
	case code >= 500:
		level = slog.LevelWarn
	}
	ctx := r.Context()
	if !o.log.Enabled(ctx, level) {
		return
	}
	attrs := make([]slog.Attr, 0, 13)
	attrs = append(attrs,
		slog.String("request_id", c.requestID),
		slog.String("method", clip(r.Method, maxLoggedMethod)),
		slog.String("path", clip(logPath(r.URL.Path, code >= 400 && !isRequestRoute(r.URL.Path)), maxLoggedPath)),
		slog.Int("status", code),
		slog.Duration("duration", took),
	)
	if c.unanswered { // the status is what the server decided; nothing was sent
		attrs = append(attrs, slog.Int64("bytes", 0), slog.Bool("answered", false))
	} else {
		attrs = append(attrs, slog.Int64("bytes", sentBytes(r, rw)))
	}
	attrs = append(attrs, slog.String("remote", r.RemoteAddr))
	if o.client != nil {
		if a := o.client(r); a.IsValid() && a != auth.PeerAddr(r.RemoteAddr) {
			attrs = append(attrs, slog.String("client", a.String()))
		}
	}
	attrs = appendOTPLESS(attrs, c)
	if c.refusal != "" && panicked == nil {
		attrs = append(attrs, slog.String("error", c.refusal))
	}
	if panicked != nil {
		attrs = append(attrs, slog.Any("panic", panicked), slog.String("stack", string(stack)))
	}
	o.log.LogAttrs(ctx, level, "http request", attrs...)
}

// sentBytes is the size of the body sent: none for HEAD, whose body
// net/http drops.
func sentBytes(r *http.Request, rw *responseWriter) int64 {
	if r.Method == http.MethodHead {
		return 0
	}
	return rw.bytes
}

// routePath is u's path as the gateway routes it: as sent, with an
// escaped "/" for a separator, when it was sent escaped otherwise than
// net/url would escape it (a segment with an escaped letter then matches
// no route's fixed segment); else the path.
func routePath(u *url.URL) string {
	if u.RawPath == "" {
		return u.Path
	}
	return escapedSlash.Replace(u.RawPath)
}

var escapedSlash = strings.NewReplacer("%2F", "/", "%2f", "/")

// routeOf names the route of path (routePath's) for metric labels: a
// fixed set, never the path itself (it holds request ids).
func routeOf(path string) string {
	switch {
	case path == webhookPath || isWebhookKeyPath(path):
		return "webhook"
	case strings.HasPrefix(path, "/v1/requests/"):
		switch {
		case strings.HasSuffix(path, ":watch"):
			return "watch"
		case strings.HasSuffix(path, ":watchToken"):
			return "watch_token"
		case strings.HasSuffix(path, "/events"):
			return "events"
		case strings.Contains(path[len("/v1/requests/"):], ":"), strings.Count(path, "/") > 3:
			return "request_other"
		}
		return "request"
	case path == "/healthz", path == "/readyz", path == "/openapi.json":
		return path[1:]
	}
	return "other"
}

// isWebhookKeyPath reports whether path is the webhook route with a key:
// one segment after it. Longer paths are no route (404), not webhooks.
func isWebhookKeyPath(path string) bool {
	key, ok := strings.CutPrefix(path, webhookPath+"/")
	return ok && !strings.Contains(key, "/") // the gateway serves an empty key too (as no key)
}

// isRequestRoute reports whether path is one of RequestService's routes:
// one request id, then nothing, /events, :watch or :watchToken.
func isRequestRoute(path string) bool {
	rest, ok := strings.CutPrefix(path, "/v1/requests/")
	if !ok {
		return false
	}
	for _, suffix := range []string{"/events", ":watchToken", ":watch"} {
		if id, ok := strings.CutSuffix(rest, suffix); ok {
			rest = id
			break
		}
	}
	return rest != "" && !strings.ContainsAny(rest, "/:")
}

// minWebhookKeyLen is the length of the shortest webhook key (package auth
// refuses shorter ones).
const minWebhookKeyLen = 16

// logPath is the path as logged: what follows the webhook route's
// segments, wherever they are (a base URL ending in "/", a proxy's prefix,
// another case), replaced by its fingerprint, since it may be a webhook key.
// When segments is set (an error answer outside the request routes), so
// is every segment as long as a webhook key: a mistyped webhook URL
// ("/v1/webhook/otpless/…") has its key somewhere.
func logPath(p string, segments bool) string {
	const route = "/webhooks/otpless/"
	clean := path.Clean(p)
	if i := strings.Index(asciiLower(clean), route); i >= 0 {
		if key := clean[i+len(route):]; key != "" {
			return clean[:i+len(route)] + MaskToken(key)
		}
	}
	if !segments {
		return p
	}
	parts := strings.Split(p, "/")
	for i, s := range parts {
		if len(s) >= minWebhookKeyLen {
			parts[i] = MaskToken(s)
		}
	}
	return strings.Join(parts, "/")
}

// asciiLower lowers A to Z alone, so that every byte keeps its offset
// (strings.ToLower may change the length of other letters, or of bytes
// that are not UTF-8).
func asciiLower(s string) string {
	b := []byte(s)
	for i, c := range b {
		if 'A' <= c && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
	return string(b)
}

// responseWriter records the status and size of a response. It passes
// Flush through (streaming routes need it) and unwraps for
// http.ResponseController.
type responseWriter struct {
	http.ResponseWriter
	status      int
	wroteHeader bool
	bytes       int64
}

func (w *responseWriter) WriteHeader(code int) {
	if !w.wroteHeader && code >= 200 {
		w.status, w.wroteHeader = code, true
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *responseWriter) Write(b []byte) (int, error) {
	if !w.wroteHeader {
		w.status, w.wroteHeader = http.StatusOK, true
	}
	n, err := w.ResponseWriter.Write(b)
	w.bytes += int64(n)
	return n, err
}

func (w *responseWriter) Flush() {
	if !w.wroteHeader {
		w.status, w.wroteHeader = http.StatusOK, true
	}
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func (w *responseWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func (w *responseWriter) code() int {
	if !w.wroteHeader {
		return http.StatusOK
	}
	return w.status
}
