package normalize_test

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/structpb"

	eventsv1 "github.com/otpless-events/otpless-events/gen/otpless/events/v1"
	"github.com/otpless-events/otpless-events/internal/fixtures"
	"github.com/otpless-events/otpless-events/server/normalize"
)

// reference is what Decode returns when the fast path declines.
func reference(body []byte) (*eventsv1.IngestRequest, error) {
	req := new(eventsv1.IngestRequest)
	return req, protojson.UnmarshalOptions{DiscardUnknown: true}.Unmarshal(body, req)
}

// agrees fails t when the fast path reads body and protojson does not, or
// reads it differently.
func agrees(t *testing.T, body []byte) (fast bool) {
	t.Helper()
	got, ok := normalize.DecodeFast(body)
	if !ok {
		return false
	}
	want, err := reference(body)
	if err != nil {
		t.Fatalf("fast path read %q, protojson rejects it: %v", body, err)
	}
	if !proto.Equal(got, want) {
		t.Fatalf("fast path read %q as\n%v\nprotojson as\n%v", body, got, want)
	}
	return true
}

// Every body OTPLESS documents and every scenario body takes the fast path
// and reads as protojson reads it.
func TestDecodeFastReadsTheFixtures(t *testing.T) {
	t.Parallel()
	var bodies [][]byte
	for _, d := range fixtures.Docs(t) {
		bodies = append(bodies, d.Body)
	}
	for _, s := range fixtures.Scenarios(t) {
		bodies = append(bodies, s.Bodies...)
	}
	for _, body := range bodies {
		if !agrees(t, body) {
			t.Errorf("the fast path declined %s", body)
		}
	}
}

// Messages with every field set, written by protojson under either field
// name, read back equal through the fast path: a field added to the schema
// and not to the fast path fails here.
func TestDecodeFastReadsEveryField(t *testing.T) {
	t.Parallel()
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range 500 {
		req := new(eventsv1.IngestRequest)
		populate(rng, req.ProtoReflect(), 0)
		opts := protojson.MarshalOptions{UseProtoNames: i%2 == 1}
		if i%3 == 0 {
			opts.Multiline = true
		}
		body, err := opts.Marshal(req)
		if err != nil {
			t.Fatal(err)
		}
		if !agrees(t, body) {
			t.Fatalf("the fast path declined %s", body)
		}
		if got, _ := normalize.DecodeFast(body); !proto.Equal(got, req) {
			t.Fatalf("read %s as %v, want %v", body, got, req)
		}
	}
}

// populate sets every field of m, recursively, to random values.
func populate(rng *rand.Rand, m protoreflect.Message, depth int) {
	if v, ok := m.Interface().(*structpb.Value); ok {
		proto.Merge(v, randomValue(rng, depth))
		return
	}
	fields := m.Descriptor().Fields()
	for i := range fields.Len() {
		fd := fields.Get(i)
		switch {
		case fd.IsList():
			list := m.Mutable(fd).List()
			for range rng.IntN(3) + 1 {
				list.Append(protoreflect.ValueOfString(randomString(rng)))
			}
		case fd.Kind() == protoreflect.MessageKind:
			populate(rng, m.Mutable(fd).Message(), depth+1)
		case fd.Kind() == protoreflect.StringKind:
			m.Set(fd, protoreflect.ValueOfString(randomString(rng)))
		default:
			panic(fmt.Sprintf("populate: field %s of kind %s: the webhook schema has only strings and messages", fd.FullName(), fd.Kind()))
		}
	}
}

func randomValue(rng *rand.Rand, depth int) *structpb.Value {
	n := 6
	if depth > 4 {
		n = 4 // no more nesting
	}
	switch rng.IntN(n) {
	case 0:
		return structpb.NewStringValue(randomString(rng))
	case 1:
		return structpb.NewNumberValue([]float64{0, -1, 1764153000400, 0.5, -3.25e-7, 1e300}[rng.IntN(6)])
	case 2:
		return structpb.NewBoolValue(rng.IntN(2) == 0)
	case 3:
		return structpb.NewNullValue()
	case 4:
		s := &structpb.Struct{Fields: map[string]*structpb.Value{}}
		for range rng.IntN(3) {
			s.Fields[randomString(rng)] = randomValue(rng, depth+1)
		}
		return structpb.NewStructValue(s)
	default:
		l := &structpb.ListValue{}
		for range rng.IntN(3) {
			l.Values = append(l.Values, randomValue(rng, depth+1))
		}
		return structpb.NewListValue(l)
	}
}

