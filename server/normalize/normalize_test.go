package normalize_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	eventsv1 "github.com/otpless-events/otpless-events/gen/otpless/events/v1"
	"github.com/otpless-events/otpless-events/internal/fixtures"
	"github.com/otpless-events/otpless-events/server/normalize"
)

// TestScenarios runs every line of every scenario and checks what holds for
// all of them: each yields events with a request id, an event id, the
// receive time, and the body's own timestamp as event time.
func TestScenarios(t *testing.T) {
	t.Parallel()
	for _, s := range fixtures.Scenarios(t) {
		t.Run(s.Name, func(t *testing.T) {
			t.Parallel()
			for i, body := range s.Bodies {
				want := bodyTime(t, body)
				events := normalizeBody(t, body)
				if len(events) == 0 {
					t.Fatalf("line %d: no events", i+1)
				}
				for _, e := range events {
					if e.GetRequestId() == "" || e.GetEventId() == "" {
						t.Errorf("line %d: request id %q, event id %q; want both set", i+1, e.GetRequestId(), e.GetEventId())
					}
					if got := e.GetEventTime().AsTime(); !got.Equal(want) {
						t.Errorf("line %d: event time %v, want %v", i+1, got, want)
					}
					if got := e.GetReceiveTime().AsTime(); !got.Equal(received) {
						t.Errorf("line %d: receive time %v, want %v", i+1, got, received)
					}
				}
			}
		})
	}
}

// bodyTime reads a scenario body's top-level timestamp independently of
// ParseTime: the scenarios hold 10-digit epoch seconds and 13-digit epoch
// milliseconds.
func bodyTime(t *testing.T, body []byte) time.Time {
	t.Helper()
	var b struct {
		Timestamp json.Number `json:"timestamp"`
		Data      struct {
			Timestamp json.Number `json:"timestamp"`
		} `json:"data"`
	}
	if err := json.Unmarshal(body, &b); err != nil {
		t.Fatal(err)
	}
	ts := cmpOr(b.Timestamp, b.Data.Timestamp)
	n, err := ts.Int64()
	if err != nil {
		t.Fatalf("timestamp %q: %v", ts, err)
	}
	switch len(ts) {
	case 10:
		return time.Unix(n, 0)
	case 13:
		return time.UnixMilli(n)
	}
	t.Fatalf("timestamp %q is neither seconds nor milliseconds", ts)
	return time.Time{}
}

func cmpOr(a, b json.Number) json.Number {
	if a != "" {
		return a
	}
	return b
}

func TestScenarioPhoneAndEmail(t *testing.T) {
	t.Parallel()
	s := fixtures.Named(t, "phone-and-email")
	events := normalizeBody(t, s.Bodies[0])
	if len(events) != 2 {
		t.Fatalf("INITIATED yields %d events, want 2 (phone and email request ids differ)", len(events))
	}
	phone, email := events[0], events[1]
	if phone.GetRequestId() == email.GetRequestId() {
		t.Errorf("both events have request id %q", phone.GetRequestId())
	}
	if phone.GetEventId() == email.GetEventId() {
		t.Errorf("both events have event id %q", phone.GetEventId())
	}
	if phone.GetPhone() == nil || phone.GetEmail() != "" || phone.GetAuthMethod() != "OTP" || !slices.Equal(phone.GetAuthChannels(), []string{"SMS"}) {
		t.Errorf("phone event = %v", phone)
	}
	if email.GetPhone() != nil || email.GetEmail() == "" || email.GetAuthMethod() != "MAGIC_LINK" || !slices.Equal(email.GetAuthChannels(), []string{"EMAIL"}) {
		t.Errorf("email event = %v", email)
	}
}

