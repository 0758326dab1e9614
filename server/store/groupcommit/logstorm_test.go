package groupcommit

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/otpless-events/otpless-events/internal/testlog"
	"github.com/otpless-events/otpless-events/server/store"
)

// logLine is what the failure tests read of a log record.
type logLine struct {
	level, msg     string
	commits, hooks float64
}

// failureLog is a started Writer on a store that fails every commit while
// failing is set, with a clock and timers the test drives, and its log.
type failureLog struct {
	t       *testing.T
	w       *Writer
	failing atomic.Bool
	clock   atomic.Int64        // nanoseconds past the epoch
	armed   chan chan time.Time // the timers the writer set, fired by the test
	logs    testlog.Buffer
}

func newFailureLog(t *testing.T) *failureLog {
	f := &failureLog{t: t, armed: make(chan chan time.Time, 16)}
	fs := &fakeStore{forget: true, hook: func(context.Context, int, []store.Webhook) error {
		if f.failing.Load() {
			return errors.New("dial tcp: connection refused")
		}
		return nil
	}}
	f.w = New(fs, Options{Logger: slog.New(slog.NewJSONHandler(&f.logs, nil))})
	f.w.now = func() time.Time { return time.Unix(0, f.clock.Load()) }
	f.w.after = func(time.Duration) <-chan time.Time {
		c := make(chan time.Time)
		f.armed <- c
		return c
	}
	if err := f.w.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(f.stop)
	return f
}

// advance moves the writer's clock on by d.
func (f *failureLog) advance(d time.Duration) { f.clock.Add(int64(d)) }

func (f *failureLog) stop() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := f.w.Stop(ctx); err != nil {
		f.t.Errorf("Stop: %v", err)
	}
}

// submit commits webhook n, which fails if failing is set.
func (f *failureLog) submit(n int) {
	f.t.Helper()
	failing := f.failing.Load()
	if _, err := f.w.Submit(f.t.Context(), webhook(n)); (err != nil) != failing {
		f.t.Fatalf("Submit(%d): %v, want an error: %v", n, err, failing)
	}
}

// fire fires the next timer the writer armed.
func (f *failureLog) fire() {
	f.t.Helper()
	recv(f.t, f.armed, "a timer of failures left unlogged") <- time.Time{}
}

func (f *failureLog) want(what string, want ...logLine) {
	f.t.Helper()
	var got []logLine
	for _, r := range f.logs.Lines(f.t) {
		c, _ := r["failed_commits"].(float64)
		h, _ := r["failed_webhooks"].(float64)
		got = append(got, logLine{r["level"].(string), r["msg"].(string), c, h})
	}
	if !slices.Equal(got, want) {
		f.t.Fatalf("%s: logged %+v, want %+v", what, got, want)
	}
}

// TestCommitFailuresLogOncePerInterval: a store that fails every commit
// (a database gone) makes a commit of each webhook as it comes; the log
// has the first failure at once, then at most one line per
// failureLogInterval with the count since the last (those left unlogged
// once the interval is over, or at Stop), and one when commits succeed
// again, rather than a line per commit, that is per webhook.
func TestCommitFailuresLogOncePerInterval(t *testing.T) {
	t.Parallel()
	f := newFailureLog(t)
	f.failing.Store(true)
	for n := range 5 {
		f.submit(n)
	}
	first := logLine{"ERROR", "commit failed", 1, 1}
	f.want("five failed commits within the interval", first)

	f.advance(failureLogInterval)
	f.submit(5)
	again := logLine{"ERROR", "commit failed", 5, 5}
	f.want("a failed commit an interval later", first, again)

	f.failing.Store(false)
	f.submit(6)
	f.submit(7)
	recovered := logLine{"INFO", "commits succeed again", 6, 6}
	f.want("commits succeeding again", first, again, recovered)

	// A store that fails every other commit: the failures within the
	// interval are logged once it is over, with their count, and as the
	// last commit succeeded, so is the end of their run.
	for n := 8; n < 14; n++ {
		f.failing.Store(n%2 == 0)
		f.submit(n)
	}
	f.want("failures and successes in turn within the interval", first, again, recovered)
	f.advance(failureLogInterval)
	f.fire()
	f.submit(14) // after the flush: the writer takes one thing at a time
	flushed := logLine{"ERROR", "commit failed", 3, 3}
	ended := logLine{"INFO", "commits succeed again", 3, 3}
	f.want("the interval over", first, again, recovered, flushed, ended)

	// Failures left unlogged at shutdown are logged then.
	f.failing.Store(true)
	f.submit(15)
	f.stop()
	f.want("after Stop", first, again, recovered, flushed, ended, logLine{"ERROR", "commit failed", 1, 1})
}