func randomString(rng *rand.Rand) string {
	parts := []string{"", "SENT", "919812345678", `"`, `\`, "/", "\n\t\r\b\f", "\x00\x1f", "é", "日本", "😀", "\u2028", "<&>", " "}
	var b strings.Builder
	for range rng.IntN(4) {
		b.WriteString(parts[rng.IntN(len(parts))])
	}
	return b.String()
}

// Bodies at the edges: the fast path reads them as protojson does, or
// leaves them to it.
func TestDecodeFastEdges(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		body string
		fast bool // the fast path reads it
	}{
		{`{}`, true},
		{" \t\r\n{ } \n", true},
		{`{"data": null, "mobile": null, "timestamp": null}`, true},
		{`{"data": {"authenticationDetails": {"phone": null, "email": {"channel": null}}}}`, true},
		{`{"status": null, "eventType": "DLR"}`, true},
		{`{"event_type": "DLR", "request_id": "r1", "notification_type": "x", "fallback_channel": "SMS"}`, true},
		{`{"unknown": {"deep": [1, 2.5e3, -0, true, false, null, "s", {}]}}`, true},
		{`{"status": "a\"b\\c\/d\b\f\n\r\t\u00e9\u0000"}`, true},
		{`{"st\u0061tus": "SENT"}`, true},
		{`{"unknown": {"a": 1, "a": [2]}, "unknown": "twice"}`, true}, // protojson checks no unknown field for duplicates
		{`{"timestamp": {"a": 1, "b": [1, "x"]}}`, true},
		{`{"timestamp": -0.0e+0}`, true},

		{`{"eventType": "DLR", "event_type": "AUTH"}`, false}, // one field twice
		{`{"status": "SENT", "status": null}`, false},         // twice, once null
		{`{"timestamp": {"a": 1, "a": 2}}`, false},            // duplicate Struct key
		{`{"status": "\ud83d\ude00"}`, false},                 // a surrogate pair
		{`{"status": "\ud800"}`, false},                       // a lone surrogate
		{`{"timestamp": 1e400}`, false},                       // out of range
		{`{"status": 5}`, false},                              // wrong type
		{`{"data": {"authenticationDetails": {"phone": {"channel": ["SMS", null]}}}}`, false},
		{`{"status": "SENT",}`, false},                                       // trailing comma
		{`{"status": "SENT"} x`, false},                                      // trailing data
		{`{"status": 'SENT'}`, false},                                        // not JSON
		{`{"timestamp": 01}`, false},                                         // leading zero
		{`{"timestamp": 1.}`, false},                                         // no fraction digits
		{`{"timestamp": .5}`, false},                                         // no integer part
		{`{"timestamp": +1}`, false},                                         // plus sign
		{`{"timestamp": tru}`, false},                                        // cut literal
		{"{\"status\": \"a\tb\"}", false},                                    // raw control character
		{"{\"status\": \"\xff\"}", false},                                    // invalid UTF-8
		{`{"status": "\x"}`, false},                                          // invalid escape
		{`{"status": "\u12"}`, false},                                        // short \u escape
		{`[]`, false},                                                        // not an object
		{``, false},                                                          // empty
		{strings.Repeat(`{"a":`, 40) + `1` + strings.Repeat(`}`, 40), false}, // deep
		{`{"status" "SENT"}`, false},                                         // no colon
		{`{"status"}`, false},                                                // no colon, no value
		{"{\"status\": \"a\n}", false},                                       // a newline ends no string
		{"{\"status\": \"\\na\n}", false},                                    // nor after an escape
		{`{"status":}`, false},                                               // no string
		{`{"timestamp":}`, false},                                            // no value
		{`{"timestamp": 1e}`, false},                                         // no exponent digits
		{`{"timestamp": 17`, false},                                          // cut in a number
		{`{"status": "SENT`, false},                                          // cut in a string
		{`{"status": "a\nb`, false},                                          // cut after an escape
		{`{"status": "a\`, false},                                            // cut in an escape
		{`{"status": "\u12`, false},                                          // cut in a \u escape
		{`{"status": "\u123`, false},
	} {
		b := []byte(tt.body)
		if got := agrees(t, b[:len(b):len(b)]); got != tt.fast { // no capacity to read past the end
			t.Errorf("fast path on %q: %v, want %v", tt.body, got, tt.fast)
		}
	}
}

// FuzzDecodeFast: whatever the fast path reads, protojson reads the same.
func FuzzDecodeFast(f *testing.F) {
	for _, d := range fixtures.Docs(f) {
		f.Add(d.Body)
	}
	for _, sc := range fixtures.Scenarios(f) {
		for _, body := range sc.Bodies {
			f.Add(body)
		}
	}
	for _, s := range []string{`{"status": "\u00e9\ud83d\ude00"}`, `{"timestamp": [1, {"a": null}]}`, `{"data": {"request_id": "r", "requestId": "s"}}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) { agrees(t, body) })
}
