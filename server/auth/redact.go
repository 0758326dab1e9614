package auth

import (
	"google.golang.org/protobuf/proto"

	eventsv1 "github.com/otpless-events/otpless-events/gen/otpless/events/v1"
)

// RedactRequest returns a copy of r without personal data: phone, email,
// delivery identities and the OTPLESS token. r itself is not changed (it may
// be shared with other watchers).
func RedactRequest(r *eventsv1.AuthRequest) *eventsv1.AuthRequest {
	if r == nil {
		return nil
	}
	c := proto.CloneOf(r)
	c.Phone, c.Email, c.Token = nil, "", ""
	for _, ch := range c.GetChannels() {
		ch.Identity = ""
	}
	return c
}

// RedactEvents returns copies of events without personal data and raw
// bodies.
func RedactEvents(events []*eventsv1.Event) []*eventsv1.Event {
	out := make([]*eventsv1.Event, len(events))
	for i, e := range events {
		c := proto.CloneOf(e)
		c.Phone, c.Email, c.Identity, c.Token, c.RawBody = nil, "", "", "", ""
		out[i] = c
	}
	return out
}
