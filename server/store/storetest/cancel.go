package storetest

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	eventsv1 "github.com/otpless-events/otpless-events/gen/otpless/events/v1"
	"github.com/otpless-events/otpless-events/server/store"
)

// countdown is a context canceled at its n-th look (a call of Done or
// Err), wherever in a call that comes: run with n = 1, 2, 3, ... it
// cancels a call at each point where the backend heeds its context.
type countdown struct {
	context.Context
	cancel context.CancelFunc
	left   atomic.Int64
}

func newCountdown(n int64) *countdown {
	ctx, cancel := context.WithCancel(context.Background())
	c := &countdown{Context: ctx, cancel: cancel}
	c.left.Store(n)
	return c
}

func (c *countdown) look() {
	if c.left.Add(-1) == 0 {
		c.cancel()
	}
}

func (c *countdown) Done() <-chan struct{} { c.look(); return c.Context.Done() }
func (c *countdown) Err() error            { c.look(); return c.Context.Err() }

// A Commit whose context is canceled while it runs, at any point, either
// stores its whole batch and says so, or fails with the context's error
// and stores nothing of it: the same batch committed again is then new,
// at the next revision. The store goes on as though the failed call had
// not been made.
func testCommitCanceledMidway(t *testing.T, su suite) {
	s := su.open(t)
	first := auth("r1", "init", "INITIATED", at(0))
	commit(t, s, hook(at(0), first))
	var (
		rev       int64 = 1
		all             = []*eventsv1.Event{first}
		failures  int
		successes int
	)
	// batch is the k-th attempt's: a new event of r1, one of a new
	// request, one of no request, and a retry of r1's first event.
	batch := func(k int) []store.Webhook {
		return []store.Webhook{
			hook(at(100+k), delivery("r1", fmt.Sprintf("e%d", k), "SMS", "SENT", at(100+k)), auth("r1", "init", "INITIATED", at(0))),
			hook(at(100+k), auth(fmt.Sprintf("new%d", k), "init", "INITIATED", at(100+k)), system("", fmt.Sprintf("u%d", k), "UNREACHABLE", at(100+k))),
		}
	}
	// attempt commits the k-th batch with ctx and reports whether the
	// commit succeeded before ctx was canceled.
	attempt := func(ctx context.Context, k int) (completed bool) {
		t.Helper()
		b := batch(k)
		before := get(t, s, "r1")
		results, changes, err := s.Commit(ctx, b)
		canceled := ctx.Err() != nil
		newID := fmt.Sprintf("new%d", k)
		if err == nil {
			successes++
			rev++
			checkResults(t, results, [][]bool{{false, true}, {false, false}}, [][]int64{{rev, rev}, {1, 0}})
			if len(changes) != 2 {
				t.Errorf("attempt %d: %d changes, want 2", k, len(changes))
			}
			all = append(all, b[0].Events[0])
			equalProto(t, fmt.Sprintf("r1 after attempt %d", k), get(t, s, "r1"), snapshot("r1", all, rev, at(100+k)))
			get(t, s, newID)
			return !canceled
		}
		failures++
		if !errors.Is(err, context.Canceled) {
			t.Errorf("attempt %d: Commit canceled while it ran: %v; want an error wrapping context.Canceled", k, err)
		}
		if after := get(t, s, "r1"); !proto.Equal(after, before) {
			t.Errorf("attempt %d failed (%v), and r1 changed: revision %d -> %d", k, err, before.GetRevision(), after.GetRevision())
		}
		if _, err := s.GetRequest(context.Background(), newID); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("attempt %d failed, and its new request is there: %v", k, err)
		}
		// Nothing of it was stored: it is new when committed again.
		rev++
		results, _ = commit(t, s, batch(k)...)
		checkResults(t, results, [][]bool{{false, true}, {false, false}}, [][]int64{{rev, rev}, {1, 0}})
		all = append(all, b[0].Events[0])
		return false
	}

	k := 0
	cancelThroughout(t, "Commit", func() { k++ }, func(ctx context.Context) bool { return attempt(ctx, k) })
	if t.Failed() {
		return
	}
	t.Logf("%d commits canceled, %d completed", failures, successes)
	equalProto(t, "r1 at the end", get(t, s, "r1"), snapshot("r1", all, rev, get(t, s, "r1").GetUpdateTime().AsTime()))
	if got := listAll(t, s, "r1", 7); len(got) != len(all) {
		t.Errorf("r1 lists %d events, want %d", len(got), len(all))
	}
}

