package storetest

import (
	"context"
	"fmt"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	eventsv1 "github.com/otpless-events/otpless-events/gen/otpless/events/v1"
	"github.com/otpless-events/otpless-events/server/store"
)

func testCommitNew(t *testing.T, su suite) {
	s := su.open(t)
	e1 := delivery("r1", "e1", "WHATSAPP", "SENT", at(0))
	e2 := delivery("r1", "e2", "WHATSAPP", "DELIVERED", at(10))
	wh := hook(at(100), e1, e2)
	before := []*eventsv1.Event{proto.CloneOf(e1), proto.CloneOf(e2)}

	results, changes := commit(t, s, wh)
	checkResults(t, results, [][]bool{{false, false}}, [][]int64{{1, 1}})

	want := snapshot("r1", []*eventsv1.Event{e1, e2}, 1, at(100))
	if len(changes) != 1 {
		t.Fatalf("got %d changes, want 1", len(changes))
	}
	equalProto(t, "Change.Request", changes[0].Request, want)
	equalEvents(t, "Change.Events", changes[0].Events, []*eventsv1.Event{e1, e2})
	equalProto(t, "GetRequest", get(t, s, "r1"), want)
	equalEvents(t, "the batch after Commit", wh.Events, before)
}

func testCommitRetryIsDuplicate(t *testing.T, su suite) {
	s := su.open(t)
	e1 := delivery("r1", "e1", "SMS", "SENT", at(0))
	e2 := delivery("r1", "e2", "SMS", "FAILED", at(5))
	e2.Error = &eventsv1.ErrorInfo{Code: "033", Message: "opt-in required"}
	first := hook(at(100), e1, e2)
	commit(t, s, first)
	want := get(t, s, "r1")

	// OTPLESS retries the same body later: the same events, received again.
	r1, r2 := proto.CloneOf(e1), proto.CloneOf(e2)
	r1.ReceiveTime, r2.ReceiveTime = nil, nil
	results, changes := commit(t, s, hookBody(string(first.Body), at(200), r1, r2))
	checkResults(t, results, [][]bool{{true, true}}, [][]int64{{1, 1}})
	if len(changes) != 0 {
		t.Errorf("retry: got %d changes, want none", len(changes))
	}
	equalProto(t, "GetRequest after the retry", get(t, s, "r1"), want)
	equalEvents(t, "ListEvents after the retry (the first copies)", listAll(t, s, "r1", 10),
		[]*eventsv1.Event{withBody(e1, first.Body), withBody(e2, first.Body)})
}

// A retry whose events are all stored is answered as duplicates even when
// one of its request's stored events no longer decodes: the request is not
// folded, so nothing needs decoding, and neither the retry nor the webhooks
// sharing its batch are refused as damaged.
func testRetryToDamagedEvent(t *testing.T, su suite) {
	if su.opts.Damage == nil {
		t.Skip("the backend gives no Options.Damage")
	}
	s := su.open(t)
	first := hook(at(100), delivery("r1", "e1", "SMS", "SENT", at(0)), delivery("r1", "e2", "SMS", "DELIVERED", at(5)))
	commit(t, s, first)
	su.opts.Damage(t, s, "r1", "e1")
	results, changes := commit(t, s, first, hook(at(200), delivery("r2", "e1", "SMS", "SENT", at(150))))
	checkResults(t, results, [][]bool{{true, true}, {false}}, [][]int64{{1, 1}, {1}})
	if len(changes) != 1 || changes[0].Request.GetRequestId() != "r2" {
		t.Errorf("got %d changes, want r2's alone", len(changes))
	}
}

func testDuplicateInOneBatch(t *testing.T, su suite) {
	s := su.open(t)
	e1 := delivery("r1", "e1", "WHATSAPP", "SENT", at(0))
	e1copy := proto.CloneOf(e1)
	e2 := delivery("r1", "e2", "WHATSAPP", "READ", at(30))
	first := hook(at(100), e1)
	batch := []store.Webhook{
		first,
		hook(at(101), e1copy, e2),
		first, // the same body twice in one batch
	}
	results, changes := commit(t, s, batch...)
	checkResults(t, results,
		[][]bool{{false}, {true, false}, {true}},
		[][]int64{{1}, {1, 1}, {1}})
	if len(changes) != 1 {
		t.Fatalf("got %d changes, want 1", len(changes))
	}
	equalEvents(t, "Change.Events", changes[0].Events, []*eventsv1.Event{e1, e2})
	want := snapshot("r1", []*eventsv1.Event{e1, e2}, 1, at(101))
	equalProto(t, "Change.Request", changes[0].Request, want)
	equalProto(t, "GetRequest", get(t, s, "r1"), want)
	// e1 keeps the body it first came with.
	equalEvents(t, "ListEvents", listAll(t, s, "r1", 10),
		[]*eventsv1.Event{withBody(e1, first.Body), withBody(e2, batch[1].Body)})
}

