package storetest

import (
	"context"
	"encoding/base64"
	"fmt"
	"testing"
	"time"

	eventsv1 "github.com/otpless-events/otpless-events/gen/otpless/events/v1"
	"github.com/otpless-events/otpless-events/server/store"
)

// unusualBody is a webhook body a store must keep byte for byte: odd
// whitespace, escapes, non-ASCII text, an emoji, no final newline.
const unusualBody = "{\r\n\t\"data\" :{ \"requestId\":\"r1\",\t\"identity\": \"जाँच ✓ \u00e9\u0301 😀\"," +
	"\"errorMessage\":\"line\\nbreak \\u00e9 \\\"quoted\\\"\"  ,\n\n\"metaData\":{}} ,\"eventType\":\"DLR\"   }   \t"

func testListEventsOrderAndBodies(t *testing.T, su suite) {
	s := su.open(t)
	ms := func(n int, sub time.Duration) time.Time { return at(n).Add(sub) }
	var (
		a = delivery("r1", "a", "SMS", "SENT", ms(30, 0))
		b = delivery("r1", "b", "SMS", "DELIVERED", ms(10, 0))
		// c and d share a millisecond: the id orders them, whatever the
		// sub-millisecond times say.
		c = delivery("r1", "c", "WHATSAPP", "SENT", ms(20, 900*time.Microsecond))
		d = delivery("r1", "d", "WHATSAPP", "READ", ms(20, 100*time.Microsecond+7))
		e = auth("r1", "e", "INITIATED", ms(-5, 0)) // before t0
		f = delivery("r1", "f", "WHATSAPP", "DELIVERED", ms(20, 500*time.Microsecond))
		g = system("r1", "g", "SOMETHING_NEW", ms(10, 0))
	)
	whs := []store.Webhook{
		hook(at(100), a, g),
		hookBody(unusualBody, at(101), d),
		hook(at(102), b),
		hookBody(" ", at(103), f, e),
		hook(at(104), c),
	}
	commit(t, s, whs[0], whs[1])
	commit(t, s, whs[2])
	commit(t, s, whs[3], whs[4])

	var want []*eventsv1.Event
	for _, wh := range whs {
		for _, ev := range wh.Events {
			want = append(want, withBody(ev, wh.Body))
		}
	}
	want = listOrder(want)
	if got, wantIDs := ids(want), []string{"e", "b", "g", "c", "d", "f", "a"}; fmt.Sprint(got) != fmt.Sprint(wantIDs) {
		t.Fatalf("suite bug: listOrder = %q, want %q", got, wantIDs)
	}
	equalEvents(t, "ListEvents", listAll(t, s, "r1", 100), want)
	if got := listAll(t, s, "r1", 100); len(got) == 7 && got[4].GetRawBody() != unusualBody {
		t.Errorf("RawBody of d = %q, want %q", got[4].GetRawBody(), unusualBody)
	}
}

// pagingFixture commits n events of r1 in scrambled order and returns them
// in list order with their bodies.
func pagingFixture(t *testing.T, s store.Store, n int) []*eventsv1.Event {
	t.Helper()
	var want []*eventsv1.Event
	for i := range n {
		// A scrambled order (a permutation when n is not a multiple of
		// 5); pairs of events share a time.
		j := (i * 5) % n
		ev := delivery("r1", fmt.Sprintf("e%02d", j), "SMS", "SENT", at(j/2))
		wh := hook(at(1000+i), ev)
		commit(t, s, wh)
		want = append(want, withBody(ev, wh.Body))
	}
	return listOrder(want)
}

func testListEventsPaging(t *testing.T, su suite) {
	s := su.open(t)
	want := pagingFixture(t, s, 12)
	for _, size := range []int{1, 2, 3, 4, 5, 6, 7, 11, 12, 13} {
		t.Run(fmt.Sprintf("size%d", size), func(t *testing.T) {
			equalEvents(t, "pages", listAll(t, s, "r1", size), want)
		})
	}
	// Size 0 means the default page size.
	page, next, err := s.ListEvents(context.Background(), "r1", store.Page{})
	if err != nil || len(page) != len(want) || next != "" {
		t.Errorf("ListEvents(Page{}) = %d events, next %q, %v; want %d, last page", len(page), next, err, len(want))
	}
}

