package gateway

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	eventsv1 "github.com/otpless-events/otpless-events/gen/otpless/events/v1"
)

// DefaultSSEHeartbeat is the default heartbeat interval of Server-Sent
// Events streams.
const DefaultSSEHeartbeat = 15 * time.Second

// SSERetry is the reconnection delay the event stream asks EventSource
// clients to use.
const SSERetry = 2 * time.Second

// The watch route, as RequestService.WatchRequest's HTTP rule spells it.
const (
	watchPattern = "/v1/requests/{request_id}:watch"
	watchPrefix  = "/v1/requests/"
	watchSuffix  = ":watch"
)

// watchHandler serves the watch route in front of the gateway mux: CORS
// (preflight included) and Server-Sent Events for clients that accept
// text/event-stream. Everything else goes on to the gateway, which answers
// newline-delimited JSON. A bearer credential arrives as the gateway
// forwards it (the Authorization header, which ?access_token= is turned
// into before this handler runs).
//
// The event stream is RequestService.WatchRequest run by watch, with the
// metadata the gateway would send as the call's incoming metadata, so gRPC
// interceptors (authentication, limits) apply to both.
type watchHandler struct {
	next      http.Handler
	mux       *runtime.ServeMux
	watch     WatchFunc
	cors      corsPolicy
	heartbeat time.Duration
	log       *slog.Logger
}

func (h *watchHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	id, ok := watchRequestID(r.URL.Path)
	if !ok {
		h.next.ServeHTTP(w, r)
		return
	}
	if h.cors.handle(w, r) {
		return
	}
	if r.Method == http.MethodGet && acceptsEventStream(r) {
		h.serveEvents(w, r, id)
		return
	}
	h.next.ServeHTTP(w, r)
}

// watchRequestID returns the request id of a watch-route path.
func watchRequestID(path string) (string, bool) {
	id, ok := strings.CutPrefix(path, watchPrefix)
	if !ok {
		return "", false
	}
	id, ok = strings.CutSuffix(id, watchSuffix)
	if !ok || id == "" || strings.Contains(id, "/") {
		return "", false
	}
	return id, true
}

// acceptsEventStream reports whether r asks for text/event-stream.
func acceptsEventStream(r *http.Request) bool {
	for _, v := range r.Header.Values("Accept") {
		for part := range strings.SplitSeq(v, ",") {
			if mt, _, err := mime.ParseMediaType(part); err == nil && mt == "text/event-stream" {
				return true
			}
		}
	}
	return false
}

// resumeRevision is where a stream resumes: Last-Event-ID (sent by a
// reconnecting EventSource) or else ?after_revision=.
func resumeRevision(r *http.Request) (int64, error) {
	name, v := "Last-Event-ID", r.Header.Get("Last-Event-ID")
	if v == "" {
		name, v = "after_revision", r.URL.Query().Get("after_revision")
	}
	if v == "" {
		return 0, nil
	}
	rev, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
	if err != nil || rev < 0 {
		return 0, status.Errorf(codes.InvalidArgument, "%s %q is not a revision", name, v)
	}
	return rev, nil
}

// serveEvents streams WatchRequest as Server-Sent Events: one event per
// message, named after its type (snapshot, update, heartbeat, reconnect),
// with the revision as id and the gateway's JSON as data. Errors before the
// first message are answered as the gateway answers errors (an HTTP status,
// which also stops EventSource from retrying); errors after it end the
// stream with an "error" event whose data is the gRPC status.
func (h *watchHandler) serveEvents(w http.ResponseWriter, r *http.Request, id string) {
	ctx := r.Context()
	_, out := runtime.MarshalerForRequest(h.mux, r)
	fail := func(err error) { errorHandler(ctx, h.mux, out, w, r, err) }
	if h.watch == nil {
		fail(status.Error(codes.Unimplemented, "this gateway serves no event stream"))
		return
	}
	after, err := resumeRevision(r)
	if err != nil {
		fail(err)
		return
	}
	ctx, err = runtime.AnnotateContext(ctx, h.mux, r, eventsv1.RequestService_WatchRequest_FullMethodName,
		runtime.WithHTTPPathPattern(watchPattern))
	if err != nil {
		fail(err)
		return
	}
	md, _ := metadata.FromOutgoingContext(ctx)
	ctx = metadata.NewIncomingContext(metadata.NewOutgoingContext(ctx, nil), md)

	var ev *eventWriter
	defer func() {
		if ev != nil {
			ev.stop()
		}
	}()
	err = h.watch(ctx, &eventsv1.WatchRequestRequest{RequestId: id, AfterRevision: after}, func(m *eventsv1.WatchRequestResponse) error {
		if ev == nil {
			ev = h.startEvents(ctx, w, out)
		}
		if err := ev.message(m); err != nil {
			// The client went away: the call ends as canceled, as a gRPC
			// call does, not as a fault of the server.
			return status.Error(codes.Canceled, "writing the event stream: "+err.Error())
		}
		return nil
	})
	if ev == nil {
		if err == nil {
			err = status.Error(codes.Internal, "the watch ended without a message")
		}
		fail(err)
		return
	}
	ev.stop() // no more writes but this handler's: ev.err can be read
	if err != nil && ev.err == nil && ctx.Err() == nil {
		ev.status(status.Convert(err))
	}
	h.log.LogAttrs(ctx, slog.LevelDebug, "event stream ended", slog.String("request_id", id), slog.Any("error", cmp.Or(ev.err, err)))
}

