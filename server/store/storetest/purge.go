package storetest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	eventsv1 "github.com/otpless-events/otpless-events/gen/otpless/events/v1"
	"github.com/otpless-events/otpless-events/server/store"
)

func testPurgePII(t *testing.T, su suite) {
	s := su.open(t)
	p, ok := s.(store.Purger)
	if !ok {
		t.Fatalf("%T does not implement store.Purger (declare an exception if it cannot)", s)
	}
	failed := delivery("r1", "e-failed", "WHATSAPP", "FAILED", at(50))
	failed.Error = &eventsv1.ErrorInfo{Code: "033", Message: "+919800000000 not opted in"}
	old := hookBody(`{"old":"+919800000000"}`, t0,
		auth("r1", "e-init", "INITIATED", at(0)), failed,
		delivery("r1", "e-sent", "SMS", "SENT", at(100)))
	recent := hookBody(`{"recent":"+919800000000"}`, t0.Add(2*time.Hour),
		delivery("r1", "e-delivered", "SMS", "DELIVERED", at(200)))
	commit(t, s, old)
	commit(t, s, recent)
	before := get(t, s, "r1")

	var changed []store.Change
	n, err := p.PurgePII(context.Background(), t0.Add(time.Hour), func(c []store.Change) { changed = append(changed, c...) })
	if err != nil || n != 1 {
		t.Fatalf("PurgePII = %d, %v; want 1 webhook purged", n, err)
	}
	if len(changed) != 0 {
		t.Errorf("a purge of personal data only reported changes %v; want none", changed)
	}
	events := checkAfterPurge(t, s, "r1", before, 4, func(e *eventsv1.Event) bool { return e.GetEventId() != "e-delivered" })
	for _, e := range events {
		if e.GetStatus() == "" || e.GetEventTime() == nil {
			t.Errorf("event %s lost its status history: %v", e.GetEventId(), e)
		}
	}
	after := get(t, s, "r1")
	if after.GetRevision() != before.GetRevision() || after.GetStatus() != before.GetStatus() {
		t.Errorf("purge changed revision or status: %v -> %v", before, after)
	}
	if after.GetPhone() != nil {
		t.Errorf("snapshot keeps the phone of a purged event: %v", after.GetPhone())
	}
	if f := after.GetFailures(); len(f) != 1 || f[0].GetError().GetCode() != "033" || f[0].GetError().GetMessage() != "" {
		t.Errorf("snapshot's failures after the purge: %v; want one of code 033, without its message", f)
	}
	checkNothingLeft(t, p, t0.Add(time.Hour))
}

// A snapshot an earlier build's fold made, which the purge's refold
// changes beyond the personal data it removes: that is a change, at the
// next revision, and the commit after it takes the one after that.
func testPurgePIIRefoldsAnEarlierFold(t *testing.T, su suite) {
	if su.opts.SetSnapshot == nil {
		t.Skip("the backend gives no Options.SetSnapshot")
	}
	s := su.open(t)
	p := s.(store.Purger)
	commit(t, s, hookBody(`{"old":"+919800000000"}`, t0, delivery("r1", "e-sent", "SMS", "SENT", at(0))))
	before := get(t, s, "r1")
	earlier := proto.CloneOf(before)
	earlier.ActiveChannel = "WHATSAPP" // what another fold could have made of it
	su.opts.SetSnapshot(t, s, earlier)

	var changed []store.Change
	if n, err := p.PurgePII(context.Background(), t0.Add(time.Hour), func(c []store.Change) { changed = append(changed, c...) }); err != nil || n != 1 {
		t.Fatalf("PurgePII = %d, %v; want 1 webhook purged", n, err)
	}
	after := get(t, s, "r1")
	if len(changed) != 1 || !changed[0].Refold || len(changed[0].Events) != 0 || !proto.Equal(changed[0].Request, after) {
		t.Errorf("the purge reported changes %v; want one, a refold without events, of the snapshot stored %v", changed, after)
	}
	if after.GetRevision() != before.GetRevision()+1 || after.GetActiveChannel() != "SMS" || !after.GetUpdateTime().AsTime().After(before.GetUpdateTime().AsTime()) {
		t.Errorf("after the purge refolded an earlier fold's snapshot: revision %d, active %s, updated %v; want revision %d, SMS, later than %v",
			after.GetRevision(), after.GetActiveChannel(), after.GetUpdateTime().AsTime(), before.GetRevision()+1, before.GetUpdateTime().AsTime())
	}
	_, changes := commit(t, s, hookBody(`{}`, t0.Add(2*time.Hour), delivery("r1", "e-delivered", "SMS", "DELIVERED", at(100))))
	if len(changes) != 1 || changes[0].Request.GetRevision() != before.GetRevision()+2 || get(t, s, "r1").GetRevision() != before.GetRevision()+2 {
		t.Errorf("the commit after the purge: changes %v; want the request at revision %d", changes, before.GetRevision()+2)
	}
}

