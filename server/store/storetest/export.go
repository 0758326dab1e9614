package storetest

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	eventsv1 "github.com/otpless-events/otpless-events/gen/otpless/events/v1"
	"github.com/otpless-events/otpless-events/server/store"
)

// exporter returns s as a store.Exporter, failing the test when it is not.
func exporter(t *testing.T, s store.Store) store.Exporter {
	t.Helper()
	x, ok := s.(store.Exporter)
	if !ok {
		t.Fatalf("%T does not implement store.Exporter (declare an exception if it cannot)", s)
	}
	return x
}

// exportAll returns every page Export gives, size webhooks a page, and
// checks their sizes.
func exportAll(t *testing.T, s store.Store, size int) [][]store.Webhook {
	t.Helper()
	var pages [][]store.Webhook
	err := exporter(t, s).Export(context.Background(), size, func(page []store.Webhook) error {
		if len(page) == 0 || len(page) > size {
			t.Errorf("Export(size %d): a page of %d webhooks", size, len(page))
		}
		pages = append(pages, page)
		return nil
	})
	if err != nil {
		t.Fatalf("Export(size %d): %v", size, err)
	}
	return pages
}

// checkExported fails the test unless got, one export's webhooks, are
// want in order: bodies, received times and events (in any order).
func checkExported(t *testing.T, got []store.Webhook, want ...store.Webhook) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("exported %d webhooks, want %d", len(got), len(want))
	}
	for i := range got {
		if string(got[i].Body) != string(want[i].Body) || !got[i].Received.Equal(want[i].Received) {
			t.Errorf("exported webhook %d: body %q received %v; want %q received %v",
				i, got[i].Body, got[i].Received, want[i].Body, want[i].Received)
		}
		equalEventSets(t, "exported webhook's events", got[i].Events, want[i].Events)
	}
}

// Export gives every webhook stored, in commit order, with the events it
// stored: a retry whose events were all stored before is no webhook of
// the store, and a webhook with a new and an old event brings the new one.
func testExport(t *testing.T, su suite) {
	s := su.open(t)
	if pages := exportAll(t, s, 10); len(pages) != 0 {
		t.Errorf("an empty store exported %d pages", len(pages))
	}
	first := hook(at(0), auth("r1", "init", "INITIATED", at(0)), auth("r2", "init", "INITIATED", at(0)),
		system("", "u1", "UNREACHABLE", at(0)))
	sent := hook(at(100), delivery("r1", "sent", "WHATSAPP", "SENT", at(100)))
	commit(t, s, first)
	commit(t, s, sent,
		hook(at(150), delivery("r2", "sent", "SMS", "SENT", at(150))),
		hook(at(160), delivery("r1", "sent", "WHATSAPP", "SENT", at(100)))) // a retry in the batch
	commit(t, s, hook(at(200), delivery("r1", "sent", "WHATSAPP", "SENT", at(100)))) // and one later
	read := delivery("r1", "read", "WHATSAPP", "READ", at(300))
	commit(t, s, hookBody(`{"read":1}`, at(300), read, delivery("r1", "sent", "WHATSAPP", "SENT", at(100))))

	want := []store.Webhook{first, sent, hook(at(150), delivery("r2", "sent", "SMS", "SENT", at(150))), hookBody(`{"read":1}`, at(300), read)}
	pages := exportAll(t, s, 2)
	if len(pages) != 2 {
		t.Errorf("4 webhooks exported 2 a page came in %d pages", len(pages))
	}
	checkExported(t, slices.Concat(pages...), want...)

	// A size that is not positive is a page of one.
	pages = nil
	if err := exporter(t, s).Export(context.Background(), 0, func(page []store.Webhook) error {
		pages = append(pages, page)
		return nil
	}); err != nil || len(pages) != len(want) {
		t.Errorf("Export(size 0) = %d pages, %v; want %d of one webhook", len(pages), err, len(want))
	}

	// An error from the page ends Export with it.
	errStop := errors.New("stop")
	calls := 0
	err := exporter(t, s).Export(context.Background(), 1, func([]store.Webhook) error { calls++; return errStop })
	if !errors.Is(err, errStop) || calls != 1 {
		t.Errorf("Export whose page fails: %v after %d pages; want the page's error after 1", err, calls)
	}
}

