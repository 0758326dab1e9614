package store_test

import (
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	eventsv1 "github.com/otpless-events/otpless-events/gen/otpless/events/v1"
	"github.com/otpless-events/otpless-events/server/store"
)

// A received time kept to the millisecond is made whole only from an
// event's receive time within that millisecond: an event an earlier build
// stored without one, or one received at another time, leaves it as kept.
func TestWholeReceived(t *testing.T) {
	t.Parallel()
	kept := time.Date(2026, 11, 26, 10, 0, 1, 234_000_000, time.UTC)
	whole := kept.Add(567_891)
	for _, tc := range []struct {
		name   string
		events []*eventsv1.Event
		want   time.Time
	}{
		{"whole", []*eventsv1.Event{{ReceiveTime: timestamppb.New(whole)}}, whole},
		{"after one without", []*eventsv1.Event{{}, {ReceiveTime: timestamppb.New(whole)}}, whole},
		{"without", []*eventsv1.Event{{}}, kept},
		{"no events", nil, kept},
		{"a millisecond later", []*eventsv1.Event{{ReceiveTime: timestamppb.New(kept.Add(time.Millisecond))}}, kept},
		{"earlier", []*eventsv1.Event{{ReceiveTime: timestamppb.New(kept.Add(-1))}}, kept},
	} {
		t.Run(tc.name, func(t *testing.T) {
			wh := store.Webhook{Received: kept, Events: tc.events}
			store.WholeReceived(&wh, time.Millisecond)
			if !wh.Received.Equal(tc.want) {
				t.Errorf("received %v, want %v", wh.Received, tc.want)
			}
		})
	}
}