func testOneRequestManyWebhooks(t *testing.T, su suite) {
	s := su.open(t)
	e0 := auth("r1", "e0", "INITIATED", at(0))
	commit(t, s, hook(at(50), e0))

	e1 := delivery("r1", "e1", "WHATSAPP", "SENT", at(10))
	e2 := delivery("r1", "e2", "WHATSAPP", "DELIVERED", at(20))
	e3 := delivery("r1", "e3", "WHATSAPP", "READ", at(30))
	// Received out of order: the batch's latest is the middle one.
	results, changes := commit(t, s, hook(at(300), e1), hook(at(900), e2), hook(at(400), e3, e0))
	checkResults(t, results,
		[][]bool{{false}, {false}, {false, true}},
		[][]int64{{2}, {2}, {2, 2}})
	if len(changes) != 1 {
		t.Fatalf("got %d changes, want 1", len(changes))
	}
	want := snapshot("r1", []*eventsv1.Event{e0, e1, e2, e3}, 2, at(900))
	equalProto(t, "Change.Request", changes[0].Request, want)
	equalEvents(t, "Change.Events", changes[0].Events, []*eventsv1.Event{e1, e2, e3})
	equalProto(t, "GetRequest", get(t, s, "r1"), want)
}

func testSeveralRequests(t *testing.T, su suite) {
	s := su.open(t)
	a1 := delivery("ra", "a1", "SMS", "SENT", at(0))
	b1 := delivery("rb", "b1", "EMAIL", "SENT", at(1))
	// One INITIATED body naming a phone and an email request.
	a2 := auth("ra", "a2", "INITIATED", at(2))
	b2 := auth("rb", "b2", "INITIATED", at(2))
	c1 := system("rc", "c1", "UNREACHABLE", at(3))
	batch := []store.Webhook{hook(at(10), a1), hook(at(11), b1), hook(at(12), a2, b2), hook(at(13), c1)}

	results, changes := commit(t, s, batch...)
	checkResults(t, results,
		[][]bool{{false}, {false}, {false, false}, {false}},
		[][]int64{{1}, {1}, {1, 1}, {1}})
	wantChanges := []store.Change{
		{Request: snapshot("ra", []*eventsv1.Event{a1, a2}, 1, at(13)), Events: []*eventsv1.Event{a1, a2}},
		{Request: snapshot("rb", []*eventsv1.Event{b1, b2}, 1, at(13)), Events: []*eventsv1.Event{b1, b2}},
		{Request: snapshot("rc", []*eventsv1.Event{c1}, 1, at(13)), Events: []*eventsv1.Event{c1}},
	}
	if len(changes) != len(wantChanges) {
		t.Fatalf("got %d changes, want %d", len(changes), len(wantChanges))
	}
	for i, want := range wantChanges {
		equalProto(t, "Change.Request", changes[i].Request, want.Request)
		equalEvents(t, "Change.Events", changes[i].Events, want.Events)
		equalProto(t, "GetRequest", get(t, s, want.Request.GetRequestId()), want.Request)
	}
	equalEvents(t, "ListEvents(ra)", listAll(t, s, "ra", 10),
		[]*eventsv1.Event{withBody(a1, batch[0].Body), withBody(a2, batch[2].Body)})
	equalEvents(t, "ListEvents(rb)", listAll(t, s, "rb", 10),
		[]*eventsv1.Event{withBody(b1, batch[1].Body), withBody(b2, batch[2].Body)})
}

func testEventsWithoutRequestID(t *testing.T, su suite) {
	s := su.open(t)
	u := system("", "u1", "UNREACHABLE", at(0))
	results, changes := commit(t, s, hook(at(10), u))
	checkResults(t, results, [][]bool{{false}}, [][]int64{{0}})
	if len(changes) != 0 {
		t.Errorf("got %d changes, want none", len(changes))
	}

	// Stored: a retry is a duplicate; next to a request's event it changes
	// only that request.
	e1 := delivery("r1", "e1", "SMS", "SENT", at(1))
	results, changes = commit(t, s, hook(at(20), u, e1))
	checkResults(t, results, [][]bool{{true, false}}, [][]int64{{0, 1}})
	if len(changes) != 1 || changes[0].Request.GetRequestId() != "r1" {
		t.Errorf("got changes %v, want one of r1", changes)
	}

	_, err := s.GetRequest(context.Background(), "")
	wantErr(t, `GetRequest("")`, err, store.ErrNotFound)
	_, _, err = s.ListEvents(context.Background(), "", store.Page{Size: 10})
	wantErr(t, `ListEvents("")`, err, store.ErrNotFound)
}

