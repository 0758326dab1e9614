package observe_test

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/otpless-events/otpless-events/server/observe"
)

// recorder is an io.Writer that keeps each Write's bytes; while gate is
// set, writes wait for it to close.
type recorder struct {
	entered atomic.Int32 // Writes begun
	mu      sync.Mutex
	writes  []string
	gate    chan struct{}
	err     error
}

func (r *recorder) Write(p []byte) (int, error) {
	r.entered.Add(1)
	r.mu.Lock()
	gate := r.gate
	r.mu.Unlock()
	if gate != nil {
		<-gate
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.writes = append(r.writes, string(p))
	if r.err != nil {
		return 0, r.err
	}
	return len(p), nil
}

// hold makes the writes from now on wait at the gate.
func (r *recorder) hold() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.gate = make(chan struct{})
}

// release lets the writes at the gate, and those to come, through.
func (r *recorder) release() {
	r.mu.Lock()
	defer r.mu.Unlock()
	close(r.gate)
	r.gate = nil
}

func (r *recorder) text() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return strings.Join(r.writes, "")
}

func (r *recorder) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.writes)
}

func TestLogWriterKeepsEveryLineInOrder(t *testing.T) {
	var rec recorder
	l := observe.NewLogWriter(&rec, 0)
	const writers, lines = 8, 500
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for i := range lines {
				if n, err := fmt.Fprintf(l, "w%d %d\n", w, i); err != nil || n == 0 {
					t.Errorf("Write: %d, %v", n, err)
				}
			}
		})
	}
	wg.Wait()
	if err := l.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	next := make([]int, writers)
	got := strings.Split(strings.TrimSuffix(rec.text(), "\n"), "\n")
	if len(got) != writers*lines {
		t.Fatalf("%d lines written, want %d", len(got), writers*lines)
	}
	for _, line := range got {
		var w, i int
		if _, err := fmt.Sscanf(line, "w%d %d", &w, &i); err != nil {
			t.Fatalf("line %q: %v (a line was cut or merged)", line, err)
		}
		if i != next[w] {
			t.Fatalf("writer %d: line %d after %d", w, i, next[w]-1)
		}
		next[w]++
	}
}

// While the writer beneath is busy, lines gather and go out in one write,
// and Write does not wait for it.
func TestLogWriterGathersLinesWhileAWriteIsUnderWay(t *testing.T) {
	rec := recorder{gate: make(chan struct{})}
	l := observe.NewLogWriter(&rec, 0)
	l.Write([]byte("first\n"))
	waitFor(t, func() bool { return rec.entered.Load() == 1 }) // the goroutine waits at the gate with it
	written := make(chan struct{})
	go func() {
		for i := range 100 {
			fmt.Fprintf(l, "line %d\n", i)
		}
		close(written)
	}()
	select {
	case <-written:
	case <-time.After(10 * time.Second):
		t.Fatal("Write waited for the writer beneath")
	}
	rec.release()
	if err := l.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if n := rec.count(); n > 3 {
		t.Errorf("%d writes for 101 lines, want them gathered into at most 3", n)
	}
	if want := "first\n"; !strings.HasPrefix(rec.text(), want) || strings.Count(rec.text(), "\n") != 101 {
		t.Errorf("written %q", rec.text())
	}
}

// A log that cannot keep up holds back its writers once backlog bytes wait,
// and loses nothing.
func TestLogWriterBacklogHoldsWritersBack(t *testing.T) {
	rec := recorder{gate: make(chan struct{})}
	l := observe.NewLogWriter(&rec, 64)
	line := bytes.Repeat([]byte("x"), 31)
	line[30] = '\n'
	l.Write(line)
	waitFor(t, func() bool { return rec.entered.Load() == 1 }) // the goroutine waits at the gate with it
	l.Write(line)
	l.Write(line) // 62 bytes wait: full
	blocked := make(chan struct{})
	go func() {
		l.Write(line)
		close(blocked)
	}()
	select {
	case <-blocked:
		t.Fatal("Write returned with the backlog full")
	case <-time.After(100 * time.Millisecond):
	}
	rec.release()
	<-blocked
	if err := l.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if got := rec.text(); got != strings.Repeat(string(line), 4) {
		t.Errorf("written %q", got)
	}
}

