// Package pii knows which fields of the API's messages are personal data —
// phone numbers, email addresses, delivery identities, the OTPLESS token and
// raw webhook bodies — and removes them: from responses to callers that may
// not see them, and from stored data once its retention has passed.
//
// It imports only the generated API types and protobuf.
package pii

import (
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	eventsv1 "github.com/otpless-events/otpless-events/gen/otpless/events/v1"
)

// Request returns r without personal data. r is not changed: it may be
// shared, e.g. with other watchers. The copy shares r's messages that hold
// no personal data (times, fallbacks, failures), so neither r nor the copy
// may be changed afterwards.
func Request(r *eventsv1.AuthRequest) *eventsv1.AuthRequest {
	if r == nil {
		return nil
	}
	c := shallowCopy(r)
	c.Phone, c.Email, c.Token = nil, "", ""
	if len(r.Channels) > 0 {
		c.Channels = make([]*eventsv1.ChannelProgress, len(r.Channels))
		for i, ch := range r.Channels {
			c.Channels[i] = shallowCopy(ch)
			c.Channels[i].Identity = ""
		}
	}
	return c
}

// Events returns events without personal data or raw bodies. As with
// Request, the copies share the input's messages that hold none.
func Events(events []*eventsv1.Event) []*eventsv1.Event {
	out := make([]*eventsv1.Event, len(events))
	for i, e := range events {
		out[i] = shallowCopy(e)
		StripEvent(out[i])
	}
	return out
}

// shallowCopy returns a new message with m's fields: its message and list
// fields are m's own, not copies. Deep copies of the messages sent to
// watchers were half of the watch streams' allocations.
func shallowCopy[M proto.Message](m M) M {
	src := m.ProtoReflect()
	dst := src.New()
	src.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		dst.Set(fd, v)
		return true
	})
	return dst.Interface().(M)
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
