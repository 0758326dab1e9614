package sqlitestore_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	eventsv1 "github.com/otpless-events/otpless-events/gen/otpless/events/v1"
	"github.com/otpless-events/otpless-events/server/state"
	"github.com/otpless-events/otpless-events/server/store"
	"github.com/otpless-events/otpless-events/server/store/sqlitestore"
)

// checkIsFold fails the test unless every request's snapshot is the fold
// of its stored events.
func checkIsFold(t *testing.T, s store.Store, requestIDs ...string) {
	t.Helper()
	for _, rid := range requestIDs {
		got, err := s.GetRequest(t.Context(), rid)
		if err != nil {
			t.Fatalf("GetRequest(%s): %v", rid, err)
		}
		var events []*eventsv1.Event
		for tok := ""; ; {
			page, next, err := s.ListEvents(t.Context(), rid, store.Page{Size: store.MaxPageSize, Token: tok})
			if err != nil {
				t.Fatalf("ListEvents(%s): %v", rid, err)
			}
			events = append(events, page...)
			if tok = next; tok == "" {
				break
			}
		}
		want := state.Fold(rid, events)
		want.Revision, want.UpdateTime = got.GetRevision(), got.GetUpdateTime()
		if !proto.Equal(got, want) {
			t.Errorf("snapshot of %s is not the fold of its %d stored events:\n got %v\nwant %v", rid, len(events), got, want)
		}
	}
}

