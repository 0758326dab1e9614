package state

import (
	"bytes"
	"cmp"
	"slices"
	"strings"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	eventsv1 "github.com/otpless-events/otpless-events/gen/otpless/events/v1"
)

// Event statuses the fold interprets, as the normalizer spells them. Any
// other status is kept on the event and only counted here.
const (
	statusSent        = "SENT"
	statusDelivered   = "DELIVERED"
	statusRead        = "READ"
	statusClicked     = "CLICKED"
	statusFailed      = "FAILED"
	statusFallback    = "FALLBACK"
	statusSuccess     = "SUCCESS"
	statusUnreachable = "UNREACHABLE"
)

// RequestStatuses returns every RequestStatus. Tests range over it: a value
// added to the enum must be added here and given a rule in the package doc.
func RequestStatuses() []eventsv1.RequestStatus {
	return []eventsv1.RequestStatus{
		eventsv1.RequestStatus_REQUEST_STATUS_UNSPECIFIED,
		eventsv1.RequestStatus_REQUEST_STATUS_IN_PROGRESS,
		eventsv1.RequestStatus_REQUEST_STATUS_FAILED,
		eventsv1.RequestStatus_REQUEST_STATUS_SUCCESS,
	}
}

// DeliveryStatuses returns every DeliveryStatus in the order a channel moves
// through them: as events are added, a channel only ever moves right.
// UNSPECIFIED stands for a channel with no report (absent from the snapshot).
func DeliveryStatuses() []eventsv1.DeliveryStatus {
	return []eventsv1.DeliveryStatus{
		eventsv1.DeliveryStatus_DELIVERY_STATUS_UNSPECIFIED,
		eventsv1.DeliveryStatus_DELIVERY_STATUS_SENT,
		eventsv1.DeliveryStatus_DELIVERY_STATUS_FAILED,
		eventsv1.DeliveryStatus_DELIVERY_STATUS_DELIVERED,
		eventsv1.DeliveryStatus_DELIVERY_STATUS_READ,
		eventsv1.DeliveryStatus_DELIVERY_STATUS_CLICKED,
	}
}

// Terminal reports whether r's status is terminal (SUCCESS): no event can
// move the request out of it.
func Terminal(r *eventsv1.AuthRequest) bool {
	return r.GetStatus() == eventsv1.RequestStatus_REQUEST_STATUS_SUCCESS
}

// Fold returns the snapshot of requestID made of events (any order,
// duplicates by EventId count once; events of other requests are ignored).
// Revision and UpdateTime are left zero for the caller. Fold neither
// modifies events nor shares any message with them.
func Fold(requestID string, events []*eventsv1.Event) *eventsv1.AuthRequest {
	evs := distinct(requestID, events)
	f := folder{r: &eventsv1.AuthRequest{RequestId: requestID}}
	for _, e := range evs {
		f.add(e)
	}
	return f.snapshot(evs)
}

// distinct returns the events of requestID, one per event id, sorted by
// (event_time, event_id). The id hashes what makes an event itself, so
// events sharing one are the same event; should they differ anyway, the
// earliest is kept, and of those at one time the least encoded, so that
// the order they come in plays no part.
func distinct(requestID string, events []*eventsv1.Event) []*eventsv1.Event {
	out := make([]*eventsv1.Event, 0, len(events))
	for _, e := range events {
		if e != nil && e.GetRequestId() == requestID {
			out = append(out, e)
		}
	}
	slices.SortFunc(out, func(a, b *eventsv1.Event) int {
		if c := cmp.Or(strings.Compare(a.GetEventId(), b.GetEventId()), compareTime(a.GetEventTime(), b.GetEventTime())); c != 0 {
			return c
		}
		return bytes.Compare(encode(a), encode(b))
	})
	out = slices.CompactFunc(out, func(a, b *eventsv1.Event) bool {
		return a.GetEventId() == b.GetEventId()
	})
	slices.SortFunc(out, compareEvents)
	return out
}

// encode is e's deterministic encoding, to order copies of one event.
func encode(e *eventsv1.Event) []byte {
	b, _ := proto.MarshalOptions{Deterministic: true}.Marshal(e) // an event always encodes
	return b
}

