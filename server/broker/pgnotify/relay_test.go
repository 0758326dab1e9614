package pgnotify

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	eventsv1 "github.com/otpless-events/otpless-events/gen/otpless/events/v1"
	"github.com/otpless-events/otpless-events/server/broker"
	"github.com/otpless-events/otpless-events/server/store"
)

// fakeStore is a store.ChangeReader over a log of commits, each adding one
// event. It counts reads.
type fakeStore struct {
	mu    sync.Mutex
	log   map[string][]*eventsv1.Event // per request: the event of revision i+1
	reads int
}

func newFakeStore() *fakeStore { return &fakeStore{log: map[string][]*eventsv1.Event{}} }

// commit adds an event to id and returns the change.
func (f *fakeStore) commit(id string) store.Change {
	f.mu.Lock()
	defer f.mu.Unlock()
	rev := len(f.log[id]) + 1
	e := &eventsv1.Event{RequestId: id, EventId: fmt.Sprintf("%s-%d", id, rev)}
	f.log[id] = append(f.log[id], e)
	return store.Change{Request: &eventsv1.AuthRequest{RequestId: id, Revision: int64(rev)}, Events: []*eventsv1.Event{e}}
}

func (f *fakeStore) ChangesSince(_ context.Context, since map[string]int64) ([]store.Change, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.reads++
	var out []store.Change
	for id, after := range since {
		evs := f.log[id]
		if int64(len(evs)) > after {
			c := store.Change{
				Request: &eventsv1.AuthRequest{RequestId: id, Revision: int64(len(evs))},
				Events:  slices.Clone(evs[after:]),
			}
			for rev := after + 1; rev <= int64(len(evs)); rev++ {
				c.EventRevisions = append(c.EventRevisions, rev)
			}
			out = append(out, c)
		}
	}
	return out, nil
}

func (f *fakeStore) readCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.reads
}

func (f *fakeStore) ListenConfig() *pgx.ConnConfig { return nil }
func (f *fakeStore) Channel() string               { return "test" }
func (f *fakeStore) Notify(context.Context, string) error {
	return errors.New("fakeStore: no channel")
}

// startWorker runs the relay's worker only (no database connection).
func startWorker(t *testing.T, r *Relay) {
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { r.work(ctx) })
	t.Cleanup(func() { cancel(); wg.Wait() })
}

// follower collects what a subscription receives.
type follower struct {
	sub *broker.Subscription
	got []store.Change
}

// waitFor takes changes until the request reaches rev.
func (f *follower) waitFor(t *testing.T, rev int64) {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for len(f.got) == 0 || f.got[len(f.got)-1].Request.GetRevision() < rev {
		select {
		case <-f.sub.Ready():
			changes, dropped := f.sub.Next()
			if dropped != 0 {
				t.Fatal("the subscription dropped changes")
			}
			f.got = append(f.got, changes...)
		case <-deadline:
			t.Fatalf("no change up to revision %d; got %v", rev, revisions(f.got))
		}
	}
}

// check: revisions strictly increase and the events are those of revisions
// 1..n, each once, in order.
func (f *follower) check(t *testing.T, id string, n int) {
	t.Helper()
	var last int64
	var events []string
	for _, c := range f.got {
		if c.Request.GetRevision() <= last {
			t.Errorf("revisions %v do not increase", revisions(f.got))
		}
		last = c.Request.GetRevision()
		for _, e := range c.Events {
			events = append(events, e.GetEventId())
		}
	}
	var want []string
	for i := range n {
		want = append(want, fmt.Sprintf("%s-%d", id, i+1))
	}
	if !slices.Equal(events, want) {
		t.Errorf("events %v, want %v", events, want)
	}
}

func revisions(changes []store.Change) []int64 {
	var out []int64
	for _, c := range changes {
		out = append(out, c.Request.GetRevision())
	}
	return out
}

