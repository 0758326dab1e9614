package gateway

import (
	"errors"
	"net"
	"net/http"
	"os"
	"testing"
	"time"
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
	log []string
}

func (d *deadlineRecorder) Header() http.Header { return http.Header{} }
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

// The newline-delimited JSON watch (written by the gateway) gets a write
// deadline before each write and flush, and none once it has ended, so the
// connection can serve another request.
func TestNDJSONWatchWritesHaveDeadlines(t *testing.T) {
	t.Parallel()
	next := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte(`{"result":{}}` + "\n"))
		w.(http.Flusher).Flush() // the gateway needs a Flusher to stream
	})
	h := &watchHandler{next: next, writeTimeout: time.Minute}
	rec := &deadlineRecorder{}
	r, _ := http.NewRequest(http.MethodGet, "/v1/requests/r1:watch", nil)
	h.ServeHTTP(rec, r)
	want := []string{"deadline", "write", "deadline", "flush", "no deadline"}
	if len(rec.log) != len(want) {
		t.Fatalf("calls %q, want %q", rec.log, want)
	}
	for i := range want {
		if rec.log[i] != want[i] {
			t.Fatalf("calls %q, want %q", rec.log, want)
		}
	}
}