// TestAuthGroups checks how v2 auth entries are grouped into events by
// request id.
func TestAuthGroups(t *testing.T) {
	t.Parallel()
	type want struct {
		requestID, method, email string
		channels                 []string
		phone                    bool
	}
	tests := []struct {
		name string
		data string // the "data" object of an AUTH INITIATED body
		want []want
	}{
		{
			name: "same id: one event with both",
			data: `{"authenticationDetails": {"phone": {"requestId": "r1", "method": "otp", "channel": ["WHATSAPP/sms", " EMAIL "], "phoneNumber": "98"}, "email": {"requestId": "r1", "method": "MAGIC_LINK", "channel": ["EMAIL", "whatsapp"], "email": "a@b"}}}`,
			want: []want{{requestID: "r1", method: "OTP", email: "a@b", channels: []string{"WHATSAPP", "SMS", "EMAIL"}, phone: true}},
		},
		{
			name: "different ids: one event each",
			data: `{"authenticationDetails": {"phone": {"requestId": "r1", "channel": ["SMS"], "phoneNumber": "98"}, "email": {"requestId": "r2", "method": "OTP", "email": "a@b"}}}`,
			want: []want{{requestID: "r1", channels: []string{"SMS"}, phone: true}, {requestID: "r2", method: "OTP", email: "a@b"}},
		},
		{
			name: "entry without id takes data.requestId",
			data: `{"requestId": "r0", "authenticationDetails": {"phone": {"phoneNumber": "98"}, "email": {"requestId": "r2", "email": "a@b"}}}`,
			want: []want{{requestID: "r0", phone: true}, {requestID: "r2", email: "a@b"}},
		},
		{
			name: "entries without any id: one event without request id",
			data: `{"authenticationDetails": {"phone": {"phoneNumber": "98"}, "email": {"email": "a@b"}}}`,
			want: []want{{email: "a@b", phone: true}},
		},
		{
			name: "empty entries: data.requestId",
			data: `{"requestId": "r0", "authenticationDetails": {"phone": {}, "email": {}}}`,
			want: []want{{requestID: "r0"}},
		},
		{
			name: "method from email when phone has none",
			data: `{"authenticationDetails": {"phone": {"requestId": "r1", "phoneNumber": "98"}, "email": {"requestId": "r1", "method": "oauth", "channel": ["GOOGLE"]}}}`,
			want: []want{{requestID: "r1", method: "OAUTH", channels: []string{"GOOGLE"}, phone: true}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			body := `{"eventType": "AUTH", "timestamp": 1764153000, "data": ` + strings.Replace(tt.data, "{", `{"status": "INITIATED", `, 1) + `}`
			events := normalizeBody(t, []byte(body))
			if len(events) != len(tt.want) {
				t.Fatalf("%d events, want %d: %v", len(events), len(tt.want), events)
			}
			for i, e := range events {
				got := want{e.GetRequestId(), e.GetAuthMethod(), e.GetEmail(), e.GetAuthChannels(), e.GetPhone() != nil}
				w := tt.want[i]
				if got.requestID != w.requestID || got.method != w.method || got.email != w.email || got.phone != w.phone || !slices.Equal(got.channels, w.channels) {
					t.Errorf("event %d = %+v, want %+v", i, got, w)
				}
			}
		})
	}
}

func TestV1SystemFallbackChannel(t *testing.T) {
	t.Parallel()
	tests := []struct{ fallbackChannel, from, to string }{
		{"WHATSAPP/SMS", "WHATSAPP", "SMS"},
		{" whatsapp / sms ", "WHATSAPP", "SMS"},
		{"SMS", "", "SMS"},
		{"SILENT_AUTH/WHATSAPP/SMS", "SILENT_AUTH", "WHATSAPP"},
		{"", "", ""},
	}
	for _, tt := range tests {
		body := `{"notificationType": "FALLBACK_TRIGGERED", "requestId": "r1", "timestamp": 1707743479000, "fallbackChannel": "` + tt.fallbackChannel + `"}`
		e := normalizeBody(t, []byte(body))[0]
		if e.GetKind() != eventsv1.EventKind_EVENT_KIND_AUTH || e.GetStatus() != "FALLBACK" || e.GetFromChannel() != tt.from || e.GetToChannel() != tt.to {
			t.Errorf("fallbackChannel %q: kind %v status %q from %q to %q, want AUTH FALLBACK from %q to %q",
				tt.fallbackChannel, e.GetKind(), e.GetStatus(), e.GetFromChannel(), e.GetToChannel(), tt.from, tt.to)
		}
	}
}

func TestEventTime(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, body string
		want       time.Time
	}{
		{"top-level seconds", `{"eventType": "AUTH", "timestamp": 1734518721, "data": {"status": "SUCCESS"}}`, time.Unix(1734518721, 0)},
		{"top-level before data", `{"status": "SENT", "timestamp": 1734518721, "data": {"timestamp": 1707743466000}}`, time.Unix(1734518721, 0)},
		{"data.timestamp in v2", `{"eventType": "DLR", "data": {"status": "SENT", "timestamp": "2024-12-18T10:45:21Z"}}`, time.Unix(1734518721, 0)},
		{"null top-level, data.timestamp", `{"status": "SENT", "timestamp": null, "data": {"timestamp": 1707743466000}}`, time.UnixMilli(1707743466000)},
		{"a day ahead", fmt.Sprintf(`{"status": "SENT", "timestamp": %d}`, received.Add(normalize.MaxAhead).UnixMilli()), received.Add(normalize.MaxAhead)},
		{"none: receive time", `{"status": "SENT", "data": {"referenceId": "r1"}}`, received},
		{"zero: receive time", `{"status": "SENT", "timestamp": 0}`, received},
		{"empty string: receive time", `{"status": "SENT", "timestamp": ""}`, received},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			e := normalizeBody(t, []byte(tt.body))[0]
			if got := e.GetEventTime().AsTime(); !got.Equal(tt.want) {
				t.Errorf("event time %v, want %v", got, tt.want)
			}
		})
	}
}

