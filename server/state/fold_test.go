package state_test

import (
	"fmt"
	"slices"
	"testing"

	"google.golang.org/protobuf/encoding/prototext"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/timestamppb"

	eventsv1 "github.com/otpless-events/otpless-events/gen/otpless/events/v1"
	"github.com/otpless-events/otpless-events/server/state"
)

const (
	reqID = "req-1"
	epoch = 1764153000 // seconds; event times are offsets from it
)

var (
	inProgress = eventsv1.RequestStatus_REQUEST_STATUS_IN_PROGRESS
	reqFailed  = eventsv1.RequestStatus_REQUEST_STATUS_FAILED
	reqSuccess = eventsv1.RequestStatus_REQUEST_STATUS_SUCCESS
	sent       = eventsv1.DeliveryStatus_DELIVERY_STATUS_SENT
	delivered  = eventsv1.DeliveryStatus_DELIVERY_STATUS_DELIVERED
	read       = eventsv1.DeliveryStatus_DELIVERY_STATUS_READ
	clicked    = eventsv1.DeliveryStatus_DELIVERY_STATUS_CLICKED
	chFailed   = eventsv1.DeliveryStatus_DELIVERY_STATUS_FAILED
)

func at(sec int64) *timestamppb.Timestamp { return &timestamppb.Timestamp{Seconds: epoch + sec} }

func observed(sec int64) *eventsv1.Step { return &eventsv1.Step{Time: at(sec)} }

func implied(sec int64) *eventsv1.Step { return &eventsv1.Step{Time: at(sec), Implied: true} }

func event(id string, sec int64, kind eventsv1.EventKind, status string) *eventsv1.Event {
	return &eventsv1.Event{EventId: id, RequestId: reqID, Kind: kind, Status: status, EventTime: at(sec)}
}

func dlr(id string, sec int64, channel, status string) *eventsv1.Event {
	e := event(id, sec, eventsv1.EventKind_EVENT_KIND_DELIVERY, status)
	e.Channel = channel
	return e
}

func dlrFailed(id string, sec int64, channel, code string) *eventsv1.Event {
	e := dlr(id, sec, channel, "FAILED")
	e.Error = errInfo(code)
	return e
}

func errInfo(code string) *eventsv1.ErrorInfo {
	return &eventsv1.ErrorInfo{Code: code, Message: "failed with " + code}
}

func initiated(id string, sec int64, channels ...string) *eventsv1.Event {
	e := event(id, sec, eventsv1.EventKind_EVENT_KIND_AUTH, "INITIATED")
	e.AuthMethod = "OTP"
	e.AuthChannels = channels
	return e
}

func success(id string, sec int64, token string) *eventsv1.Event {
	e := event(id, sec, eventsv1.EventKind_EVENT_KIND_AUTH, "SUCCESS")
	e.Token = token
	return e
}

func fallback(id string, sec int64, from, to string) *eventsv1.Event {
	e := event(id, sec, eventsv1.EventKind_EVENT_KIND_AUTH, "FALLBACK")
	e.FromChannel, e.ToChannel = from, to
	return e
}

func unreachable(id string, sec int64) *eventsv1.Event {
	return event(id, sec, eventsv1.EventKind_EVENT_KIND_SYSTEM, "UNREACHABLE")
}

// with applies edit to e and returns it.
func with(e *eventsv1.Event, edit func(*eventsv1.Event)) *eventsv1.Event {
	edit(e)
	return e
}

// snapshot is the expected AuthRequest skeleton for count events spanning
// [first, last].
func snapshot(status eventsv1.RequestStatus, count int32, first, last int64) *eventsv1.AuthRequest {
	return &eventsv1.AuthRequest{
		RequestId:      reqID,
		Status:         status,
		EventCount:     count,
		FirstEventTime: at(first),
		LastEventTime:  at(last),
	}
}

// edit applies f to r and returns it.
func edit(r *eventsv1.AuthRequest, f func(*eventsv1.AuthRequest)) *eventsv1.AuthRequest {
	f(r)
	return r
}

type foldCase struct {
	name   string
	events []*eventsv1.Event
	want   *eventsv1.AuthRequest
}

// fallbacksAtOneTime: of fallbacks in one instant (times to the second, a
// channel that failed at once) the end of their chain is active, whichever
// way their event ids, first and second, sort.
func fallbacksAtOneTime(first, second string) foldCase {
	return foldCase{
		name: fmt.Sprintf("fallbacks at one time, ids %s then %s: the end of their chain is active", first, second),
		events: []*eventsv1.Event{
			fallback(first, 4, "SILENT_AUTH", "WHATSAPP"),
			dlrFailed("f", 4, "WHATSAPP", "003"),
			fallback(second, 4, "WHATSAPP", "SMS"),
		},
		want: edit(snapshot(inProgress, 3, 4, 4), func(r *eventsv1.AuthRequest) {
			r.ActiveChannel = "SMS"
			r.Channels = []*eventsv1.ChannelProgress{
				{Channel: "WHATSAPP", Status: chFailed, Failed: observed(4), Error: errInfo("003")},
			}
			r.Fallbacks = []*eventsv1.Fallback{
				{FromChannel: "WHATSAPP", ToChannel: "SMS", Time: at(4)},
				{FromChannel: "SILENT_AUTH", ToChannel: "WHATSAPP", Time: at(4)},
			}
			r.Failures = []*eventsv1.Failure{{Channel: "WHATSAPP", Error: errInfo("003"), Time: at(4)}}
		}),
	}
}

