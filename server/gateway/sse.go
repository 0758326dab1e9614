package gateway

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"io"
	"log/slog"
	"mime"
	"net"
	"net/http"
	"net/url"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"github.com/grpc-ecosystem/grpc-gateway/v2/utilities"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	eventsv1 "github.com/otpless-events/otpless-events/gen/otpless/events/v1"
	"github.com/otpless-events/otpless-events/server/api"
)

// DefaultSSEHeartbeat is the default heartbeat interval of Server-Sent
// Events streams.
const DefaultSSEHeartbeat = 15 * time.Second

// StreamWriteTimeout bounds each write of a watch stream, SSE or NDJSON
// (and, in the server, each message of a gRPC stream): a client that stops
// reading loses its stream, and with it its watch slot, once the socket
// buffers are full and a write has waited this long. A stream has no other
// write deadline, since it outlives any server write timeout.
const StreamWriteTimeout = 30 * time.Second

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
// (preflight included), and GET as Server-Sent Events for clients that
// accept text/event-stream, else as newline-delimited JSON. Other methods
// go on to the gateway (405). A bearer credential arrives as the gateway
// forwards it (the Authorization header, which ?access_token= is turned
// into before this handler runs).
//
// Either stream is RequestService.WatchRequest run by watch, with the
// metadata the gateway would send as the call's incoming metadata, so gRPC
// interceptors (authentication, limits) apply to both.
type watchHandler struct {
	next      http.Handler
	mux       *runtime.ServeMux
	watch     WatchFunc
	cors      corsPolicy
	heartbeat time.Duration
	streams   *Streams
	log       *slog.Logger
	panicked  func() // Options.Panicked; may be nil
	// writeTimeout is StreamWriteTimeout but in tests.
	writeTimeout time.Duration
}

func (h *watchHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	id, ok := watchRequestID(r.URL)
	if !ok {
		h.next.ServeHTTP(w, r)
		return
	}
	if h.cors.handle(w, r) {
		return
	}
	// Each write of the stream, events or newline-delimited JSON, has a
	// deadline, and so has what net/http writes after the handler returns
	// (the rest of the buffer, the last chunk). An HTTP/1.x connection
	// then closes rather than serve another request under it; a detached
	// one serves nothing after the stream anyway.
	if r.ProtoMajor == 1 {
		w.Header().Set("Connection", "close")
	}
	dw := &deadlineWriter{ResponseWriter: w, rc: http.NewResponseController(w), timeout: h.writeTimeout}
	defer dw.extend()
	if r.Method == http.MethodGet {
		h.serveWatch(dw, r, id, acceptsEventStream(r))
		return
	}
	h.next.ServeHTTP(dw, r)
}

// deadlineWriter gives each write and flush through it a write deadline
// of timeout from then.
type deadlineWriter struct {
	http.ResponseWriter
	rc      *http.ResponseController
	timeout time.Duration
}

func (d *deadlineWriter) extend() { _ = d.rc.SetWriteDeadline(time.Now().Add(d.timeout)) }

func (d *deadlineWriter) Write(b []byte) (int, error) {
	d.extend()
	return d.ResponseWriter.Write(b)
}

// Flush is http.Flusher's, which the gateway needs in order to stream.
func (d *deadlineWriter) Flush() { _ = d.FlushError() }

// FlushError is what http.ResponseController calls.
func (d *deadlineWriter) FlushError() error {
	d.extend()
	return d.rc.Flush()
}

func (d *deadlineWriter) Unwrap() http.ResponseWriter { return d.ResponseWriter }

