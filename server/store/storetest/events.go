package storetest

import (
	"encoding/json"
	"fmt"
	"slices"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	eventsv1 "github.com/otpless-events/otpless-events/gen/otpless/events/v1"
	"github.com/otpless-events/otpless-events/server/state"
	"github.com/otpless-events/otpless-events/server/store"
)

// t0 is the suite's epoch. Times are whole milliseconds unless a test is
// about sub-millisecond times, so that any backend keeps them exactly.
var t0 = time.Date(2026, 11, 26, 10, 0, 0, 0, time.UTC)

// at returns t0 plus ms milliseconds.
func at(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }

// delivery returns a delivery report (kind DELIVERY) of requestID.
func delivery(requestID, eventID, channel, status string, eventTime time.Time) *eventsv1.Event {
	return &eventsv1.Event{
		EventId:   eventID,
		RequestId: requestID,
		Kind:      eventsv1.EventKind_EVENT_KIND_DELIVERY,
		Status:    status,
		Channel:   channel,
		Identity:  "+919800000000",
		EventTime: timestamppb.New(eventTime),
		Format:    eventsv1.PayloadFormat_PAYLOAD_FORMAT_V2,
	}
}

// auth returns an auth event (kind AUTH) of requestID.
func auth(requestID, eventID, status string, eventTime time.Time) *eventsv1.Event {
	return &eventsv1.Event{
		EventId:      eventID,
		RequestId:    requestID,
		Kind:         eventsv1.EventKind_EVENT_KIND_AUTH,
		Status:       status,
		AuthMethod:   "OTP",
		AuthChannels: []string{"WHATSAPP", "SMS"},
		Phone:        &eventsv1.PhoneDetails{PhoneNumber: "9800000000", CountryCode: "+91"},
		EventTime:    timestamppb.New(eventTime),
		Format:       eventsv1.PayloadFormat_PAYLOAD_FORMAT_V2,
	}
}

// fallback returns a FALLBACK auth event of requestID.
func fallback(requestID, eventID, from, to string, eventTime time.Time) *eventsv1.Event {
	e := auth(requestID, eventID, "FALLBACK", eventTime)
	e.FromChannel, e.ToChannel = from, to
	return e
}

// system returns a legacy system event (kind SYSTEM); requestID may be
// empty.
func system(requestID, eventID, status string, eventTime time.Time) *eventsv1.Event {
	return &eventsv1.Event{
		EventId:   eventID,
		RequestId: requestID,
		Kind:      eventsv1.EventKind_EVENT_KIND_SYSTEM,
		Status:    status,
		EventTime: timestamppb.New(eventTime),
		Format:    eventsv1.PayloadFormat_PAYLOAD_FORMAT_V1_SYSTEM,
	}
}

// hook returns a webhook received at received carrying events, with a JSON
// body naming them. It sets the ReceiveTime of events that have none.
func hook(received time.Time, events ...*eventsv1.Event) store.Webhook {
	ids := make([]string, len(events))
	for i, e := range events {
		ids[i] = e.GetEventId()
	}
	body, _ := json.Marshal(map[string]any{"events": ids, "timestamp": received.UnixMilli()})
	return hookBody(string(body), received, events...)
}

// hookBody is hook with the body given.
func hookBody(body string, received time.Time, events ...*eventsv1.Event) store.Webhook {
	for _, e := range events {
		if e.ReceiveTime == nil { // a retried event keeps its first
			e.ReceiveTime = timestamppb.New(received)
		}
	}
	return store.Webhook{Body: []byte(body), Received: received, Events: events}
}

// snapshot is what a store must hold for requestID after a commit at
// revision whose batch was last received at updated.
func snapshot(requestID string, events []*eventsv1.Event, revision int64, updated time.Time) *eventsv1.AuthRequest {
	r := state.Fold(requestID, events)
	r.Revision = revision
	r.UpdateTime = timestamppb.New(updated)
	return r
}

// withBody returns a copy of e with RawBody set.
func withBody(e *eventsv1.Event, body []byte) *eventsv1.Event {
	c := proto.CloneOf(e)
	c.RawBody = string(body)
	return c
}

// listOrder sorts events the way ListEvents returns them.
func listOrder(events []*eventsv1.Event) []*eventsv1.Event {
	out := slices.Clone(events)
	slices.SortFunc(out, func(a, b *eventsv1.Event) int {
		return store.CursorAfter(a).Compare(store.CursorAfter(b))
	})
	return out
}

// ids returns the event ids of events.
func ids(events []*eventsv1.Event) []string {
	out := make([]string, len(events))
	for i, e := range events {
		out[i] = e.GetEventId()
	}
	return out
}

// eventKey identifies an event across requests.
type eventKey struct{ requestID, eventID string }

func keyOf(e *eventsv1.Event) eventKey { return eventKey{e.GetRequestId(), e.GetEventId()} }

func (k eventKey) String() string { return fmt.Sprintf("%s/%s", k.requestID, k.eventID) }