func foldCases() []foldCase {
	return []foldCase{
		{
			name: "no events",
			want: &eventsv1.AuthRequest{RequestId: reqID},
		},
		{
			name:   "initiated only: active is the first auth channel",
			events: []*eventsv1.Event{initiated("i", 0, "WHATSAPP", "SMS")},
			want: edit(snapshot(inProgress, 1, 0, 0), func(r *eventsv1.AuthRequest) {
				r.AuthMethod = "OTP"
				r.AuthChannels = []string{"WHATSAPP", "SMS"}
				r.ActiveChannel = "WHATSAPP"
			}),
		},
		{
			name: "all steps observed at their earliest report",
			events: []*eventsv1.Event{
				dlr("s2", 3, "WHATSAPP", "SENT"),
				dlr("s1", 1, "WHATSAPP", "SENT"),
				dlr("d", 4, "WHATSAPP", "DELIVERED"),
				dlr("r", 6, "WHATSAPP", "READ"),
				dlr("c", 8, "WHATSAPP", "CLICKED"),
			},
			want: edit(snapshot(inProgress, 5, 1, 8), func(r *eventsv1.AuthRequest) {
				r.ActiveChannel = "WHATSAPP"
				r.Channels = []*eventsv1.ChannelProgress{{
					Channel: "WHATSAPP", Status: clicked,
					Sent: observed(1), Delivered: observed(4), Read: observed(6), Clicked: observed(8),
				}}
			}),
		},
		{
			name: "later step implies earlier ones at its time",
			events: []*eventsv1.Event{
				dlr("r", 7, "WHATSAPP", "READ"),
				dlr("c", 9, "WHATSAPP", "CLICKED"),
			},
			want: edit(snapshot(inProgress, 2, 7, 9), func(r *eventsv1.AuthRequest) {
				r.ActiveChannel = "WHATSAPP"
				r.Channels = []*eventsv1.ChannelProgress{{
					Channel: "WHATSAPP", Status: clicked,
					Sent: implied(7), Delivered: implied(7), Read: observed(7), Clicked: observed(9),
				}}
			}),
		},
		{
			name: "implied time is the earliest observed later step",
			events: []*eventsv1.Event{
				dlr("d", 3, "SMS", "DELIVERED"),
				dlr("r", 2, "SMS", "READ"), // provider clocks disagree
			},
			want: edit(snapshot(inProgress, 2, 2, 3), func(r *eventsv1.AuthRequest) {
				r.ActiveChannel = "SMS"
				r.Channels = []*eventsv1.ChannelProgress{{
					Channel: "SMS", Status: read,
					Sent: implied(2), Delivered: observed(3), Read: observed(2),
				}}
			}),
		},
		{
			name:   "failed without send",
			events: []*eventsv1.Event{dlrFailed("f", 2, "WHATSAPP", "003")},
			want: edit(snapshot(reqFailed, 1, 2, 2), func(r *eventsv1.AuthRequest) {
				r.ActiveChannel = "WHATSAPP"
				r.Channels = []*eventsv1.ChannelProgress{{
					Channel: "WHATSAPP", Status: chFailed, Failed: observed(2), Error: errInfo("003"),
				}}
				r.Failures = []*eventsv1.Failure{{Channel: "WHATSAPP", Error: errInfo("003"), Time: at(2)}}
			}),
		},
		{
			name: "sent then failed twice: earliest failure is the channel's",
			events: []*eventsv1.Event{
				dlr("s", 1, "WHATSAPP", "SENT"),
				dlrFailed("f2", 5, "WHATSAPP", "024"),
				dlrFailed("f1", 2, "WHATSAPP", "033"),
			},
			want: edit(snapshot(reqFailed, 3, 1, 5), func(r *eventsv1.AuthRequest) {
				r.ActiveChannel = "WHATSAPP"
				r.Channels = []*eventsv1.ChannelProgress{{
					Channel: "WHATSAPP", Status: chFailed, Sent: observed(1), Failed: observed(2), Error: errInfo("033"),
				}}
				r.Failures = []*eventsv1.Failure{
					{Channel: "WHATSAPP", Error: errInfo("033"), Time: at(2)},
					{Channel: "WHATSAPP", Error: errInfo("024"), Time: at(5)},
				}
			}),
		},
		{
			name: "delivered after failed: the channel moves on, the failure stays",
			events: []*eventsv1.Event{
				dlrFailed("f", 2, "SMS", "00a"),
				dlr("d", 4, "SMS", "DELIVERED"),
			},
			want: edit(snapshot(inProgress, 2, 2, 4), func(r *eventsv1.AuthRequest) {
				r.ActiveChannel = "SMS"
				r.Channels = []*eventsv1.ChannelProgress{{
					Channel: "SMS", Status: delivered,
					Sent: implied(4), Delivered: observed(4), Failed: observed(2), Error: errInfo("00a"),
				}}
				r.Failures = []*eventsv1.Failure{{Channel: "SMS", Error: errInfo("00a"), Time: at(2)}}
			}),
		},
		{
			name: "failed then fallback: the request is in progress on the new channel",
			events: []*eventsv1.Event{
				initiated("i", 0, "WHATSAPP", "SMS"),
				dlr("s", 1, "WHATSAPP", "SENT"),
				dlrFailed("f", 2, "WHATSAPP", "033"),
				fallback("fb", 3, "WHATSAPP", "SMS"),
				dlr("d", 5, "SMS", "DELIVERED"),
			},
			want: edit(snapshot(inProgress, 5, 0, 5), func(r *eventsv1.AuthRequest) {
				r.AuthMethod = "OTP"
				r.AuthChannels = []string{"WHATSAPP", "SMS"}
				r.ActiveChannel = "SMS"
				r.Channels = []*eventsv1.ChannelProgress{
					{Channel: "WHATSAPP", Status: chFailed, Sent: observed(1), Failed: observed(2), Error: errInfo("033")},
					{Channel: "SMS", Status: delivered, Sent: implied(5), Delivered: observed(5)},
				}
				r.Fallbacks = []*eventsv1.Fallback{{FromChannel: "WHATSAPP", ToChannel: "SMS", Time: at(3)}}
				r.Failures = []*eventsv1.Failure{{Channel: "WHATSAPP", Error: errInfo("033"), Time: at(2)}}
			}),
		},
		{
			name: "fallback beats a later report on the old channel",
			events: []*eventsv1.Event{
				fallback("fb", 3, "WHATSAPP", "SMS"),
				dlrFailed("f", 4, "WHATSAPP", "101"),
			},
			want: edit(snapshot(inProgress, 2, 3, 4), func(r *eventsv1.AuthRequest) {
				r.ActiveChannel = "SMS"
				r.Channels = []*eventsv1.ChannelProgress{
					{Channel: "WHATSAPP", Status: chFailed, Failed: observed(4), Error: errInfo("101")},
				}
				r.Fallbacks = []*eventsv1.Fallback{{FromChannel: "WHATSAPP", ToChannel: "SMS", Time: at(3)}}
				r.Failures = []*eventsv1.Failure{{Channel: "WHATSAPP", Error: errInfo("101"), Time: at(4)}}
			}),
		},
		{
			name: "latest fallback names the active channel; fallbacks by (time, to, from)",
			events: []*eventsv1.Event{
				fallback("fb3", 6, "SMS", "VIBER"),
				fallback("fb2", 3, "WHATSAPP", "SMS"),
				fallback("fb1", 3, "SILENT_AUTH", "SMS"),
				fallback("fb0", 3, "", "EMAIL"),
			},
			want: edit(snapshot(inProgress, 4, 3, 6), func(r *eventsv1.AuthRequest) {
				r.ActiveChannel = "VIBER"
				r.Fallbacks = []*eventsv1.Fallback{
					{ToChannel: "EMAIL", Time: at(3)},
					{FromChannel: "SILENT_AUTH", ToChannel: "SMS", Time: at(3)},
					{FromChannel: "WHATSAPP", ToChannel: "SMS", Time: at(3)},
					{FromChannel: "SMS", ToChannel: "VIBER", Time: at(6)},
				}
			}),
		},
		{
			// OTPLESS starts on another channel only after a fallback: a
			// channel first reported after the failure of the latest
			// fallback's target shows that the fallback to it was missed,
			// and WhatsApp's failure no longer fails the request.
			name: "a channel started after the fallback's target failed is active: the fallback to it was missed",
			events: []*eventsv1.Event{
				fallback("fb", 1, "SILENT_AUTH", "WHATSAPP"),
				dlrFailed("f", 2, "WHATSAPP", "003"),
				dlr("s", 3, "SMS", "DELIVERED"),
			},
			want: edit(snapshot(inProgress, 3, 1, 3), func(r *eventsv1.AuthRequest) {
				r.ActiveChannel = "SMS"
				r.Channels = []*eventsv1.ChannelProgress{
					{Channel: "WHATSAPP", Status: chFailed, Failed: observed(2), Error: errInfo("003")},
					{Channel: "SMS", Status: delivered, Sent: implied(3), Delivered: observed(3)},
				}
				r.Fallbacks = []*eventsv1.Fallback{{FromChannel: "SILENT_AUTH", ToChannel: "WHATSAPP", Time: at(1)}}
				r.Failures = []*eventsv1.Failure{{Channel: "WHATSAPP", Error: errInfo("003"), Time: at(2)}}
			}),
		},
		{
			// A legacy fallback does not name the channel it left; a late
			// report of a channel in use before it does not take it back.
			name: "a channel in use before the latest fallback stays left",
			events: []*eventsv1.Event{
				dlr("w", 1, "WHATSAPP", "SENT"),
				fallback("fb", 2, "", "SMS"),
				dlr("r", 3, "WHATSAPP", "READ"),
			},
			want: edit(snapshot(inProgress, 3, 1, 3), func(r *eventsv1.AuthRequest) {
				r.ActiveChannel = "SMS"
				r.Channels = []*eventsv1.ChannelProgress{
					{Channel: "WHATSAPP", Status: read, Sent: observed(1), Delivered: implied(3), Read: observed(3)},
				}
				r.Fallbacks = []*eventsv1.Fallback{{ToChannel: "SMS", Time: at(2)}}
			}),
		},
		fallbacksAtOneTime("fb-z", "fb-a"),
		fallbacksAtOneTime("fb-a", "fb-z"),
		{
			name: "active is the channel of the latest delivery report",
			events: []*eventsv1.Event{
				initiated("i", 0, "EMAIL"),
				dlr("w", 1, "WHATSAPP", "SENT"),
				dlr("s", 2, "SMS", "SENT"),
			},
			want: edit(snapshot(inProgress, 3, 0, 2), func(r *eventsv1.AuthRequest) {
				r.AuthMethod = "OTP"
				r.AuthChannels = []string{"EMAIL"}
				r.ActiveChannel = "SMS"
				r.Channels = []*eventsv1.ChannelProgress{
					{Channel: "WHATSAPP", Status: sent, Sent: observed(1)},
					{Channel: "SMS", Status: sent, Sent: observed(2)},
				}
			}),
		},
		{
			name: "channels by earliest report, then name; failures by (time, channel, code)",
			events: []*eventsv1.Event{
				dlrFailed("v", 2, "VIBER", "103"),
				dlrFailed("e", 2, "EMAIL", "024"),
				dlrFailed("e2", 2, "EMAIL", "003"),
				dlr("w", 1, "WHATSAPP", "SENT"),
			},
			want: edit(snapshot(reqFailed, 4, 1, 2), func(r *eventsv1.AuthRequest) {
				r.ActiveChannel = "VIBER" // latest report by (time, event id)
				r.Channels = []*eventsv1.ChannelProgress{
					{Channel: "WHATSAPP", Status: sent, Sent: observed(1)},
					{Channel: "EMAIL", Status: chFailed, Failed: observed(2), Error: errInfo("024")},
					{Channel: "VIBER", Status: chFailed, Failed: observed(2), Error: errInfo("103")},
				}
				r.Failures = []*eventsv1.Failure{
					{Channel: "EMAIL", Error: errInfo("003"), Time: at(2)},
					{Channel: "EMAIL", Error: errInfo("024"), Time: at(2)},
					{Channel: "VIBER", Error: errInfo("103"), Time: at(2)},
				}
			}),
		},
		{
			name: "success is terminal even when a failure comes after",
			events: []*eventsv1.Event{
				dlr("s", 1, "WHATSAPP", "SENT"),
				success("ok", 5, "tok"),
				dlrFailed("f", 7, "WHATSAPP", "024"),
				unreachable("u", 8),
			},
			want: edit(snapshot(reqSuccess, 4, 1, 8), func(r *eventsv1.AuthRequest) {
				r.ActiveChannel = "WHATSAPP"
				r.Token = "tok"
				r.SuccessTime = at(5)
				r.UnreachableTime = at(8)
				r.Channels = []*eventsv1.ChannelProgress{
					{Channel: "WHATSAPP", Status: chFailed, Sent: observed(1), Failed: observed(7), Error: errInfo("024")},
				}
				r.Failures = []*eventsv1.Failure{{Channel: "WHATSAPP", Error: errInfo("024"), Time: at(7)}}
			}),
		},
		{
			name: "success time is the earliest success; token from the latest success carrying one",
			events: []*eventsv1.Event{
				success("ok2", 9, ""),
				success("ok1", 4, "tok-success"),
				with(unreachable("u", 6), func(e *eventsv1.Event) { e.Token = "tok-system" }),
			},
			want: edit(snapshot(reqSuccess, 3, 4, 9), func(r *eventsv1.AuthRequest) {
				r.Token = "tok-success"
				r.SuccessTime = at(4)
				r.UnreachableTime = at(6)
			}),
		},
		{
			name: "unreachable fails the request",
			events: []*eventsv1.Event{
				dlr("d", 2, "SMS", "DELIVERED"),
				unreachable("u", 5),
				unreachable("u2", 3), // the earliest report
				event("m", 4, eventsv1.EventKind_EVENT_KIND_SYSTEM, "MAINTENANCE"),
			},
			want: edit(snapshot(reqFailed, 4, 2, 5), func(r *eventsv1.AuthRequest) {
				r.ActiveChannel = "SMS"
				r.UnreachableTime = at(3)
				r.Channels = []*eventsv1.ChannelProgress{
					{Channel: "SMS", Status: delivered, Sent: implied(2), Delivered: observed(2)},
				}
			}),
		},
		{
			name: "unreachable stands after a fallback",
			events: []*eventsv1.Event{
				unreachable("u", 1),
				fallback("fb", 2, "WHATSAPP", "SMS"),
			},
			want: edit(snapshot(reqFailed, 2, 1, 2), func(r *eventsv1.AuthRequest) {
				r.ActiveChannel = "SMS"
				r.UnreachableTime = at(1)
				r.Fallbacks = []*eventsv1.Fallback{{FromChannel: "WHATSAPP", ToChannel: "SMS", Time: at(2)}}
			}),
		},
		{
			name: "unknown statuses are counted only; unknown channels are kept",
			events: []*eventsv1.Event{
				dlr("q", 0, "WHATSAPP", "QUEUED"),
				dlr("nochan", 1, "", "SENT"),
				dlr("t", 2, "TELEGRAM", "SENT"),
				event("x", 3, eventsv1.EventKind_EVENT_KIND_AUTH, "EXPIRED"),
				event("y", 4, eventsv1.EventKind_EVENT_KIND_SYSTEM, "MAINTENANCE"),
				event("z", 5, eventsv1.EventKind_EVENT_KIND_UNSPECIFIED, "SUCCESS"),
				dlr("w", 6, "WHATSAPP", "SUCCESS"),
			},
			want: edit(snapshot(inProgress, 7, 0, 6), func(r *eventsv1.AuthRequest) {
				r.ActiveChannel = "TELEGRAM"
				r.Channels = []*eventsv1.ChannelProgress{{Channel: "TELEGRAM", Status: sent, Sent: observed(2)}}
			}),
		},
		{
			name: "duplicates count once",
			events: []*eventsv1.Event{
				dlr("s", 1, "VIBER", "SENT"),
				dlr("s", 1, "VIBER", "SENT"),
				dlrFailed("f", 2, "VIBER", "024"),
				dlrFailed("f", 2, "VIBER", "024"),
				fallback("fb", 3, "VIBER", "SMS"),
				fallback("fb", 3, "VIBER", "SMS"),
				dlr("s", 1, "VIBER", "SENT"),
			},
			want: edit(snapshot(inProgress, 3, 1, 3), func(r *eventsv1.AuthRequest) {
				r.ActiveChannel = "SMS"
				r.Channels = []*eventsv1.ChannelProgress{
					{Channel: "VIBER", Status: chFailed, Sent: observed(1), Failed: observed(2), Error: errInfo("024")},
				}
				r.Fallbacks = []*eventsv1.Fallback{{FromChannel: "VIBER", ToChannel: "SMS", Time: at(3)}}
				r.Failures = []*eventsv1.Failure{{Channel: "VIBER", Error: errInfo("024"), Time: at(2)}}
			}),
		},
		{
			name: "events of another request are ignored",
			events: []*eventsv1.Event{
				dlr("s", 1, "SMS", "SENT"),
				with(success("ok", 2, "tok"), func(e *eventsv1.Event) { e.RequestId = "req-2" }),
				with(unreachable("u", 3), func(e *eventsv1.Event) { e.RequestId = "" }),
				nil,
			},
			want: edit(snapshot(inProgress, 1, 1, 1), func(r *eventsv1.AuthRequest) {
				r.ActiveChannel = "SMS"
				r.Channels = []*eventsv1.ChannelProgress{{Channel: "SMS", Status: sent, Sent: observed(1)}}
			}),
		},
		{
			name:   "only events of other requests",
			events: []*eventsv1.Event{with(dlr("s", 1, "SMS", "SENT"), func(e *eventsv1.Event) { e.RequestId = "req-2" })},
			want:   &eventsv1.AuthRequest{RequestId: reqID},
		},
		{
			name: "latest event carrying a value wins",
			events: []*eventsv1.Event{
				with(initiated("i", 0, "WHATSAPP"), func(e *eventsv1.Event) {
					e.AuthSessionId, e.TraceId, e.Email, e.Token = "as-old", "tr-old", "old@example.com", "tok-old"
					e.Phone = &eventsv1.PhoneDetails{PhoneNumber: "1111111111", CountryCode: "+91"}
				}),
				with(dlr("s", 1, "WHATSAPP", "SENT"), func(e *eventsv1.Event) {
					e.AuthSessionId, e.Identity = "as-new", "911111111111"
					e.AuthChannels = []string{"VIBER"} // not an auth event: ignored
				}),
				with(dlr("d", 2, "WHATSAPP", "DELIVERED"), func(e *eventsv1.Event) {
					e.TraceId, e.Identity = "tr-new", "912222222222"
				}),
				with(dlr("r", 3, "WHATSAPP", "READ"), func(e *eventsv1.Event) {
					e.Phone = &eventsv1.PhoneDetails{} // empty: does not count
				}),
				with(initiated("i2", 4, "SMS", "VIBER"), func(e *eventsv1.Event) {
					e.AuthMethod, e.Email, e.Token = "MAGIC_LINK", "new@example.com", "tok-new"
					e.Phone = &eventsv1.PhoneDetails{PhoneNumber: "2222222222"}
				}),
				initiated("i3", 5), // no channels: the list stands
			},
			want: edit(snapshot(inProgress, 6, 0, 5), func(r *eventsv1.AuthRequest) {
				r.AuthSessionId, r.TraceId = "as-new", "tr-new"
				r.AuthMethod = "OTP" // i3 is the latest carrying one
				r.AuthChannels = []string{"SMS", "VIBER"}
				r.Email, r.Token = "new@example.com", "tok-new"
				r.Phone = &eventsv1.PhoneDetails{PhoneNumber: "2222222222"}
				r.ActiveChannel = "WHATSAPP"
				r.Channels = []*eventsv1.ChannelProgress{{
					Channel: "WHATSAPP", Status: read, Identity: "912222222222",
					Sent: observed(1), Delivered: observed(2), Read: observed(3),
				}}
			}),
		},
	}
}