// watchRequestID returns the request id of a watch-route URL. The route is
// matched on the path as sent, as the gateway mux matches it: an escaped
// ":" (%3A) is part of the id, so "x%3Awatch" names request "x:watch" and
// is no watch. An id holding "/" cannot be named, escaped or not: the mux
// splits the path at %2F too.
func watchRequestID(u *url.URL) (string, bool) {
	escaped, ok := strings.CutPrefix(u.EscapedPath(), watchPrefix)
	if !ok {
		return "", false
	}
	escaped, ok = strings.CutSuffix(escaped, watchSuffix)
	if !ok || escaped == "" {
		return "", false
	}
	id, err := url.PathUnescape(escaped)
	return id, err == nil && !strings.Contains(id, "/") // "/" as sent, or as %2F
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

// resumeRevision is where a stream resumes: for an event stream,
// Last-Event-ID (sent by a reconnecting EventSource), else the query read
// as the gateway reads a request's fields from it (after_revision or
// afterRevision, once; a malformed query is refused).
func resumeRevision(r *http.Request, sse bool) (int64, error) {
	if err := r.ParseForm(); err != nil {
		return 0, status.Errorf(codes.InvalidArgument, "%v", err)
	}
	var req eventsv1.WatchRequestRequest
	if err := runtime.PopulateQueryParameters(&req, r.Form, watchPathParams); err != nil {
		return 0, status.Errorf(codes.InvalidArgument, "%v", err)
	}
	if req.GetAfterRevision() < 0 {
		return 0, status.Error(codes.InvalidArgument, "after_revision must not be negative")
	}
	if v := r.Header.Get("Last-Event-ID"); sse && v != "" {
		rev, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
		if err != nil || rev < 0 {
			return 0, status.Errorf(codes.InvalidArgument, "Last-Event-ID %q is not a revision", v)
		}
		return rev, nil
	}
	return req.GetAfterRevision(), nil
}

// watchPathParams are the fields of the watch route's path, which its query
// does not set.
var watchPathParams = utilities.NewDoubleArray([][]string{{"request_id"}})

// serveWatch streams WatchRequest, as Server-Sent Events (sse) or as
// newline-delimited JSON. An event per message is named after its type
// (snapshot, update, heartbeat, reconnect), with the revision as id and the
// gateway's JSON as data; a line per message is {"result": message}, as
// grpc-gateway streams. Errors before the first message are answered as the
// gateway answers errors (an HTTP status, which also stops EventSource from
// retrying); errors after it end the stream with the gRPC status, as an
// "error" event or an {"error": status} line. An event stream that resumes
// at the revision of a finished request, and would only say so and end, is
// answered 204 No Content instead (noContent).
//
// The watch runs on a goroutine of its own. Over HTTP/1.1, with Streams
// set, the handler takes the connection over once the stream has begun
// (detach) and returns, so that an idle stream keeps neither the handler's
// goroutine nor net/http's buffers; otherwise the handler waits for the
// watch to end.
func (h *watchHandler) serveWatch(w http.ResponseWriter, r *http.Request, id string, sse bool) {
	ctx := r.Context()
	_, out := runtime.MarshalerForRequest(h.mux, r)
	fail := func(err error) { errorHandler(r.Context(), h.mux, out, w, r, err) }
	if h.watch == nil {
		fail(status.Error(codes.Unimplemented, "this gateway serves no watch stream"))
		return
	}
	after, err := resumeRevision(r, sse)
	if err != nil {
		fail(err)
		return
	}
	// The metadata the gateway would send becomes the call's incoming
	// metadata; the annotated context itself is not kept, but for its
	// deadline: a Grpc-Timeout header's, as on the gateway's other routes.
	annotated, err := runtime.AnnotateContext(ctx, h.mux, r, eventsv1.RequestService_WatchRequest_FullMethodName,
		runtime.WithHTTPPathPattern(watchPattern))
	if err != nil {
		fail(err)
		return
	}
	deadline, hasDeadline := annotated.Deadline()
	md, _ := metadata.FromOutgoingContext(annotated)
	ctx = metadata.NewIncomingContext(ctx, md)
	if sse {
		ctx = context.WithValue(ctx, eventStreamKey{}, true)
		if after > 0 { // a resume, which may find the request finished: see noContent
			ctx = api.EndQuietlyWhenFinished(ctx)
		}
	}

	// The watch's context ends with the request's until the stream is
	// detached, and then when the client closes the connection.
	ctx, cancel := context.WithCancelCause(context.WithoutCancel(ctx))
	unfollow := context.AfterFunc(r.Context(), func() { cancel(context.Cause(r.Context())) })
	defer unfollow()
	first := make(chan error, 1)         // nil: the first message waits for a writer
	writer := make(chan *eventWriter, 1) // the writer for the first message and the rest
	done := make(chan struct{})          // the watch and its last writes are over
	// The watch alone ends at the deadline, as a gRPC call does, with
	// DEADLINE_EXCEEDED; the stream, whose client is still there, then
	// says so as it says any error.
	watchCtx, stopDeadline := ctx, context.CancelFunc(func() {})
	if hasDeadline {
		watchCtx, stopDeadline = context.WithDeadline(ctx, deadline)
	}
	req := &eventsv1.WatchRequestRequest{RequestId: id, AfterRevision: after}
	go func() {
		defer close(done)
		defer cancel(nil)
		defer stopDeadline()
		var ev *eventWriter
		err := h.runWatch(watchCtx, req, func(m *eventsv1.WatchRequestResponse) error {
			if ev == nil {
				first <- nil
				ev = <-writer
			}
			if err := ev.message(m); err != nil {
				// The client went away: the call ends as canceled, as a
				// gRPC call does, not as a fault of the server.
				return status.Error(codes.Canceled, "writing the event stream: "+err.Error())
			}
			return nil
		})
		if ev == nil {
			if err == nil && sse && after > 0 {
				err = errFinished
			}
			first <- cmp.Or(err, status.Error(codes.Internal, "the watch ended without a message"))
			return
		}
		ev.stop() // no more writes but this goroutine's: ev.err can be read
		if err != nil && ev.err == nil && ctx.Err() == nil {
			ev.status(status.Convert(err))
		}
		ev.close(ctx.Err() == nil)
		attrs := []slog.Attr{slog.String("otpless_request_id", id)} // request_id is the HTTP request's, in the access log
		if err := cmp.Or(ev.err, err); err != nil {
			attrs = append(attrs, slog.Any("error", err))
		}
		h.log.LogAttrs(ctx, slog.LevelDebug, "watch stream ended", attrs...)
	}()
	if err := <-first; err != nil {
		if err == errFinished {
			noContent(w)
			return
		}
		fail(err)
		return
	}
	ev := h.startEvents(ctx, w, r, out, sse)
	if ev.conn != nil && unfollow() {
		go ev.closed(cancel)
	}
	writer <- ev
	if ev.conn == nil {
		<-done
	}
}

// errFinished is the end, OK and without a message, of an event stream's
// watch that resumed (api.EndQuietlyWhenFinished): the request is finished
// and the client has its last revision.
var errFinished = errors.New("the request is finished and the client is up to date")

// noContent answers an event stream that would only say that nothing is new
// and end: 204 No Content, which an EventSource takes as the end, where
// after a 200 and the end of the stream it reconnects, every retry
// interval, for as long as its page is open. The CORS headers, set
// already, let a page on another origin see the answer.
func noContent(w http.ResponseWriter) {
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusNoContent)
}