// TestEventTimeRefused checks that a time the body has but that cannot be
// used is an error naming its field (and its value, unless a string, which
// may hold personal data): were it replaced by the receive time, a delayed
// FAILED could end a request that went on on another channel, and a time
// years ahead would stay the request's latest.
func TestEventTimeRefused(t *testing.T) {
	t.Parallel()
	tests := []struct{ name, body, err string }{
		{"negative", `{"status": "SENT", "timestamp": -1707743466000}`, `timestamp -1707743466000 is not an epoch time`},
		{"object", `{"status": "SENT", "timestamp": {"ms": 1707743466000}}`, `timestamp (an object) is not a number or a string`},
		{"bool", `{"status": "SENT", "timestamp": true}`, `timestamp true is not a number or a string`},
		{"words before a good data.timestamp", `{"status": "SENT", "timestamp": "soon", "data": {"timestamp": 1707743466000}}`, `timestamp (a string) is not an epoch time`},
		{"unreadable data.timestamp", `{"eventType": "DLR", "data": {"status": "SENT", "timestamp": "Mon, 12 Feb 2024 13:11:19 IST"}}`, `data.timestamp (a string) is not an epoch time`},
		{"year 2100", `{"eventType": "DLR", "timestamp": 4102444800000, "data": {"status": "FAILED"}}`, `timestamp 4102444800000 is more than a day after the webhook arrived (2026-01-02T03:04:05Z)`},
		{"year 2100 with a fraction, as sent", `{"eventType": "DLR", "timestamp": 4102444800000.25, "data": {"status": "FAILED"}}`, `timestamp 4102444800000.25 is more than a day after the webhook arrived (2026-01-02T03:04:05Z)`},
		{"a day and a millisecond ahead", fmt.Sprintf(`{"status": "SENT", "timestamp": %d}`, received.Add(normalize.MaxAhead+time.Millisecond).UnixMilli()), "more than a day after"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			req, err := normalize.Decode([]byte(tt.body))
			if err != nil {
				t.Fatalf("Decode: %v", err)
			}
			events, err := normalize.Events(req, received)
			if !errors.Is(err, normalize.ErrInvalidBody) || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("Events = %v, %v; want ErrInvalidBody saying %q", events, err, tt.err)
			}
		})
	}
}

func TestEventsUnrecognized(t *testing.T) {
	t.Parallel()
	for _, body := range []string{`{}`, `{"foo": 1}`, `{"eventType": "  ", "data": {"status": "SENT"}}`, `{"token": "t", "requestId": "r"}`} {
		req, err := normalize.Decode([]byte(body))
		if err != nil {
			t.Fatalf("Decode(%s): %v", body, err)
		}
		events, err := normalize.Events(req, received)
		if !errors.Is(err, normalize.ErrUnrecognized) || events != nil {
			t.Errorf("Events(%s) = %v, %v; want ErrUnrecognized", body, events, err)
		}
		if err != nil && !strings.Contains(err.Error(), "no eventType, status or notificationType") {
			t.Errorf("Events(%s) error %q does not say what is missing", body, err)
		}
	}
	if _, err := normalize.Events(nil, received); !errors.Is(err, normalize.ErrUnrecognized) {
		t.Errorf("Events(nil) error %v, want ErrUnrecognized", err)
	}
}

