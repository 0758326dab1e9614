package pii

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	eventsv1 "github.com/otpless-events/otpless-events/gen/otpless/events/v1"
)

func TestRequestAndEvents(t *testing.T) {
	t.Parallel()
	r := &eventsv1.AuthRequest{
		RequestId: "r", Email: "a@b.c", Token: "tok", Phone: &eventsv1.PhoneDetails{PhoneNumber: "98"},
		Status:   eventsv1.RequestStatus_REQUEST_STATUS_SUCCESS,
		Channels: []*eventsv1.ChannelProgress{{Channel: "SMS", Identity: "9198"}},
	}
	red := Request(r)
	if red.GetEmail() != "" || red.GetToken() != "" || red.GetPhone() != nil || red.GetChannels()[0].GetIdentity() != "" {
		t.Fatalf("Request kept personal data: %v", red)
	}
	if red.GetRequestId() != "r" || red.GetStatus() != r.GetStatus() || red.GetChannels()[0].GetChannel() != "SMS" {
		t.Fatalf("Request dropped more than personal data: %v", red)
	}
	if r.GetEmail() == "" || r.GetChannels()[0].GetIdentity() == "" {
		t.Fatal("Request changed its input")
	}
	in := []*eventsv1.Event{{EventId: "e", Status: "SENT", Identity: "9198", Email: "a@b.c", Token: "t", RawBody: "{}", Phone: &eventsv1.PhoneDetails{PhoneNumber: "1"}}}
	e := Events(in)[0]
	if e.GetIdentity() != "" || e.GetEmail() != "" || e.GetToken() != "" || e.GetRawBody() != "" || e.GetPhone() != nil {
		t.Fatalf("Events kept personal data: %v", e)
	}
	if e.GetEventId() != "e" || e.GetStatus() != "SENT" || in[0].GetIdentity() == "" {
		t.Fatalf("Events = %v, input %v", e, in[0])
	}
	if Request(nil) != nil {
		t.Fatal("Request(nil) != nil")
	}
}

// An error's message is free text from the sender ("Mobile Number
// 919812345678 not OPT-IN"): removed, with the code and what it means kept;
// an error that was only a message goes.
func TestErrorMessages(t *testing.T) {
	t.Parallel()
	coded := &eventsv1.ErrorInfo{Code: "033", Message: "Mobile Number 919812345678 not OPT-IN", Description: "Mobile Number not OPT-IN", Retriable: eventsv1.Retriable_RETRIABLE_AFTER_OPT_IN}
	bare := &eventsv1.ErrorInfo{Message: "failed for a@b.co"}
	r := &eventsv1.AuthRequest{
		Channels: []*eventsv1.ChannelProgress{{Channel: "WHATSAPP", Error: coded}, {Channel: "SMS", Error: bare}},
		Failures: []*eventsv1.Failure{{Channel: "WHATSAPP", Error: coded}, {Channel: "SMS", Error: bare}},
	}
	wantCoded := &eventsv1.ErrorInfo{Code: "033", Description: "Mobile Number not OPT-IN", Retriable: eventsv1.Retriable_RETRIABLE_AFTER_OPT_IN}
	red := Request(r)
	for i, got := range []*eventsv1.ErrorInfo{red.Channels[0].Error, red.Failures[0].Error} {
		if !proto.Equal(got, wantCoded) {
			t.Errorf("error %d: %v, want %v", i, got, wantCoded)
		}
	}
	if red.Channels[1].Error != nil || red.Failures[1].Error != nil {
		t.Errorf("an error that was only a message: %v, %v; want none", red.Channels[1].Error, red.Failures[1].Error)
	}
	if coded.Message == "" || bare.Message == "" {
		t.Fatal("Request changed its input")
	}
	if e := Events([]*eventsv1.Event{{Error: coded}, {Error: bare}}); !proto.Equal(e[0].Error, wantCoded) || e[1].Error != nil {
		t.Errorf("Events: %v, %v", e[0].Error, e[1].Error)
	}
	ev := &eventsv1.Event{Error: proto.CloneOf(coded)}
	StripEvent(ev)
	if !proto.Equal(ev.Error, wantCoded) {
		t.Errorf("StripEvent: %v, want %v", ev.Error, wantCoded)
	}
}

// Request and Events remove what StripRequest and StripEvent remove and
// keep every other field, however the messages are filled, and change
// nothing in their input.
func TestCopiesMatchStrippedClones(t *testing.T) {
	t.Parallel()
	rng := rand.New(rand.NewPCG(3, 4))
	for range 300 {
		r := new(eventsv1.AuthRequest)
		fill(rng, r.ProtoReflect())
		events := make([]*eventsv1.Event, rng.IntN(3))
		for i := range events {
			events[i] = new(eventsv1.Event)
			fill(rng, events[i].ProtoReflect())
		}
		rBefore, eventsBefore := proto.CloneOf(r), cloneAll(events)

		want := proto.CloneOf(r)
		StripRequest(want)
		if got := Request(r); !proto.Equal(got, want) {
			t.Fatalf("Request(%v)\n= %v\nwant %v", r, got, want)
		}
		got := Events(events)
		for i, e := range eventsBefore {
			want := proto.CloneOf(e)
			StripEvent(want)
			if !proto.Equal(got[i], want) {
				t.Fatalf("Events: %v, want %v", got[i], want)
			}
		}
		if !proto.Equal(r, rBefore) || !slices.EqualFunc(events, eventsBefore, func(a, b *eventsv1.Event) bool { return proto.Equal(a, b) }) {
			t.Fatal("the input changed")
		}
	}
}

func cloneAll(events []*eventsv1.Event) []*eventsv1.Event {
	out := make([]*eventsv1.Event, len(events))
	for i, e := range events {
		out[i] = proto.CloneOf(e)
	}
	return out
}

// fill sets every field of m, recursively, to random values.
func fill(rng *rand.Rand, m protoreflect.Message) {
	fields := m.Descriptor().Fields()
	for i := range fields.Len() {
		fd := fields.Get(i)
		switch {
		case fd.IsMap():
			panic(fmt.Sprintf("fill: map field %s", fd.FullName()))
		case fd.IsList():
			list := m.Mutable(fd).List()
			for range rng.IntN(3) + 1 {
				if fd.Kind() == protoreflect.MessageKind {
					fill(rng, list.AppendMutable().Message())
				} else {
					list.Append(scalar(rng, fd))
				}
			}
		case fd.Kind() == protoreflect.MessageKind:
			fill(rng, m.Mutable(fd).Message())
		default:
			m.Set(fd, scalar(rng, fd))
		}
	}
}

func scalar(rng *rand.Rand, fd protoreflect.FieldDescriptor) protoreflect.Value {
	switch fd.Kind() {
	case protoreflect.StringKind:
		return protoreflect.ValueOfString(fmt.Sprintf("s%d", rng.IntN(1000)+1))
	case protoreflect.BoolKind:
		return protoreflect.ValueOfBool(true)
	case protoreflect.EnumKind:
		return protoreflect.ValueOfEnum(protoreflect.EnumNumber(rng.IntN(3) + 1))
	case protoreflect.Int32Kind:
		return protoreflect.ValueOfInt32(rng.Int32N(1000) + 1)
	case protoreflect.Int64Kind:
		return protoreflect.ValueOfInt64(rng.Int64N(1e12) + 1)
	}
	panic(fmt.Sprintf("fill: field %s of kind %s", fd.FullName(), fd.Kind()))
}
