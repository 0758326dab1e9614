// Package normalize turns one OTPLESS webhook body into normalized events.
// It reads the documented payload generations (current and earlier v2,
// legacy v1 delivery reports, legacy v1 system events), keeps fields and
// values it does not know rather than rejecting them, and gives every event
// an identity that a retried body reproduces.
//
// The package is pure: no I/O and no mutable package state. It imports only
// the generated API types and the protobuf runtime.
package normalize

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	eventsv1 "github.com/otpless-events/otpless-events/gen/otpless/events/v1"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// Events normalizes one decoded body into one or more events, with EventId,
// EventTime (the body's time, else received) and ReceiveTime (received) set
// and RawBody left empty. The format is chosen by the first field set of
// notificationType (v1 system), eventType (v2) and status (v1 delivery); a
// body with none of them is ErrUnrecognized, and one naming a request id
// that CheckRequestID refuses is ErrInvalidBody. The events share no message
// with req; they share the strings they take whole from it (a string cannot
// change, and a copy kept no less), but not the part of one that they keep.
func Events(req *eventsv1.IngestRequest, received time.Time) ([]*eventsv1.Event, error) {
	format, events, err := build(req)
	if err != nil {
		return nil, err
	}
	t, timed, err := eventTime(req, received)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidBody, err)
	}
	for _, e := range events {
		if err := CheckRequestID(e.GetRequestId()); err != nil {
			return nil, fmt.Errorf("%w: %w", ErrInvalidBody, err)
		}
		if err := checkLengths(e, format); err != nil {
			return nil, fmt.Errorf("%w: %w", ErrInvalidBody, err)
		}
		e.Format = format
		e.EventTime = timestamppb.New(t)
		e.ReceiveTime = timestamppb.New(received)
		e.EventId = eventID(e, t, timed)
	}
	return events, nil
}

// build reads req in its format, into events that have no time, identity
// or format yet. A body that names a format but whose events cannot be
// kept still gives them, with the error, for Named.
func build(req *eventsv1.IngestRequest) (eventsv1.PayloadFormat, []*eventsv1.Event, error) {
	switch {
	case isSet(req.GetNotificationType()):
		return eventsv1.PayloadFormat_PAYLOAD_FORMAT_V1_SYSTEM, []*eventsv1.Event{v1SystemEvent(req)}, nil
	case isSet(req.GetEventType()):
		events, err := v2Events(req)
		if err != nil {
			return 0, events, fmt.Errorf("%w: %w", ErrInvalidBody, err)
		}
		return eventsv1.PayloadFormat_PAYLOAD_FORMAT_V2, events, nil
	case isSet(req.GetStatus()):
		return eventsv1.PayloadFormat_PAYLOAD_FORMAT_V1_DELIVERY, []*eventsv1.Event{v1DeliveryEvent(req)}, nil
	}
	return 0, nil, fmt.Errorf("%w: no eventType, status or notificationType", ErrUnrecognized)
}

// MaxFieldLen bounds every other text an event keeps from the body but the
// error message (which is cut: MaxErrorMessage): OTPLESS's are short, and a
// request's snapshot holds several of each, which gRPC clients read whole
// (4 MiB at most by default).
const MaxFieldLen = 4 << 10

// checkLengths refuses an event with a text longer than MaxFieldLen, naming
// the field of the body, in format, that it came from.
func checkLengths(e *eventsv1.Event, format eventsv1.PayloadFormat) error {
	status, from, to, phone := "status", "fromChannel", "toChannel", "phoneNumber"
	if format == eventsv1.PayloadFormat_PAYLOAD_FORMAT_V1_SYSTEM {
		status, from, to, phone = "notificationType", "fallbackChannel", "fallbackChannel", "mobile.number"
	}
	for _, f := range [...]struct{ name, v string }{
		{status, e.GetStatus()}, {"channel", e.GetChannel()}, {from, e.GetFromChannel()}, {to, e.GetToChannel()},
		{"errorCode", e.GetError().GetCode()}, {"method", e.GetAuthMethod()}, {"identity", e.GetIdentity()}, {"email", e.GetEmail()},
		{"token", e.GetToken()}, {"authSessionId", e.GetAuthSessionId()}, {"traceId", e.GetTraceId()},
		{phone, e.GetPhone().GetPhoneNumber()}, {"countryCode", e.GetPhone().GetCountryCode()},
	} {
		if len(f.v) > MaxFieldLen {
			return fmt.Errorf("%s is longer than 4 KiB", f.name)
		}
	}
	for _, c := range e.GetAuthChannels() {
		if len(c) > MaxFieldLen {
			return errors.New("a channel of authenticationDetails is longer than 4 KiB")
		}
	}
	return nil
}