// Many requests whose webhooks are interleaved in time, more than one
// purge transaction holds: every webhook before the cutoff is purged once,
// exactly those, whichever way a backend groups them, and every snapshot
// is the fold of what is left.
func testPurgePIIMany(t *testing.T, su suite) {
	s := su.open(t)
	p := s.(store.Purger)
	const requests, steps = 90, 4 // 360 webhooks: step k of every request, then step k+1
	cutoff := t0.Add(time.Duration(3*requests) * time.Second)
	var due int
	for k := range steps {
		for r := range requests {
			received := t0.Add(time.Duration(k*requests+r) * time.Second)
			id := fmt.Sprintf("r%02d", r)
			e := delivery(id, fmt.Sprintf("e%d", k), "SMS", "SENT", received)
			if k == 0 {
				e = auth(id, "e0", "INITIATED", received)
			}
			commit(t, s, hookBody(fmt.Sprintf(`{"n":"+9198%08d"}`, k*requests+r), received, e))
			if received.Before(cutoff) {
				due++
			}
		}
	}
	before := map[string]*eventsv1.AuthRequest{}
	for r := range requests {
		id := fmt.Sprintf("r%02d", r)
		before[id] = get(t, s, id)
	}

	n, err := p.PurgePII(context.Background(), cutoff, nil)
	if err != nil || n != due {
		t.Fatalf("PurgePII = %d, %v; want the %d webhooks before the cutoff", n, err, due)
	}
	for r := range requests {
		id := fmt.Sprintf("r%02d", r)
		checkAfterPurge(t, s, id, before[id], steps, func(e *eventsv1.Event) bool { return e.GetReceiveTime().AsTime().Before(cutoff) })
	}
	checkNothingLeft(t, p, cutoff)
}

// A webhook whose events belong to two requests (and to none): purging it
// strips its events in both requests, each snapshot refolded once.
func testPurgePIIWebhookOfTwoRequests(t *testing.T, su suite) {
	s := su.open(t)
	p := s.(store.Purger)
	unreachable := system("", "u1", "UNREACHABLE", at(0))
	unreachable.Identity = "+919800000000"
	old := hookBody(`{"both":"+919800000000"}`, t0,
		auth("r1", "e-init", "INITIATED", at(0)),
		auth("r2", "e-init", "INITIATED", at(0)),
		unreachable)
	commit(t, s, old)
	commit(t, s, hookBody(`{"r1":"+919800000000"}`, t0.Add(2*time.Hour), delivery("r1", "e-sent", "SMS", "SENT", at(100))))
	commit(t, s, hookBody(`{"r2":"+919800000000"}`, t0.Add(2*time.Hour), delivery("r2", "e-sent", "SMS", "SENT", at(100))))
	before := map[string]*eventsv1.AuthRequest{"r1": get(t, s, "r1"), "r2": get(t, s, "r2")}

	if n, err := p.PurgePII(context.Background(), t0.Add(time.Hour), nil); err != nil || n != 1 {
		t.Fatalf("PurgePII = %d, %v; want 1 webhook purged", n, err)
	}
	for _, id := range []string{"r1", "r2"} {
		checkAfterPurge(t, s, id, before[id], 2, func(e *eventsv1.Event) bool { return e.GetEventId() == "e-init" })
	}
	checkNothingLeft(t, p, t0.Add(time.Hour))
	// The event of no request lost its personal data too (only an export
	// shows it).
	if _, ok := s.(store.Exporter); ok {
		for _, wh := range slices.Concat(exportAll(t, s, 10)...) {
			for _, e := range wh.Events {
				checkPurged(t, e, e.GetEventId() != "e-sent")
			}
		}
	}
}

// checkAfterPurge checks request id after a purge and returns its events:
// all want of them are kept, those purged says lost their personal data and
// the others kept it, and its snapshot is the fold of what is left, with the
// revision and update time it had before.
func checkAfterPurge(t *testing.T, s store.Store, id string, before *eventsv1.AuthRequest, want int, purged func(*eventsv1.Event) bool) []*eventsv1.Event {
	t.Helper()
	events := listAll(t, s, id, 10)
	if len(events) != want {
		t.Fatalf("%s: %d events after purge, want all %d kept", id, len(events), want)
	}
	for _, e := range events {
		checkPurged(t, e, purged(e))
	}
	equalProto(t, id+" after purge", get(t, s, id), snapshot(id, events, before.GetRevision(), before.GetUpdateTime().AsTime()))
	return events
}