func TestFold(t *testing.T) {
	t.Parallel()
	for _, tc := range foldCases() {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			assertSnapshot(t, state.Fold(reqID, tc.events), tc.want)
			reversed := slices.Clone(tc.events)
			slices.Reverse(reversed)
			assertSnapshot(t, state.Fold(reqID, reversed), tc.want)
		})
	}
}

// The active channel and status where the latest fallback's target failed,
// and where a report only looks like a missed fallback: a channel the fallback left that was never
// named as left (a legacy fallback, a missed SENT), or a channel running
// alongside (an email of the same request).
func TestActiveChannelAfterFallbacks(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		events []*eventsv1.Event
		active string
		status eventsv1.RequestStatus
	}{{
		name: "the target failed and nothing else started",
		events: []*eventsv1.Event{
			fallback("fb", 1, "SILENT_AUTH", "WHATSAPP"), dlrFailed("wf", 2, "WHATSAPP", "003"),
		},
		active: "WHATSAPP", status: reqFailed,
	}, {
		name: "a fallback back to a channel that failed before leaves the request failed",
		events: []*eventsv1.Event{
			dlrFailed("wf", 1, "WHATSAPP", "003"), fallback("fb", 2, "WHATSAPP", "SMS"),
			dlrFailed("sf", 3, "SMS", "003"), fallback("fb2", 4, "SMS", "WHATSAPP"),
		},
		active: "WHATSAPP", status: reqFailed,
	}, {
		name: "a channel first reported after the target failed but before the fallback to it was not moved to",
		events: []*eventsv1.Event{
			dlrFailed("sf", 1, "SMS", "003"), dlr("vs", 2, "VIBER", "SENT"), fallback("fb", 3, "WHATSAPP", "SMS"),
		},
		active: "SMS", status: reqFailed,
	}, {
		name: "a late failure of the channel a legacy fallback left",
		events: []*eventsv1.Event{
			fallback("fb", 2, "", "SMS"), dlr("s", 3, "SMS", "DELIVERED"), dlrFailed("wf", 4, "WHATSAPP", "101"),
		},
		active: "SMS", status: inProgress,
	}, {
		name: "the same with the left channel's SENT",
		events: []*eventsv1.Event{
			dlr("ws", 1, "WHATSAPP", "SENT"), fallback("fb", 2, "", "SMS"), dlr("s", 3, "SMS", "DELIVERED"), dlrFailed("wf", 4, "WHATSAPP", "101"),
		},
		active: "SMS", status: inProgress,
	}, {
		name: "an email alongside fails after the fallback",
		events: []*eventsv1.Event{
			initiated("i", 0, "WHATSAPP", "SMS", "EMAIL"), dlr("ws", 1, "WHATSAPP", "SENT"), dlrFailed("wf", 2, "WHATSAPP", "033"),
			fallback("fb", 3, "WHATSAPP", "SMS"), dlr("s", 4, "SMS", "DELIVERED"), dlrFailed("ef", 5, "EMAIL", "00a"),
		},
		active: "SMS", status: inProgress,
	}, {
		name: "a success names the channel it was completed on; the fallback to it was missed",
		events: []*eventsv1.Event{
			initiated("i", 0, "WHATSAPP", "SMS"), dlr("ws", 1, "WHATSAPP", "SENT"), dlr("s", 4, "SMS", "DELIVERED"),
			with(success("ok", 6, "tok"), func(e *eventsv1.Event) { e.AuthChannels = []string{"SMS"} }),
			dlr("wd", 7, "WHATSAPP", "DELIVERED"),
		},
		active: "SMS", status: reqSuccess,
	}, {
		name: "a success naming its channel outweighs the latest fallback",
		events: []*eventsv1.Event{
			fallback("fb", 1, "SILENT_AUTH", "WHATSAPP"), fallback("fb2", 2, "WHATSAPP", "SMS"),
			with(success("ok", 3, "tok"), func(e *eventsv1.Event) { e.AuthChannels = []string{"WHATSAPP"} }),
		},
		active: "WHATSAPP", status: reqSuccess,
	}, {
		name: "a success naming several channels leaves the rules above",
		events: []*eventsv1.Event{
			fallback("fb", 1, "SILENT_AUTH", "WHATSAPP"), dlr("s", 2, "SMS", "DELIVERED"),
			with(success("ok", 3, "tok"), func(e *eventsv1.Event) { e.AuthChannels = []string{"SMS", "WHATSAPP"} }),
		},
		active: "WHATSAPP", status: reqSuccess,
	}, {
		name: "a later fallback to the channel an earlier one left",
		events: []*eventsv1.Event{
			fallback("fb", 1, "SMS", "EMAIL"), fallback("fb2", 2, "WHATSAPP", "SMS"),
		},
		active: "SMS", status: inProgress,
	}, {
		name: "fallbacks at one time, not chained: the target of the last",
		events: []*eventsv1.Event{
			fallback("fb", 1, "WHATSAPP", "SMS"), fallback("fb2", 1, "EMAIL", "VIBER"),
		},
		active: "VIBER", status: inProgress,
	}, {
		name: "fallbacks at one time in a cycle: the target of the last",
		events: []*eventsv1.Event{
			fallback("fb", 1, "WHATSAPP", "SMS"), fallback("fb2", 1, "SMS", "WHATSAPP"),
		},
		active: "WHATSAPP", status: inProgress,
	}, {
		name: "fallbacks at one time, one to the channel it left: no other moves on from its target",
		events: []*eventsv1.Event{
			fallback("fb", 1, "EMAIL", "VIBER"), fallback("fb2", 1, "SMS", "SMS"),
		},
		active: "SMS", status: inProgress,
	}, {
		name: "the target failed, then got past SENT: a channel first reported in between is not moved to",
		events: []*eventsv1.Event{
			fallback("fb", 1, "WHATSAPP", "SMS"), dlrFailed("sf", 2, "SMS", "003"),
			dlr("vs", 3, "VIBER", "SENT"), dlr("sd", 4, "SMS", "DELIVERED"),
		},
		active: "SMS", status: inProgress,
	}, {
		name: "a late first report of the channel the fallback left is no missed fallback",
		events: []*eventsv1.Event{
			fallback("fb", 1, "WHATSAPP", "SMS"), dlrFailed("sf", 2, "SMS", "003"), dlr("ws", 3, "WHATSAPP", "SENT"),
		},
		active: "SMS", status: reqFailed,
	}, {
		name: "a channel first reported in the second the target failed is not moved to",
		events: []*eventsv1.Event{
			fallback("fb", 1, "WHATSAPP", "SMS"), dlrFailed("sf", 2, "SMS", "003"), dlr("vs", 2, "VIBER", "SENT"),
		},
		active: "SMS", status: reqFailed,
	}, {
		name: "of two channels started after a missed fallback, the one first reported latest",
		events: []*eventsv1.Event{
			fallback("fb", 1, "WHATSAPP", "SMS"), dlrFailed("sf", 2, "SMS", "003"),
			dlr("vs", 3, "VIBER", "SENT"), dlr("es", 4, "EMAIL", "SENT"),
		},
		active: "EMAIL", status: inProgress,
	}, {
		name: "the same first reported at one time: the later event id, not the later name",
		events: []*eventsv1.Event{
			fallback("fb", 1, "WHATSAPP", "SMS"), dlrFailed("sf", 2, "SMS", "003"),
			dlr("x1", 3, "VIBER", "SENT"), dlr("x2", 3, "EMAIL", "SENT"),
		},
		active: "EMAIL", status: inProgress,
	}} {
		t.Run(tc.name, func(t *testing.T) {
			r := state.Fold(reqID, tc.events)
			if r.GetActiveChannel() != tc.active || r.GetStatus() != tc.status {
				t.Errorf("active %s, status %v; want %s, %v", r.GetActiveChannel(), r.GetStatus(), tc.active, tc.status)
			}
		})
	}
}