func openCached(t *testing.T, path string, cache int) *sqlitestore.Store {
	t.Helper()
	s, err := sqlitestore.Open(t.Context(), path, sqlitestore.WithEventCache(cache))
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func event(rid, eid string, kind eventsv1.EventKind, status, channel string, ms int) *eventsv1.Event {
	at := time.Date(2026, 11, 26, 10, 0, 0, 0, time.UTC).Add(time.Duration(ms) * time.Millisecond)
	return &eventsv1.Event{
		EventId: eid, RequestId: rid, Kind: kind, Status: status, Channel: channel,
		EventTime: timestamppb.New(at), ReceiveTime: timestamppb.New(at.Add(time.Second)),
	}
}

func hookOf(events ...*eventsv1.Event) store.Webhook {
	return store.Webhook{Body: []byte(`{"n":"` + events[0].GetEventId() + `"}`), Received: events[0].GetReceiveTime().AsTime(), Events: events}
}

// cachedWithOneEvent opens a store with an event cache and commits one
// event: r1's SENT by SMS, at revision 1.
func cachedWithOneEvent(t *testing.T) *sqlitestore.Store {
	t.Helper()
	s := openCached(t, filepath.Join(t.TempDir(), "events.db"), 16)
	if _, _, err := s.Commit(t.Context(), []store.Webhook{hookOf(event("r1", "e1", eventsv1.EventKind_EVENT_KIND_DELIVERY, "SENT", "SMS", 0))}); err != nil {
		t.Fatal(err)
	}
	return s
}

// TestCachePanicAfterCommit: a panic while the event cache is updated,
// after the transaction committed, does not fail the stored batch nor hold
// back its changes: the cache is emptied, and the next commits fold from
// the file.
func TestCachePanicAfterCommit(t *testing.T) {
	t.Parallel()
	s := cachedWithOneEvent(t)
	ctx := t.Context()
	const D = eventsv1.EventKind_EVENT_KIND_DELIVERY
	sqlitestore.SetAfterTxCommit(s, func() { panic("injected") })
	res, changes, err := s.Commit(ctx, []store.Webhook{hookOf(event("r1", "e2", D, "DELIVERED", "SMS", 100))})
	if err != nil || len(res) != 1 || res[0].Events[0].Revision != 2 || len(changes) != 1 {
		t.Fatalf("Commit with a panic after COMMIT: %+v, %v, %v; want it stored at revision 2 with its change", res, changes, err)
	}
	if n := sqlitestore.CachedRequests(s); n != 0 {
		t.Errorf("%d requests cached after the panic, want none", n)
	}
	sqlitestore.SetAfterTxCommit(s, nil)
	res, _, err = s.Commit(ctx, []store.Webhook{
		hookOf(event("r1", "e2", D, "DELIVERED", "SMS", 100)), // a retry
		hookOf(event("r1", "e3", D, "READ", "SMS", 200)),
	})
	if err != nil {
		t.Fatal(err)
	}
	if !res[0].Events[0].Duplicate || res[1].Events[0].Revision != 3 {
		t.Errorf("results %+v, want the retry a duplicate and the new event at revision 3", res)
	}
	checkIsFold(t, s, "r1")
}

// TestCacheFailedCommit: a commit that fails after its statements ran
// (here just before COMMIT) leaves no trace in the cache, and the commits
// after it still fold every stored event.
func TestCacheFailedCommit(t *testing.T) {
	t.Parallel()
	s := openCached(t, filepath.Join(t.TempDir(), "events.db"), 16)
	ctx := t.Context()
	const D = eventsv1.EventKind_EVENT_KIND_DELIVERY
	if _, _, err := s.Commit(ctx, []store.Webhook{
		hookOf(event("r1", "e1", D, "SENT", "SMS", 0)),
		hookOf(event("r2", "e2", D, "SENT", "WHATSAPP", 0)),
	}); err != nil {
		t.Fatal(err)
	}
	if n := sqlitestore.CachedRequests(s); n != 2 {
		t.Fatalf("%d requests cached after the first commit, want 2", n)
	}

	injected := errors.New("injected")
	sqlitestore.SetBeforeTxCommit(s, func() error { return injected })
	failed := []store.Webhook{
		hookOf(event("r1", "e3", D, "DELIVERED", "SMS", 100)),
		hookOf(event("r3", "e4", D, "SENT", "SMS", 100)),
	}
	if _, _, err := s.Commit(ctx, failed); !errors.Is(err, injected) || !errors.Is(err, store.ErrUnavailable) {
		t.Fatalf("Commit with a failing COMMIT: %v, want the injected error as ErrUnavailable", err)
	}
	if n := sqlitestore.CachedRequests(s); n != 0 {
		t.Errorf("%d requests cached after a failed commit, want none", n)
	}
	checkIsFold(t, s, "r1", "r2")
	if _, err := s.GetRequest(ctx, "r3"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("GetRequest(r3) after the failed commit: %v, want ErrNotFound", err)
	}

	sqlitestore.SetBeforeTxCommit(s, nil)
	res, changes, err := s.Commit(ctx, append(failed, hookOf(event("r1", "e1", D, "SENT", "SMS", 0))))
	if err != nil {
		t.Fatal(err)
	}
	want := [][]store.EventResult{{{Revision: 2}}, {{Revision: 1}}, {{Duplicate: true, Revision: 2}}}
	for i := range want {
		if !slices.Equal(res[i].Events, want[i]) {
			t.Errorf("result %d = %+v, want %+v", i, res[i].Events, want[i])
		}
	}
	if len(changes) != 2 || changes[0].Request.GetEventCount() != 2 || changes[1].Request.GetEventCount() != 1 {
		t.Errorf("changes %v, want r1 with 2 events and r3 with 1", changes)
	}
	checkIsFold(t, s, "r1", "r2", "r3")

	// From the cache now: a retry is a duplicate, a new event counts.
	res, _, err = s.Commit(ctx, []store.Webhook{
		hookOf(event("r1", "e3", D, "DELIVERED", "SMS", 100)),
		hookOf(event("r1", "e5", D, "READ", "SMS", 200)),
	})
	if err != nil {
		t.Fatal(err)
	}
	if !res[0].Events[0].Duplicate || res[1].Events[0].Duplicate || res[1].Events[0].Revision != 3 {
		t.Errorf("results %+v, want a duplicate and a new event at revision 3", res)
	}
	checkIsFold(t, s, "r1", "r2", "r3")
}

// TestCachePurge: after PurgePII the snapshot of a cached request stays the
// fold of its (now stripped) events, also after its next commit.
func TestCachePurge(t *testing.T) {
	t.Parallel()
	s := openCached(t, filepath.Join(t.TempDir(), "events.db"), 16)
	ctx := t.Context()
	old := event("r1", "e1", eventsv1.EventKind_EVENT_KIND_AUTH, "INITIATED", "", 0)
	old.Phone = &eventsv1.PhoneDetails{PhoneNumber: "9800000000", CountryCode: "+91"}
	old.AuthChannels = []string{"SMS"}
	sent := event("r1", "e2", eventsv1.EventKind_EVENT_KIND_DELIVERY, "SENT", "SMS", 100)
	sent.Identity = "919800000000"
	if _, _, err := s.Commit(ctx, []store.Webhook{hookOf(old), hookOf(sent)}); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.GetRequest(ctx, "r1"); got.GetPhone() == nil {
		t.Fatalf("snapshot before the purge has no phone: %v", got)
	}
	if n, err := s.PurgePII(ctx, old.GetReceiveTime().AsTime().Add(time.Hour), nil); err != nil || n != 2 {
		t.Fatalf("PurgePII = %d, %v; want 2", n, err)
	}
	checkIsFold(t, s, "r1")
	if _, _, err := s.Commit(ctx, []store.Webhook{hookOf(event("r1", "e3", eventsv1.EventKind_EVENT_KIND_DELIVERY, "DELIVERED", "SMS", 200))}); err != nil {
		t.Fatal(err)
	}
	got, err := s.GetRequest(ctx, "r1")
	if err != nil {
		t.Fatal(err)
	}
	if got.GetPhone() != nil || got.GetRevision() != 2 || got.GetEventCount() != 3 {
		t.Errorf("snapshot after purge and commit: %v; want no phone, revision 2, 3 events", got)
	}
	checkIsFold(t, s, "r1")
}

// TestCacheOtherWriter: a commit by another connection to the same file
// (another process, say) is seen by the next commit, not hidden by the
// cache.
func TestCacheOtherWriter(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "events.db")
	a, b := openCached(t, path, 16), openCached(t, path, 16)
	ctx := t.Context()
	const D = eventsv1.EventKind_EVENT_KIND_DELIVERY
	for i, s := range []*sqlitestore.Store{a, b, a} {
		e := event("r1", fmt.Sprintf("e%d", i), D, []string{"SENT", "DELIVERED", "READ"}[i], "SMS", 100*i)
		res, _, err := s.Commit(ctx, []store.Webhook{hookOf(e)})
		if err != nil {
			t.Fatal(err)
		}
		if r := res[0].Events[0]; r.Duplicate || r.Revision != int64(i+1) {
			t.Errorf("commit %d: %+v, want new at revision %d", i, r, i+1)
		}
	}
	checkIsFold(t, a, "r1")
	if got, _ := a.GetRequest(ctx, "r1"); got.GetEventCount() != 3 {
		t.Errorf("snapshot counts %d events, want 3", got.GetEventCount())
	}
	// And a retry through a of b's event is a duplicate.
	res, _, err := a.Commit(ctx, []store.Webhook{hookOf(event("r1", "e1", D, "DELIVERED", "SMS", 100))})
	if err != nil || !res[0].Events[0].Duplicate {
		t.Errorf("retry of the other writer's event: %v, %v; want a duplicate", res, err)
	}
}

