package storetest

import (
	"context"
	"testing"
	"time"

	"github.com/otpless-events/otpless-events/server/store"
)

func testPurgePII(t *testing.T, su suite) {
	s := su.open(t)
	p, ok := s.(store.Purger)
	if !ok {
		t.Fatalf("%T does not implement store.Purger (declare an exception if it cannot)", s)
	}
	old := hookBody(`{"old":"+919800000000"}`, t0,
		auth("r1", "e-init", "INITIATED", at(0)),
		delivery("r1", "e-sent", "SMS", "SENT", at(100)))
	recent := hookBody(`{"recent":"+919800000000"}`, t0.Add(2*time.Hour),
		delivery("r1", "e-delivered", "SMS", "DELIVERED", at(200)))
	commit(t, s, old)
	commit(t, s, recent)
	before := get(t, s, "r1")

	n, err := p.PurgePII(context.Background(), t0.Add(time.Hour))
	if err != nil || n != 1 {
		t.Fatalf("PurgePII = %d, %v; want 1 webhook purged", n, err)
	}
	events := listAll(t, s, "r1", 10)
	if len(events) != 3 {
		t.Fatalf("%d events after purge, want all 3 kept", len(events))
	}
	for _, e := range events {
		purged := e.GetEventId() != "e-delivered"
		hasPII := e.GetRawBody() != "" || e.GetIdentity() != "" || e.GetPhone() != nil
		if purged == hasPII {
			t.Errorf("event %s after purge: raw body %q, identity %q, phone %v", e.GetEventId(), e.GetRawBody(), e.GetIdentity(), e.GetPhone())
		}
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
	equalProto(t, "snapshot after purge", after, snapshot("r1", events, before.GetRevision(), before.GetUpdateTime().AsTime()))

	if n, err := p.PurgePII(context.Background(), t0.Add(time.Hour)); err != nil || n != 0 {
		t.Fatalf("second PurgePII = %d, %v; want nothing left to purge", n, err)
	}
}