// testCommitStoresNoRawBody: an event handed to Commit with RawBody set
// (which Webhook says it is not) is stored without it, as if it had none:
// the store keeps the body once, on the webhook. Neither its Change nor
// Export gives it back, ListEvents gives the webhook's body, and the
// caller's event is left as it was.
func testCommitStoresNoRawBody(t *testing.T, su suite) {
	s := su.open(t)
	e1 := delivery("r1", "e1", "SMS", "SENT", at(0))
	u1 := system("", "u1", "UNREACHABLE", at(1))
	wh := hook(at(10), e1, u1)
	plain := []*eventsv1.Event{proto.CloneOf(e1), proto.CloneOf(u1)}
	e1.RawBody, u1.RawBody = "not the body", "not the body either"

	_, changes := commit(t, s, wh)
	if len(changes) != 1 {
		t.Fatalf("got %d changes, want 1", len(changes))
	}
	equalEvents(t, "Change.Events", changes[0].Events, plain[:1])
	equalEvents(t, "ListEvents", listAll(t, s, "r1", 10), []*eventsv1.Event{withBody(plain[0], wh.Body)})
	pages := exportAll(t, s, 10)
	if len(pages) != 1 {
		t.Fatalf("exported %d pages, want 1", len(pages))
	}
	checkExported(t, pages[0], store.Webhook{Body: wh.Body, Received: wh.Received, Events: plain})
	if e1.GetRawBody() != "not the body" {
		t.Errorf("the caller's event after Commit: RawBody %q, want it left as it was", e1.GetRawBody())
	}
}

func testEmptyBatch(t *testing.T, su suite) {
	s := su.open(t)
	results, changes, err := s.Commit(context.Background(), nil)
	if err != nil || len(results) != 0 || len(changes) != 0 {
		t.Errorf("Commit(nil) = %v, %v, %v; want nothing", results, changes, err)
	}
}

func testGetRequestNotFound(t *testing.T, su suite) {
	s := su.open(t)
	_, err := s.GetRequest(context.Background(), "nope")
	wantErr(t, "GetRequest on an empty store", err, store.ErrNotFound)
	commit(t, s, hook(at(0), delivery("r1", "e1", "SMS", "SENT", at(0))))
	_, err = s.GetRequest(context.Background(), "nope")
	wantErr(t, "GetRequest of an unknown request", err, store.ErrNotFound)
}

func testSnapshotIsFold(t *testing.T, su suite) {
	s := su.open(t)
	events := func(rid string) []*eventsv1.Event {
		return []*eventsv1.Event{
			auth(rid, "e-init", "INITIATED", at(0)),
			delivery(rid, "e-wa-sent", "WHATSAPP", "SENT", at(100)),
			delivery(rid, "e-wa-failed", "WHATSAPP", "FAILED", at(900)),
			fallback(rid, "e-fb", "WHATSAPP", "SMS", at(1000)),
			delivery(rid, "e-sms-read", "SMS", "READ", at(1500)),
			delivery(rid, "e-sms-sent", "SMS", "SENT", at(1200)),
			auth(rid, "e-success", "SUCCESS", at(2000)),
		}
	}
	// Two requests get the same events in different orders and batches.
	orders := map[string][][]int{
		"forward":  {{0}, {1, 2}, {3}, {4, 5}, {6}},
		"backward": {{6, 5}, {4}, {3, 2, 1}, {0}},
	}
	for rid, batches := range orders {
		evs := events(rid)
		var stored []*eventsv1.Event
		for i, b := range batches {
			var batch []store.Webhook
			for k, j := range b {
				batch = append(batch, hook(at(5000+100*i+k), evs[j]))
				stored = append(stored, evs[j])
			}
			// A retry of an earlier event rides along.
			batch = append(batch, hook(at(5000+100*i), stored[0]))
			commit(t, s, batch...)
			want := snapshot(rid, stored, int64(i+1), at(5000+100*i+len(b)-1))
			equalProto(t, fmt.Sprintf("%s after batch %d", rid, i), get(t, s, rid), want)
		}
	}
	fwd, bwd := get(t, s, "forward"), get(t, s, "backward")
	fwd.RequestId, fwd.Revision, fwd.UpdateTime = "", 0, nil
	bwd.RequestId, bwd.Revision, bwd.UpdateTime = "", 0, nil
	equalProto(t, "snapshots of the same events in another order", bwd, fwd)
}