// TestCacheMatchesUncached runs the same random traffic, with retries,
// failed commits, purges and a cache small enough to evict, through a
// store with the event cache and one without: results, changes and
// snapshots must be the same, and every snapshot the fold of its events.
func TestCacheMatchesUncached(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	cached := openCached(t, filepath.Join(dir, "cached.db"), 8)
	plain := openCached(t, filepath.Join(dir, "plain.db"), 0)
	ctx := t.Context()
	rng := rand.New(rand.NewPCG(3, 4))
	tr := newTraffic(5, 24)
	fail := false
	sqlitestore.SetBeforeTxCommit(cached, func() error {
		if fail {
			return errors.New("injected")
		}
		return nil
	})
	seen := map[string]bool{}
	var sent []store.Webhook
	for c := range 300 {
		var batch []store.Webhook
		for range 1 + rng.IntN(12) {
			var wh store.Webhook
			if len(sent) > 0 && rng.IntN(10) == 0 {
				wh = sent[rng.IntN(len(sent))] // a retry, perhaps long after
			} else {
				wh = tr.next()
			}
			batch = append(batch, wh)
			sent = append(sent, wh)
			seen[wh.Events[0].GetRequestId()] = true
		}
		if fail = rng.IntN(8) == 0; fail {
			if _, _, err := cached.Commit(ctx, batch); err == nil {
				t.Fatalf("commit %d: the injected failure did not fail it", c)
			}
			fail = false
		}
		gotRes, gotChanges, err := cached.Commit(ctx, batch)
		if err != nil {
			t.Fatal(err)
		}
		wantRes, wantChanges, err := plain.Commit(ctx, batch)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.EqualFunc(gotRes, wantRes, func(a, b store.Result) bool { return slices.Equal(a.Events, b.Events) }) {
			t.Fatalf("commit %d: results %+v, without the cache %+v", c, gotRes, wantRes)
		}
		if !slices.EqualFunc(gotChanges, wantChanges, func(a, b store.Change) bool {
			return proto.Equal(a.Request, b.Request) && slices.EqualFunc(a.Events, b.Events, func(x, y *eventsv1.Event) bool { return proto.Equal(x, y) })
		}) {
			t.Fatalf("commit %d: changes %v, without the cache %v", c, gotChanges, wantChanges)
		}
		if c%100 == 99 {
			cutoff := batch[0].Received.Add(-10 * time.Millisecond)
			n1, err1 := cached.PurgePII(ctx, cutoff, nil)
			n2, err2 := plain.PurgePII(ctx, cutoff, nil)
			if err1 != nil || err2 != nil || n1 != n2 || n1 == 0 {
				t.Fatalf("PurgePII = %d, %v and %d, %v; want the same, not 0", n1, err1, n2, err2)
			}
		}
	}
	for rid := range seen {
		got, err1 := cached.GetRequest(ctx, rid)
		want, err2 := plain.GetRequest(ctx, rid)
		if err1 != nil || err2 != nil || !proto.Equal(got, want) {
			t.Errorf("%s: snapshot %v, %v; without the cache %v, %v", rid, got, err1, want, err2)
		}
		checkIsFold(t, cached, rid)
	}
}