// folder accumulates distinct events fed to it in (event_time, event_id)
// order, so "earliest" is the first seen and "latest" the last.
type folder struct {
	// r holds the single-valued fields, fallbacks and failures as they
	// accumulate; Phone and AuthChannels alias an event until snapshot.
	r            *eventsv1.AuthRequest
	succeeded    bool
	successToken string            // from the latest SUCCESS carrying one
	successOn    string            // of the latest SUCCESS naming one channel, that channel
	fallbacksTo  []*eventsv1.Event // the latest fallbacks naming a to_channel, all at one time
	lastDelivery string            // channel of the latest delivery report
	channels     []*progress       // in order of first report
	// byChannel indexes channels once there are more than a request
	// OTPLESS sends has, so that a fold stays linear in them.
	byChannel map[string]*progress
}

func (f *folder) add(e *eventsv1.Event) {
	f.latest(e)
	switch e.GetKind() {
	case eventsv1.EventKind_EVENT_KIND_DELIVERY:
		f.addDelivery(e)
	case eventsv1.EventKind_EVENT_KIND_AUTH:
		f.addAuth(e)
	case eventsv1.EventKind_EVENT_KIND_SYSTEM:
		if e.GetStatus() == statusUnreachable && f.r.UnreachableTime == nil {
			f.r.UnreachableTime = copyTime(e.GetEventTime())
		}
	}
}

// latest lets e's non-empty single-valued fields replace earlier ones.
func (f *folder) latest(e *eventsv1.Event) {
	r := f.r
	r.AuthSessionId = cmp.Or(e.GetAuthSessionId(), r.AuthSessionId)
	r.TraceId = cmp.Or(e.GetTraceId(), r.TraceId)
	r.AuthMethod = cmp.Or(e.GetAuthMethod(), r.AuthMethod)
	r.Email = cmp.Or(e.GetEmail(), r.Email)
	r.Token = cmp.Or(e.GetToken(), r.Token)
	if p := e.GetPhone(); p.GetPhoneNumber() != "" || p.GetCountryCode() != "" {
		r.Phone = p
	}
}

func (f *folder) addAuth(e *eventsv1.Event) {
	if len(e.GetAuthChannels()) > 0 {
		f.r.AuthChannels = e.GetAuthChannels()
	}
	switch e.GetStatus() {
	case statusSuccess:
		if !f.succeeded {
			f.succeeded = true
			f.r.SuccessTime = copyTime(e.GetEventTime())
		}
		f.successToken = cmp.Or(e.GetToken(), f.successToken)
		if chs := e.GetAuthChannels(); len(chs) == 1 {
			f.successOn = chs[0]
		}
	case statusFallback:
		if e.GetToChannel() != "" {
			if n := len(f.fallbacksTo); n > 0 && compareTime(e.GetEventTime(), f.fallbacksTo[n-1].GetEventTime()) != 0 {
				f.fallbacksTo = f.fallbacksTo[:0]
			}
			f.fallbacksTo = append(f.fallbacksTo, e)
		}
		f.r.Fallbacks = append(f.r.Fallbacks, &eventsv1.Fallback{
			FromChannel: e.GetFromChannel(),
			ToChannel:   e.GetToChannel(),
			Time:        copyTime(e.GetEventTime()),
		})
	}
}

// addDelivery records a delivery report of a known status on a named
// channel; any other report is only counted.
func (f *folder) addDelivery(e *eventsv1.Event) {
	s, isStep := stepOf(e.GetStatus())
	isFailed := e.GetStatus() == statusFailed
	if e.GetChannel() == "" || !isStep && !isFailed {
		return
	}
	f.lastDelivery = e.GetChannel()
	p := f.progress(e)
	p.identity = cmp.Or(e.GetIdentity(), p.identity)
	switch {
	case isFailed:
		if p.failed == nil {
			p.failed = e
		}
		f.r.Failures = append(f.r.Failures, &eventsv1.Failure{
			Channel: e.GetChannel(),
			Error:   proto.CloneOf(e.GetError()),
			Time:    copyTime(e.GetEventTime()),
		})
	case p.reports[s] == nil:
		p.reports[s] = e
	}
}

