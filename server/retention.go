package server

import (
	"context"
	"fmt"
	"log/slog"
	"runtime/debug"
	"time"

	"github.com/otpless-events/otpless-events/server/store"
)

// retention removes personal data older than keep, once at start and then
// every interval, until stopped. A run that fails is tried again sooner:
// after retry, doubled at each failure in a row, never after more than
// interval.
type retention struct {
	purger         store.Purger
	keep, interval time.Duration
	retry          time.Duration // firstRetry when zero
	// publish, when set, takes the changes a purge's refolds make, as the
	// writer's OnCommit takes a commit's, for the watchers.
	publish func([]store.Change)
	log     *slog.Logger
	// observe, when set, is told of every run that was not stopped: the
	// webhooks purged, and its error (a panic's too).
	observe func(purged int, err error)

	cancel context.CancelFunc
	done   chan struct{}
}

func (r *retention) start() {
	ctx, cancel := context.WithCancel(context.Background())
	r.cancel, r.done = cancel, make(chan struct{})
	retry := r.retry
	if retry <= 0 {
		retry = firstRetry
	}
	go func() {
		defer close(r.done)
		next := time.Now()
		wait := retry
		for {
			if r.purge(ctx) {
				next, wait = next.Add(r.interval), retry
				if now := time.Now(); next.Before(now) { // a run longer than interval: the next at once
					next = now
				}
			} else {
				next, wait = time.Now().Add(min(wait, r.interval)), min(2*wait, r.interval)
			}
			t := time.NewTimer(time.Until(next))
			select {
			case <-ctx.Done():
				t.Stop()
				return
			case <-t.C:
			}
		}
	}()
}

// firstRetry is how soon a failed retention run is tried again, at first:
// a database restarted at purge time should not keep personal data past
// its time for a whole interval.
const firstRetry = 5 * time.Second

// purge runs once; it reports whether the run ended without error.
func (r *retention) purge(ctx context.Context) (ok bool) {
	defer func() { // a panic costs this run, not the process
		if p := recover(); p != nil {
			r.log.Error("purging personal data panicked", "panic", p, "stack", string(debug.Stack()))
			r.observed(0, fmt.Errorf("panic: %v", p))
			ok = false
		}
	}()
	cutoff := time.Now().Add(-r.keep)
	n, err := r.purger.PurgePII(ctx, cutoff, r.publish)
	if ctx.Err() == nil {
		r.observed(n, err)
	}
	switch {
	case err != nil && ctx.Err() == nil:
		r.log.Warn("purging personal data", "error", err, "webhooks", n)
	case n > 0:
		r.log.Info("purged personal data", "webhooks", n, "received_before", cutoff)
	}
	return err == nil
}

func (r *retention) observed(purged int, err error) {
	if r.observe != nil {
		r.observe(purged, err)
	}
}

// stop ends the loop and waits for a purge in progress to stop.
func (r *retention) stop() {
	if r.cancel != nil {
		r.cancel()
		<-r.done
	}
}