// MaxRequestIDLen bounds request ids: OTPLESS's are 32 hex digits, and
// longer ones could be stored but never read back.
const MaxRequestIDLen = 256

// CheckRequestID rejects request ids no reader could ask for: longer than
// MaxRequestIDLen, not UTF-8, or holding control characters. Ingest and the
// read API apply the same rule.
func CheckRequestID(id string) error {
	switch {
	case len(id) > MaxRequestIDLen:
		return fmt.Errorf("request id is longer than %d bytes", MaxRequestIDLen)
	case !utf8.ValidString(id):
		return errors.New("request id is not valid UTF-8")
	case strings.ContainsFunc(id, unicode.IsControl):
		return errors.New("request id contains control characters")
	}
	return nil
}

// MaxAhead bounds how far after its arrival a webhook's time may be: more
// is a wrong clock, and a time that far ahead would stay the request's
// latest for as long.
const MaxAhead = 24 * time.Hour

// eventTime is the first of the top-level timestamp and data.timestamp that
// holds a time, else received; timed reports whether the body had one. A
// time that cannot be read, or is more than MaxAhead after received, is an
// error naming its field.
func eventTime(req *eventsv1.IngestRequest, received time.Time) (t time.Time, timed bool, err error) {
	for _, f := range [...]struct {
		name string
		v    *structpb.Value
	}{{"timestamp", req.GetTimestamp()}, {"data.timestamp", req.GetData().GetTimestamp()}} {
		t, err := ParseTime(f.v)
		switch {
		case errors.Is(err, ErrNoTime):
			continue
		case err != nil:
			return time.Time{}, false, fmt.Errorf("%s %s %s", f.name, quoteValue(f.v), err)
		case t.After(received.Add(MaxAhead)):
			return time.Time{}, false, fmt.Errorf("%s %s is more than a day after the webhook arrived (%s)",
				f.name, quoteValue(f.v), received.UTC().Format(time.RFC3339))
		}
		return t, true, nil
	}
	return received, false, nil
}

// quoteValue names a timestamp's value for an error message: a number or
// a boolean as sent, a string by its kind alone, since it may hold anything
// (error texts are logged, and a cut one would slip past the log's masking).
func quoteValue(v *structpb.Value) string {
	switch k := v.GetKind().(type) {
	case *structpb.Value_StringValue:
		return "(a string)"
	case *structpb.Value_NumberValue:
		return strconv.FormatFloat(k.NumberValue, 'f', -1, 64)
	case *structpb.Value_BoolValue:
		return strconv.FormatBool(k.BoolValue)
	case *structpb.Value_ListValue:
		return "(a list)"
	}
	return "(an object)"
}

// v2Kind is DELIVERY for eventType DLR and AUTH for AUTH. For an eventType
// this package does not know, the status decides, and a status it does not
// know either makes a SYSTEM event.
func v2Kind(eventType, status string) eventsv1.EventKind {
	switch eventType {
	case "DLR":
		return eventsv1.EventKind_EVENT_KIND_DELIVERY
	case "AUTH":
		return eventsv1.EventKind_EVENT_KIND_AUTH
	}
	switch status {
	case "SENT", "DELIVERED", "READ", "FAILED", "CLICKED":
		return eventsv1.EventKind_EVENT_KIND_DELIVERY
	case "INITIATED", "FALLBACK", "SUCCESS":
		return eventsv1.EventKind_EVENT_KIND_AUTH
	}
	return eventsv1.EventKind_EVENT_KIND_SYSTEM
}

// v2Events makes one event per request id of a v2 body. Only auth events
// carry authenticationDetails, and only they can yield several events. An
// entry naming too many channels is an error, returned with all the events
// (their channels cut at the bound).
func v2Events(req *eventsv1.IngestRequest) ([]*eventsv1.Event, error) {
	d := req.GetData()
	status := norm(d.GetStatus())
	kind := v2Kind(norm(req.GetEventType()), status)
	groups := []authGroup{{requestID: d.GetRequestId()}}
	if kind == eventsv1.EventKind_EVENT_KIND_AUTH {
		groups = authGroups(d.GetAuthenticationDetails(), d.GetRequestId())
	}
	events := make([]*eventsv1.Event, 0, len(groups))
	var err error
	for _, g := range groups {
		channels, cerr := g.channels()
		if err == nil {
			err = cerr
		}
		events = append(events, &eventsv1.Event{
			RequestId:     g.requestID,
			Kind:          kind,
			Status:        status,
			Channel:       norm(d.GetChannel()),
			FromChannel:   norm(d.GetFromChannel()),
			ToChannel:     norm(d.GetToChannel()),
			Identity:      d.GetIdentity(),
			Error:         ErrorInfo(d.GetErrorCode(), d.GetErrorMessage()),
			AuthMethod:    g.method(),
			AuthChannels:  channels,
			Phone:         phoneDetails(g.phone.GetPhoneNumber(), g.phone.GetCountryCode()),
			Email:         g.email.GetEmail(),
			Token:         d.GetToken(),
			AuthSessionId: d.GetAuthSessionId(),
			TraceId:       d.GetTraceId(),
		})
	}
	return events, err
}