// progress returns the progress of e's channel, starting it with e.
func (f *folder) progress(e *eventsv1.Event) *progress {
	if p, ok := f.byChannel[e.GetChannel()]; ok {
		return p
	}
	if f.byChannel == nil {
		for _, p := range f.channels {
			if p.channel == e.GetChannel() {
				return p
			}
		}
	}
	p := &progress{channel: e.GetChannel(), first: e}
	f.channels = append(f.channels, p)
	switch {
	case f.byChannel != nil:
		f.byChannel[p.channel] = p
	case len(f.channels) > 8:
		f.byChannel = make(map[string]*progress, 2*len(f.channels))
		for _, p := range f.channels {
			f.byChannel[p.channel] = p
		}
	}
	return p
}

// snapshot completes f.r from the accumulated state; evs are the events
// that were added.
func (f *folder) snapshot(evs []*eventsv1.Event) *eventsv1.AuthRequest {
	r := f.r
	if len(evs) == 0 {
		return r
	}
	r.EventCount = int32(len(evs))
	r.FirstEventTime = copyTime(evs[0].GetEventTime())
	r.LastEventTime = copyTime(evs[len(evs)-1].GetEventTime())
	r.Phone = proto.CloneOf(r.Phone)
	r.AuthChannels = slices.Clone(r.AuthChannels)
	r.Token = cmp.Or(f.successToken, r.Token)
	// Stable sorts: ties keep (event_time, event_id) order.
	slices.SortStableFunc(r.Fallbacks, compareFallbacks)
	slices.SortStableFunc(r.Failures, compareFailures)
	slices.SortFunc(f.channels, compareProgress)
	r.Channels = make([]*eventsv1.ChannelProgress, len(f.channels))
	for i, p := range f.channels {
		r.Channels[i] = p.snapshot()
	}
	to := f.fallbackTo()
	r.ActiveChannel = cmp.Or(f.successOn, f.startedAfter(to), to, f.lastDelivery, first(r.AuthChannels))
	r.Status = f.status(r)
	active := func(channel string) bool { return channel == r.ActiveChannel }
	r.Channels = latest(r.Channels, func(c *eventsv1.ChannelProgress) bool { return active(c.GetChannel()) })
	r.Fallbacks = latest(r.Fallbacks, func(*eventsv1.Fallback) bool { return false })
	r.Failures = latest(r.Failures, func(f *eventsv1.Failure) bool { return active(f.GetChannel()) })
	return r
}

// MaxListed bounds the channels, fallbacks and failures a snapshot lists.
// A snapshot is sent whole to every watcher and read whole by gRPC clients
// (4 MiB at most by default), and a sender could otherwise grow it without
// bound; a request OTPLESS sends has a few of each. Status and active
// channel are worked out from all of them, and event_count counts every
// event.
const MaxListed = 64

// latest returns the last MaxListed of s, which is in the snapshot's order,
// and the last element keep holds for even when it comes before them (in
// place of the first of them): the active channel and its latest failure
// stay listed.
func latest[T any](s []T, keep func(T) bool) []T {
	cut := len(s) - MaxListed
	if cut <= 0 || slices.ContainsFunc(s[cut:], keep) {
		return s[max(cut, 0):]
	}
	for i := cut - 1; i >= 0; i-- {
		if keep(s[i]) {
			return append([]T{s[i]}, s[cut+1:]...)
		}
	}
	return s[cut:]
}

