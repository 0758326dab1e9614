package groupcommit

import (
	"context"
	"errors"
	"sync"
	"testing"

	"github.com/otpless-events/otpless-events/server/store"
)

// TestObserveAndQueued: Observe sees every commit with its size and error;
// Queued counts what waits behind the commit in flight.
func TestObserveAndQueued(t *testing.T) {
	t.Parallel()
	g := newGate()
	failing := errors.New("disk on fire")
	s := &fakeStore{hook: func(ctx context.Context, call int, batch []store.Webhook) error {
		if err := g.hook(ctx, call, batch); err != nil {
			return err
		}
		if call == 2 {
			return failing
		}
		return nil
	}}
	var (
		mu      sync.Mutex
		batches []Batch
	)
	w := start(t, s, Options{Observe: func(b Batch) {
		mu.Lock()
		batches = append(batches, b)
		mu.Unlock()
	}})

	first := holdFirstBatch(t, w, g)
	items := enqueueAll(t, w, 1, 4)
	if n := w.Queued(); n != 3 {
		t.Fatalf("Queued() = %d with 3 webhooks behind the commit in flight, want 3", n)
	}
	close(g.release)
	wantResult(t, 0, recv(t, first, "the first commit"))
	for i, it := range items {
		wantResult(t, i+1, recv(t, it.done, "a queued webhook"))
	}
	if n := w.Queued(); n != 0 {
		t.Fatalf("Queued() = %d after every commit, want 0", n)
	}
	if _, err := w.Submit(t.Context(), webhook(9)); !errors.Is(err, store.ErrUnavailable) {
		t.Fatalf("Submit on the failing commit: %v, want ErrUnavailable", err)
	}

	mu.Lock()
	defer mu.Unlock()
	if len(batches) != 3 {
		t.Fatalf("observed %d commits, want 3: %+v", len(batches), batches)
	}
	for i, want := range []struct {
		size int
		err  bool
	}{{1, false}, {3, false}, {1, true}} {
		b := batches[i]
		if b.Webhooks != want.size || (b.Err != nil) != want.err || b.Took < 0 {
			t.Errorf("commit %d observed as %+v, want %d webhooks, error %v", i, b, want.size, want.err)
		}
	}
}