// TestCommitFailureTimerArmedBeforeALine: a failure logged at once, as the
// interval was over, leaves the timer armed for the failures before it
// early for those after; when it fires, they wait for the interval after
// that line rather than make a second line at once.
func TestCommitFailureTimerArmedBeforeALine(t *testing.T) {
	t.Parallel()
	f := newFailureLog(t)
	f.failing.Store(true)
	f.submit(0)
	f.advance(time.Second)
	f.submit(1) // unlogged: the timer is armed for the interval's end
	f.advance(failureLogInterval - time.Second)
	f.submit(2) // the interval over: logged at once
	f.submit(3)
	f.fire() // the timer armed for webhook 1, whose failure was logged
	f.submit(4)
	first := logLine{"ERROR", "commit failed", 1, 1}
	second := logLine{"ERROR", "commit failed", 2, 2}
	f.want("failures after a line, when the timer armed before it fires", first, second)

	f.advance(failureLogInterval)
	f.fire()
	f.stop()
	f.want("an interval after the line", first, second, second)
}

// TestCommitFailuresEndedBeforeTheirLine: failures whose line waits for the
// interval's end, followed by commits that succeed, end with "commits
// succeed again" once they are logged, even with the writer idle by then:
// else the log's last word is a failure while every commit succeeds.
func TestCommitFailuresEndedBeforeTheirLine(t *testing.T) {
	t.Parallel()
	f := newFailureLog(t)
	f.failing.Store(true)
	f.submit(0)
	f.failing.Store(false)
	f.submit(1)
	failed := logLine{"ERROR", "commit failed", 1, 1}
	recovered := logLine{"INFO", "commits succeed again", 1, 1}
	f.want("a failure, then a success", failed, recovered)

	f.advance(time.Second)
	f.failing.Store(true)
	f.submit(2) // unlogged until the interval is over
	f.advance(time.Second)
	f.failing.Store(false)
	f.submit(3)
	f.advance(failureLogInterval)
	f.fire()
	f.stop()
	f.want("the failure logged once the interval is over", failed, recovered, failed, recovered)
	records := f.logs.Lines(t)
	if got, want := records[len(records)-1]["failed_for"], float64(time.Second); got != want {
		t.Errorf("failed_for %v, want %v (from the failure to the commit that succeeded)", got, want)
	}
}