// startEvents answers 200 with the event stream's headers and the retry
// hint, and starts the comment heartbeats. A comment is written after one
// and a half heartbeat intervals of silence: WatchRequest sends a
// heartbeat message every interval, and a comment due at the same moment
// came just before each of them.
func (h *watchHandler) startEvents(ctx context.Context, w http.ResponseWriter, m runtime.Marshaler) *eventWriter {
	hdr := w.Header()
	hdr.Set("Content-Type", "text/event-stream; charset=utf-8")
	hdr.Set("Cache-Control", "no-cache")
	hdr.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	_ = rc.SetWriteDeadline(time.Time{}) // a watch outlives any server write timeout
	ev := &eventWriter{w: w, rc: rc, m: m, quiet: h.heartbeat * 3 / 2}
	ev.retry(SSERetry)
	if errors.Is(ev.err, http.ErrNotSupported) {
		h.log.LogAttrs(ctx, slog.LevelError, "event stream cannot be flushed: a middleware hides http.Flusher (give its ResponseWriter an Unwrap method)")
		ev.err, ev.rc = nil, nil
	}
	ev.idle = time.AfterFunc(ev.quiet, ev.beat)
	return ev
}

// eventWriter writes Server-Sent Events, flushing each one, and a comment
// heartbeat whenever nothing was written for quiet. After
// the first failed write it writes nothing more; err says why. The
// heartbeat runs on a timer's goroutine, so writes hold mu.
type eventWriter struct {
	w     io.Writer
	rc    *http.ResponseController
	m     runtime.Marshaler
	quiet time.Duration

	mu      sync.Mutex
	idle    *time.Timer
	stopped bool
	buf     bytes.Buffer
	err     error
}

// message writes msg as an event named after its type, id its revision,
// and returns the write's error.
func (e *eventWriter) message(msg *eventsv1.WatchRequestResponse) error {
	name := strings.ToLower(strings.TrimPrefix(msg.GetType().String(), "WATCH_MESSAGE_TYPE_"))
	return e.event(name, strconv.FormatInt(msg.GetRevision(), 10), msg)
}

// status writes st as an "error" event without an id, so a reconnecting
// client still resumes from the last revision it got.
func (e *eventWriter) status(st *status.Status) {
	_ = e.event("error", "", st.Proto())
}

func (e *eventWriter) event(name, id string, msg proto.Message) error {
	data, err := e.m.Marshal(msg)
	if err != nil {
		data, _ = e.m.Marshal(status.New(codes.Internal, "encoding watch message").Proto())
		name, id = "error", ""
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	e.buf.Reset()
	if id != "" {
		e.buf.WriteString("id: " + id + "\n")
	}
	e.buf.WriteString("event: " + name + "\n")
	for line := range bytes.Lines(data) { // the JSON is one line, but be safe
		e.buf.WriteString("data: ")
		e.buf.Write(bytes.TrimRight(line, "\r\n"))
		e.buf.WriteString("\n")
	}
	e.buf.WriteString("\n")
	e.write(e.buf.Bytes())
	return e.err
}

// beat writes the heartbeat comment; the idle timer calls it.
func (e *eventWriter) beat() {
	e.mu.Lock()
	defer e.mu.Unlock()
	if !e.stopped {
		e.write([]byte(": heartbeat\n\n"))
	}
}

// stop ends the heartbeats, before the handler returns. A beat that is
// waiting for mu writes nothing.
func (e *eventWriter) stop() {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.stopped = true
	e.idle.Stop()
}

func (e *eventWriter) retry(d time.Duration) {
	e.write([]byte("retry: " + strconv.FormatInt(d.Milliseconds(), 10) + "\n\n"))
}

// write writes b and flushes it. The caller holds mu, or the heartbeats
// have not started. Any write restarts the quiet interval; comments,
// which clients ignore, are traffic to proxies.
func (e *eventWriter) write(b []byte) {
	if e.err != nil {
		return
	}
	if _, e.err = e.w.Write(b); e.err == nil && e.rc != nil {
		e.err = e.rc.Flush()
	}
	if e.idle != nil && !e.stopped {
		e.idle.Reset(e.quiet)
	}
}