// runWatch runs h.watch. It is the bottom of the watch's goroutine, so it
// recovers a panic (as the HTTP middleware does for handlers) into an
// internal error, logs it, and tells h.panicked.
func (h *watchHandler) runWatch(ctx context.Context, req *eventsv1.WatchRequestRequest, send func(*eventsv1.WatchRequestResponse) error) (err error) {
	defer func() {
		if p := recover(); p != nil {
			h.log.LogAttrs(ctx, slog.LevelError, "event stream panicked", slog.String("otpless_request_id", req.GetRequestId()),
				slog.Any("panic", p), slog.String("stack", string(debug.Stack())))
			if h.panicked != nil {
				h.panicked()
			}
			err = status.Error(codes.Internal, "internal error")
		}
	}()
	return h.watch(ctx, req, send)
}

// startEvents answers 200 with the stream's headers (and for an event
// stream the retry hint), detaches the stream when it can, and starts an
// event stream's comment heartbeats. A comment is written after one and a
// half heartbeat intervals of silence: WatchRequest sends a heartbeat
// message every interval, and a comment due at the same moment came just
// before each of them. Newline-delimited JSON has no comments.
func (h *watchHandler) startEvents(ctx context.Context, w http.ResponseWriter, r *http.Request, m runtime.Marshaler, sse bool) *eventWriter {
	// HTTP/1.1 only: the gateway then writes the chunked encoding net/http
	// chose, and HTTP/2 cannot give its connection away.
	detach := h.streams != nil && r.ProtoMajor == 1 && r.ProtoMinor == 1
	hdr := w.Header()
	if sse {
		hdr.Set("Content-Type", "text/event-stream; charset=utf-8")
	} else {
		hdr.Set("Content-Type", m.ContentType(nil))
	}
	hdr.Set("Cache-Control", "no-store") // it may hold personal data
	hdr.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	ev := &eventWriter{w: w, rc: http.NewResponseController(w), m: m, lines: !sse, quiet: h.heartbeat * 3 / 2, timeout: h.writeTimeout}
	if sse {
		ev.retry(SSERetry)
	} else {
		ev.write(nil) // the headers
	}
	if errors.Is(ev.err, http.ErrNotSupported) {
		h.log.LogAttrs(ctx, slog.LevelError, "event stream cannot be flushed: a middleware hides http.Flusher (give its ResponseWriter an Unwrap method)")
		ev.err, ev.rc = nil, nil
	}
	if detach && ev.err == nil && ev.rc != nil {
		ev.detach(h.streams)
	}
	if sse {
		ev.mu.Lock() // a beat before the assignment reads idle under mu
		ev.idle = time.AfterFunc(ev.quiet, ev.beat)
		ev.mu.Unlock()
	}
	return ev
}

