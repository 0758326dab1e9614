package broker

import (
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"

	eventsv1 "github.com/otpless-events/otpless-events/gen/otpless/events/v1"
	"github.com/otpless-events/otpless-events/server/store"
)

func change(id string, rev int64) store.Change {
	return store.Change{Request: &eventsv1.AuthRequest{RequestId: id, Revision: rev}}
}

func TestPublishReachesOnlyThatRequest(t *testing.T) {
	t.Parallel()
	b := New(0)
	a1, a2, other := b.Subscribe("a"), b.Subscribe("a"), b.Subscribe("b")
	defer a1.Close()
	defer a2.Close()
	defer other.Close()

	b.Publish([]store.Change{change("a", 1)})

	for _, s := range []*Subscription{a1, a2} {
		select {
		case <-s.Ready():
		default:
			t.Fatal("subscriber of a not signalled")
		}
		got, dropped := s.Next()
		if len(got) != 1 || got[0].Request.GetRevision() != 1 || dropped != 0 {
			t.Fatalf("Next() = %v, %v; want one change at revision 1", got, dropped)
		}
	}
	select {
	case <-other.Ready():
		t.Fatal("subscriber of b signalled for a")
	default:
	}
	if got, _ := other.Next(); len(got) != 0 {
		t.Fatalf("subscriber of b got %v", got)
	}
}

func TestSlowSubscriberIsCoalescedNotBlocking(t *testing.T) {
	t.Parallel()
	const max = 8
	b := New(max)
	slow := b.Subscribe("a")
	defer slow.Close()

	for rev := int64(1); rev <= 1000; rev++ { // would deadlock if Publish blocked
		b.Publish([]store.Change{change("a", rev)})
	}
	got, dropped := slow.Next()
	if want := int64(1000 - max); dropped != want {
		t.Errorf("dropped up to revision %d after overflowing the buffer, want %d", dropped, want)
	}
	if len(got) != max {
		t.Fatalf("len = %d, want %d", len(got), max)
	}
	for i, c := range got {
		if want := int64(1000 - max + 1 + i); c.Request.GetRevision() != want {
			t.Errorf("change %d at revision %d, want %d", i, c.Request.GetRevision(), want)
		}
	}
	if again, _ := slow.Next(); len(again) != 0 {
		t.Errorf("second Next() = %v, want nothing", again)
	}
}

// A subscription buffers exactly its pending changes before dropping the
// oldest, one included, and Next reports a drop once: the changes it takes
// are all there are since the last Next.
func TestPendingBound(t *testing.T) {
	t.Parallel()
	for _, max := range []int{1, 2, 8} {
		b := New(max)
		s := b.Subscribe("a")
		rev := int64(0)
		publish := func(n int) {
			for range n {
				rev++
				b.Publish([]store.Change{change("a", rev)})
			}
		}
		publish(max)
		if got, dropped := s.Next(); len(got) != max || dropped != 0 {
			t.Fatalf("New(%d): Next() after %d changes = %d changes, dropped up to %d; want all, none dropped", max, max, len(got), dropped)
		}
		publish(max + 1)
		if got, dropped := s.Next(); len(got) != max || dropped != rev-int64(max) {
			t.Fatalf("New(%d): Next() after %d changes = %d changes, dropped up to %d; want %d, dropped up to %d", max, max+1, len(got), dropped, max, rev-int64(max))
		}
		publish(1)
		if got, dropped := s.Next(); len(got) != 1 || dropped != 0 {
			t.Fatalf("New(%d): Next() after one more change = %d changes, dropped up to %d; want 1, none dropped", max, len(got), dropped)
		}
		s.Close()
	}
}

func TestCloseEndsSubscriptions(t *testing.T) {
	t.Parallel()
	b := New(0)
	s := b.Subscribe("a")
	if b.Watchers() != 1 {
		t.Fatalf("Watchers() = %d, want 1", b.Watchers())
	}
	b.Close()
	if b.Watchers() != 0 || len(b.Watched()) != 0 || b.HasSubscribers("a") {
		t.Fatalf("after Close, before its subscription closes: Watchers() = %d, Watched() = %q, HasSubscribers(a) = %v; want none", b.Watchers(), b.Watched(), b.HasSubscribers("a"))
	}
	b.Close()
	<-s.Done()
	s.Close()
	late := b.Subscribe("a")
	<-late.Done()
	late.Close()
	b.Publish([]store.Change{change("a", 1)})
	if b.Watchers() != 0 {
		t.Fatalf("Watchers() = %d after Close, want 0", b.Watchers())
	}
}

func TestSubscriptionCloseUnsubscribes(t *testing.T) {
	t.Parallel()
	b := New(0)
	s := b.Subscribe("a")
	s.Close()
	s.Close()
	if b.Watchers() != 0 {
		t.Fatalf("Watchers() = %d, want 0", b.Watchers())
	}
	b.Publish([]store.Change{change("a", 1)})
	if got, _ := s.Next(); len(got) != 0 {
		t.Fatalf("closed subscription got %v", got)
	}
}