// TestEveryStatusReached checks that the cases of TestFold cover every
// status of state.RequestStatuses and state.DeliveryStatuses.
func TestEveryStatusReached(t *testing.T) {
	t.Parallel()
	requests := map[eventsv1.RequestStatus]bool{}
	deliveries := map[eventsv1.DeliveryStatus]bool{
		// No ChannelProgress carries it: a channel without reports is absent.
		eventsv1.DeliveryStatus_DELIVERY_STATUS_UNSPECIFIED: true,
	}
	for _, tc := range foldCases() {
		r := state.Fold(reqID, tc.events)
		requests[r.GetStatus()] = true
		for _, c := range r.GetChannels() {
			deliveries[c.GetStatus()] = true
		}
	}
	for _, s := range state.RequestStatuses() {
		if !requests[s] {
			t.Errorf("no case reaches %v", s)
		}
	}
	for _, s := range state.DeliveryStatuses() {
		if !deliveries[s] {
			t.Errorf("no case reaches %v", s)
		}
	}
}

func TestStatusListsAreExhaustive(t *testing.T) {
	t.Parallel()
	assertExhaustive(t, state.RequestStatuses(), eventsv1.RequestStatus_name)
	assertExhaustive(t, state.DeliveryStatuses(), eventsv1.DeliveryStatus_name)
}

