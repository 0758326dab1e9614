// Package pii knows which fields of the API's messages are personal data —
// phone numbers, email addresses, delivery identities, the OTPLESS token and
// raw webhook bodies — and removes them: from responses to callers that may
// not see them, and from stored data once its retention has passed.
//
// It imports only the generated API types and protobuf.
package pii

import (
	"google.golang.org/protobuf/proto"

	eventsv1 "github.com/otpless-events/otpless-events/gen/otpless/events/v1"
)

// Request returns a copy of r without personal data. r is not changed (it
// may be shared, e.g. with other watchers).
func Request(r *eventsv1.AuthRequest) *eventsv1.AuthRequest {
	if r == nil {
		return nil
	}
	c := proto.CloneOf(r)
	StripRequest(c)
	return c
}

// Events returns copies of events without personal data or raw bodies.
func Events(events []*eventsv1.Event) []*eventsv1.Event {
	out := make([]*eventsv1.Event, len(events))
	for i, e := range events {
		out[i] = proto.CloneOf(e)
		StripEvent(out[i])
	}
	return out
}

// StripRequest removes personal data from r in place.
func StripRequest(r *eventsv1.AuthRequest) {
	r.Phone, r.Email, r.Token = nil, "", ""
	for _, ch := range r.GetChannels() {
		ch.Identity = ""
	}
}

// StripEvent removes personal data and the raw body from e in place.
func StripEvent(e *eventsv1.Event) {
	e.Phone, e.Email, e.Identity, e.Token, e.RawBody = nil, "", "", "", ""
}