// TestLocalAndRemoteCommits: the first change of a watched request is read
// once its notification comes (unless it is the request's very first);
// later local commits that follow on are published without a read; a
// remote commit in between is read.
func TestLocalAndRemoteCommits(t *testing.T) {
	t.Parallel()
	fs, b := newFakeStore(), broker.New(1000)
	r := New(fs, b, Options{})
	startWorker(t, r)
	f := &follower{sub: b.Subscribe("r")}
	defer f.sub.Close()

	fs.commit("r")                             // another replica's, not notified yet
	r.OnCommit([]store.Change{fs.commit("r")}) // not known yet: waits for the notifications
	if got, _ := f.sub.Next(); len(got) != 0 || fs.readCount() != 0 {
		t.Fatal("published or read before any notification")
	}
	r.notified("r", 1)
	f.waitFor(t, 2)
	r.notified("r", 2) // nothing more to do
	reads := fs.readCount()

	r.OnCommit([]store.Change{fs.commit("r")}) // follows on: published at once
	f.waitFor(t, 3)
	r.notified("r", 3) // its own notification: nothing to do
	if got := fs.readCount(); got != reads {
		t.Errorf("%d reads for a commit that followed on, want none", got-reads)
	}

	fs.commit("r")                             // another replica's, notified late
	r.OnCommit([]store.Change{fs.commit("r")}) // does not follow on from 3: read
	f.waitFor(t, 5)
	r.notified("r", 4)
	r.notified("r", 5)
	r.OnCommit([]store.Change{fs.commit("r")})
	f.waitFor(t, 6)
	f.check(t, "r", 6)
}

// TestFirstChangeAtOnce: a request's first change, committed here, is
// published without waiting for its notification or reading.
func TestFirstChangeAtOnce(t *testing.T) {
	t.Parallel()
	fs, b := newFakeStore(), broker.New(0)
	r := New(fs, b, Options{})
	startWorker(t, r)
	f := &follower{sub: b.Subscribe("r")}
	defer f.sub.Close()
	r.OnCommit([]store.Change{fs.commit("r")})
	if got, _ := f.sub.Next(); len(got) != 1 {
		t.Fatalf("first change: published %v, want it at once", got)
	}
	r.notified("r", 1)
	r.OnCommit([]store.Change{fs.commit("r")})
	f.sub.Next()
	if n := fs.readCount(); n != 0 {
		t.Errorf("%d reads, want none", n)
	}
}

