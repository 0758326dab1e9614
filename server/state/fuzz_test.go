package state_test

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	eventsv1 "github.com/otpless-events/otpless-events/gen/otpless/events/v1"
	"github.com/otpless-events/otpless-events/server/state"
)

// Alphabets of fuzzEvents: few enough values that events collide in time,
// channel and status, the cases the fold's tie rules are for.
var (
	fuzzKinds = []eventsv1.EventKind{
		eventsv1.EventKind_EVENT_KIND_DELIVERY, eventsv1.EventKind_EVENT_KIND_AUTH,
		eventsv1.EventKind_EVENT_KIND_SYSTEM, eventsv1.EventKind_EVENT_KIND_UNSPECIFIED,
	}
	fuzzStatuses = []string{"SENT", "DELIVERED", "READ", "CLICKED", "FAILED", "FALLBACK", "SUCCESS", "UNREACHABLE", "INITIATED", ""}
	fuzzChannels = []string{"", "SMS", "WHATSAPP", "EMAIL", "VIBER"}
)

// fuzzEvents reads data as events of request reqID (or, now and then,
// another), four bytes each. An event's id hashes the fields the
// normalizer's does, so that two events share an id only when those agree;
// the fields it leaves out (token, identity, phone, auth channels, error
// message) may then differ, as two bodies of one instant can.
func fuzzEvents(data []byte) []*eventsv1.Event {
	var events []*eventsv1.Event
	for ; len(data) >= 4; data = data[4:] {
		b0, b1, b2, b3 := data[0], data[1], data[2], data[3]
		e := &eventsv1.Event{
			RequestId:   reqID,
			Kind:        fuzzKinds[b0%4],
			Status:      fuzzStatuses[int(b0/4)%len(fuzzStatuses)],
			Channel:     fuzzChannels[b1%5],
			FromChannel: fuzzChannels[(b1/5)%5],
			ToChannel:   fuzzChannels[b2%5],
			EventTime:   &timestamppb.Timestamp{Seconds: epoch + int64(b2/5%6), Nanos: int32(b3%2) * 5e8},
		}
		if b1 >= 250 {
			e.RequestId = "other"
		}
		if b3&2 != 0 {
			e.Error = &eventsv1.ErrorInfo{Code: fmt.Sprintf("00%d", b3>>6), Message: fmt.Sprintf("message %d", b3&4)}
		}
		switch b3 >> 3 & 3 {
		case 1:
			e.AuthChannels = []string{e.GetChannel()}
		case 2:
			e.AuthChannels = []string{fuzzChannels[b3>>5%5], e.GetToChannel()}
		}
		if b3&4 != 0 {
			e.Token = fmt.Sprintf("tok%d", b3>>5)
			e.Identity = fmt.Sprintf("id%d", b3>>6)
			e.Phone = &eventsv1.PhoneDetails{PhoneNumber: fmt.Sprintf("98%d", b3>>5), CountryCode: "91"}
		}
		sum := sha256.Sum256(fmt.Appendf(nil, "%q %d %q %q %q %q %q %d",
			e.GetRequestId(), e.GetKind(), e.GetStatus(), e.GetChannel(), e.GetFromChannel(), e.GetToChannel(),
			e.GetError().GetCode(), e.GetEventTime().AsTime().UnixMilli()))
		e.EventId = hex.EncodeToString(sum[:8])
		events = append(events, e)
	}
	return events
}

// FuzzFold: the fold of any events is the fold of the same events in any
// other order with any of them retried (the package's order independence),
// and adding them one at a time never moves a listed channel back along
// DeliveryStatuses, a request out of SUCCESS, an unreachable one out of
// FAILED but to SUCCESS, nor one with events back to UNSPECIFIED.
func FuzzFold(f *testing.F) {
	for _, seed := range []string{
		"\x00\x01\x00\x00" + "\x04\x01\x05\x00" + "\x10\x02\x0a\x02",                      // SMS SENT, SMS DELIVERED, WHATSAPP FAILED
		"\x15\x05\x02\x00" + "\x10\x02\x05\x02" + "\x15\x0a\x0d\x00" + "\x00\x03\x0f\x00", // fallback SMS->WHATSAPP, which fails, fallback on to EMAIL, EMAIL SENT
		"\x15\x0f\x02\x00" + "\x15\x0a\x01\x00" + "\x10\x02\x00\x02",                      // fallbacks EMAIL->WHATSAPP->SMS and a failure, all at one time
		"\x19\x01\x0a\x0c" + "\x19\x01\x0a\x2c" + "\x19\x02\x0a\x0c" + "\x1e\x00\x05\x00", // copies of one SUCCESS with other tokens, another SUCCESS, UNREACHABLE
	} {
		f.Add(uint64(1), []byte(seed))
	}
	rank := map[eventsv1.DeliveryStatus]int{}
	for i, s := range state.DeliveryStatuses() {
		rank[s] = i
	}
	f.Fuzz(func(t *testing.T, seed uint64, data []byte) {
		if len(data) > 4*24 {
			return // a few dozen events say all the rules can; more only slow the search
		}
		events := fuzzEvents(data)
		want := state.Fold(reqID, events)
		rng := rand.New(rand.NewPCG(seed, uint64(len(data))))
		input := slices.Clone(events)
		for range rng.IntN(len(events) + 1) {
			input = append(input, proto.CloneOf(events[rng.IntN(len(events))]))
		}
		rng.Shuffle(len(input), func(i, j int) { input[i], input[j] = input[j], input[i] })
		if got := state.Fold(reqID, input); !proto.Equal(got, want) {
			t.Fatalf("another order changes the snapshot\n got: %v\nwant: %v", got, want)
		}
		prev := state.Fold(reqID, nil)
		for k := 1; k <= len(input); k++ {
			next := state.Fold(reqID, input[:k])
			if state.Terminal(prev) && !state.Terminal(next) {
				t.Fatalf("adding %v left SUCCESS: %v", input[k-1], next)
			}
			// UNREACHABLE, once reported, keeps the request FAILED until
			// SUCCESS, and a request with events is never UNSPECIFIED.
			if prev.GetUnreachableTime() != nil && !state.Terminal(next) && next.GetStatus() != eventsv1.RequestStatus_REQUEST_STATUS_FAILED {
				t.Fatalf("adding %v moved an unreachable request to %v", input[k-1], next.GetStatus())
			}
			if next.GetStatus() == eventsv1.RequestStatus_REQUEST_STATUS_UNSPECIFIED && next.GetEventCount() > 0 {
				t.Fatalf("adding %v left a request of %d events UNSPECIFIED", input[k-1], next.GetEventCount())
			}
			for _, c := range prev.GetChannels() {
				// Four channels at most: none drops out of the list.
				if after := channel(next, c.GetChannel()); rank[after.GetStatus()] < rank[c.GetStatus()] {
					t.Fatalf("adding %v moved %s from %v to %v", input[k-1], c.GetChannel(), c.GetStatus(), after.GetStatus())
				}
			}
			prev = next
		}
	})
}
