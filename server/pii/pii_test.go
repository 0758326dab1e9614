package pii

import (
	"testing"

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