// startedAfter is the channel the request moved on to from to, the target
// of the latest fallback, by a fallback that was missed: to failed (nothing
// past SENT came of it), and after that failure and the fallback a channel
// no fallback moved away from was first reported, OTPLESS starting on
// another channel only after a fallback. Of several, the one first reported
// latest. It is "" otherwise: a late report of a channel in use before the
// fallback, or of one running alongside, moves nothing while to stands.
func (f *folder) startedAfter(to string) string {
	i := slices.IndexFunc(f.channels, func(p *progress) bool { return p.channel == to })
	if i < 0 || f.channels[i].failed == nil || f.channels[i].pastSent() {
		return ""
	}
	after := f.channels[i].failed.GetEventTime()
	if at := f.fallbacksTo[0].GetEventTime(); compareTime(at, after) > 0 {
		after = at
	}
	movedFrom := make(map[string]bool, len(f.r.Fallbacks))
	for _, fb := range f.r.Fallbacks {
		movedFrom[fb.GetFromChannel()] = true
	}
	var latest *eventsv1.Event
	for _, p := range f.channels {
		if compareTime(p.first.GetEventTime(), after) <= 0 || movedFrom[p.channel] {
			continue
		}
		if latest == nil || compareEvents(p.first, latest) > 0 {
			latest = p.first
		}
	}
	return latest.GetChannel()
}

// fallbackTo is the channel the latest fallback moved to. Of fallbacks at
// one time (times to the second, a channel that failed at once) it is the
// end of their chain: the target that none of the others moves on from,
// the last such in (event_time, event_id) order; in a cycle, where every
// target is moved on from, the last fallback's.
func (f *folder) fallbackTo() string {
	tied := f.fallbacksTo
	switch len(tied) {
	case 0:
		return ""
	case 1:
		return tied[0].GetToChannel()
	}
	movedFrom := make(map[string]int, len(tied))
	for _, o := range tied {
		movedFrom[o.GetFromChannel()]++
	}
	for i := len(tied) - 1; i >= 0; i-- {
		to := tied[i].GetToChannel()
		others := movedFrom[to]
		if tied[i].GetFromChannel() == to {
			others--
		}
		if others == 0 {
			return to
		}
	}
	return tied[len(tied)-1].GetToChannel()
}

func (f *folder) status(r *eventsv1.AuthRequest) eventsv1.RequestStatus {
	switch {
	case f.succeeded:
		return eventsv1.RequestStatus_REQUEST_STATUS_SUCCESS
	case r.UnreachableTime != nil || channelStatus(r, r.ActiveChannel) == eventsv1.DeliveryStatus_DELIVERY_STATUS_FAILED:
		return eventsv1.RequestStatus_REQUEST_STATUS_FAILED
	default:
		return eventsv1.RequestStatus_REQUEST_STATUS_IN_PROGRESS
	}
}

func channelStatus(r *eventsv1.AuthRequest, channel string) eventsv1.DeliveryStatus {
	for _, c := range r.GetChannels() {
		if c.GetChannel() == channel {
			return c.GetStatus()
		}
	}
	return eventsv1.DeliveryStatus_DELIVERY_STATUS_UNSPECIFIED
}

func compareFallbacks(a, b *eventsv1.Fallback) int {
	return cmp.Or(
		compareTime(a.GetTime(), b.GetTime()),
		strings.Compare(a.GetToChannel(), b.GetToChannel()),
		strings.Compare(a.GetFromChannel(), b.GetFromChannel()),
	)
}

func compareFailures(a, b *eventsv1.Failure) int {
	return cmp.Or(
		compareTime(a.GetTime(), b.GetTime()),
		strings.Compare(a.GetChannel(), b.GetChannel()),
		strings.Compare(a.GetError().GetCode(), b.GetError().GetCode()),
	)
}

// compareEvents orders events by (event_time, event_id).
func compareEvents(a, b *eventsv1.Event) int {
	return cmp.Or(compareTime(a.GetEventTime(), b.GetEventTime()), strings.Compare(a.GetEventId(), b.GetEventId()))
}

// compareTime orders timestamps; nil sorts as the zero time (the epoch).
func compareTime(a, b *timestamppb.Timestamp) int {
	return cmp.Or(cmp.Compare(a.GetSeconds(), b.GetSeconds()), cmp.Compare(a.GetNanos(), b.GetNanos()))
}

// copyTime returns a copy of t, so that snapshots never share a message
// with the events they were made of.
func copyTime(t *timestamppb.Timestamp) *timestamppb.Timestamp {
	if t == nil {
		return nil
	}
	return &timestamppb.Timestamp{Seconds: t.GetSeconds(), Nanos: t.GetNanos()}
}

func first(s []string) string {
	if len(s) == 0 {
		return ""
	}
	return s[0]
}