func assertExhaustive[S ~int32](t *testing.T, list []S, names map[int32]string) {
	t.Helper()
	seen := map[int32]bool{}
	for _, s := range list {
		if _, ok := names[int32(s)]; !ok || seen[int32(s)] {
			t.Errorf("list holds unknown or repeated value %d", s)
		}
		seen[int32(s)] = true
	}
	for v, name := range names {
		if !seen[v] {
			t.Errorf("list misses %s", name)
		}
	}
}

func TestTerminal(t *testing.T) {
	t.Parallel()
	for _, s := range state.RequestStatuses() {
		want := s == eventsv1.RequestStatus_REQUEST_STATUS_SUCCESS
		if got := state.Terminal(&eventsv1.AuthRequest{Status: s}); got != want {
			t.Errorf("Terminal(%v) = %v, want %v", s, got, want)
		}
	}
	if state.Terminal(nil) {
		t.Error("Terminal(nil) = true")
	}
}

// TestFoldCopies checks that Fold leaves its input alone and that the
// snapshot shares no message with it.
func TestFoldCopies(t *testing.T) {
	t.Parallel()
	events := []*eventsv1.Event{
		with(success("ok", 9, "tok"), func(e *eventsv1.Event) {
			e.Phone = &eventsv1.PhoneDetails{PhoneNumber: "9812345678", CountryCode: "+91"}
			e.AuthChannels = []string{"SMS"}
		}),
		dlrFailed("f", 2, "WHATSAPP", "033"),
		fallback("fb", 3, "WHATSAPP", "SMS"),
		dlr("c", 5, "SMS", "CLICKED"),
	}
	before := make([]*eventsv1.Event, len(events))
	for i, e := range events {
		before[i] = proto.CloneOf(e)
	}

	r := state.Fold(reqID, events)
	scribble(r.ProtoReflect())

	for i := range events {
		if !proto.Equal(events[i], before[i]) {
			t.Errorf("event %d changed:\n got %v\nwant %v", i, events[i], before[i])
		}
	}
}

