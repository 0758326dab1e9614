package normalize_test

import (
	"hash/fnv"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"

	eventsv1 "github.com/otpless-events/otpless-events/gen/otpless/events/v1"
	"github.com/otpless-events/otpless-events/internal/fixtures"
	"github.com/otpless-events/otpless-events/server/normalize"
)

// TestSpellingsOfOneBody rewrites every documented body in ways that
// change how it is spelled but not what it says, and expects the very same
// events, ids included: statuses, types, channels and methods in any case
// and with space around them (also around the "/" of joined channels), the
// request id of an auth entry moved to data.requestId (the earlier v2
// revision's place for it), and each timestamp in another notation of the
// same instant. A value the normalizer forgot to normalize, or a notation
// read as another instant, gives another event id, and the same event sent
// twice would be stored twice.
func TestSpellingsOfOneBody(t *testing.T) {
	t.Parallel()
	for _, f := range fixtures.Docs(t) {
		h := fnv.New64a()
		h.Write([]byte(f.Name))
		rng := rand.New(rand.NewPCG(h.Sum64(), 90))
		req, err := normalize.Decode(f.Body)
		if err != nil {
			t.Fatalf("%s: %v", f.Name, err)
		}
		want, err := normalize.Events(req, received)
		if err != nil {
			t.Fatalf("%s: %v", f.Name, err)
		}
		for i := range 40 {
			r := respell(rng, req)
			got, err := normalize.Events(r, received)
			if err != nil {
				t.Fatalf("%s, spelling %d: %v\n%v", f.Name, i, err, r)
			}
			if len(got) != len(want) {
				t.Fatalf("%s, spelling %d: %d events, want %d\n%v", f.Name, i, len(got), len(want), r)
			}
			for k := range got {
				if !proto.Equal(got[k], want[k]) {
					t.Errorf("%s, spelling %d, event %d:\n got %v\nwant %v\nfrom %v", f.Name, i, k, got[k], want[k], r)
				}
			}
		}
	}
}

// respell returns a copy of req spelt differently, as TestSpellingsOfOneBody
// describes.
func respell(rng *rand.Rand, req *eventsv1.IngestRequest) *eventsv1.IngestRequest {
	r := proto.CloneOf(req)
	for _, s := range []*string{&r.EventType, &r.Status, &r.NotificationType, &r.FallbackChannel} {
		*s = recase(rng, *s)
	}
	r.Timestamp = retime(rng, r.Timestamp)
	d := r.Data
	if d == nil {
		return r
	}
	for _, s := range []*string{&d.Status, &d.Channel, &d.FromChannel, &d.ToChannel} {
		*s = recase(rng, *s)
	}
	d.Timestamp = retime(rng, d.Timestamp)
	phone, email := d.GetAuthenticationDetails().GetPhone(), d.GetAuthenticationDetails().GetEmail()
	for _, a := range []*eventsv1.AuthDetail{phone, email} {
		if a == nil {
			continue
		}
		a.Method = recase(rng, a.Method)
		for j, c := range a.Channel {
			parts := strings.Split(c, "/")
			for k := range parts {
				parts[k] = recase(rng, parts[k])
			}
			a.Channel[j] = strings.Join(parts, "/")
		}
	}
	// One request id for every entry can live in data.requestId instead.
	id := phone.GetRequestId()
	if id == "" {
		id = email.GetRequestId()
	}
	if d.RequestId == "" && id != "" && (phone == nil || phone.RequestId == id) && (email == nil || email.RequestId == id) && rng.IntN(2) == 0 {
		d.RequestId = id
		for _, a := range []*eventsv1.AuthDetail{phone, email} {
			if a != nil {
				a.RequestId = ""
			}
		}
	}
	return r
}

// recase returns s with each letter in a random case and random space
// around it; "" stays "".
func recase(rng *rand.Rand, s string) string {
	if s == "" {
		return s
	}
	var b strings.Builder
	pad := [...]string{"", " ", "\t", "  "}
	b.WriteString(pad[rng.IntN(len(pad))])
	for _, c := range s {
		if rng.IntN(2) == 0 {
			b.WriteString(strings.ToLower(string(c)))
		} else {
			b.WriteString(strings.ToUpper(string(c)))
		}
	}
	b.WriteString(pad[rng.IntN(len(pad))])
	return b.String()
}

// retime returns v's instant in another notation, or v when it holds none.
func retime(rng *rand.Rand, v *structpb.Value) *structpb.Value {
	t, err := normalize.ParseTime(v)
	if err != nil {
		return v
	}
	ist := time.FixedZone("IST", 5*3600+30*60)
	switch rng.IntN(6) {
	case 0:
		return structpb.NewStringValue(t.Format(time.RFC3339Nano))
	case 1:
		return structpb.NewStringValue(" " + t.In(ist).Format("2006-01-02 15:04:05.000 -07:00") + " ")
	case 2:
		return structpb.NewNumberValue(float64(t.UnixMilli()))
	case 3:
		return structpb.NewStringValue(time.Unix(0, 0).Add(time.Duration(t.UnixMilli()) * time.Millisecond).UTC().Format("20060102T150405.000Z0700"))
	case 4:
		return structpb.NewNumberValue(float64(t.UnixMilli()) / 1000) // seconds with a fraction
	}
	if t.Nanosecond() == 0 {
		return structpb.NewStringValue(t.In(ist).Format(time.RFC1123Z))
	}
	return structpb.NewStringValue(t.In(ist).Format(time.RFC3339Nano))
}
