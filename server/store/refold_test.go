package store_test

import (
	"fmt"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	eventsv1 "github.com/otpless-events/otpless-events/gen/otpless/events/v1"
	"github.com/otpless-events/otpless-events/internal/fixtures"
	"github.com/otpless-events/otpless-events/server/pii"
	"github.com/otpless-events/otpless-events/server/state"
	"github.com/otpless-events/otpless-events/server/store"
)

// TestRefoldOfPurgedEventsIsNoChange: whichever of a request's events
// retention strips of personal data, the refold of the snapshot the fold
// made of them keeps its revision and update time, as Refold promises (a
// purge is not a change watchers follow). Every subset of every scenario's
// requests is stripped, with a failure whose only error text is its
// message (which stripping removes whole) added to each.
func TestRefoldOfPurgedEventsIsNoChange(t *testing.T) {
	t.Parallel()
	made := timestamppb.New(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC))
	later := time.Date(2026, 2, 2, 3, 4, 5, 0, time.UTC)
	for _, sc := range fixtures.Scenarios(t) {
		byRequest := map[string][]*eventsv1.Event{}
		var ids []string
		for _, body := range sc.Bodies {
			for _, e := range fixtures.Events(t, body) {
				if byRequest[e.GetRequestId()] == nil {
					ids = append(ids, e.GetRequestId())
				}
				byRequest[e.GetRequestId()] = append(byRequest[e.GetRequestId()], e)
			}
		}
		for _, id := range ids {
			failed := fmt.Appendf(nil, `{"data":{"requestId":%q,"status":"FAILED","channel":"EMAIL","errorMessage":"mailbox of 919812345678 full"},"eventType":"DLR","timestamp":1764153500000}`, id)
			events := append(byRequest[id], fixtures.Events(t, failed)...)
			if len(events) > 12 {
				t.Fatalf("%s: %d events of %s, too many to strip every subset of", sc.Name, len(events), id)
			}
			old := state.Fold(id, events)
			old.Revision, old.UpdateTime = 7, made
			for mask := range 1 << len(events) {
				purged := make([]*eventsv1.Event, len(events))
				for i, e := range events {
					purged[i] = proto.CloneOf(e)
					if mask&(1<<i) != 0 {
						pii.StripEvent(purged[i])
					}
				}
				snap := store.Refold(id, old, purged, later)
				if snap.GetRevision() != old.GetRevision() || !proto.Equal(snap.GetUpdateTime(), made) {
					t.Fatalf("%s, request %s, events %b stripped: refold at revision %d, %v; want %d, %v\n old: %v\nrefold: %v",
						sc.Name, id, mask, snap.GetRevision(), snap.GetUpdateTime().AsTime(), old.GetRevision(), made.AsTime(), old, snap)
				}
			}
		}
	}
}
