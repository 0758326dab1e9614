// Package state folds a request's normalized events into its AuthRequest
// snapshot. The fold is pure and order-independent: the snapshot (all but
// revision and update_time) is a function of the set of distinct events.
//
// It imports only the generated API types.
package state

import (
	eventsv1 "github.com/otpless-events/otpless-events/gen/otpless/events/v1"
)

// Fold returns the snapshot of requestID made of events. Duplicates (same
// event_id) count once. Revision and UpdateTime are left for the caller.
// PLACEHOLDER: being replaced by the full fold.
func Fold(requestID string, events []*eventsv1.Event) *eventsv1.AuthRequest {
	seen := map[string]bool{}
	r := &eventsv1.AuthRequest{RequestId: requestID}
	for _, e := range events {
		if seen[e.GetEventId()] {
			continue
		}
		seen[e.GetEventId()] = true
		r.EventCount++
	}
	if r.EventCount > 0 {
		r.Status = eventsv1.RequestStatus_REQUEST_STATUS_IN_PROGRESS
	}
	return r
}
