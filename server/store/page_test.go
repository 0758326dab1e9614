package store_test

import (
	"errors"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	eventsv1 "github.com/otpless-events/otpless-events/gen/otpless/events/v1"
	"github.com/otpless-events/otpless-events/server/store"
)

func TestPageLimit(t *testing.T) {
	t.Parallel()
	for size, want := range map[int]int{-1: 100, 0: 100, 1: 1, 250: 250, 1000: 1000, 1001: 1000} {
		if got := (store.Page{Size: size}).Limit(); got != want {
			t.Errorf("Page{Size: %d}.Limit() = %d, want %d", size, got, want)
		}
	}
}

func TestEventTimeMillis(t *testing.T) {
	t.Parallel()
	at := time.Date(2026, 1, 2, 3, 4, 5, 678_900_000, time.UTC)
	for _, tt := range []struct {
		e    *eventsv1.Event
		want int64
	}{
		{nil, 0},
		{&eventsv1.Event{}, 0},
		{&eventsv1.Event{EventTime: timestamppb.New(at)}, at.UnixMilli()},
		{&eventsv1.Event{EventTime: timestamppb.New(time.UnixMilli(-1).Add(-time.Microsecond))}, -2},
	} {
		if got := store.EventTimeMillis(tt.e); got != tt.want {
			t.Errorf("EventTimeMillis(%v) = %d, want %d", tt.e, got, tt.want)
		}
	}
}

func TestCursorToken(t *testing.T) {
	t.Parallel()
	for _, c := range []store.Cursor{
		{RequestID: "r1", EventTimeMillis: 1_764_150_000_000, EventID: "e1"},
		{RequestID: "r1", EventTimeMillis: -5, EventID: "ünï/cødé ✓"},
		{RequestID: "", EventTimeMillis: 0, EventID: "x"},
	} {
		got, err := store.ParseToken(c.RequestID, c.Token())
		if err != nil || got != c {
			t.Errorf("ParseToken(Token(%+v)) = %+v, %v", c, got, err)
		}
		if _, err := store.ParseToken(c.RequestID+"x", c.Token()); !errors.Is(err, store.ErrInvalidPageToken) {
			t.Errorf("token of %q accepted for another request: %v", c.RequestID, err)
		}
	}
	forged := []string{
		store.Cursor{RequestID: "r1", EventID: "e\x00"}.Token(),
		store.Cursor{RequestID: "r1", EventID: "\xff\xfe"}.Token(),
	}
	for _, token := range append(forged, "", "x", "AQ", "!!", "AQID====", "Ag"+store.Cursor{EventID: "e"}.Token()[2:]) {
		if _, err := store.ParseToken("r1", token); !errors.Is(err, store.ErrInvalidPageToken) {
			t.Errorf("ParseToken(%q): %v, want ErrInvalidPageToken", token, err)
		}
	}
}

func FuzzParseToken(f *testing.F) {
	f.Add("r1", store.Cursor{RequestID: "r1", EventTimeMillis: 42, EventID: "e"}.Token())
	f.Add("r1", "garbage")
	f.Fuzz(func(t *testing.T, requestID, token string) {
		c, err := store.ParseToken(requestID, token)
		if err != nil {
			if !errors.Is(err, store.ErrInvalidPageToken) {
				t.Fatalf("ParseToken error %v is not ErrInvalidPageToken", err)
			}
			return
		}
		if c.RequestID != requestID || c.EventID == "" {
			t.Fatalf("ParseToken accepted %q as %+v", token, c)
		}
		if back, err := store.ParseToken(requestID, c.Token()); err != nil || back != c {
			t.Fatalf("round trip of %+v: %+v, %v", c, back, err)
		}
	})
}

// Cursors order by event time first, then byte-wise by event id, whatever
// their request.
func TestCursorCompare(t *testing.T) {
	t.Parallel()
	c := func(ms int64, id string) store.Cursor { return store.Cursor{EventTimeMillis: ms, EventID: id} }
	for _, tt := range []struct {
		a, b store.Cursor
		want int
	}{
		{c(1, "z"), c(2, "a"), -1},
		{c(-5, "b"), c(0, ""), -1},
		{c(2, "a"), c(2, "b"), -1},
		{c(2, "B"), c(2, "a"), -1},
		{c(2, "a"), c(2, "a"), 0},
		{store.Cursor{RequestID: "r1", EventTimeMillis: 2, EventID: "a"}, store.Cursor{RequestID: "r2", EventTimeMillis: 2, EventID: "a"}, 0},
	} {
		if got := tt.a.Compare(tt.b); got != tt.want {
			t.Errorf("%+v.Compare(%+v) = %d, want %d", tt.a, tt.b, got, tt.want)
		}
		if got := tt.b.Compare(tt.a); got != -tt.want {
			t.Errorf("%+v.Compare(%+v) = %d, want %d", tt.b, tt.a, got, -tt.want)
		}
	}
}
