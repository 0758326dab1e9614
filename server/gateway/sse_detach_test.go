package gateway_test

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"

	eventsv1 "github.com/otpless-events/otpless-events/gen/otpless/events/v1"
	"github.com/otpless-events/otpless-events/server/gateway"
)

// watchUntilDone sends a snapshot, then waits for the call's context or
// release (nil: never), and reports on ended that the watch is over.
func watchUntilDone(release <-chan struct{}, ended chan<- struct{}) watchFunc {
	return func(_ *eventsv1.WatchRequestRequest, s grpc.ServerStreamingServer[eventsv1.WatchRequestResponse]) error {
		defer func() { ended <- struct{}{} }()
		if err := s.Send(msg(eventsv1.WatchMessageType_WATCH_MESSAGE_TYPE_SNAPSHOT, 0, 0)); err != nil {
			return err
		}
		select {
		case <-release:
			return nil
		case <-s.Context().Done():
			return s.Context().Err()
		}
	}
}

func waitEnded(t *testing.T, ended <-chan struct{}, when string) {
	t.Helper()
	select {
	case <-ended:
	case <-time.After(10 * time.Second):
		t.Fatalf("the watch went on %s", when)
	}
}

// watchHandlers counts the goroutines inside the watch route's handler.
func watchHandlers() int {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			return strings.Count(string(buf[:n]), "gateway.(*watchHandler).ServeHTTP(")
		}
		buf = make([]byte, 2*len(buf))
	}
}

// A detached stream (HTTP/1.1, Options.Streams) keeps no handler goroutine
// while it is open, and its watch still ends as soon as the client closes
// the connection. An attached one keeps its handler. Not parallel: it
// counts the handlers of the whole process.
func TestSSEDetachedStreamLeavesItsHandler(t *testing.T) {
	for _, detach := range []bool{false, true} {
		var opts gateway.Options
		want := 1
		if detach {
			opts.Streams, want = &gateway.Streams{}, 0
		}
		ended := make(chan struct{}, 1)
		url := startGateway(t, watchUntilDone(nil, ended), opts)
		ctx, leave := context.WithCancel(testContext(t))
		st := openSSE(t, ctx, url+"/v1/requests/r1:watch", nil)
		if ev := st.nextEvent(t); ev.Event != "snapshot" {
			t.Fatalf("detach %v: first event %+v, want the snapshot", detach, ev)
		}
		deadline := time.Now().Add(10 * time.Second)
		for n := watchHandlers(); n != want; n = watchHandlers() {
			if time.Now().After(deadline) {
				t.Fatalf("detach %v: %d goroutines in the watch handler with one stream open, want %d", detach, n, want)
			}
			time.Sleep(10 * time.Millisecond)
		}
		leave()
		waitEnded(t, ended, "after the client closed the connection")
		if detach {
			sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			if err := opts.Streams.Shutdown(sctx); err != nil {
				t.Errorf("Shutdown with no stream left: %v", err)
			}
			cancel()
		}
	}
}

// Streams.Shutdown waits for the detached streams to end; when its context
// ends first it closes their connections, which ends their watches; and no
// stream detaches after it.
func TestStreamsShutdown(t *testing.T) {
	t.Parallel()
	t.Run("waits", func(t *testing.T) {
		t.Parallel()
		streams := &gateway.Streams{}
		release, ended := make(chan struct{}), make(chan struct{}, 1)
		url := startGateway(t, watchUntilDone(release, ended), gateway.Options{Streams: streams})
		st := openSSE(t, testContext(t), url+"/v1/requests/r1:watch", nil)
		st.nextEvent(t)
		shut := make(chan error, 1)
		go func() { shut <- streams.Shutdown(testContext(t)) }()
		select {
		case err := <-shut:
			t.Fatalf("Shutdown returned %v with a stream open", err)
		case <-time.After(50 * time.Millisecond):
		}
		close(release)
		waitEnded(t, ended, "after its release")
		if err := <-shut; err != nil {
			t.Fatalf("Shutdown: %v", err)
		}
		if ev, err := st.next(); err != io.EOF {
			t.Fatalf("after the watch ended: %+v, %v; want the end of the stream", ev, err)
		}
	})
	t.Run("closes at its deadline", func(t *testing.T) {
		t.Parallel()
		streams := &gateway.Streams{}
		ended := make(chan struct{}, 2)
		url := startGateway(t, watchUntilDone(nil, ended), gateway.Options{Streams: streams})
		st := openSSE(t, testContext(t), url+"/v1/requests/r1:watch", nil)
		st.nextEvent(t)
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		defer cancel()
		if err := streams.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Shutdown with a stream that does not end: %v, want the deadline", err)
		}
		if _, err := io.Copy(io.Discard, st.r); err == nil {
			t.Fatal("the stream ended cleanly, want its connection closed mid-stream")
		}
		waitEnded(t, ended, "after Shutdown closed its connection")

		late := openSSE(t, testContext(t), url+"/v1/requests/r1:watch", nil)
		if _, err := io.Copy(io.Discard, late.r); err == nil {
			t.Fatal("a stream opened after Shutdown ended cleanly, want its connection closed")
		}
		waitEnded(t, ended, "opened after Shutdown")
	})
}