// TestForwardCompatible checks that fields OTPLESS may add are ignored and
// values this service does not know are kept, not rejected.
func TestForwardCompatible(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		body   string
		kind   eventsv1.EventKind
		status string
		check  func(*eventsv1.Event) bool
	}{
		{
			name: "unknown fields at every level",
			body: `{"x": 1, "eventType": "AUTH", "timestamp": 1734518721, "data": {"x": [1, {"y": null}], "status": "SUCCESS", "token": "t",
				"authenticationDetails": {"x": "y", "phone": {"x": {}, "requestId": "r1", "method": "OTP", "channel": ["SMS"], "phoneNumber": "98"}, "email": {"x": true}, "social": {"requestId": "r9"}}}}`,
			kind:   eventsv1.EventKind_EVENT_KIND_AUTH,
			status: "SUCCESS",
			check: func(e *eventsv1.Event) bool {
				return e.GetRequestId() == "r1" && e.GetToken() == "t" && e.GetPhone().GetPhoneNumber() == "98"
			},
		},
		{
			name:   "unknown fields in a v1 system event",
			body:   `{"notificationType": "APPROVAL_ACTION", "requestId": "r1", "mobile": {"number": "91", "x": 1}, "x": [], "timestamp": 1707743479000}`,
			kind:   eventsv1.EventKind_EVENT_KIND_AUTH,
			status: "SUCCESS",
			check:  func(e *eventsv1.Event) bool { return e.GetPhone().GetPhoneNumber() == "91" },
		},
		{
			name:   "unknown eventType, known delivery status",
			body:   `{"eventType": "RCS_DLR", "timestamp": 1734513816000, "data": {"requestId": "r1", "status": "delivered", "channel": " rcs "}}`,
			kind:   eventsv1.EventKind_EVENT_KIND_DELIVERY,
			status: "DELIVERED",
			check:  func(e *eventsv1.Event) bool { return e.GetChannel() == "RCS" },
		},
		{
			name:   "unknown eventType, known auth status",
			body:   `{"eventType": "LOGIN", "timestamp": 1734513816000, "data": {"requestId": "r1", "status": "Fallback", "fromChannel": "sms", "toChannel": "Voice"}}`,
			kind:   eventsv1.EventKind_EVENT_KIND_AUTH,
			status: "FALLBACK",
			check:  func(e *eventsv1.Event) bool { return e.GetFromChannel() == "SMS" && e.GetToChannel() == "VOICE" },
		},
		{
			name:   "unknown eventType and status",
			body:   `{"eventType": "session", "timestamp": 1734513816000, "data": {"requestId": "r1", "status": "expired"}}`,
			kind:   eventsv1.EventKind_EVENT_KIND_SYSTEM,
			status: "EXPIRED",
			check:  func(e *eventsv1.Event) bool { return e.GetRequestId() == "r1" },
		},
		{
			name:   "unknown status under DLR",
			body:   `{"eventType": "DLR", "timestamp": 1734513816000, "data": {"requestId": "r1", "status": "BOUNCED", "channel": "EMAIL"}}`,
			kind:   eventsv1.EventKind_EVENT_KIND_DELIVERY,
			status: "BOUNCED",
			check:  func(e *eventsv1.Event) bool { return e.GetChannel() == "EMAIL" },
		},
		{
			name:   "unknown method and channel",
			body:   `{"eventType": "AUTH", "timestamp": 1734518721, "data": {"status": "INITIATED", "authenticationDetails": {"phone": {"requestId": "r1", "method": "passkey", "channel": ["TELEGRAM/rcs"]}}}}`,
			kind:   eventsv1.EventKind_EVENT_KIND_AUTH,
			status: "INITIATED",
			check: func(e *eventsv1.Event) bool {
				return e.GetAuthMethod() == "PASSKEY" && slices.Equal(e.GetAuthChannels(), []string{"TELEGRAM", "RCS"})
			},
		},
		{
			name:   "unknown notificationType",
			body:   `{"notificationType": "session_expired", "requestId": "r1", "timestamp": 1707743479000}`,
			kind:   eventsv1.EventKind_EVENT_KIND_SYSTEM,
			status: "SESSION_EXPIRED",
			check:  func(e *eventsv1.Event) bool { return e.GetRequestId() == "r1" },
		},
		{
			name:   "unknown v1 delivery status and error code",
			body:   `{"status": "expired", "data": {"referenceId": "r1", "timestamp": 1707743479000, "channel": "sms", "errorCode": "999"}}`,
			kind:   eventsv1.EventKind_EVENT_KIND_DELIVERY,
			status: "EXPIRED",
			check: func(e *eventsv1.Event) bool {
				return e.GetError().GetCode() == "999" && e.GetError().GetRetriable() == eventsv1.Retriable_RETRIABLE_UNSPECIFIED
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			events := normalizeBody(t, []byte(tt.body))
			if len(events) != 1 {
				t.Fatalf("%d events, want 1", len(events))
			}
			e := events[0]
			if e.GetKind() != tt.kind || e.GetStatus() != tt.status || !tt.check(e) {
				t.Errorf("event = %v, want kind %v status %s", e, tt.kind, tt.status)
			}
		})
	}
}

