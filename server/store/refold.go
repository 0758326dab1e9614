package store

import (
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	eventsv1 "github.com/otpless-events/otpless-events/gen/otpless/events/v1"
	"github.com/otpless-events/otpless-events/server/pii"
	"github.com/otpless-events/otpless-events/server/state"
)

// Refold is the snapshot of request id from events, which retention has
// just stripped of personal data, in place of old: at old's revision and
// update time, since removing personal data is not a change watchers
// follow, unless it differs from old in more than that (old was made by an
// earlier build's fold), which is a change: the next revision, at now.
func Refold(id string, old *eventsv1.AuthRequest, events []*eventsv1.Event, now time.Time) *eventsv1.AuthRequest {
	snap := state.Fold(id, events)
	snap.Revision, snap.UpdateTime = old.GetRevision(), old.GetUpdateTime()
	if !pii.SameState(old, snap) || snap.UpdateTime == nil {
		snap.Revision, snap.UpdateTime = old.GetRevision()+1, timestamppb.New(now)
	}
	return snap
}
