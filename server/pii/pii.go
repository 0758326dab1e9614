// Package pii knows which fields of the API's messages are personal data —
// phone numbers, email addresses, delivery identities, the OTPLESS token,
// raw webhook bodies, and the error messages delivery reports bring (free
// text, in which a vendor may name the number it failed to reach) — and
// removes them: from responses to callers that may not see them, and from
// stored data once its retention has passed.
//
// It imports only the generated API types and protobuf.
package pii

import (
	"slices"

	"google.golang.org/protobuf/proto"

	eventsv1 "github.com/otpless-events/otpless-events/gen/otpless/events/v1"
)

// Request returns r without personal data. r is not changed: it may be
// shared, e.g. with other watchers. The copy shares r's messages that hold
// no personal data (times, fallbacks, errors without a message), so neither
// r nor the copy may be changed afterwards.
//
// The copies here name every field but the personal ones: deep clones of
// the messages sent to watchers were half of the watch streams'
// allocations, and copying through protoreflect cost more CPU than
// cloning. TestCopiesMatchStrippedClones fails for a field added to the
// messages and not here.
func Request(r *eventsv1.AuthRequest) *eventsv1.AuthRequest {
	if r == nil {
		return nil
	}
	c := &eventsv1.AuthRequest{
		RequestId:       r.RequestId,
		Revision:        r.Revision,
		Status:          r.Status,
		AuthSessionId:   r.AuthSessionId,
		TraceId:         r.TraceId,
		ActiveChannel:   r.ActiveChannel,
		Fallbacks:       r.Fallbacks,
		Failures:        failures(r.Failures),
		AuthMethod:      r.AuthMethod,
		AuthChannels:    r.AuthChannels,
		SuccessTime:     r.SuccessTime,
		FirstEventTime:  r.FirstEventTime,
		LastEventTime:   r.LastEventTime,
		EventCount:      r.EventCount,
		UpdateTime:      r.UpdateTime,
		UnreachableTime: r.UnreachableTime,
	}
	if len(r.Channels) > 0 {
		c.Channels = make([]*eventsv1.ChannelProgress, len(r.Channels))
		for i, ch := range r.Channels {
			c.Channels[i] = &eventsv1.ChannelProgress{
				Channel:   ch.Channel,
				Status:    ch.Status,
				Sent:      ch.Sent,
				Delivered: ch.Delivered,
				Read:      ch.Read,
				Clicked:   ch.Clicked,
				Failed:    ch.Failed,
				Error:     errorInfo(ch.Error),
			}
		}
	}
	return c
}

// Events returns events without personal data or raw bodies. As with
// Request, the copies share the input's messages that hold none.
func Events(events []*eventsv1.Event) []*eventsv1.Event {
	out := make([]*eventsv1.Event, len(events))
	for i, e := range events {
		out[i] = &eventsv1.Event{
			EventId:       e.EventId,
			RequestId:     e.RequestId,
			Kind:          e.Kind,
			Status:        e.Status,
			Channel:       e.Channel,
			FromChannel:   e.FromChannel,
			ToChannel:     e.ToChannel,
			Error:         errorInfo(e.Error),
			AuthMethod:    e.AuthMethod,
			AuthChannels:  e.AuthChannels,
			AuthSessionId: e.AuthSessionId,
			TraceId:       e.TraceId,
			EventTime:     e.EventTime,
			ReceiveTime:   e.ReceiveTime,
			Format:        e.Format,
		}
	}
	return out
}

// failures returns fs with their errors' messages removed, fs itself when
// none has one.
func failures(fs []*eventsv1.Failure) []*eventsv1.Failure {
	if !slices.ContainsFunc(fs, func(f *eventsv1.Failure) bool { return f.GetError().GetMessage() != "" }) {
		return fs
	}
	out := make([]*eventsv1.Failure, len(fs))
	for i, f := range fs {
		out[i] = &eventsv1.Failure{Channel: f.Channel, Error: errorInfo(f.Error), Time: f.Time}
	}
	return out
}

// errorInfo returns e without its message: e itself when it has none, nil
// when nothing else is left.
func errorInfo(e *eventsv1.ErrorInfo) *eventsv1.ErrorInfo {
	switch {
	case e.GetMessage() == "":
		return e
	case e.Code == "" && e.Description == "" && e.Retriable == eventsv1.Retriable_RETRIABLE_UNSPECIFIED:
		return nil
	}
	return &eventsv1.ErrorInfo{Code: e.Code, Description: e.Description, Retriable: e.Retriable}
}

// SameState reports whether a and b are the same snapshot once their
// personal data, revision and update time are left out: whether a purge's
// refold of a snapshot changed only what the purge removes (not so when the
// fold changed since the snapshot was made).
func SameState(a, b *eventsv1.AuthRequest) bool {
	x, y := proto.CloneOf(a), proto.CloneOf(b)
	for _, r := range []*eventsv1.AuthRequest{x, y} {
		StripRequest(r)
		r.Revision, r.UpdateTime = 0, nil
	}
	return proto.Equal(x, y)
}

// StripRequest removes personal data from r in place.
func StripRequest(r *eventsv1.AuthRequest) {
	r.Phone, r.Email, r.Token = nil, "", ""
	for _, ch := range r.GetChannels() {
		ch.Identity, ch.Error = "", errorInfo(ch.Error)
	}
	for _, f := range r.GetFailures() {
		f.Error = errorInfo(f.Error)
	}
}

// StripEvent removes personal data and the raw body from e in place.
func StripEvent(e *eventsv1.Event) {
	e.Phone, e.Email, e.Identity, e.Token, e.RawBody = nil, "", "", "", ""
	e.Error = errorInfo(e.Error)
}