func TestHasSubscribersAndWatched(t *testing.T) {
	t.Parallel()
	b := New(0)
	if b.HasSubscribers("a") || len(b.Watched()) != 0 {
		t.Fatal("a new broker reports subscribers")
	}
	a1, a2, c := b.Subscribe("a"), b.Subscribe("a"), b.Subscribe("c")
	if !b.HasSubscribers("a") || !b.HasSubscribers("c") || b.HasSubscribers("b") {
		t.Fatal("HasSubscribers does not match the subscriptions")
	}
	if got := b.Watched(); !sameSet(got, "a", "c") {
		t.Fatalf("Watched() = %q, want [a c]", got)
	}
	a1.Close()
	if !b.HasSubscribers("a") {
		t.Fatal("a lost its second subscriber with the first")
	}
	a2.Close()
	if b.HasSubscribers("a") || !sameSet(b.Watched(), "c") {
		t.Fatalf("after closing a's subscriptions: HasSubscribers(a) = %v, Watched() = %q", b.HasSubscribers("a"), b.Watched())
	}
	b.Close()
	c.Close()
	if b.HasSubscribers("c") || len(b.Watched()) != 0 {
		t.Fatal("a closed broker reports subscribers")
	}
}

// Subscriptions opened and closed in random order, several to a request:
// after every step, a publish reaches exactly the open subscriptions of its
// request, and Watchers counts the open ones.
func TestSubscribeAndCloseInAnyOrder(t *testing.T) {
	t.Parallel()
	for seed := range uint64(50) {
		rng := rand.New(rand.NewPCG(seed, 1))
		b := New(0)
		ids := []string{"a", "b", "c"}
		var open []*Subscription
		for step := range 200 {
			if len(open) == 0 || rng.IntN(3) > 0 {
				open = append(open, b.Subscribe(ids[rng.IntN(len(ids))]))
			} else {
				i := rng.IntN(len(open))
				open[i].Close()
				open = append(open[:i], open[i+1:]...)
			}
			id := ids[rng.IntN(len(ids))]
			b.Publish([]store.Change{change(id, int64(step))})
			for _, s := range open {
				got, _ := s.Next()
				if want := s.requestID == id; (len(got) == 1) != want || len(got) > 1 {
					t.Fatalf("seed %d step %d: a subscription to %s got %d changes for a publish to %s", seed, step, s.requestID, len(got), id)
				}
			}
			if b.Watchers() != len(open) {
				t.Fatalf("seed %d step %d: Watchers() = %d, want %d", seed, step, b.Watchers(), len(open))
			}
		}
	}
}

func sameSet(got []string, want ...string) bool {
	if len(got) != len(want) {
		return false
	}
	seen := map[string]bool{}
	for _, id := range got {
		seen[id] = true
	}
	for _, id := range want {
		if !seen[id] {
			return false
		}
	}
	return true
}

// Watchers subscribe, follow and leave while a writer publishes each
// request's revisions 1..n in order, as the group-commit writer does, and
// marks each committed before publishing it. A watcher that subscribes and
// then reads the committed revision as its snapshot, as WatchRequest does,
// must then see every later revision once, in order: the next change it
// keeps is always the one after the last it has, unless Next reports that
// the changes up to it were dropped. Who subscribes when, and who leaves
// after how many changes, comes from the seed; the verdict does not depend
// on the interleaving.
func TestWatchersComeAndGoWhilePublishing(t *testing.T) {
	t.Parallel()
	const (
		n        = 2000 // revisions per request
		watchers = 24
	)
	ids := []string{"a", "b", "c"}
	for _, pending := range []int{4, DefaultPending} {
		seed := rand.Uint64()
		t.Logf("pending %d: seed %d", pending, seed)
		b := New(pending)
		var committed [3]atomic.Int64
		done := make(chan struct{})
		var wg sync.WaitGroup
		wg.Go(func() {
			defer close(done)
			rng := rand.New(rand.NewPCG(seed, 0))
			for rev := int64(1); rev <= n; rev++ {
				var batch []store.Change
				for i, id := range ids {
					if rng.IntN(2) == 0 || rev == n { // not every request changes in every commit
						continue
					}
					batch = append(batch, change(id, committed[i].Add(1)))
				}
				b.Publish(batch)
			}
			for i, id := range ids { // bring each to n
				for committed[i].Load() < n {
					b.Publish([]store.Change{change(id, committed[i].Add(1))})
				}
			}
		})
		for w := range watchers {
			wg.Go(func() {
				rng := rand.New(rand.NewPCG(seed, uint64(w+1)))
				for round := 0; ; round++ {
					i := rng.IntN(len(ids))
					stay := rng.IntN(n / 4) // changes to take before leaving; the last round stays to the end
					last := rng.IntN(4) == 0 || round == 5
					s := b.Subscribe(ids[i])
					have := committed[i].Load() // the snapshot, read after subscribing
					took := 0
					for have < n && (last || took < stay) {
						select {
						case <-s.Ready():
						case <-done:
							// Everything is published: what is pending is all.
						}
						changes, dropped := s.Next()
						if dropped > have {
							have = dropped
						}
						for _, c := range changes {
							rev := c.Request.GetRevision()
							if rev <= have {
								continue
							}
							if rev != have+1 {
								t.Errorf("watcher %d round %d of %s: revision %d after %d (dropped up to %d)", w, round, ids[i], rev, have, dropped)
								s.Close()
								return
							}
							have = rev
							took++
						}
						if len(changes) == 0 && dropped == 0 && isClosed(done) && have < n {
							t.Errorf("watcher %d round %d of %s: at revision %d with all %d published and nothing pending", w, round, ids[i], have, n)
							s.Close()
							return
						}
					}
					s.Close()
					if last {
						return
					}
				}
			})
		}
		wg.Wait()
		if w := b.Watchers(); w != 0 {
			t.Errorf("%d watchers left open", w)
		}
	}
}

func isClosed(c chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}