// TestFoldCopiesOfOneEvent: two events with one id and one time that
// differ anyway (two SUCCESS bodies in one millisecond with different
// tokens) fold alike in either order.
func TestFoldCopiesOfOneEvent(t *testing.T) {
	t.Parallel()
	a, b := success("ok", 9, "tokA"), success("ok", 9, "tokB")
	ab, ba := state.Fold(reqID, []*eventsv1.Event{a, b}), state.Fold(reqID, []*eventsv1.Event{b, a})
	if !proto.Equal(ab, ba) {
		t.Errorf("the order of two copies of one event changes the snapshot:\n%v\n%v", ab, ba)
	}
}

// scribble overwrites every scalar reachable from m.
func scribble(m protoreflect.Message) {
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		switch {
		case fd.IsList() && fd.Message() != nil:
			for i := range v.List().Len() {
				scribble(v.List().Get(i).Message())
			}
		case fd.IsList():
			for i := range v.List().Len() {
				v.List().Set(i, protoreflect.ValueOfString("scribbled"))
			}
		case fd.Message() != nil:
			scribble(v.Message())
		case fd.Kind() == protoreflect.StringKind:
			m.Set(fd, protoreflect.ValueOfString("scribbled"))
		case fd.Kind() == protoreflect.Int64Kind:
			m.Set(fd, protoreflect.ValueOfInt64(-1))
		case fd.Kind() == protoreflect.Int32Kind:
			m.Set(fd, protoreflect.ValueOfInt32(-1))
		}
		return true
	})
}