// TestStorePanicStacksAreBounded: a webhook that makes the store panic does
// so at each of its retries; its stack is logged for the first, then once
// per panicStackInterval with the count of those since, each place the
// store panics at on its own; the panics between are in the "commit
// failed" lines, which name the panic and its place.
func TestStorePanicStacksAreBounded(t *testing.T) {
	t.Parallel()
	var logs testlog.Buffer
	var clock atomic.Int64
	fs := &fakeStore{forget: true, hook: func(_ context.Context, _ int, batch []store.Webhook) error {
		switch number(batch[0]) {
		case 13:
			panic("webhook 13")
		case 14:
			panic("webhook 14")
		}
		return nil
	}}
	w := New(fs, Options{Logger: slog.New(slog.NewJSONHandler(&logs, nil))})
	w.now = func() time.Time { return time.Unix(0, clock.Load()) }
	w.after = func(time.Duration) <-chan time.Time { return nil } // failures unlogged wait for Stop
	if err := w.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	submit := func(n int) {
		t.Helper()
		if _, err := w.Submit(t.Context(), webhook(n)); !errors.Is(err, store.ErrUnavailable) {
			t.Fatalf("Submit(%d) into a panicking commit: %v, want ErrUnavailable", n, err)
		}
	}
	stacks := func() (lines []map[string]any) {
		return logs.Matching(t, map[string]any{"msg": "the store panicked in a commit"})
	}
	for range 5 {
		submit(13)
	}
	if s := stacks(); len(s) != 1 || s[0]["stack"] == nil || s[0]["repeats"] != nil {
		t.Fatalf("five panics at one place logged %d stacks, want 1, without repeats: %v", len(s), s)
	}
	submit(14) // another place: a stack of its own at once
	clock.Add(int64(panicStackInterval))
	submit(13)
	submit(13)
	s := stacks()
	if len(s) != 3 || s[1]["panic"] != "webhook 14" || s[2]["panic"] != "webhook 13" || s[2]["repeats"] != float64(4) {
		t.Fatalf("stacks logged %v; want webhook 13's, webhook 14's, then webhook 13's again an interval later, with 4 repeats", s)
	}
	if s[0]["at"] == s[1]["at"] || !strings.Contains(s[0]["at"].(string), "logstorm_test.go:") {
		t.Errorf("the two places are %q and %q, want two lines of logstorm_test.go", s[0]["at"], s[1]["at"])
	}
	if err := w.Stop(t.Context()); err != nil {
		t.Fatal(err)
	}
	var commits float64
	for _, l := range logs.Matching(t, map[string]any{"msg": "commit failed"}) {
		commits += l["failed_commits"].(float64)
		if err, _ := l["err"].(string); !strings.Contains(err, "the store panicked in ") || !strings.Contains(err, "logstorm_test.go:") {
			t.Errorf("commit failed with err %q, want the panic and its place", err)
		}
	}
	if commits != 8 {
		t.Errorf("commit failed lines count %v failed commits, want 8", commits)
	}
}

// TestStopPastItsContextLogsFailures: a Stop whose ctx ends while the
// writer is held in a commit (a store slow to end it) logs the failed
// commits still waiting for their line before it returns, rather than
// leave them to a writer the process may not outlive.
func TestStopPastItsContextLogsFailures(t *testing.T) {
	t.Parallel()
	var logs testlog.Buffer
	entered, release := make(chan struct{}), make(chan struct{})
	fs := &fakeStore{forget: true, hook: func(_ context.Context, _ int, batch []store.Webhook) error {
		if number(batch[0]) == 2 {
			close(entered)
			<-release // as a store that does not heed ctx
		}
		return errors.New("dial tcp: connection refused")
	}}
	w := New(fs, Options{Logger: slog.New(slog.NewJSONHandler(&logs, nil))})
	w.now = func() time.Time { return time.Unix(0, 0) } // one interval throughout
	w.after = func(time.Duration) <-chan time.Time { return nil }
	if err := w.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	for n := range 2 { // the first logged at once, the second waiting for the interval's end
		if _, err := w.Submit(t.Context(), webhook(n)); err == nil {
			t.Fatalf("Submit(%d) into a failing store succeeded", n)
		}
	}
	held := make(chan error, 1)
	go func() {
		_, err := w.Submit(context.Background(), webhook(2))
		held <- err
	}()
	recv(t, entered, "the held commit")
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if err := w.Stop(ctx); !errors.Is(err, context.Canceled) {
		t.Errorf("Stop with its ctx ended: %v, want context.Canceled", err)
	}
	lines := logs.Matching(t, map[string]any{"msg": "commit failed"})
	close(release)
	if err := <-held; err == nil {
		t.Error("the held webhook's Submit succeeded")
	}
	<-w.done
	if len(lines) != 2 || lines[1]["failed_commits"] != float64(1) {
		t.Errorf("commit failed lines when Stop returned: %v, want two, the second of the failure waiting for its line", lines)
	}
}