// TestCacheManyEvents: a request that outgrows the cache's bound per request
// is folded from the file from then on, and its snapshot stays the fold of
// all its events.
func TestCacheManyEvents(t *testing.T) {
	t.Parallel()
	s := openCached(t, filepath.Join(t.TempDir(), "events.db"), 16)
	const D = eventsv1.EventKind_EVENT_KIND_DELIVERY
	for i := range 45 { // past maxCachedEvents (32)
		e := event("r1", fmt.Sprintf("e%02d", i), D, "SENT", "SMS", 10*i)
		res, _, err := s.Commit(t.Context(), []store.Webhook{hookOf(e)})
		if err != nil {
			t.Fatal(err)
		}
		if r := res[0].Events[0]; r.Duplicate || r.Revision != int64(i+1) {
			t.Fatalf("event %d: %+v, want new at revision %d", i, r, i+1)
		}
		checkIsFold(t, s, "r1")
	}
	// A retry of an early event is still a duplicate.
	res, _, err := s.Commit(t.Context(), []store.Webhook{hookOf(event("r1", "e03", D, "SENT", "SMS", 30))})
	if err != nil || !res[0].Events[0].Duplicate {
		t.Errorf("retry of an early event: %v, %v; want a duplicate", res, err)
	}
}

// TestCommitPanic: a panic inside a commit's transaction passes on, with
// the transaction rolled back and the cache emptied: the next commit runs
// (an open transaction would hold the only writer connection) and sees
// nothing of the failed one.
func TestCommitPanic(t *testing.T) {
	t.Parallel()
	s := cachedWithOneEvent(t)
	ctx := t.Context()
	const D = eventsv1.EventKind_EVENT_KIND_DELIVERY
	sqlitestore.SetBeforeTxCommit(s, func() error { panic("kaboom") })
	func() {
		defer func() {
			if p := recover(); p != "kaboom" {
				t.Errorf("recovered %v, want the panic passed on", p)
			}
		}()
		s.Commit(ctx, []store.Webhook{hookOf(event("r1", "e2", D, "DELIVERED", "SMS", 100))})
	}()
	sqlitestore.SetBeforeTxCommit(s, nil)
	if n := sqlitestore.CachedRequests(s); n != 0 {
		t.Errorf("%d requests cached after the panic, want none", n)
	}
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	res, _, err := s.Commit(cctx, []store.Webhook{hookOf(event("r1", "e2", D, "DELIVERED", "SMS", 100))})
	if err != nil || res[0].Events[0].Duplicate || res[0].Events[0].Revision != 2 {
		t.Fatalf("commit after the panic: %+v, %v; want e2 new at revision 2", res, err)
	}
	checkIsFold(t, s, "r1")
}

