package normalize_test

import (
	"errors"
	"testing"

	"github.com/otpless-events/otpless-events/internal/fixtures"
	"github.com/otpless-events/otpless-events/server/normalize"
)

// FuzzNormalize feeds arbitrary bodies through Decode and Events: they must
// not panic, must fail only with the package's sentinel errors, and every
// event they produce must have an id and a valid event time.
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
		}
	})
}