// Export reads every page from the snapshot it began with: a webhook
// committed while it runs, to a request it has exported or not, is left
// out.
func testExportSnapshot(t *testing.T, su suite) {
	s := su.open(t)
	for i := range 3 {
		commit(t, s, hook(at(i), delivery("r1", string(rune('a'+i)), "SMS", "SENT", at(i))))
	}
	var got []store.Webhook
	err := exporter(t, s).Export(context.Background(), 1, func(page []store.Webhook) error {
		if len(got) == 0 {
			commit(t, s, hook(at(10), delivery("r1", "later", "SMS", "DELIVERED", at(10))),
				hook(at(10), delivery("r2", "later", "SMS", "SENT", at(10))))
		}
		got = append(got, page...)
		return nil
	})
	if err != nil {
		t.Fatalf("Export: %v", err)
	}
	if len(got) != 3 {
		t.Errorf("Export while 2 webhooks were committed gave %d webhooks; want the 3 stored when it began", len(got))
	}
}

// A page of Export ends once its bodies reach store.ExportPageBytes.
func testExportPageBytes(t *testing.T, su suite) {
	s := su.open(t)
	big := strings.Repeat("x", store.ExportPageBytes/2+1)
	var want []store.Webhook
	for i := range 3 {
		wh := hookBody(big, at(i), delivery("r1", string(rune('a'+i)), "SMS", "SENT", at(i)))
		commit(t, s, wh)
		want = append(want, wh)
	}
	pages := exportAll(t, s, 10)
	if len(pages) != 2 || len(pages[0]) != 2 {
		t.Errorf("3 bodies of over half of ExportPageBytes came in pages of %v; want 2, 1", pageSizes(pages))
	}
	checkExported(t, slices.Concat(pages...), want...)
}

func pageSizes(pages [][]store.Webhook) []int {
	out := make([]int, len(pages))
	for i, p := range pages {
		out[i] = len(p)
	}
	return out
}

// A purged webhook is exported purged: no body, its events without
// personal data; the others as they are.
func testExportPurged(t *testing.T, su suite) {
	s := su.open(t)
	p, ok := s.(store.Purger)
	if !ok {
		t.Skip("the store does not purge")
	}
	commit(t, s, hookBody(`{"old":"+919800000000"}`, t0, auth("r1", "init", "INITIATED", at(0))))
	commit(t, s, hookBody(`{"new":"+919800000000"}`, t0.Add(2*time.Hour), delivery("r1", "sent", "SMS", "SENT", at(100))))
	if _, err := p.PurgePII(context.Background(), t0.Add(time.Hour), nil); err != nil {
		t.Fatal(err)
	}
	got := slices.Concat(exportAll(t, s, 10)...)
	if len(got) != 2 || len(got[0].Body) != 0 || string(got[1].Body) != `{"new":"+919800000000"}` {
		t.Fatalf("exported after a purge: %v", got)
	}
	for i, wh := range got {
		for _, e := range wh.Events {
			checkPurged(t, e, i == 0)
		}
	}
}