// eventWriter writes a watch stream, flushing each message: Server-Sent
// Events, with a comment heartbeat whenever nothing was written for quiet,
// or newline-delimited JSON (lines). After the first failed write it
// writes nothing more; err says why. The heartbeat runs on a timer's
// goroutine, so writes hold mu. A detached stream writes each block as an
// HTTP/1.1 chunk straight to its connection, conn, each write of which may
// take timeout.
type eventWriter struct {
	w       io.Writer
	rc      *http.ResponseController
	m       runtime.Marshaler
	lines   bool
	quiet   time.Duration
	timeout time.Duration

	conn    net.Conn
	streams *Streams

	mu      sync.Mutex
	idle    *time.Timer
	stopped bool
	err     error
}

// blocks holds the buffers events are written in, shared by all streams:
// an idle stream keeps none.
var blocks = sync.Pool{New: func() any { return new([]byte) }}

// message writes msg, as an event named after its type, id its revision,
// or as a "result" line, and returns the write's error.
func (e *eventWriter) message(msg *eventsv1.WatchRequestResponse) error {
	if e.lines {
		return e.event("result", "", msg)
	}
	name := strings.ToLower(strings.TrimPrefix(msg.GetType().String(), "WATCH_MESSAGE_TYPE_"))
	return e.event(name, strconv.FormatInt(msg.GetRevision(), 10), msg)
}

// status writes st as an "error" event without an id, so a reconnecting
// client still resumes from the last revision it got, or an "error" line.
func (e *eventWriter) status(st *status.Status) {
	_ = e.event("error", "", st.Proto())
}

// event writes msg as an event (name, and id unless empty), or as the
// line {"name": msg}.
func (e *eventWriter) event(name, id string, msg proto.Message) error {
	data, err := e.m.Marshal(msg)
	if err != nil {
		data, _ = e.m.Marshal(status.New(codes.Internal, "encoding watch message").Proto())
		name, id = "error", ""
	}
	bp := blocks.Get().(*[]byte)
	b := (*bp)[:0]
	switch {
	case e.lines:
		b = append(append(append(append(b, `{"`...), name...), `":`...), bytes.TrimRight(data, "\r\n")...)
		b = append(b, "}\n"...)
	default:
		if id != "" {
			b = append(append(append(b, "id: "...), id...), '\n')
		}
		b = append(append(append(b, "event: "...), name...), '\n')
		for line := range bytes.Lines(data) { // the JSON is one line, but be safe
			b = append(append(append(b, "data: "...), bytes.TrimRight(line, "\r\n")...), '\n')
		}
		b = append(b, '\n')
	}
	e.mu.Lock()
	e.write(b)
	err = e.err
	e.mu.Unlock()
	*bp = b
	blocks.Put(bp)
	return err
}