// authGroup is the authenticationDetails entries of one request id.
type authGroup struct {
	requestID    string
	phone, email *eventsv1.AuthDetail // nil when not in the group
}

// authGroups groups the non-empty phone and email entries by request id:
// an entry's own requestId, else fallback (data.requestId, where the earlier
// v2 revision puts it). Entries with the same id share one group; with no
// entry, the one group has the fallback id.
func authGroups(details *eventsv1.AuthenticationDetails, fallback string) []authGroup {
	phone, email := nonEmpty(details.GetPhone()), nonEmpty(details.GetEmail())
	phoneID, emailID := entryRequestID(phone, fallback), entryRequestID(email, fallback)
	switch {
	case phone == nil && email == nil:
		return []authGroup{{requestID: fallback}}
	case email == nil:
		return []authGroup{{requestID: phoneID, phone: phone}}
	case phone == nil:
		return []authGroup{{requestID: emailID, email: email}}
	case phoneID == emailID:
		return []authGroup{{requestID: phoneID, phone: phone, email: email}}
	}
	return []authGroup{{requestID: phoneID, phone: phone}, {requestID: emailID, email: email}}
}

// nonEmpty returns nil for an entry that says nothing, such as "email": {}.
func nonEmpty(d *eventsv1.AuthDetail) *eventsv1.AuthDetail {
	if d.GetRequestId() == "" && d.GetMethod() == "" && len(d.GetChannel()) == 0 &&
		d.GetPhoneNumber() == "" && d.GetCountryCode() == "" && d.GetEmail() == "" {
		return nil
	}
	return d
}

func entryRequestID(d *eventsv1.AuthDetail, fallback string) string {
	if id := d.GetRequestId(); id != "" {
		return id
	}
	return fallback
}

// method is the phone entry's method if it has one, else the email entry's.
func (g authGroup) method() string {
	if m := norm(g.phone.GetMethod()); m != "" {
		return m
	}
	return norm(g.email.GetMethod())
}

// MaxAuthChannels bounds the channels an auth event may list: OTPLESS offers
// about a dozen, and a body naming more is not one it sent.
const MaxAuthChannels = 64

// channels lists the channels the group's entries name, phone first, with
// "/"-joined names split, normalized and without repeats; more than
// MaxAuthChannels distinct names is an error, with the first of them.
func (g authGroup) channels() ([]string, error) {
	var out []string
	for _, list := range [...][]string{g.phone.GetChannel(), g.email.GetChannel()} {
		for _, elem := range list {
			for name := range strings.SplitSeq(elem, "/") {
				if name = norm(name); name == "" || slices.Contains(out, name) {
					continue
				}
				if len(out) == MaxAuthChannels {
					return out, fmt.Errorf("authenticationDetails names more than %d channels", MaxAuthChannels)
				}
				out = append(out, name)
			}
		}
	}
	return out, nil
}

// v1DeliveryEvent reads a legacy delivery report.
func v1DeliveryEvent(req *eventsv1.IngestRequest) *eventsv1.Event {
	d := req.GetData()
	return &eventsv1.Event{
		RequestId: d.GetReferenceId(),
		Kind:      eventsv1.EventKind_EVENT_KIND_DELIVERY,
		Status:    norm(req.GetStatus()),
		Channel:   norm(d.GetChannel()),
		Identity:  d.GetIdentity(),
		Error:     ErrorInfo(d.GetErrorCode(), d.GetErrorMessage()),
	}
}

// v1SystemEvent reads a legacy system event as the Event message documents:
// APPROVAL_ACTION is AUTH/SUCCESS, FALLBACK_TRIGGERED is AUTH/FALLBACK, and
// any other notificationType (UNREACHABLE among them) is SYSTEM with the
// notificationType as status. Token and mobile are kept whenever sent.
func v1SystemEvent(req *eventsv1.IngestRequest) *eventsv1.Event {
	e := &eventsv1.Event{
		RequestId: req.GetRequestId(),
		Token:     req.GetToken(),
		Phone:     phoneDetails(req.GetMobile().GetNumber(), ""),
	}
	switch nt := norm(req.GetNotificationType()); nt {
	case "APPROVAL_ACTION":
		e.Kind, e.Status = eventsv1.EventKind_EVENT_KIND_AUTH, "SUCCESS"
	case "FALLBACK_TRIGGERED":
		e.Kind, e.Status = eventsv1.EventKind_EVENT_KIND_AUTH, "FALLBACK"
		e.FromChannel, e.ToChannel = splitFallback(req.GetFallbackChannel())
	default:
		e.Kind, e.Status = eventsv1.EventKind_EVENT_KIND_SYSTEM, nt
	}
	return e
}