// Copy into an empty store gives every request the same state and events;
// a second Copy adds nothing; purged data stays purged, and the
// destination's retention purges the rest by their original received
// times.
func testCopy(t *testing.T, su suite) {
	from, to := su.open(t), su.open(t)
	var requests []string
	for r := range 3 {
		rid := string(rune('a' + r))
		requests = append(requests, rid)
		commit(t, from, hookBody(`{"init":"+919800000000"}`, at(r), auth(rid, "init", "INITIATED", at(r)), system("", "u"+rid, "UNREACHABLE", at(r))))
		commit(t, from,
			hook(t0.Add(2*time.Hour), delivery(rid, "sent", "WHATSAPP", "SENT", at(100))),
			hook(t0.Add(2*time.Hour), delivery(rid, "failed", "WHATSAPP", "FAILED", at(200))),
			hook(t0.Add(2*time.Hour), fallback(rid, "fallback", "WHATSAPP", "SMS", at(300))))
	}
	purger, purges := from.(store.Purger)
	if purges {
		if n, err := purger.PurgePII(context.Background(), t0.Add(time.Hour), nil); err != nil || n != 3 {
			t.Fatalf("PurgePII = %d, %v; want the 3 first webhooks", n, err)
		}
	}

	counter := &counted{Store: to}
	st, err := store.Copy(context.Background(), exporter(t, from), counter, nil)
	if want := (store.CopyStats{Webhooks: 12, Events: 15, Requests: 3}); err != nil || st != want {
		t.Fatalf("Copy = %+v, %v; want %+v", st, err, want)
	}
	// Each request's webhooks one by one: its first, received apart, and
	// the three received together, of one request.
	if counter.commits != 12 {
		t.Errorf("Copy made %d commits; want 12, one a webhook of a request", counter.commits)
	}
	CheckCopied(t, from, to, requests)
	// The source folded the three in one revision: a watcher resuming
	// after either of its revisions must get a fresh snapshot from the
	// destination, not be taken to have the destination's.
	for _, rid := range requests {
		if got, src := get(t, to, rid).GetRevision(), get(t, from, rid).GetRevision(); got != 4 || src != 2 {
			t.Errorf("%s: revision %d in the destination, %d in the source; want 4 (a webhook each) and 2", rid, got, src)
		}
	}
	before := map[string]*eventsv1.AuthRequest{}
	for _, rid := range requests {
		before[rid] = get(t, to, rid)
	}
	st, err = store.Copy(context.Background(), exporter(t, from), to, nil)
	if want := (store.CopyStats{Webhooks: 12, Duplicates: 15}); err != nil || st != want {
		t.Fatalf("Copy again = %+v, %v; want %+v", st, err, want)
	}
	for _, rid := range requests {
		equalProto(t, rid+" after a second copy", get(t, to, rid), before[rid])
	}
	if got, want := slices.Concat(exportAll(t, to, 100)...), slices.Concat(exportAll(t, from, 100)...); len(got) != len(want) {
		t.Errorf("the destination holds %d webhooks, the source %d", len(got), len(want))
	} else {
		checkExported(t, got, want...)
	}

	if !purges {
		return
	}
	p := to.(store.Purger)
	if n, err := p.PurgePII(context.Background(), t0.Add(time.Hour), nil); err != nil || n != 0 {
		t.Errorf("the destination's purge of what the source purged: %d, %v; want nothing to purge", n, err)
	}
	if n, err := p.PurgePII(context.Background(), t0.Add(3*time.Hour), nil); err != nil || n != 9 {
		t.Errorf("the destination's purge to 2 h after the copied webhooks were received: %d, %v; want those 9", n, err)
	}
}

// A copied snapshot's update time is at most store.CopyWindow after its
// request's last webhook, whatever the webhooks beside it in the source's
// order: one received an hour later, stored first, is not of its commit.
func testCopyUpdateTime(t *testing.T, su suite) {
	from, to := su.open(t), su.open(t)
	commit(t, from, hook(t0.Add(time.Hour), auth("later", "init", "INITIATED", at(0))))
	commit(t, from, hook(t0, auth("earlier", "init", "INITIATED", at(0))))
	if _, err := store.Copy(context.Background(), exporter(t, from), to, nil); err != nil {
		t.Fatal(err)
	}
	for rid, received := range map[string]time.Time{"later": t0.Add(time.Hour), "earlier": t0} {
		if got := get(t, to, rid).GetUpdateTime().AsTime(); got.Before(received) || !got.Before(received.Add(store.CopyWindow)) {
			t.Errorf("%s copied with update time %v; want within store.CopyWindow of its webhook, received %v", rid, got, received)
		}
	}
}