func testListEventsPagingWhileWriting(t *testing.T, su suite) {
	s := su.open(t)
	ctx := context.Background()
	commit(t, s, hook(at(100),
		delivery("r1", "e10", "SMS", "SENT", at(10)),
		delivery("r1", "e20", "SMS", "DELIVERED", at(20)),
		delivery("r1", "e30", "SMS", "READ", at(30))))
	page, next, err := s.ListEvents(ctx, "r1", store.Page{Size: 2})
	if err != nil || next == "" {
		t.Fatalf("first page: %q, next %q, %v", ids(page), next, err)
	}
	// An event before the page boundary and one after it arrive.
	commit(t, s, hook(at(200),
		delivery("r1", "e15", "SMS", "FAILED", at(15)),
		delivery("r1", "e40", "SMS", "CLICKED", at(40))))
	page, next, err = s.ListEvents(ctx, "r1", store.Page{Size: 2, Token: next})
	if err != nil || next != "" || fmt.Sprint(ids(page)) != "[e30 e40]" {
		t.Errorf("second page: %q, next %q, %v; want [e30 e40], last page", ids(page), next, err)
	}
}

func testListEventsInvalidToken(t *testing.T, su suite) {
	s := su.open(t)
	ctx := context.Background()
	commit(t, s, hook(at(0),
		delivery("r1", "e1", "SMS", "SENT", at(0)),
		delivery("r1", "e2", "SMS", "DELIVERED", at(1)),
		delivery("r2", "e3", "SMS", "SENT", at(2)),
		delivery("r2", "e4", "SMS", "DELIVERED", at(3))))
	_, other, err := s.ListEvents(ctx, "r2", store.Page{Size: 1})
	if err != nil || other == "" {
		t.Fatalf("ListEvents(r2): next %q, %v", other, err)
	}
	for name, token := range map[string]string{
		"garbage":          "garbage",
		"not base64":       "!!!%%%***",
		"base64 of text":   base64.RawURLEncoding.EncodeToString([]byte("this is not a token")),
		"one byte":         "AQ",
		"another request":  other,
		"padded std b64":   base64.StdEncoding.EncodeToString([]byte{1, 2, 3}),
		"whitespace":       " ",
		"huge":             string(make([]byte, 4096)),
		"token with space": other + " ",
	} {
		_, _, err := s.ListEvents(ctx, "r1", store.Page{Size: 1, Token: token})
		wantErr(t, "ListEvents with token "+name, err, store.ErrInvalidPageToken)
	}
}

func testListEventsNotFound(t *testing.T, su suite) {
	s := su.open(t)
	_, _, err := s.ListEvents(context.Background(), "nope", store.Page{Size: 10})
	wantErr(t, "ListEvents on an empty store", err, store.ErrNotFound)
	commit(t, s, hook(at(0), delivery("r1", "e1", "SMS", "SENT", at(0))))
	_, _, err = s.ListEvents(context.Background(), "nope", store.Page{Size: 10})
	wantErr(t, "ListEvents of an unknown request", err, store.ErrNotFound)
}

// Page sizes are bounded as Page.Limit says: over store.MaxPageSize is a
// page of MaxPageSize, not positive a page of store.DefaultPageSize.
func testListEventsPageSizeBounds(t *testing.T, su suite) {
	s := su.open(t)
	n := store.MaxPageSize + 1
	events := make([]*eventsv1.Event, n)
	for i := range events {
		events[i] = delivery("r1", fmt.Sprintf("e%04d", i), "SMS", "SENT", at(i))
	}
	commit(t, s, hook(at(n), events...))
	ctx := context.Background()
	for _, tc := range []struct {
		size, want int
	}{{store.MaxPageSize + 1, store.MaxPageSize}, {1 << 30, store.MaxPageSize}, {0, store.DefaultPageSize}, {-5, store.DefaultPageSize}} {
		page, next, err := s.ListEvents(ctx, "r1", store.Page{Size: tc.size})
		if err != nil || len(page) != tc.want || next == "" {
			t.Errorf("ListEvents(size %d) = %d events, next %q, %v; want %d and a next page", tc.size, len(page), next, err, tc.want)
			continue
		}
		if got := ids(page)[tc.want-1]; got != fmt.Sprintf("e%04d", tc.want-1) {
			t.Errorf("ListEvents(size %d): the page ends at %s", tc.size, got)
		}
		rest, next, err := s.ListEvents(ctx, "r1", store.Page{Size: tc.size, Token: next})
		if err != nil || len(rest) != min(tc.want, n-tc.want) || len(rest) == 0 || ids(rest)[0] != fmt.Sprintf("e%04d", tc.want) {
			t.Errorf("ListEvents(size %d) second page = %q, next %q, %v; want it to go on at e%04d", tc.size, ids(rest), next, err, tc.want)
		}
	}
}