// TestUnwatchedRequestsAreNotRead: notifications and commits of requests
// nobody here watches cost nothing.
func TestUnwatchedRequestsAreNotRead(t *testing.T) {
	t.Parallel()
	fs, b := newFakeStore(), broker.New(0)
	r := New(fs, b, Options{})
	startWorker(t, r)
	watched := &follower{sub: b.Subscribe("w")}
	defer watched.sub.Close()
	for i := range 100 {
		c := fs.commit("other")
		r.OnCommit([]store.Change{c})
		r.notified("other", int64(i+1))
	}
	fs.commit("w")
	r.notified("w", 1) // a read happens, for w only
	watched.waitFor(t, 1)
	if n := fs.readCount(); n != 1 {
		t.Errorf("%d reads, want 1 (for the watched request)", n)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.published["other"]; ok {
		t.Error("the relay keeps state for an unwatched request")
	}
}

// TestResyncReadsEveryWatchedRequest: after (re)connecting, or when asked
// to (Resync), a watched request changed while no notification could
// arrive is read and published.
func TestResyncReadsEveryWatchedRequest(t *testing.T) {
	t.Parallel()
	fs, b := newFakeStore(), broker.New(0)
	r := New(fs, b, Options{})
	startWorker(t, r)
	known, unknown := &follower{sub: b.Subscribe("k")}, &follower{sub: b.Subscribe("u")}
	defer known.sub.Close()
	defer unknown.sub.Close()
	fs.commit("k")
	r.notified("k", 1)
	known.waitFor(t, 1)

	// Notifications lost while disconnected.
	fs.commit("k")
	fs.commit("u")
	fs.commit("u")
	r.Resync()
	known.waitFor(t, 2)
	unknown.waitFor(t, 2)
	known.check(t, "k", 2)
	unknown.check(t, "u", 2)
}

// unreachable is a fakeStore whose listening connection cannot connect.
type unreachable struct{ *fakeStore }

func (unreachable) ListenConfig() *pgx.ConnConfig {
	c, err := pgx.ParseConfig("postgres://nobody@127.0.0.1:1/none?connect_timeout=1")
	if err != nil {
		panic(err)
	}
	return c
}

// TestPollsWhileNotListening: while the listening connection cannot be
// opened, no notification comes, so the Relay reads every watched request
// each Recheck: a commit of this replica that it cannot place reaches the
// watchers all the same, and the events their snapshot has are dropped.
func TestPollsWhileNotListening(t *testing.T) {
	t.Parallel()
	fs, b := newFakeStore(), broker.New(0)
	r := New(unreachable{fs}, b, Options{Recheck: 20 * time.Millisecond, MinBackoff: time.Millisecond, MaxBackoff: 10 * time.Millisecond})
	if err := r.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.Stop)
	fs.commit("z") // before the watch: its snapshot is at revision 1
	f := &follower{sub: b.Subscribe("z")}
	defer f.sub.Close()
	r.OnCommit([]store.Change{fs.commit("z")}) // where its watchers started is not known
	f.waitFor(t, 2)
	r.OnCommit([]store.Change{fs.commit("z")}) // follows on
	f.waitFor(t, 3)
	var events []string
	last := int64(1)
	for _, c := range f.got {
		for _, e := range c.EventsAfter(last) {
			events = append(events, e.GetEventId())
		}
		last = c.Request.GetRevision()
	}
	if want := []string{"z-2", "z-3"}; !slices.Equal(events, want) {
		t.Errorf("a watcher from revision 1 got %v, want %v", events, want)
	}
}

// TestInterleavedReplicas: commits of this replica and of others on one
// request, with each notification arriving in commit order but at any time
// after its commit, and this replica's OnCommit racing them. The watcher
// gets every event once, in revision order.
func TestInterleavedReplicas(t *testing.T) {
	t.Parallel()
	for seed := range uint64(20) {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			t.Parallel()
			rng := rand.New(rand.NewPCG(seed, 7))
			fs, b := newFakeStore(), broker.New(1000)
			r := New(fs, b, Options{})
			startWorker(t, r)
			f := &follower{sub: b.Subscribe("r")}
			defer f.sub.Close()

			const n = 60
			notifiedUpTo := 0
			for rev := 1; rev <= n; rev++ {
				c := fs.commit("r")
				if rng.IntN(2) == 0 { // a local commit
					r.OnCommit([]store.Change{c})
				}
				// Deliver some of the notifications due, in order.
				for notifiedUpTo < rev && rng.IntN(3) > 0 {
					notifiedUpTo++
					r.notified("r", int64(notifiedUpTo))
				}
				if rng.IntN(4) == 0 {
					runtime.Gosched() // let the worker run between commits
				}
			}
			for notifiedUpTo < n {
				notifiedUpTo++
				r.notified("r", int64(notifiedUpTo))
			}
			f.waitFor(t, n)
			f.check(t, "r", n)
		})
	}
}