// TestEventID checks the event identity: a retry of the same body gets the
// same id whenever it is received; a different event gets a different id.
func TestEventID(t *testing.T) {
	t.Parallel()
	const base = `{"eventType": "DLR", "timestamp": 1734513816000, "data": {"requestId": "r1", "authSessionId": "s1", "status": "FAILED", "channel": "SMS", "errorCode": "003"}}`
	id := func(body string, received time.Time) string {
		t.Helper()
		req, err := normalize.Decode([]byte(body))
		if err != nil {
			t.Fatal(err)
		}
		events, err := normalize.Events(req, received)
		if err != nil {
			t.Fatal(err)
		}
		return events[0].GetEventId()
	}
	want := id(base, received)
	if len(want) != 32 || strings.Trim(want, "0123456789abcdef") != "" {
		t.Errorf("event id %q is not 32 lowercase hex digits", want)
	}
	if got := id(base, received.Add(time.Hour)); got != want {
		t.Errorf("retry received later: id %s, want %s", got, want)
	}
	same := map[string]string{
		"case and space of status":      strings.Replace(base, `"FAILED"`, `" failed "`, 1),
		"field not in the identity":     strings.Replace(base, `"s1"`, `"s2"`, 1),
		"same time in another notation": strings.Replace(base, `1734513816000`, `"2024-12-18T09:23:36Z"`, 1),
	}
	for name, body := range same {
		if got := id(body, received); got != want {
			t.Errorf("%s: id %s, want %s", name, got, want)
		}
	}
	different := map[string]string{
		"request id":                 strings.Replace(base, `"r1"`, `"r2"`, 1),
		"status":                     strings.Replace(base, `"FAILED"`, `"DELIVERED"`, 1),
		"channel":                    strings.Replace(base, `"SMS"`, `"WHATSAPP"`, 1),
		"time":                       strings.Replace(base, `1734513816000`, `1734513816001`, 1),
		"error code":                 strings.Replace(base, `"003"`, `"033"`, 1),
		"kind":                       strings.Replace(base, `"DLR"`, `"AUTH"`, 1),
		"bytes moved between fields": strings.Replace(base, `"FAILED", "channel": "SMS"`, `"FAILEDSMS", "channel": ""`, 1),
	}
	seen := map[string]string{want: "base"}
	for name, body := range different {
		got := id(body, received)
		if prev, ok := seen[got]; ok {
			t.Errorf("changing the %s gives id %s, the same as %s", name, got, prev)
		}
		seen[got] = name
	}
	// A body without time has its receive time as event time, but its
	// retries are still duplicates; and it is not the same event as one
	// that names that time.
	noTime := `{"status": "SENT", "data": {"referenceId": "r1"}}`
	if got, want := id(noTime, received.Add(time.Second)), id(noTime, received); got != want {
		t.Errorf("retry of a body without time: id %s, want %s", got, want)
	}
	timed := fmt.Sprintf(`{"status": "SENT", "data": {"referenceId": "r1", "timestamp": %d}}`, received.UnixMilli())
	if id(noTime, received) == id(timed, received) {
		t.Error("a body without time has the id of one timed at its receive time")
	}

	// An event naming no request is also told apart by its token (never by
	// a phone number, which its hash would give away); the token of one
	// with a request plays no part.
	const noRequest = `{"token": "tokA", "timestamp": 1707743479000, "mobile": {"number": "919800000001"}, "notificationType": "UNREACHABLE"}`
	lone := id(noRequest, received)
	if got := id(noRequest, received.Add(time.Hour)); got != lone {
		t.Errorf("retry of an event without request: id %s, want %s", got, lone)
	}
	if id(strings.Replace(noRequest, `"tokA"`, `"tokB"`, 1), received) == lone {
		t.Error("events without request and with other tokens: the same id")
	}
	if id(strings.Replace(noRequest, `"919800000001"`, `"919800000002"`, 1), received) != lone {
		t.Error("an event without request: its phone number changed its id")
	}
	withRequest := strings.Replace(noRequest, `"notificationType"`, `"requestId": "r1", "notificationType"`, 1)
	if id(withRequest, received) != id(strings.Replace(withRequest, `"tokA"`, `"tokB"`, 1), received) {
		t.Error("an event with a request: its token changed its id")
	}
}

// TestEventsDoNotAliasRequest changes every part of req after Events and
// checks that the events are unchanged.
func TestEventsDoNotAliasRequest(t *testing.T) {
	t.Parallel()
	for _, f := range fixtures.Docs(t) {
		req, err := normalize.Decode(f.Body)
		if err != nil {
			t.Fatal(err)
		}
		events, err := normalize.Events(req, received)
		if err != nil {
			t.Fatal(err)
		}
		before := make([]*eventsv1.Event, len(events))
		for i, e := range events {
			before[i] = proto.Clone(e).(*eventsv1.Event)
		}
		for _, d := range []*eventsv1.AuthDetail{req.GetData().GetAuthenticationDetails().GetPhone(), req.GetData().GetAuthenticationDetails().GetEmail()} {
			for i := range d.GetChannel() {
				d.Channel[i] = "CHANGED"
			}
		}
		data := req.GetData()
		for _, m := range []proto.Message{data.GetAuthenticationDetails().GetPhone(), data.GetAuthenticationDetails().GetEmail(),
			data.GetAuthenticationDetails(), data.GetTimestamp(), data, req.GetMobile(), req.GetTimestamp(), req} {
			if m.ProtoReflect().IsValid() {
				proto.Reset(m)
			}
		}
		for i := range events {
			if !proto.Equal(events[i], before[i]) {
				t.Errorf("%s: event %d changed with the request", f.Name, i)
			}
		}
	}
}