// checkNothingLeft fails the test unless a second purge to cutoff finds
// nothing to purge.
func checkNothingLeft(t *testing.T, p store.Purger, cutoff time.Time) {
	t.Helper()
	if n, err := p.PurgePII(context.Background(), cutoff, nil); err != nil || n != 0 {
		t.Fatalf("second PurgePII = %d, %v; want nothing left to purge", n, err)
	}
}

// checkPurged fails the test unless e has no personal data left when
// purged, and keeps it when not.
func checkPurged(t *testing.T, e *eventsv1.Event, purged bool) {
	t.Helper()
	hasPII := e.GetRawBody() != "" || e.GetIdentity() != "" || e.GetPhone() != nil || e.GetError().GetMessage() != ""
	if purged == hasPII {
		t.Errorf("%s/%s (received %v, purged %t): raw body %q, identity %q, phone %v",
			e.GetRequestId(), e.GetEventId(), e.GetReceiveTime().AsTime(), purged, e.GetRawBody(), e.GetIdentity(), e.GetPhone())
	}
}

// Stored data that does not decode cannot be stripped: a purge leaves the
// webhooks that brought data to it as they are, purges the others (more
// than one chunk of them), and fails as ErrDamaged, not as unavailable;
// the next run finds the same and nothing else. (Before, the oldest chunk
// failed on every run, and personal data after it was kept for good.)
func testPurgePIIAroundDamagedData(t *testing.T, su suite) {
	if su.opts.Damage == nil {
		t.Skip("the backend gives no Options.Damage")
	}
	for _, tc := range []struct{ name, requestID, eventID string }{
		{"snapshot", "r1", ""},
		{"event", "r1", "e1"},
		{"event of no request", "", "u1"},
		{"event not due, met by the refold", "r1", "e-later"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s := su.open(t)
			p := s.(store.Purger)
			// The damaged webhook first, then 600 others of 60 requests
			// (more than one purge transaction takes), the first of them
			// also naming r1.
			damaged := delivery("r1", "e1", "SMS", "SENT", at(0))
			if tc.requestID == "" {
				damaged = system("", "u1", "UNREACHABLE", at(0))
			}
			damaged.Identity = "+919800000000"
			whs := []store.Webhook{hook(at(0), damaged)}
			for i := range 600 {
				e := delivery(fmt.Sprintf("r%d", 2+i%60), fmt.Sprintf("e%d", i), "SMS", "SENT", at(1+i))
				e.Identity = "+919800000001"
				wh := hook(at(1+i), e)
				if i == 0 && tc.requestID != "" {
					r1 := delivery("r1", "e-other", "SMS", "DELIVERED", at(1))
					r1.Identity = "+919800000002"
					wh = hook(at(1+i), e, r1)
				}
				whs = append(whs, wh)
			}
			if tc.eventID == "e-later" {
				whs = append(whs, hook(t0.Add(2*time.Hour), delivery("r1", "e-later", "SMS", "READ", at(700))))
			}
			for batch := range slices.Chunk(whs, 100) {
				commit(t, s, batch...)
			}
			su.opts.Damage(t, s, tc.requestID, tc.eventID)

			cutoff := t0.Add(time.Hour)
			want := 599 // the first also names r1
			if tc.requestID == "" {
				want = 600
			}
			n, err := p.PurgePII(t.Context(), cutoff, nil)
			if n != want || !errors.Is(err, store.ErrDamaged) || errors.Is(err, store.ErrUnavailable) {
				t.Fatalf("PurgePII = %d, %v; want the %d webhooks not damaged purged, and ErrDamaged", n, err, want)
			}
			for i := range 60 {
				id := fmt.Sprintf("r%d", 2+i)
				events, _, err := s.ListEvents(t.Context(), id, store.Page{Size: 100})
				if err != nil {
					t.Fatal(err)
				}
				for _, e := range events {
					left := tc.requestID != "" && id == "r2" && e.GetEventId() == "e0"
					if left != (e.GetIdentity() != "" || e.GetRawBody() != "") {
						t.Errorf("%s/%s after the purge: identity %q, raw body %q", id, e.GetEventId(), e.GetIdentity(), e.GetRawBody())
					}
				}
			}
			if n, err := p.PurgePII(t.Context(), cutoff, nil); n != 0 || !errors.Is(err, store.ErrDamaged) {
				t.Errorf("PurgePII again = %d, %v; want 0 and ErrDamaged", n, err)
			}
		})
	}
}