func testRevisionIncreasesByOne(t *testing.T, su suite) {
	s := su.open(t)
	e := func(i int) *eventsv1.Event {
		return delivery("r1", "e"+string(rune('a'+i)), "SMS", "SENT", at(i))
	}
	var last int64
	for i := range 6 {
		results, changes := commit(t, s, hook(at(100+i), e(i)))
		rev := results[0].Events[0].Revision
		if rev != last+1 {
			t.Errorf("commit %d: revision %d, want %d", i, rev, last+1)
		}
		if len(changes) != 1 || changes[0].Request.GetRevision() != rev {
			t.Errorf("commit %d: changes %v, want one at revision %d", i, changes, rev)
		}
		last = rev
		// A retry in between changes nothing.
		results, _ = commit(t, s, hook(at(200+i), e(i)))
		if got := results[0].Events[0].Revision; got != last {
			t.Errorf("retry %d: revision %d, want %d", i, got, last)
		}
	}
	if got := get(t, s, "r1").GetRevision(); got != last {
		t.Errorf("GetRequest: revision %d, want %d", got, last)
	}
}

func testCanceledContext(t *testing.T, su suite) {
	s := su.open(t)
	e1 := delivery("r1", "e1", "SMS", "SENT", at(0))
	e2 := delivery("r1", "e2", "SMS", "DELIVERED", at(1))
	e3 := delivery("r2", "e3", "SMS", "SENT", at(2))
	commit(t, s, hook(at(10), e1))
	want := get(t, s, "r1")

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, _, err := s.Commit(ctx, []store.Webhook{hook(at(20), e2), hook(at(20), e3)})
	wantErr(t, "Commit with a canceled context", err, context.Canceled)

	equalProto(t, "GetRequest(r1)", get(t, s, "r1"), want)
	_, err = s.GetRequest(context.Background(), "r2")
	wantErr(t, "GetRequest(r2)", err, store.ErrNotFound)
	if got := listAll(t, s, "r1", 10); len(got) != 1 {
		t.Errorf("ListEvents(r1): got %q, want [e1]", ids(got))
	}
	// Nothing of it was stored: committing it again stores it.
	results, _ := commit(t, s, hook(at(30), e2), hook(at(30), e3))
	checkResults(t, results, [][]bool{{false}, {false}}, [][]int64{{2}, {1}})
}

func testClosed(t *testing.T, su suite) {
	s := su.open(t)
	commit(t, s, hook(at(0), delivery("r1", "e1", "SMS", "SENT", at(0))))
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	ctx := context.Background()
	_, _, err := s.Commit(ctx, []store.Webhook{hook(at(1), delivery("r1", "e2", "SMS", "READ", at(1)))})
	wantErr(t, "Commit after Close", err, store.ErrClosed)
	_, err = s.GetRequest(ctx, "r1")
	wantErr(t, "GetRequest after Close", err, store.ErrClosed)
	_, _, err = s.ListEvents(ctx, "r1", store.Page{Size: 10})
	wantErr(t, "ListEvents after Close", err, store.ErrClosed)
	wantErr(t, "Ping after Close", s.Ping(ctx), store.ErrClosed)
	if p, ok := s.(store.Purger); ok {
		_, err := p.PurgePII(ctx, t0.Add(time.Hour), nil)
		wantErr(t, "PurgePII after Close", err, store.ErrClosed)
	}
	if x, ok := s.(store.Exporter); ok {
		err := x.Export(ctx, 10, func([]store.Webhook) error { return nil })
		wantErr(t, "Export after Close", err, store.ErrClosed)
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close: %v, want nil", err)
	}
}

func testPing(t *testing.T, su suite) {
	s := su.open(t)
	if err := s.Ping(context.Background()); err != nil {
		t.Errorf("Ping: %v", err)
	}
}

func testPersistence(t *testing.T, su suite) {
	if su.opts.Reopen == nil {
		t.Skip("no Options.Reopen: the backend does not persist, or tests it itself")
	}
	s := su.open(t)
	e1 := delivery("r1", "e1", "WHATSAPP", "SENT", at(0))
	e2 := auth("r1", "e2", "SUCCESS", at(10))
	u := system("", "u1", "UNREACHABLE", at(5))
	wh1, wh2 := hook(at(100), e1, u), hook(at(200), e2)
	commit(t, s, wh1)
	commit(t, s, wh2)
	want := get(t, s, "r1")

	s = su.reopen(t, s)
	equalProto(t, "GetRequest after reopen", get(t, s, "r1"), want)
	equalEvents(t, "ListEvents after reopen", listAll(t, s, "r1", 1),
		[]*eventsv1.Event{withBody(e1, wh1.Body), withBody(e2, wh2.Body)})

	results, changes := commit(t, s, hook(at(300), e1, u, e2))
	checkResults(t, results, [][]bool{{true, true, true}}, [][]int64{{2, 0, 2}})
	if len(changes) != 0 {
		t.Errorf("retry after reopen: got %d changes, want none", len(changes))
	}
	e3 := delivery("r1", "e3", "WHATSAPP", "READ", at(20))
	results, _ = commit(t, s, hook(at(400), e3))
	checkResults(t, results, [][]bool{{false}}, [][]int64{{3}})
}