func BenchmarkNormalize(b *testing.B) {
	docs := fixtures.Docs(b)
	var size int64
	for _, f := range docs {
		size += int64(len(f.Body))
	}
	b.SetBytes(size)
	b.ReportAllocs()
	for b.Loop() {
		for _, f := range docs {
			req, err := normalize.Decode(f.Body)
			if err != nil {
				b.Fatal(err)
			}
			if _, err := normalize.Events(req, received); err != nil {
				b.Fatal(err)
			}
		}
	}
}

func TestRequestIDsNoReaderCouldAskFor(t *testing.T) {
	t.Parallel()
	for name, id := range map[string]string{
		"too long": strings.Repeat("a", normalize.MaxRequestIDLen+1),
		"NUL":      "abc\x00def",
		"newline":  "abc\ndef",
	} {
		req := &eventsv1.IngestRequest{EventType: "DLR", Data: &eventsv1.WebhookData{RequestId: id, Status: "SENT"}}
		if _, err := normalize.Events(req, time.Now()); !errors.Is(err, normalize.ErrInvalidBody) || !strings.Contains(err.Error(), "request id") {
			t.Errorf("%s: Events = %v, want ErrInvalidBody naming the request id", name, err)
		}
	}
	ok := &eventsv1.IngestRequest{EventType: "DLR", Data: &eventsv1.WebhookData{RequestId: strings.Repeat("a", normalize.MaxRequestIDLen), Status: "SENT"}}
	if _, err := normalize.Events(ok, time.Now()); err != nil {
		t.Errorf("a request id of %d bytes: %v", normalize.MaxRequestIDLen, err)
	}
}

// TestAuthChannelsBounded checks that an auth event lists at most
// MaxAuthChannels channels, and that a body naming more is refused in time
// linear in its size: the list's repeats were once removed in quadratic
// time, and a 1 MiB body of "/"-joined names held a CPU for tens of seconds.
func TestAuthChannelsBounded(t *testing.T) {
	t.Parallel()
	names := func(n int) string {
		s := make([]string, n)
		for i := range s {
			s[i] = fmt.Sprintf("C%d", i)
		}
		return strings.Join(s, "/")
	}
	body := func(channels string) *eventsv1.IngestRequest {
		return &eventsv1.IngestRequest{EventType: "AUTH", Data: &eventsv1.WebhookData{Status: "INITIATED", AuthenticationDetails: &eventsv1.AuthenticationDetails{
			Phone: &eventsv1.AuthDetail{RequestId: "r1", Channel: []string{channels, "sms/C0"}},
		}}}
	}
	events, err := normalize.Events(body(names(normalize.MaxAuthChannels-1)), received)
	if err != nil {
		t.Fatalf("%d channels: %v", normalize.MaxAuthChannels, err)
	}
	if got := events[0].GetAuthChannels(); len(got) != normalize.MaxAuthChannels || got[len(got)-1] != "SMS" {
		t.Errorf("%d channels and SMS, with C0 twice: got %d, last %q", normalize.MaxAuthChannels-1, len(got), got[len(got)-1])
	}
	for _, n := range []int{normalize.MaxAuthChannels + 1, 150_000} {
		_, err := normalize.Events(body(names(n)), received)
		if !errors.Is(err, normalize.ErrInvalidBody) || !strings.Contains(err.Error(), "more than 64 channels") {
			t.Errorf("%d channels: Events = %v, want ErrInvalidBody naming the bound", n, err)
		}
	}
	repeats := strings.Repeat("SMS/", 250_000) // 1 MiB of one name
	if events, err := normalize.Events(body(repeats), received); err != nil || len(events[0].GetAuthChannels()) != 2 {
		t.Errorf("one name repeated: %v, %v", events, err)
	}
}

