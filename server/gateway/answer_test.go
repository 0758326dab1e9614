package gateway

import (
	"bytes"
	"encoding/json"
	"math"
	"math/rand/v2"
	"strings"
	"testing"

	eventsv1 "github.com/otpless-events/otpless-events/gen/otpless/events/v1"
)

// gatewayAnswer is what the gateway's marshaler writes for r, compacted.
func gatewayAnswer(t *testing.T, r *eventsv1.IngestResponse) ([]byte, error) {
	t.Helper()
	b, err := gatewayJSON.Marshal(r)
	if err != nil {
		return nil, err
	}
	var out bytes.Buffer
	if err := json.Compact(&out, b); err != nil {
		t.Fatalf("compact %s: %v", b, err)
	}
	return out.Bytes(), nil
}

func checkAnswer(t *testing.T, r *eventsv1.IngestResponse) {
	t.Helper()
	want, werr := gatewayAnswer(t, r)
	got, gerr := appendIngestResponse(nil, r)
	if (werr == nil) != (gerr == nil) {
		t.Fatalf("%v: gateway error %v, ours %v", r, werr, gerr)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("%v:\n got %s\nwant %s", r, got, want)
	}
}

func TestIngestResponseAsGatewayWritesIt(t *testing.T) {
	event := func(id, rid, status string, kind eventsv1.EventKind, dup bool, rev int64) *eventsv1.IngestedEvent {
		return &eventsv1.IngestedEvent{EventId: id, RequestId: rid, Status: status, Kind: kind, Duplicate: dup, Revision: rev}
	}
	for name, r := range map[string]*eventsv1.IngestResponse{
		"empty":   {},
		"unknown": {Events: []*eventsv1.IngestedEvent{{}}},
		"stored": {Stored: 1, Events: []*eventsv1.IngestedEvent{
			event("dlr:req-1:WHATSAPP:SENT", "req-1", "SENT", eventsv1.EventKind_EVENT_KIND_DELIVERY, false, 1),
		}},
		"two, one a duplicate": {Stored: 1, Duplicates: 1, Events: []*eventsv1.IngestedEvent{
			event("a", "req-1", "INITIATED", eventsv1.EventKind_EVENT_KIND_AUTH, true, 7),
			event("b", "", "UNREACHABLE", eventsv1.EventKind_EVENT_KIND_SYSTEM, false, 0),
		}},
		"extremes": {Stored: math.MaxInt32, Duplicates: math.MinInt32, Events: []*eventsv1.IngestedEvent{
			event("x", "y", "z", eventsv1.EventKind(99), false, math.MaxInt64),
			event("x", "y", "z", eventsv1.EventKind(-3), false, math.MinInt64),
		}},
		"escapes": {Events: []*eventsv1.IngestedEvent{
			event("\"\\/\b\f\n\r\t\x00\x01\x1f\x7f", "<a&b>", "\u2028\u2029\ufffd😀é", 0, false, 0),
		}},
		"invalid UTF-8": {Events: []*eventsv1.IngestedEvent{event("ok", "bad\xff", "", 0, false, 0)}},
	} {
		t.Run(name, func(t *testing.T) { checkAnswer(t, r) })
	}
}

// TestIngestResponseProperty compares the two encoders on random answers
// whose strings mix ASCII, control characters, multi-byte runes and now and
// then a byte that is not UTF-8.
func TestIngestResponseProperty(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	alphabet := []string{"a", "Z", "0", "-", ":", "\"", "\\", "/", "\x00", "\n", "\x1f", "\x7f", " ", "é", "\u2028", "\ufffd", "😀"}
	str := func() string {
		var sb strings.Builder
		for range rng.IntN(12) {
			sb.WriteString(alphabet[rng.IntN(len(alphabet))])
		}
		if rng.IntN(50) == 0 {
			sb.WriteByte(0x80 + byte(rng.IntN(0x40)))
		}
		return sb.String()
	}
	for range 5000 {
		r := &eventsv1.IngestResponse{Stored: rng.Int32() - rng.Int32(), Duplicates: rng.Int32N(4)}
		for range rng.IntN(4) {
			r.Events = append(r.Events, &eventsv1.IngestedEvent{
				EventId: str(), RequestId: str(), Status: str(),
				Duplicate: rng.IntN(2) == 0, Revision: rng.Int64() - rng.Int64(),
				Kind: eventsv1.EventKind(rng.IntN(6) - 1),
			})
		}
		checkAnswer(t, r)
	}
}

func BenchmarkIngestResponse(b *testing.B) {
	r := &eventsv1.IngestResponse{Stored: 1, Events: []*eventsv1.IngestedEvent{{
		EventId: "dlr:a1b2c3d4e5f6:WHATSAPP:DELIVERED", RequestId: "a1b2c3d4e5f6", Status: "DELIVERED",
		Kind: eventsv1.EventKind_EVENT_KIND_DELIVERY, Revision: 3,
	}}}
	gw := gatewayJSON
	b.Run("protojson", func(b *testing.B) {
		for b.Loop() {
			if _, err := gw.Marshal(r); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("hand", func(b *testing.B) {
		for b.Loop() {
			if _, err := appendIngestResponse(make([]byte, 0, 256), r); err != nil {
				b.Fatal(err)
			}
		}
	})
}
