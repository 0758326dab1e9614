package groupcommit

import (
	"context"
	"errors"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"github.com/otpless-events/otpless-events/internal/testlog"
	"github.com/otpless-events/otpless-events/server/store"
)

// TestCommitFailuresLogOncePerInterval: a store that fails every commit
// (a database gone) makes a commit of each webhook as it comes; the log
// has the first failure at once, then at most one line per
// failureLogInterval with the count since the last (those left unlogged
// once the interval is over, or at Stop), and one when commits succeed
// again, rather than a line per commit, that is per webhook.
func TestCommitFailuresLogOncePerInterval(t *testing.T) {
	t.Parallel()
	var failing atomic.Bool
	failing.Store(true)
	fs := &fakeStore{forget: true, hook: func(context.Context, int, []store.Webhook) error {
		if failing.Load() {
			return errors.New("dial tcp: connection refused")
		}
		return nil
	}}
	var logs testlog.Buffer
	w := New(fs, Options{Logger: slog.New(slog.NewJSONHandler(&logs, nil))})
	var clock atomic.Int64 // nanoseconds past the epoch
	w.now = func() time.Time { return time.Unix(0, clock.Load()) }
	armed := make(chan chan time.Time, 16) // the timers the writer set, fired by the test
	w.after = func(time.Duration) <-chan time.Time {
		c := make(chan time.Time)
		armed <- c
		return c
	}
	if err := w.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	stop := func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := w.Stop(ctx); err != nil {
			t.Errorf("Stop: %v", err)
		}
	}
	t.Cleanup(stop)
	submit := func(n int, wantErr bool) {
		t.Helper()
		if _, err := w.Submit(t.Context(), webhook(n)); (err != nil) != wantErr {
			t.Fatalf("Submit(%d): %v, want an error: %v", n, err, wantErr)
		}
	}
	type line struct {
		level, msg     string
		commits, hooks float64
	}
	lines := func() []line {
		var out []line
		for _, r := range logs.Lines(t) {
			c, _ := r["failed_commits"].(float64)
			h, _ := r["failed_webhooks"].(float64)
			out = append(out, line{r["level"].(string), r["msg"].(string), c, h})
		}
		return out
	}
	want := func(what string, want ...line) {
		t.Helper()
		got := lines()
		if len(got) != len(want) {
			t.Fatalf("%s: logged %+v, want %+v", what, got, want)
		}
		for i := range got {
			if got[i] != want[i] {
				t.Fatalf("%s: logged %+v, want %+v", what, got, want)
			}
		}
	}

	for n := range 5 {
		submit(n, true)
	}
	first := line{"ERROR", "commit failed", 1, 1}
	want("five failed commits within the interval", first)

	clock.Add(int64(failureLogInterval))
	submit(5, true)
	again := line{"ERROR", "commit failed", 5, 5}
	want("a failed commit an interval later", first, again)

	failing.Store(false)
	submit(6, false)
	submit(7, false)
	recovered := line{"INFO", "commits succeed again", 6, 6}
	want("commits succeeding again", first, again, recovered)

	// A store that fails every other commit: the failures within the
	// interval are logged once it is over, with their count.
	for n := 8; n < 14; n++ {
		failing.Store(n%2 == 0)
		submit(n, n%2 == 0)
	}
	want("failures and successes in turn within the interval", first, again, recovered)
	timer := recv(t, armed, "the timer of the failures left unlogged")
	timer <- time.Time{}
	submit(14, false) // after the flush: the writer takes one thing at a time
	flushed := line{"ERROR", "commit failed", 3, 3}
	want("the interval over", first, again, recovered, flushed)

	// Failures left unlogged at shutdown are logged then.
	failing.Store(true)
	submit(15, true)
	stop()
	want("after Stop", first, again, recovered, flushed, line{"ERROR", "commit failed", 1, 1})
}