func assertSnapshot(t *testing.T, got, want *eventsv1.AuthRequest) {
	t.Helper()
	if !proto.Equal(got, want) {
		t.Errorf("snapshot differs\n got: %s\nwant: %s", prototext.Format(got), prototext.Format(want))
	}
}

// TestSnapshotListsBounded: a snapshot lists the latest MaxListed channels,
// fallbacks and failures; status and active channel still come from all of
// them, and event_count counts every event. Unbounded, a thousand FAILED
// reports made a snapshot no gRPC client could read.
func TestSnapshotListsBounded(t *testing.T) {
	t.Parallel()
	const n = state.MaxListed + 36
	var events []*eventsv1.Event
	for i := range n {
		ch := fmt.Sprintf("CH%03d", i)
		events = append(events,
			dlrFailed(fmt.Sprintf("f%03d", i), int64(2*i+1), ch, "033"),
			fallback(fmt.Sprintf("b%03d", i), int64(2*i+2), ch, fmt.Sprintf("CH%03d", i+1)))
	}
	events = append(events, dlr("d", 2*n+5, fmt.Sprintf("CH%03d", n), "DELIVERED"))
	r := state.Fold(reqID, events)
	if len(r.GetChannels()) != state.MaxListed || len(r.GetFallbacks()) != state.MaxListed || len(r.GetFailures()) != state.MaxListed {
		t.Fatalf("%d channels, %d fallbacks, %d failures; want %d of each", len(r.GetChannels()), len(r.GetFallbacks()), len(r.GetFailures()), state.MaxListed)
	}
	if got := r.GetFailures()[0].GetChannel(); got != fmt.Sprintf("CH%03d", n-state.MaxListed) {
		t.Errorf("first failure listed on %s, want the latest %d kept", got, state.MaxListed)
	}
	if got := r.GetChannels()[state.MaxListed-1].GetChannel(); got != fmt.Sprintf("CH%03d", n) {
		t.Errorf("last channel listed %s, want the latest", got)
	}
	if r.GetActiveChannel() != fmt.Sprintf("CH%03d", n) || r.GetStatus() != eventsv1.RequestStatus_REQUEST_STATUS_IN_PROGRESS || r.GetEventCount() != int32(len(events)) {
		t.Errorf("active %s, status %v, %d events; want CH%03d, IN_PROGRESS, %d", r.GetActiveChannel(), r.GetStatus(), r.GetEventCount(), n, len(events))
	}
}