func TestLogWriterAfterClose(t *testing.T) {
	var rec recorder
	l := observe.NewLogWriter(&rec, 0)
	l.Write([]byte("before\n"))
	if err := l.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := l.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := l.Write([]byte("after\n")); err != nil {
		t.Fatalf("Write after Close: %v", err)
	}
	if got := rec.text(); got != "before\nafter\n" {
		t.Errorf("written %q", got)
	}
}

func TestLogWriterCloseReportsAFailedWrite(t *testing.T) {
	failed := errors.New("disk full")
	rec := recorder{err: failed}
	l := observe.NewLogWriter(&rec, 0)
	if _, err := l.Write([]byte("lost\n")); err != nil {
		t.Fatalf("Write: %v (the failure is Close's to report)", err)
	}
	if err := l.Close(); !errors.Is(err, failed) {
		t.Errorf("Close: %v, want %v", err, failed)
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("timed out")
		}
		time.Sleep(time.Millisecond)
	}
}

// After a line larger than twice the backlog, the buffers still take turns:
// a line written while the next write is under way is neither lost nor
// written over.
func TestLogWriterAfterAnOversizedLine(t *testing.T) {
	rec := recorder{}
	l := observe.NewLogWriter(&rec, 16)
	l.Write([]byte("a\n"))
	waitFor(t, func() bool { return rec.count() == 1 })
	big := strings.Repeat("b", 40) + "\n"
	l.Write([]byte(big))
	waitFor(t, func() bool { return rec.count() == 2 })
	rec.hold()
	l.Write([]byte("c\n"))
	waitFor(t, func() bool { return rec.entered.Load() == 3 }) // the write of "c" waits at the gate
	l.Write([]byte("d\n"))
	rec.release()
	if err := l.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if got, want := rec.text(), "a\n"+big+"c\nd\n"; got != want {
		t.Errorf("written %q, want %q", got, want)
	}
}

// A write to the writer beneath that does not end (nothing reads the other
// end of a pipe) stops nobody for longer than StuckAfter: lines that find no
// room are dropped, a notice says how many once a write ends again, and
// Close gives up on the stuck write.
func TestLogWriterDropsWhileAWriteIsStuck(t *testing.T) {
	rec := recorder{}
	rec.hold()
	l := observe.NewLogWriter(&rec, 10)
	observe.SetStuckAfter(l, 50*time.Millisecond)
	l.SetDropNotice(func(n int) []byte { return fmt.Appendf(nil, "dropped %d\n", n) })
	l.Write([]byte("first\n")) // the write that sticks
	for rec.entered.Load() == 0 {
		time.Sleep(time.Millisecond) // polling for the goroutine's write to begin
	}
	l.Write([]byte("waits\n")) // room in the backlog
	done := make(chan struct{})
	go func() {
		defer close(done)
		for range 3 {
			l.Write([]byte("no room\n"))
		}
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Write still waits for a write that does not end")
	}
	rec.release()
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(rec.text(), "dropped") && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond) // polling for the notice, written once the write ended
	}
	if err := l.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if got, want := rec.text(), "first\nwaits\ndropped 3\n"; got != want {
		t.Errorf("written %q, want %q", got, want)
	}

	stuck := recorder{}
	stuck.hold()
	defer stuck.release()
	l = observe.NewLogWriter(&stuck, 0)
	observe.SetStuckAfter(l, 50*time.Millisecond)
	l.Write([]byte("never written\n"))
	for stuck.entered.Load() == 0 {
		time.Sleep(time.Millisecond)
	}
	if err := l.Close(); err == nil {
		t.Error("Close of a writer whose write never ends reported no error")
	}
	after := make(chan struct{})
	go func() { l.Write([]byte("after Close\n")); close(after) }()
	select {
	case <-after:
	case <-time.After(5 * time.Second):
		t.Error("a Write after Close gave up waits for the write that never ends")
	}
}

func TestLogWriterClosedTwiceWhileAWriteIsStuck(t *testing.T) {
	stuck := recorder{}
	stuck.hold()
	defer stuck.release()
	l := observe.NewLogWriter(&stuck, 0)
	observe.SetStuckAfter(l, 50*time.Millisecond)
	l.Write([]byte("never written\n"))
	for stuck.entered.Load() == 0 {
		time.Sleep(time.Millisecond) // polling for the goroutine's write to begin
	}
	for i := range 2 {
		if err := l.Close(); err == nil {
			t.Errorf("Close %d of a writer whose write never ends reported no error", i+1)
		}
	}
}
