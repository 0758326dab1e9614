package normalize_test

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	eventsv1 "github.com/otpless-events/otpless-events/gen/otpless/events/v1"
	"github.com/otpless-events/otpless-events/internal/fixtures"
	"github.com/otpless-events/otpless-events/server/normalize"
)

// FuzzNormalize feeds arbitrary bodies through Decode and Events: they must
// not panic, must fail only with the package's sentinel errors, and every
// event they produce must have an id and a valid event time, and encode as
// protobuf (which the store keeps it as).
func FuzzNormalize(f *testing.F) {
	for _, doc := range fixtures.Docs(f) {
		f.Add(doc.Body)
	}
	for _, s := range fixtures.Scenarios(f) {
		for _, body := range s.Bodies {
			f.Add(body)
		}
	}
	// An ISO time that is in the year 9999 where it was written but after it
	// in UTC, beyond what an event time holds.
	f.Add([]byte(`{"data":{"requestId":"r","status":"SENT","channel":"SMS"},"eventType":"DLR","timestamp":"9999-12-31T23:59:59-23:59"}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		req, err := normalize.Decode(body)
		if err != nil {
			if !errors.Is(err, normalize.ErrInvalidBody) {
				t.Fatalf("Decode error %v is not ErrInvalidBody", err)
			}
			return
		}
		events, err := normalize.Events(req, received)
		if err != nil {
			if !errors.Is(err, normalize.ErrUnrecognized) && !errors.Is(err, normalize.ErrInvalidBody) {
				t.Fatalf("Events error %v is neither ErrUnrecognized nor ErrInvalidBody", err)
			}
			return
		}
		if len(events) == 0 {
			t.Fatal("no events and no error")
		}
		for _, e := range events {
			if e.GetEventId() == "" {
				t.Errorf("event without id: %v", e)
			}
			if err := e.GetEventTime().CheckValid(); err != nil {
				t.Errorf("event time: %v", err)
			}
			if _, err := proto.Marshal(e); err != nil {
				t.Errorf("event cannot be stored: %v", err)
			}
		}
	})
}

// FuzzRetriedBody: a body sent again later, or kept as the JSON a gRPC
// caller's message is stored as and read back, gives the very same events,
// ids included; only the receive time (and the event time of a body
// without one, which is its receive time) may differ. A field read
// differently the second time would store one event twice.
func FuzzRetriedBody(f *testing.F) {
	for _, doc := range fixtures.Docs(f) {
		f.Add(doc.Body, uint32(1))
	}
	for _, s := range fixtures.Scenarios(f) {
		for _, body := range s.Bodies {
			f.Add(body, uint32(3600))
		}
	}
	f.Fuzz(func(t *testing.T, body []byte, later uint32) {
		req, err := normalize.Decode(body)
		if err != nil {
			return
		}
		want, err := normalize.Events(req, received)
		if err != nil {
			return
		}
		retried := received.Add(time.Duration(later) * time.Millisecond)
		got, err := normalize.Events(req, retried)
		if err != nil {
			t.Fatalf("accepted at %v, refused %v later: %v", received, retried.Sub(received), err)
		}
		if d := differ(got, want); d != "" {
			t.Fatalf("sent again %v later: %s", retried.Sub(received), d)
		}
		kept, err := protojson.Marshal(req)
		if err != nil {
			t.Fatalf("the decoded body cannot be kept as JSON: %v", err)
		}
		again, err := normalize.Decode(kept)
		if err != nil {
			t.Fatalf("the body kept as JSON does not decode: %v\n%s", err, kept)
		}
		if !proto.Equal(again, req) {
			t.Fatalf("the body kept as JSON reads as another:\n got %v\nwant %v", again, req)
		}
		got, err = normalize.Events(again, received)
		if err != nil {
			t.Fatalf("the body kept as JSON is refused: %v", err)
		}
		if d := differ(got, want); d != "" {
			t.Fatalf("the body kept as JSON: %s", d)
		}
	})
}

// differ says how got differs from want beyond receive times, "" if not.
func differ(got, want []*eventsv1.Event) string {
	if len(got) != len(want) {
		return fmt.Sprintf("%d events, want %d", len(got), len(want))
	}
	for i := range got {
		g, w := proto.CloneOf(got[i]), proto.CloneOf(want[i])
		if untimed(g) && untimed(w) {
			g.EventTime, w.EventTime = nil, nil
		}
		g.ReceiveTime, w.ReceiveTime = nil, nil
		if !proto.Equal(g, w) {
			return fmt.Sprintf("event %d:\n got %v\nwant %v", i, g, w)
		}
	}
	return ""
}

// untimed reports whether e's event time is its receive time, as for a body
// without a time.
func untimed(e *eventsv1.Event) bool {
	return proto.Equal(e.GetEventTime(), e.GetReceiveTime())
}