// splitFallback reads fallbackChannel: "FROM/TO", or a single name, which is
// the channel fallen back to. Names after a second "/" are ignored.
func splitFallback(s string) (from, to string) {
	first, rest, found := strings.Cut(s, "/")
	if !found {
		return "", norm(first)
	}
	to, _, _ = strings.Cut(rest, "/")
	return norm(first), norm(to)
}

// phoneDetails returns nil when number and country code are both empty.
func phoneDetails(number, countryCode string) *eventsv1.PhoneDetails {
	if number == "" && countryCode == "" {
		return nil
	}
	return &eventsv1.PhoneDetails{
		PhoneNumber: number,
		CountryCode: countryCode,
	}
}

// norm normalizes a status, channel, method or type: trimmed, upper-cased,
// and copied.
func norm(s string) string {
	return strings.Clone(strings.ToUpper(strings.TrimSpace(s)))
}

func isSet(s string) bool {
	return strings.TrimSpace(s) != ""
}

// Named returns an event holding only the request id and trace id that req
// names, for the log line of a body Events refused: those its first event
// would have had, each when CheckRequestID takes it. A body naming no
// format names none.
func Named(req *eventsv1.IngestRequest) *eventsv1.Event {
	named := &eventsv1.Event{}
	_, events, _ := build(req) // a body refused for its events names them too
	if len(events) == 0 {
		return named
	}
	if id := events[0].GetRequestId(); CheckRequestID(id) == nil {
		named.RequestId = id
	}
	if id := events[0].GetTraceId(); CheckRequestID(id) == nil {
		named.TraceId = id
	}
	return named
}

// NamedBody is Named for a body that Decode refused: the request and trace
// ids where the body has them, by the format its first field set names (as
// Events chooses), read leniently (a field of the wrong type, elsewhere or
// one of them, leaves the others), for the log line of its refusal. Fields
// are found as Decode finds them, by their JSON or proto name, exactly. A
// body that is not JSON names none.
func NamedBody(body []byte) *eventsv1.Event {
	top := object(body)
	data := object(member(top, "data"))
	details := object(member(data, "authenticationDetails", "authentication_details"))
	requestID := func(obj map[string]json.RawMessage) string { return text(member(obj, "requestId", "request_id")) }
	var ids []string
	named := &eventsv1.Event{}
	switch {
	case names(member(top, "notificationType", "notification_type")):
		ids = []string{requestID(top)}
	case names(member(top, "eventType", "event_type")):
		ids = []string{requestID(data)}
		// As v2Events: only an auth event takes its ids from
		// authenticationDetails.
		if v2Kind(norm(text(member(top, "eventType", "event_type"))), norm(text(member(data, "status")))) == eventsv1.EventKind_EVENT_KIND_AUTH {
			ids = []string{requestID(object(member(details, "phone"))), requestID(object(member(details, "email"))), requestID(data)}
		}
		if id := text(member(data, "traceId", "trace_id")); CheckRequestID(id) == nil {
			named.TraceId = id
		}
	case names(member(top, "status")):
		ids = []string{text(member(data, "referenceId", "reference_id"))}
	}
	for _, id := range ids {
		if id != "" && CheckRequestID(id) == nil {
			named.RequestId = id
			break
		}
	}
	return named
}

// object reads raw as a JSON object; nil when it is not one.
func object(raw json.RawMessage) map[string]json.RawMessage {
	var obj map[string]json.RawMessage
	if json.Unmarshal(raw, &obj) != nil {
		return nil
	}
	return obj
}

// member is the value of obj's member named by the first of names it has;
// nil when it has none.
func member(obj map[string]json.RawMessage, names ...string) json.RawMessage {
	for _, name := range names {
		if v, ok := obj[name]; ok {
			return v
		}
	}
	return nil
}

// text is raw's string; "" when it is not a string.
func text(raw json.RawMessage) string {
	var s string
	_ = json.Unmarshal(raw, &s)
	return s
}

// names reports whether a field NamedBody reads names a format, as isSet
// does for Events: a value of another type does (Decode refused it), null,
// a blank string and no field do not.
func names(raw json.RawMessage) bool {
	var s string
	if json.Unmarshal(raw, &s) == nil { // a string, or null
		return isSet(s)
	}
	return raw != nil
}