// TestRacingReplicasAndWatchers plays two replicas committing to a few
// requests in an order drawn from a logged seed: notifications come in
// commit order on one goroutine, this replica's commits reach OnCommit in
// their order on another, later than their commit and in any interleaving
// with the notifications, and watchers subscribe meanwhile, each reading
// its snapshot after subscribing, as WatchRequest does. Each watcher must
// then be handed, in order and once each, exactly the events after its
// snapshot, taken as WatchRequest takes them (Change.EventsAfter of the
// revision it has). No notification is lost, so nothing waits for a
// Recheck.
func TestRacingReplicasAndWatchers(t *testing.T) {
	t.Parallel()
	seed := rand.Uint64()
	t.Logf("seed %d", seed)
	const commits = 600
	ids := []string{"a", "b", "c"}
	fs, b := newFakeStore(), broker.New(100000)
	r := New(fs, b, Options{Recheck: time.Hour})
	startWorker(t, r)

	type note struct {
		id  string
		rev int64
	}
	notes := make(chan note, commits)
	local := make(chan store.Change, commits)
	type watcher struct {
		id   string
		sub  *broker.Subscription
		have int64 // the snapshot's revision, then the last revision taken
		from int64
		err  error
	}
	var (
		mu       sync.Mutex
		watchers []*watcher
		wg       sync.WaitGroup
	)
	wg.Go(func() {
		for n := range notes {
			r.notified(n.id, n.rev)
			runtime.Gosched()
		}
	})
	wg.Go(func() {
		for c := range local {
			r.OnCommit([]store.Change{c})
			runtime.Gosched()
		}
	})
	rng := rand.New(rand.NewPCG(seed, 1))
	for i := range commits {
		id := ids[rng.IntN(len(ids))]
		c := fs.commit(id)
		if rng.IntN(2) == 0 {
			local <- c
		}
		notes <- note{id, c.Request.GetRevision()}
		if rng.IntN(20) == 0 || i == 0 {
			wid := ids[rng.IntN(len(ids))]
			w := &watcher{id: wid, sub: b.Subscribe(wid)}
			fs.mu.Lock()
			w.have = int64(len(fs.log[wid]))
			fs.mu.Unlock()
			w.from = w.have
			mu.Lock()
			watchers = append(watchers, w)
			mu.Unlock()
		}
		if rng.IntN(4) == 0 {
			runtime.Gosched()
		}
	}
	close(notes)
	close(local)
	wg.Wait()

	for _, w := range watchers {
		final := int64(len(fs.log[w.id]))
		deadline := time.After(10 * time.Second) // not a verdict: only ends a hang
		for w.have < final {
			select {
			case <-w.sub.Ready():
			case <-deadline:
				t.Fatalf("watcher of %s from revision %d: stuck at %d of %d", w.id, w.from, w.have, final)
			}
			changes, dropped := w.sub.Next()
			if dropped != 0 {
				t.Fatalf("watcher of %s: dropped up to %d", w.id, dropped)
			}
			for _, c := range changes {
				rev := c.Request.GetRevision()
				if rev <= w.have {
					continue
				}
				var got, want []string
				for _, e := range c.EventsAfter(w.have) {
					got = append(got, e.GetEventId())
				}
				for k := w.have + 1; k <= rev; k++ {
					want = append(want, fmt.Sprintf("%s-%d", w.id, k))
				}
				if !slices.Equal(got, want) {
					t.Fatalf("watcher of %s from revision %d: the change to %d after %d carried %v, want %v", w.id, w.from, rev, w.have, got, want)
				}
				w.have = rev
			}
		}
		w.sub.Close()
	}
	t.Logf("%d watchers", len(watchers))
}

// TestStartAfterStop: a second Start fails as what is the case, a Start
// after Stop as a Relay stopped, which does not start again, started or
// not before. Both said "already started", which of a Relay stopped
// before its Start was false.
func TestStartAfterStop(t *testing.T) {
	t.Parallel()
	relay := func() *Relay {
		return New(unreachable{newFakeStore()}, broker.New(0), Options{MinBackoff: time.Millisecond, MaxBackoff: 10 * time.Millisecond})
	}
	started := relay()
	if err := started.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	if err := started.Start(t.Context()); err == nil || !strings.Contains(err.Error(), "already started") {
		t.Errorf("second Start: %v, want it to say the relay has already started", err)
	}
	started.Stop()
	never := relay()
	never.Stop()
	for name, r := range map[string]*Relay{"Start, Stop": started, "Stop": never} {
		if err := r.Start(t.Context()); err == nil || !strings.Contains(err.Error(), "stopped") || strings.Contains(err.Error(), "already started") {
			t.Errorf("Start after %s: %v, want it to say the relay was stopped", name, err)
		}
	}
}
