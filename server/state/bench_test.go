package state_test

import (
	"fmt"
	"testing"

	eventsv1 "github.com/otpless-events/otpless-events/gen/otpless/events/v1"
	"github.com/otpless-events/otpless-events/server/state"
)

// BenchmarkFold folds a typical request: WhatsApp fails, OTPLESS falls back
// to SMS, the user succeeds, and one webhook is retried.
func BenchmarkFold(b *testing.B) {
	session := func(e *eventsv1.Event) {
		e.AuthSessionId, e.TraceId, e.Identity = "as_91d0e7c3a5b8", "tr_1b2c3d4e", "919812345678"
	}
	events := []*eventsv1.Event{
		with(initiated("i", 0, "WHATSAPP", "SMS"), func(e *eventsv1.Event) {
			session(e)
			e.Phone = &eventsv1.PhoneDetails{PhoneNumber: "9812345678", CountryCode: "+91"}
		}),
		with(dlr("ws", 1, "WHATSAPP", "SENT"), session),
		with(dlrFailed("wf", 2, "WHATSAPP", "033"), session),
		with(fallback("fb", 2, "WHATSAPP", "SMS"), session),
		with(dlr("sd", 5, "SMS", "DELIVERED"), session),
		with(dlr("ss", 4, "SMS", "SENT"), session),
		with(success("ok", 15, "tok_a81c03d5e2f94b10"), session),
		with(success("ok", 15, "tok_a81c03d5e2f94b10"), session),
	}
	b.ReportAllocs()
	for b.Loop() {
		state.Fold(reqID, events)
	}
}

// BenchmarkFoldManyChannels folds a request no OTPLESS sends, made by a
// sender holding the webhook key: each of 5,000 webhooks names a channel
// of its own, each followed by a fallback from it to a channel that
// failed. Every commit to the request folds it all again, so the fold must
// stay linear in channels and fallbacks (it was quadratic in both).
func BenchmarkFoldManyChannels(b *testing.B) {
	const n = 5000
	events := []*eventsv1.Event{dlrFailed("f", 1, "FAILED", "033")}
	for i := range int64(n) {
		ch := fmt.Sprintf("C%d", i)
		events = append(events, dlr("s"+ch, 2*i+2, ch, "SENT"), fallback("b"+ch, 2*i+3, ch, "FAILED"))
	}
	b.ReportAllocs()
	for b.Loop() {
		state.Fold(reqID, events)
	}
}
