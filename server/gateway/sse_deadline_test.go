package gateway

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"os"
	"testing"
	"time"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	eventsv1 "github.com/otpless-events/otpless-events/gen/otpless/events/v1"
)

// A detached stream whose client stops reading fails its write once the
// write timeout passes, instead of holding the watch forever. net.Pipe has
// no buffer, so every write waits for a reader.
func TestDetachedStreamWriteTimesOut(t *testing.T) {
	t.Parallel()
	for _, last := range []bool{false, true} { // a heartbeat; the stream's last chunk
		server, client := net.Pipe()
		defer client.Close()
		var streams Streams
		streams.add(server)
		e := &eventWriter{conn: server, streams: &streams, timeout: 20 * time.Millisecond}
		done := make(chan struct{})
		go func() {
			defer close(done)
			if !last {
				e.write([]byte(": heartbeat\n\n"))
			}
			e.close(true)
		}()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			server.Close()
			t.Fatalf("last chunk %v: a write to a client that does not read was still waiting after 10 s", last)
		}
		if !errors.Is(e.err, os.ErrDeadlineExceeded) {
			t.Errorf("last chunk %v: write error = %v, want a deadline exceeded", last, e.err)
		}
	}
}

// deadlineRecorder is a ResponseWriter that records the write deadlines
// set through http.ResponseController.
type deadlineRecorder struct {
	http.ResponseWriter
	header http.Header
	log    []string
}

func (d *deadlineRecorder) Header() http.Header { return d.header }
func (d *deadlineRecorder) WriteHeader(int)     {}
func (d *deadlineRecorder) Write(b []byte) (int, error) {
	d.log = append(d.log, "write")
	return len(b), nil
}
func (d *deadlineRecorder) Flush() { d.log = append(d.log, "flush") }
func (d *deadlineRecorder) SetWriteDeadline(t time.Time) error {
	if t.IsZero() {
		d.log = append(d.log, "no deadline")
	} else {
		d.log = append(d.log, "deadline")
	}
	return nil
}

// sendOne is a watch that sends one snapshot and ends with err.
func sendOne(err error) WatchFunc {
	return func(_ context.Context, _ *eventsv1.WatchRequestRequest, send func(*eventsv1.WatchRequestResponse) error) error {
		if serr := send(&eventsv1.WatchRequestResponse{Type: eventsv1.WatchMessageType_WATCH_MESSAGE_TYPE_SNAPSHOT}); serr != nil {
			return serr
		}
		return err
	}
}

// The newline-delimited JSON watch gets a write deadline before each write
// and flush (the headers', the line's), and a last one for what net/http
// writes after the handler; the HTTP/1.x connection closes after it.
func TestNDJSONWatchWritesHaveDeadlines(t *testing.T) {
	t.Parallel()
	h := &watchHandler{mux: runtime.NewServeMux(), watch: sendOne(nil), log: slog.New(slog.DiscardHandler), writeTimeout: time.Minute}
	rec := &deadlineRecorder{header: http.Header{}}
	r, _ := http.NewRequest(http.MethodGet, "/v1/requests/r1:watch", nil)
	h.ServeHTTP(rec, r)
	want := []string{"deadline", "write", "deadline", "flush", "deadline", "write", "deadline", "flush", "deadline"}
	if len(rec.log) != len(want) {
		t.Fatalf("calls %q, want %q", rec.log, want)
	}
	for i := range want {
		if rec.log[i] != want[i] {
			t.Fatalf("calls %q, want %q", rec.log, want)
		}
	}
	if c := rec.header.Get("Connection"); c != "close" {
		t.Errorf("Connection: %q, want close", c)
	}
}

// pipeListener hands out one connection, then waits to be closed.
type pipeListener struct {
	conns  chan net.Conn
	closed chan struct{}
}

func (l *pipeListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.closed:
		return nil, net.ErrClosed
	}
}
func (l *pipeListener) Close() error   { close(l.closed); return nil }
func (l *pipeListener) Addr() net.Addr { return &net.TCPAddr{} }

// A client that stops reading an NDJSON watch does not hold the
// connection: after the handler has returned, what net/http still has to
// write (the end of the response) fails after the write timeout, and the
// connection closes. net.Pipe has no buffer: every write waits for a reader.
func TestNDJSONWatchEndsWhenTheClientStopsReading(t *testing.T) {
	t.Parallel()
	// Each write must be read within the write timeout until the client
	// stops: long beside a stall of the reading goroutine on a loaded
	// machine.
	h := &watchHandler{mux: runtime.NewServeMux(), watch: sendOne(status.Error(codes.Unavailable, "store down")),
		log: slog.New(slog.DiscardHandler), writeTimeout: 2 * time.Second}
	serverEnd, client := net.Pipe()
	defer client.Close()
	closed := make(chan struct{})
	srv := &http.Server{Handler: h, ConnState: func(_ net.Conn, s http.ConnState) {
		if s == http.StateClosed {
			close(closed)
		}
	}}
	l := &pipeListener{conns: make(chan net.Conn, 1), closed: make(chan struct{})}
	l.conns <- serverEnd
	go srv.Serve(l)
	defer srv.Close()

	client.Write([]byte("GET /v1/requests/r1:watch HTTP/1.1\r\nHost: x\r\n\r\n"))
	// Read the first line's whole chunk, then stop reading. A read takes
	// what one write of the server gives: a byte at a time, the server's
	// write of it could outlast the write timeout on a busy machine.
	var got []byte
	buf := make([]byte, 64<<10)
	for !bytes.Contains(got, []byte(`{"result":`)) || !bytes.HasSuffix(got, []byte("\n\r\n")) {
		n, err := client.Read(buf)
		if err != nil {
			t.Fatalf("reading the stream: %v (got %q)", err, got)
		}
		got = append(got, buf[:n]...)
	}
	select {
	case <-closed:
	case <-time.After(10 * time.Second):
		t.Fatal("the connection of a client that stopped reading was still open after 10 s")
	}
}

// The heartbeat timer may fire as soon as it is made: its first beat reads
// the timer under the writer's lock, which its assignment must hold too
// (a data race under -race otherwise).
func TestHeartbeatTimerMadeUnderTheLock(t *testing.T) {
	t.Parallel()
	h := &watchHandler{heartbeat: time.Nanosecond, log: slog.New(slog.DiscardHandler), writeTimeout: time.Second}
	r, err := http.NewRequest(http.MethodGet, "/v1/requests/r:watch", nil)
	if err != nil {
		t.Fatal(err)
	}
	w := &deadlineRecorder{ResponseWriter: nil, header: http.Header{}}
	ev := h.startEvents(context.Background(), w, r, &runtime.JSONPb{}, true)
	time.Sleep(5 * time.Millisecond) // beats come and go
	ev.stop()
}