// TestCacheLargeEvents: a request whose events are large (texts of up to
// 4 KiB each, which a sender may fill) is folded from the file rather than
// kept in the cache, which would otherwise hold up to its bound of
// requests at hundreds of KiB each; its snapshot stays the fold of its
// events, and a request of small events is still cached.
func TestCacheLargeEvents(t *testing.T) {
	t.Parallel()
	s := openCached(t, filepath.Join(t.TempDir(), "events.db"), 16)
	const A = eventsv1.EventKind_EVENT_KIND_AUTH
	big := event("big", "e1", A, "INITIATED", "", 0)
	for i := range 8 {
		big.AuthChannels = append(big.AuthChannels, fmt.Sprintf("%d%s", i, strings.Repeat("c", 4<<10-1)))
	}
	if _, _, err := s.Commit(t.Context(), []store.Webhook{hookOf(big), hookOf(event("small", "e1", A, "INITIATED", "", 0))}); err != nil {
		t.Fatal(err)
	}
	if n := sqlitestore.CachedRequests(s); n != 1 {
		t.Errorf("%d requests cached, want 1: the request of small events, not the one of %d bytes", n, proto.Size(big))
	}
	if _, _, err := s.Commit(t.Context(), []store.Webhook{hookOf(event("big", "e2", eventsv1.EventKind_EVENT_KIND_DELIVERY, "SENT", "SMS", 10))}); err != nil {
		t.Fatal(err)
	}
	if n := sqlitestore.CachedRequests(s); n != 1 {
		t.Errorf("%d requests cached after another event of the large one, want 1", n)
	}
	checkIsFold(t, s, "big", "small")
}

// TestCacheDropsDoneRequests: a request that becomes done (SUCCESS)
// leaves the event cache, which keeps requests in progress; the next
// commit to it folds from the file.
func TestCacheDropsDoneRequests(t *testing.T) {
	t.Parallel()
	s := cachedWithOneEvent(t)
	if n := sqlitestore.CachedRequests(s); n != 1 {
		t.Fatalf("%d requests cached after r1's first event, want 1", n)
	}
	if _, _, err := s.Commit(t.Context(), []store.Webhook{hookOf(event("r1", "e2", eventsv1.EventKind_EVENT_KIND_AUTH, "SUCCESS", "", 10))}); err != nil {
		t.Fatal(err)
	}
	if n := sqlitestore.CachedRequests(s); n != 0 {
		t.Errorf("%d requests cached once r1 succeeded, want 0", n)
	}
	if _, _, err := s.Commit(t.Context(), []store.Webhook{hookOf(event("r1", "e3", eventsv1.EventKind_EVENT_KIND_DELIVERY, "DELIVERED", "SMS", 20))}); err != nil {
		t.Fatal(err)
	}
	checkIsFold(t, s, "r1")
}

// TestCacheKeepsRequestsOnRetries: a commit that brings a request nothing
// new (a retry) leaves its entry in the event cache as it is.
func TestCacheKeepsRequestsOnRetries(t *testing.T) {
	t.Parallel()
	s := cachedWithOneEvent(t)
	res, _, err := s.Commit(t.Context(), []store.Webhook{
		hookOf(event("r1", "e1", eventsv1.EventKind_EVENT_KIND_DELIVERY, "SENT", "SMS", 0)),
		hookOf(event("r2", "e1", eventsv1.EventKind_EVENT_KIND_DELIVERY, "SENT", "SMS", 0)),
	})
	if err != nil {
		t.Fatal(err)
	}
	if !res[0].Events[0].Duplicate {
		t.Fatalf("retry of r1's event: %+v, want a duplicate", res[0].Events[0])
	}
	if n := sqlitestore.CachedRequests(s); n != 2 {
		t.Errorf("%d requests cached after a retry to r1 and r2's first event, want 2", n)
	}
}