// TestFieldLengthsBounded checks that an event keeps no text longer than
// MaxFieldLen, naming the body's field (a legacy system event's by its own
// names, not the event's): five FAILED reports with 900 KB error codes made
// a snapshot no gRPC client could read (the gateway answered 429).
func TestFieldLengthsBounded(t *testing.T) {
	t.Parallel()
	long := strings.Repeat("x", normalize.MaxFieldLen+1)
	ok := strings.Repeat("x", normalize.MaxFieldLen)
	for _, tc := range []struct{ name, body, field string }{
		{"error code", `{"eventType": "DLR", "data": {"requestId": "r1", "status": "FAILED", "channel": "SMS", "errorCode": "%s"}}`, "errorCode"},
		{"channel", `{"eventType": "DLR", "data": {"requestId": "r1", "status": "SENT", "channel": "%s"}}`, "channel"},
		{"to channel", `{"eventType": "AUTH", "data": {"requestId": "r1", "status": "FALLBACK", "fromChannel": "SMS", "toChannel": "%s"}}`, "toChannel"},
		{"status", `{"eventType": "DLR", "data": {"requestId": "r1", "status": "%s"}}`, "status"},
		{"identity", `{"status": "SENT", "data": {"referenceId": "r1", "identity": "%s"}}`, "identity"},
		{"token", `{"notificationType": "APPROVAL_ACTION", "requestId": "r1", "token": "%s"}`, "token"},
		{"notification type", `{"notificationType": "%s", "requestId": "r1"}`, "notificationType"},
		{"fallback channel", `{"notificationType": "FALLBACK_TRIGGERED", "requestId": "r1", "fallbackChannel": "WHATSAPP/%s"}`, "fallbackChannel"},
		{"mobile number", `{"notificationType": "UNREACHABLE", "requestId": "r1", "mobile": {"number": "%s"}}`, "mobile.number"},
		{"auth channel", `{"eventType": "AUTH", "data": {"status": "INITIATED", "authenticationDetails": {"phone": {"requestId": "r1", "channel": ["%s"]}}}}`, "channel of authenticationDetails"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			events := func(v string) error {
				req, err := normalize.Decode(fmt.Appendf(nil, tc.body, v))
				if err != nil {
					t.Fatal(err)
				}
				_, err = normalize.Events(req, received)
				return err
			}
			if err := events(long); !errors.Is(err, normalize.ErrInvalidBody) || !strings.Contains(err.Error(), tc.field+" is longer than 4 KiB") {
				t.Errorf("%s of %d bytes: %v, want ErrInvalidBody naming it", tc.field, len(long), err)
			}
			if err := events(ok); err != nil {
				t.Errorf("%s of %d bytes: %v", tc.field, len(ok), err)
			}
		})
	}
}

// TestNamed checks that Named gives, for every documented body, the request
// and trace id of its first event, and for refused bodies the ids that
// event would have had, when a reader could ask for them.
func TestNamed(t *testing.T) {
	t.Parallel()
	manyChannels := "C0"
	for i := range normalize.MaxAuthChannels {
		manyChannels += fmt.Sprintf("/C%d", i+1)
	}
	for _, f := range fixtures.Docs(t) {
		req, err := normalize.Decode(f.Body)
		if err != nil {
			t.Fatalf("%s: %v", f.Name, err)
		}
		events := normalizeBody(t, f.Body)
		got := normalize.Named(req)
		if got.GetRequestId() != events[0].GetRequestId() || got.GetTraceId() != events[0].GetTraceId() {
			t.Errorf("%s: Named = %q, %q; want the first event's %q, %q", f.Name, got.GetRequestId(), got.GetTraceId(), events[0].GetRequestId(), events[0].GetTraceId())
		}
		if byBody := normalize.NamedBody(f.Body); !proto.Equal(byBody, got) {
			t.Errorf("%s: NamedBody = %v; want Named's %v", f.Name, byBody, got)
		}
	}
	for _, tc := range []struct {
		name, body, requestID, traceID string
	}{
		{"v2 time far ahead", `{"eventType":"DLR","timestamp":4102444800000,"data":{"requestId":"r1","traceId":"t1","status":"SENT"}}`, "r1", "t1"},
		{"v2 auth, the phone entry's id", `{"eventType":"AUTH","timestamp":"soon","data":{"requestId":"r0","status":"SUCCESS","authenticationDetails":{"phone":{"requestId":"r2"}}}}`, "r2", ""},
		{"v2 delivery: authenticationDetails are an auth event's", `{"eventType":"DLR","timestamp":"soon","data":{"requestId":"r8","status":"SENT","authenticationDetails":{"phone":{"requestId":"r9"}}}}`, "r8", ""},
		{"v1 delivery: its events have no trace id", `{"status":"DELIVERED","data":{"referenceId":"r3","traceId":"t3","timestamp":"soon"}}`, "r3", ""},
		{"v1 system", `{"notificationType":"APPROVAL_ACTION","requestId":"r4","timestamp":"soon"}`, "r4", ""},
		{"no format", `{"data":{"referenceId":"r5","traceId":"t5"}}`, "", ""},
		{"more than 64 channels", `{"eventType":"AUTH","data":{"traceId":"t7","status":"INITIATED","authenticationDetails":{"phone":{"requestId":"r7","channel":["` + manyChannels + `"]}}}}`, "r7", "t7"},
		{"ids no reader could ask for", `{"eventType":"DLR","data":{"requestId":"r\n6","traceId":"` + strings.Repeat("t", normalize.MaxRequestIDLen+1) + `","status":"SENT"}}`, "", ""},
	} {
		req, err := normalize.Decode([]byte(tc.body))
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if _, err := normalize.Events(req, received); err == nil {
			t.Fatalf("%s: Events accepted the body", tc.name)
		}
		if got := normalize.Named(req); got.GetRequestId() != tc.requestID || got.GetTraceId() != tc.traceID {
			t.Errorf("%s: Named = %q, %q; want %q, %q", tc.name, got.GetRequestId(), got.GetTraceId(), tc.requestID, tc.traceID)
		}
		if got := normalize.NamedBody([]byte(tc.body)); got.GetRequestId() != tc.requestID || got.GetTraceId() != tc.traceID {
			t.Errorf("%s: NamedBody = %q, %q; want %q, %q", tc.name, got.GetRequestId(), got.GetTraceId(), tc.requestID, tc.traceID)
		}
	}
}