// A webhook's received time, which a backend may keep only to the
// millisecond or the microsecond, is exported whole (its events keep it):
// a copy dates a request's snapshot as its source does, to the
// nanosecond, whatever the source's backend. Copies from SQLite had the
// millisecond, from PostgreSQL the microsecond, both before the source's
// update time and their own events' receive time.
func testExportReceivedWhole(t *testing.T, su suite) {
	from, to := su.open(t), su.open(t)
	received := t0.Add(1234567891 * time.Nanosecond)
	wh := hook(received, auth("whole", "init", "INITIATED", at(0)), system("", "u1", "UNREACHABLE", at(0)))
	commit(t, from, wh)
	checkExported(t, slices.Concat(exportAll(t, from, 10)...), wh)
	if _, err := store.Copy(context.Background(), exporter(t, from), to, nil); err != nil {
		t.Fatal(err)
	}
	if got, want := get(t, to, "whole").GetUpdateTime().AsTime(), get(t, from, "whole").GetUpdateTime().AsTime(); !got.Equal(want) || !want.Equal(received) {
		t.Errorf("copied with update time %v, the source's %v; want both %v", got, want, received)
	}
}

// CheckCopied fails the test unless every request of requests is in to as
// it is in from: the same events (RawBody included), and the same
// snapshot but for revision and update time, which to gave its own
// commits of them.
func CheckCopied(t *testing.T, from, to store.Store, requests []string) {
	t.Helper()
	for _, rid := range requests {
		equalEvents(t, rid+" copied", listAll(t, to, rid, store.MaxPageSize), listAll(t, from, rid, store.MaxPageSize))
		want, got := proto.CloneOf(get(t, from, rid)), proto.CloneOf(get(t, to, rid))
		for _, r := range []*eventsv1.AuthRequest{want, got} {
			r.Revision, r.UpdateTime = 0, nil
		}
		equalProto(t, rid+" copied", got, want)
	}
}

// counted is a store that counts its commits and, once it has made
// cancelAt of them, cancels (as Ctrl-C would cancel db copy's context).
type counted struct {
	store.Store
	commits, cancelAt int
	cancel            context.CancelFunc
}

func (c *counted) Commit(ctx context.Context, batch []store.Webhook) ([]store.Result, []store.Change, error) {
	results, changes, err := c.Store.Commit(ctx, batch)
	if c.commits++; c.commits == c.cancelAt {
		c.cancel()
	}
	return results, changes, err
}

// A Copy canceled midway fails with the context's error and leaves the
// commits it made; run again, it copies the rest.
func testCopyInterrupted(t *testing.T, su suite) {
	from, to := su.open(t), su.open(t)
	var requests []string
	for r := range 4 {
		rid := string(rune('a' + r))
		requests = append(requests, rid)
		// A second apart: a commit each.
		commit(t, from, hook(t0.Add(time.Duration(r)*time.Second), auth(rid, "init", "INITIATED", at(r)), delivery(rid, "sent", "SMS", "SENT", at(r))))
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	st, err := store.Copy(ctx, exporter(t, from), &counted{Store: to, cancelAt: 2, cancel: cancel}, nil)
	if want := (store.CopyStats{Webhooks: 2, Events: 4, Requests: 2}); !errors.Is(err, context.Canceled) || st != want {
		t.Fatalf("Copy canceled after 2 commits = %+v, %v; want %+v, context canceled", st, err, want)
	}
	CheckCopied(t, from, to, requests[:2])
	if _, err := to.GetRequest(context.Background(), "c"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("a request of a commit after the cancel: %v; want none", err)
	}
	st, err = store.Copy(context.Background(), exporter(t, from), to, nil)
	if want := (store.CopyStats{Webhooks: 4, Events: 4, Duplicates: 4, Requests: 2}); err != nil || st != want {
		t.Fatalf("Copy again = %+v, %v; want %+v", st, err, want)
	}
	CheckCopied(t, from, to, requests)
}