// A watch that panics ends as an internal error, before its first message
// (500) as after it (an "error" event), the gateway serves on, and each
// panic is told to Options.Panicked (the server counts them).
func TestSSEWatchPanicIsInternalError(t *testing.T) {
	t.Parallel()
	var panics atomic.Int32
	url := startGateway(t, func(req *eventsv1.WatchRequestRequest, s grpc.ServerStreamingServer[eventsv1.WatchRequestResponse]) error {
		if req.GetRequestId() == "late" {
			if err := s.Send(msg(eventsv1.WatchMessageType_WATCH_MESSAGE_TYPE_SNAPSHOT, 0, 0)); err != nil {
				return err
			}
		}
		panic("watch bug")
	}, gateway.Options{Streams: &gateway.Streams{}, Panicked: func() { panics.Add(1) }})
	for range 2 {
		st := openSSE(t, testContext(t), url+"/v1/requests/early:watch", nil)
		body, _ := io.ReadAll(st.resp.Body)
		if st.resp.StatusCode != http.StatusInternalServerError || !strings.Contains(string(body), `"code":13`) {
			t.Fatalf("panic before the first message: %d %s, want 500 with an internal error", st.resp.StatusCode, body)
		}
	}
	st := openSSE(t, testContext(t), url+"/v1/requests/late:watch", nil)
	st.nextEvent(t)
	if ev := st.nextEvent(t); ev.Event != "error" || !strings.Contains(ev.Data, `"code":13`) {
		t.Fatalf("panic after the first message: %+v, want an internal error event", ev)
	}
	if n := panics.Load(); n != 3 {
		t.Errorf("Panicked told of %d panics, want 3", n)
	}
}

// An HTTP/1.0 client gets the event stream unchunked, as net/http answers
// it: the gateway detaches HTTP/1.1 streams only.
func TestSSEOverHTTP10(t *testing.T) {
	t.Parallel()
	url := startGateway(t, func(_ *eventsv1.WatchRequestRequest, s grpc.ServerStreamingServer[eventsv1.WatchRequestResponse]) error {
		return s.Send(msg(eventsv1.WatchMessageType_WATCH_MESSAGE_TYPE_SNAPSHOT, 0, 0))
	}, gateway.Options{Streams: &gateway.Streams{}})
	conn, err := net.Dial("tcp", strings.TrimPrefix(url, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := io.WriteString(conn, "GET /v1/requests/r1:watch HTTP/1.0\r\nAccept: text/event-stream\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	resp, err := io.ReadAll(conn)
	if err != nil {
		t.Fatal(err)
	}
	head, body, _ := strings.Cut(string(resp), "\r\n\r\n")
	if !strings.HasPrefix(head, "HTTP/1.0 200") || strings.Contains(strings.ToLower(head), "chunked") ||
		!strings.HasPrefix(body, "retry: 2000\n\nid: 0\nevent: snapshot\ndata: {") {
		t.Fatalf("HTTP/1.0 answer:\n%s", resp)
	}
}

// With no stream open, Shutdown has nothing to wait for: it returns nil even
// with a context already ended (it once chose at random between the two).
func TestStreamsShutdownWithNone(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	for range 200 {
		var streams gateway.Streams
		if err := streams.Shutdown(ctx); err != nil {
			t.Fatalf("Shutdown with no stream and an ended context: %v", err)
		}
	}
}