// A purge whose context is canceled while it runs, at any point, reports
// every refold it made a change (see store.Purger) once its transaction
// commits: a purge that fails having refolded a request would leave the
// watchers without that change.
func testPurgeCanceledMidway(t *testing.T, su suite) {
	if su.opts.SetSnapshot == nil {
		t.Skip("the backend gives no Options.SetSnapshot")
	}
	s := su.open(t)
	p := s.(store.Purger)
	// round commits a webhook of request id, received before the cutoff,
	// and gives the request a snapshot an earlier fold made, which the
	// purge's refold changes: a change at the next revision.
	round := func(id string) *eventsv1.AuthRequest {
		commit(t, s, hookBody(`{"old":"+919800000000"}`, t0, delivery(id, "e-sent", "SMS", "SENT", at(0))))
		earlier := get(t, s, id)
		earlier.ActiveChannel = "WHATSAPP"
		su.opts.SetSnapshot(t, s, earlier)
		return earlier
	}
	purge := func(ctx context.Context, id string, before *eventsv1.AuthRequest) (completed bool) {
		t.Helper()
		var changed []store.Change
		n, err := p.PurgePII(ctx, t0.Add(time.Hour), func(c []store.Change) { changed = append(changed, c...) })
		after := get(t, s, id)
		refolded := after.GetRevision() != before.GetRevision()
		switch {
		case err == nil && (n != 1 || !refolded || len(changed) != 1):
			t.Errorf("%s: PurgePII = %d, nil with %d changes, revision %d -> %d; want 1 webhook purged, its refold a change", id, n, len(changed), before.GetRevision(), after.GetRevision())
		case err != nil && refolded && len(changed) == 0:
			t.Errorf("%s: PurgePII failed (%v) after refolding the request (revision %d -> %d), and reported no change", id, err, before.GetRevision(), after.GetRevision())
		case err != nil && !errors.Is(err, context.Canceled):
			t.Errorf("%s: PurgePII canceled while it ran: %v; want an error wrapping context.Canceled", id, err)
		}
		if err != nil {
			// Purge what is left, so that the next round starts clean: a
			// backend that skips rows another transaction holds may have
			// to wait for the failed one's to end.
			// The refold is a change reported once: by the failed purge
			// if it was stored, else by this one.
			for start := time.Now(); ; {
				if _, err := p.PurgePII(context.Background(), t0.Add(time.Hour), func(c []store.Change) { changed = append(changed, c...) }); err != nil {
					t.Fatalf("PurgePII: %v", err)
				}
				if events := listAll(t, s, id, 10); len(events) == 1 && events[0].GetIdentity() == "" {
					break
				}
				if time.Since(start) > 10*time.Second {
					t.Fatalf("%s: its webhook is still not purged 10 s after a purge failed", id)
				}
				time.Sleep(10 * time.Millisecond)
			}
			if len(changed) != 1 {
				t.Errorf("%s: after a purge that failed (%v) and the purge after it, %d changes were reported; want the refold's, once", id, err, len(changed))
			}
		}
		return err == nil && ctx.Err() == nil
	}
	var (
		k      int
		id     string
		before *eventsv1.AuthRequest
	)
	cancelThroughout(t, "PurgePII", func() {
		k++
		id = fmt.Sprintf("r%d", k)
		before = round(id)
	}, func(ctx context.Context) bool { return purge(ctx, id, before) })
}

// cancelThroughout calls call, each time after next, with contexts
// canceled at each of its looks at them in turn, until a call ends before
// its countdown does; then with contexts canceled at 16 points through the
// time that call took: at points a backend does not look at its context
// itself (a driver's goroutine, a query in flight). It stops at the first
// failure.
func cancelThroughout(t *testing.T, what string, next func(), call func(ctx context.Context) (completed bool)) {
	t.Helper()
	var took time.Duration
	for n := int64(1); ; n++ {
		if n > 10000 {
			t.Fatalf("%s still looked at its context %d times", what, n)
		}
		next()
		ctx := newCountdown(n)
		start := time.Now()
		done := call(ctx)
		ctx.cancel()
		if done {
			took = time.Since(start)
			break
		}
		if t.Failed() {
			return
		}
	}
	for i := range 16 {
		next()
		ctx, cancel := context.WithCancel(context.Background())
		timer := time.AfterFunc(took*time.Duration(i)/16, cancel)
		call(ctx)
		timer.Stop()
		cancel()
		if t.Failed() {
			return
		}
	}
}
