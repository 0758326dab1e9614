package loadgen

import (
	"bufio"
	"io"
	"strings"
	"testing"
)

// An "error" event ends a stream with a gRPC status, which is counted by
// its code, as a gRPC watcher's error is, not among other errors.
func TestSSEErrorEventKind(t *testing.T) {
	t.Parallel()
	for data, want := range map[string]string{
		`{"code":14,"message":"the store is closing","details":[]}`: "Unavailable",
		`{"code":8,"message":"too many watches"}`:                   "ResourceExhausted",
		`not JSON`: "other",
	} {
		body := "event: error\ndata: " + data + "\n\n"
		s := &sseStream{body: io.NopCloser(strings.NewReader(body)), r: bufio.NewReader(strings.NewReader(body))}
		_, err := s.Recv()
		if err == nil {
			t.Fatalf("%s: no error", data)
		}
		if got := errorKind(err); got != want {
			t.Errorf("error event %s: kind %q (%v), want %q", data, got, err, want)
		}
	}
}
