package store

import (
	"slices"
	"testing"

	eventsv1 "github.com/otpless-events/otpless-events/gen/otpless/events/v1"
)

func TestChangeEventsAfter(t *testing.T) {
	ev := func(id string) *eventsv1.Event { return &eventsv1.Event{EventId: id} }
	at := func(rev int64) *eventsv1.AuthRequest { return &eventsv1.AuthRequest{Revision: rev} }
	one := Change{Request: at(4), Events: []*eventsv1.Event{ev("a"), ev("b")}}
	span := Change{Request: at(4), Events: []*eventsv1.Event{ev("r2"), ev("r3"), ev("r3b"), ev("r4")}, EventRevisions: []int64{2, 3, 3, 4}}
	for _, tc := range []struct {
		name string
		c    Change
		rev  int64
		want []string
	}{
		{"one revision, behind", one, 3, []string{"a", "b"}},
		{"one revision, at it", one, 4, nil},
		{"one revision, ahead", one, 5, nil},
		{"span, from the start", span, 0, []string{"r2", "r3", "r3b", "r4"}},
		{"span, from its middle", span, 2, []string{"r3", "r3b", "r4"}},
		{"span, one revision left", span, 3, []string{"r4"}},
		{"span, at it", span, 4, nil},
		{"span without events", Change{Request: at(2), EventRevisions: []int64{}}, 1, nil},
	} {
		var got []string
		for _, e := range tc.c.EventsAfter(tc.rev) {
			got = append(got, e.GetEventId())
		}
		if !slices.Equal(got, tc.want) {
			t.Errorf("%s: EventsAfter(%d) = %v, want %v", tc.name, tc.rev, got, tc.want)
		}
	}
}