// A body Decode refuses is named by the ids it has, read around the field
// of the wrong type; one that is not JSON by none.
func TestNamedBody(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, body, requestID, traceID string
	}{
		{"v2, identity a number", `{"eventType":"DLR","data":{"requestId":"r1","traceId":"t1","status":"SENT","identity":919812345678}}`, "r1", "t1"},
		{"v2, its request id a number", `{"eventType":"DLR","data":{"requestId":12,"traceId":"t1","status":"SENT"}}`, "", "t1"},
		{"v1 delivery, channel an object", `{"status":"DELIVERED","data":{"referenceId":"r3","channel":{}}}`, "r3", ""},
		{"v1 system, mobile a string", `{"notificationType":"APPROVAL_ACTION","requestId":"r4","mobile":"98"}`, "r4", ""},
		{"not JSON", `{"eventType":"DLR","data":{"requestId":"r5"`, "", ""},
		// A blank or null field names no format, as for Events.
		{"v2 after a null notificationType", `{"notificationType":null,"eventType":"DLR","data":{"requestId":"r6","status":5}}`, "r6", ""},
		{"v1 delivery after a blank eventType", `{"eventType":" ","status":"SENT","data":{"referenceId":"r7","channel":5}}`, "r7", ""},
		{"v1 system, notificationType a number", `{"notificationType":3,"eventType":"DLR","requestId":"r8","data":{"requestId":"r9"}}`, "r8", ""},
		// Fields by their proto names, which Decode reads too, and not by
		// names of another case, which it does not.
		{"v2 by proto names", `{"event_type":"DLR","data":{"request_id":"r10","trace_id":"t10","status":5}}`, "r10", "t10"},
		{"v2 auth by proto names", `{"event_type":"AUTH","data":{"authentication_details":{"email":{"request_id":"r11"}},"status":5}}`, "r11", ""},
		{"v1 delivery by proto names", `{"status":"SENT","data":{"reference_id":"r12","channel":5}}`, "r12", ""},
		{"v1 system by proto names", `{"notification_type":"APPROVAL_ACTION","request_id":"r13","mobile":"98"}`, "r13", ""},
		{"no format in a name of another case", `{"EventType":"DLR","data":{"requestId":"r14","status":5}}`, "", ""},
		{"an id in a name of another case", `{"eventType":"DLR","data":{"RequestID":"r15","TraceId":"t15","status":5}}`, "", ""},
		// authenticationDetails name an auth event's ids only, the kind
		// coming from eventType, else from the status.
		{"v2 delivery with authenticationDetails", `{"eventType":"DLR","data":{"requestId":"r16","authenticationDetails":{"phone":{"requestId":"r17"}},"status":5}}`, "r16", ""},
		{"v2 delivery by its status", `{"eventType":"X","data":{"requestId":"r18","status":"SENT","authenticationDetails":{"email":{"requestId":"r19"}},"channel":5}}`, "r18", ""},
		{"v2 auth by its status", `{"eventType":"X","data":{"requestId":"r20","status":" success","authenticationDetails":{"email":{"requestId":"r21"}},"channel":5}}`, "r21", ""},
	} {
		if _, err := normalize.Decode([]byte(tc.body)); !errors.Is(err, normalize.ErrInvalidBody) {
			t.Fatalf("%s: Decode %v, want ErrInvalidBody", tc.name, err)
		}
		if got := normalize.NamedBody([]byte(tc.body)); got.GetRequestId() != tc.requestID || got.GetTraceId() != tc.traceID {
			t.Errorf("%s: NamedBody = %q, %q; want %q, %q", tc.name, got.GetRequestId(), got.GetTraceId(), tc.requestID, tc.traceID)
		}
	}
}