// beat writes the heartbeat comment; the idle timer calls it.
func (e *eventWriter) beat() {
	e.mu.Lock()
	defer e.mu.Unlock()
	if !e.stopped {
		e.write([]byte(": heartbeat\n\n"))
	}
}

// stop ends the heartbeats, before the stream ends. A beat that is
// waiting for mu writes nothing.
func (e *eventWriter) stop() {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.stopped = true
	if e.idle != nil {
		e.idle.Stop()
	}
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
	switch {
	case e.conn != nil:
		cp := blocks.Get().(*[]byte)
		c := append(strconv.AppendInt((*cp)[:0], int64(len(b)), 16), "\r\n"...)
		c = append(append(c, b...), "\r\n"...)
		_ = e.conn.SetWriteDeadline(time.Now().Add(e.timeout))
		_, e.err = e.conn.Write(c)
		*cp = c
		blocks.Put(cp)
	default: // w gives each write its deadline (deadlineWriter)
		if _, e.err = e.w.Write(b); e.err == nil && e.rc != nil {
			e.err = e.rc.Flush()
		}
	}
	if e.idle != nil && !e.stopped {
		e.idle.Reset(e.quiet)
	}
}

// detach takes the connection over from net/http, which has sent the
// headers and everything written so far, and tracks it in streams. It
// leaves e as it is when the connection cannot be taken (a ResponseWriter
// that does not unwrap to net/http's).
func (e *eventWriter) detach(streams *Streams) {
	conn, _, err := e.rc.Hijack()
	if err != nil {
		return
	}
	if !streams.add(conn) { // shutting down
		conn.Close()
		e.err = net.ErrClosed
		return
	}
	e.conn, e.streams, e.w, e.rc = conn, streams, nil, nil
}

// closed reads a detached connection until the client closes it (an
// event stream's client sends nothing more), and then ends the watch.
func (e *eventWriter) closed(cancel context.CancelCauseFunc) {
	var b [1]byte
	for {
		if _, err := e.conn.Read(b[:]); err != nil {
			cancel(nil)
			return
		}
	}
}

// close ends a detached stream: the last chunk when the client is still
// there (end), then the connection. An attached stream ends when its
// handler returns.
func (e *eventWriter) close(end bool) {
	if e.conn == nil {
		return
	}
	e.mu.Lock()
	if end && e.err == nil {
		_ = e.conn.SetWriteDeadline(time.Now().Add(e.timeout))
		_, e.err = e.conn.Write([]byte("0\r\n\r\n"))
	}
	e.mu.Unlock()
	e.conn.Close()
	e.streams.remove(e.conn)
}

// Streams tracks the watch streams that left their handlers (see
// serveWatch), which http.Server.Shutdown neither waits for nor closes.
// The zero value is ready for use.
type Streams struct {
	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	closed bool
	wg     sync.WaitGroup
}

func (s *Streams) add(c net.Conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	if s.conns == nil {
		s.conns = make(map[net.Conn]struct{})
	}
	s.conns[c] = struct{}{}
	s.wg.Add(1)
	return true
}

func (s *Streams) remove(c net.Conn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.conns, c)
	s.wg.Done()
}

// Shutdown takes no more streams and waits for the ones there are to end
// (a server ends its watches with RECONNECT when it shuts down). When ctx
// ends first, it closes their connections, which ends them, and returns
// ctx's error.
func (s *Streams) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.closed = true
	open := len(s.conns)
	s.mu.Unlock()
	if open == 0 { // whatever ctx says
		return nil
	}
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
	}
	s.mu.Lock()
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	return ctx.Err()
}