// TestSnapshotListsKeepTheActiveChannel: however many other channels and
// failures a request has, its snapshot lists its active channel and that
// channel's latest failure.
func TestSnapshotListsKeepTheActiveChannel(t *testing.T) {
	t.Parallel()
	events := []*eventsv1.Event{dlr("s", 0, "SMS", "SENT"), dlr("e", 1, "EMAIL", "SENT")}
	for i := range state.MaxListed + 1 {
		ch := fmt.Sprintf("CH%03d", i)
		events = append(events, dlr("x"+ch, 1, ch, "SENT"), dlrFailed("y"+ch, int64(102+i), ch, "003"))
	}
	events = append(events, fallback("b", 100, "EMAIL", "SMS"), dlrFailed("f", 101, "SMS", "033"))
	r := state.Fold(reqID, events)
	if r.GetActiveChannel() != "SMS" || r.GetStatus() != eventsv1.RequestStatus_REQUEST_STATUS_FAILED {
		t.Fatalf("active %s, status %v; want SMS, FAILED", r.GetActiveChannel(), r.GetStatus())
	}
	if c := r.GetChannels(); len(c) != state.MaxListed || c[0].GetChannel() != "SMS" || c[0].GetStatus() != eventsv1.DeliveryStatus_DELIVERY_STATUS_FAILED || c[1].GetChannel() != "CH003" {
		t.Errorf("%d channels, first %v, second %s; want %d, SMS (FAILED) then the latest others", len(c), c[0], c[1].GetChannel(), state.MaxListed)
	}
	if f := r.GetFailures(); len(f) != state.MaxListed || f[0].GetChannel() != "SMS" || f[1].GetChannel() != "CH002" {
		t.Errorf("%d failures, first %v, second %s; want %d, SMS's then the latest others", len(f), f[0], f[1].GetChannel(), state.MaxListed)
	}
}

// TestSnapshotListsKeepTheActiveChannelAtTheEdge: with one to three
// channels more than MaxListed, the active channel is kept wherever it
// falls outside the latest MaxListed, the first of them as much as the one
// just before them.
func TestSnapshotListsKeepTheActiveChannelAtTheEdge(t *testing.T) {
	t.Parallel()
	for extra := 1; extra <= 3; extra++ {
		for pos := range extra {
			t.Run(fmt.Sprintf("%d more, active at %d", extra, pos), func(t *testing.T) {
				var events []*eventsv1.Event
				for i := range state.MaxListed + extra {
					events = append(events, dlr(fmt.Sprintf("s%03d", i), int64(i), fmt.Sprintf("CH%03d", i), "SENT"))
				}
				active := fmt.Sprintf("CH%03d", pos)
				events = append(events, with(success("ok", 1000, "tok"), func(e *eventsv1.Event) { e.AuthChannels = []string{active} }))
				r := state.Fold(reqID, events)
				c := r.GetChannels()
				if r.GetActiveChannel() != active || len(c) != state.MaxListed || c[0].GetChannel() != active || c[1].GetChannel() != fmt.Sprintf("CH%03d", extra+1) {
					t.Errorf("active %s, %d channels listed from %s, %s; want %s, %d from %[4]s, CH%03[7]d", r.GetActiveChannel(), len(c), c[0].GetChannel(), c[1].GetChannel(), active, state.MaxListed, extra+1)
				}
			})
		}
	}
}
