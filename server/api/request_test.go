package api

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	eventsv1 "github.com/otpless-events/otpless-events/gen/otpless/events/v1"
	"github.com/otpless-events/otpless-events/server/auth"
	"github.com/otpless-events/otpless-events/server/broker"
	"github.com/otpless-events/otpless-events/server/normalize"
	"github.com/otpless-events/otpless-events/server/state"
	"github.com/otpless-events/otpless-events/server/store"
)

type emptyReader struct{}

func (emptyReader) GetRequest(context.Context, string) (*eventsv1.AuthRequest, error) {
	return nil, store.ErrNotFound
}

func (emptyReader) ListEvents(context.Context, string, store.Page) ([]*eventsv1.Event, string, error) {
	return nil, "", store.ErrNotFound
}

type recordingStream struct {
	grpc.ServerStream
	ctx  context.Context // nil: context.Background()
	sent []*eventsv1.WatchRequestResponse
}

func (r *recordingStream) Context() context.Context {
	if r.ctx == nil {
		return context.Background()
	}
	return r.ctx
}
func (r *recordingStream) Send(m *eventsv1.WatchRequestResponse) error {
	r.sent = append(r.sent, m)
	return nil
}

// Once shutdown has begun, a new watch is refused with UNAVAILABLE instead of
// an immediate RECONNECT that fast clients would loop on.
func TestWatchRefusedWhileShuttingDown(t *testing.T) {
	t.Parallel()
	b := broker.New(0)
	b.Close()
	s := NewRequestServer(emptyReader{}, b, WatchOptions{Heartbeat: time.Hour, MaxDuration: time.Hour})
	stream := &recordingStream{}
	err := s.WatchRequest(&eventsv1.WatchRequestRequest{RequestId: "r"}, stream)
	if status.Code(err) != codes.Unavailable || len(stream.sent) != 0 {
		t.Fatalf("WatchRequest during shutdown = %v after %d messages, want UNAVAILABLE and none", err, len(stream.sent))
	}
}

// An update carries only the events added after the watcher's revision,
// though a change read from the store may span revisions the watcher's
// snapshot already counts (a relay that does not know where its watchers
// started reads from earlier).
func TestUpdateSendsOnlyEventsAfterTheWatchersRevision(t *testing.T) {
	t.Parallel()
	ev := func(id string) *eventsv1.Event { return &eventsv1.Event{RequestId: "r", EventId: id} }
	at := func(rev int64) *eventsv1.AuthRequest { return &eventsv1.AuthRequest{RequestId: "r", Revision: rev} }
	for _, tc := range []struct {
		name    string
		changes []store.Change
		last    int64
		want    []string // nil: no message
		wantRev int64
	}{
		{"commits in turn", []store.Change{
			{Request: at(2), Events: []*eventsv1.Event{ev("e2")}},
			{Request: at(3), Events: []*eventsv1.Event{ev("e3")}},
		}, 1, []string{"e2", "e3"}, 3},
		{"a commit the watcher has", []store.Change{
			{Request: at(2), Events: []*eventsv1.Event{ev("e2")}},
			{Request: at(3), Events: []*eventsv1.Event{ev("e3")}},
		}, 2, []string{"e3"}, 3},
		{"a read from an earlier revision", []store.Change{
			{Request: at(4), Events: []*eventsv1.Event{ev("e2"), ev("e3"), ev("e4")}, EventRevisions: []int64{2, 3, 4}},
		}, 3, []string{"e4"}, 4},
		{"a read, then the next commit", []store.Change{
			{Request: at(3), Events: []*eventsv1.Event{ev("e1"), ev("e2"), ev("e3")}, EventRevisions: []int64{1, 2, 3}},
			{Request: at(4), Events: []*eventsv1.Event{ev("e4")}},
		}, 2, []string{"e3", "e4"}, 4},
		{"nothing newer", []store.Change{
			{Request: at(3), Events: []*eventsv1.Event{ev("e1"), ev("e3")}, EventRevisions: []int64{1, 3}},
		}, 3, nil, 0},
	} {
		b := broker.New(0)
		sub := b.Subscribe("r")
		b.Publish(tc.changes)
		msg := update(sub, tc.last)
		sub.Close()
		if tc.want == nil {
			if msg != nil {
				t.Errorf("%s: update = %v, want none", tc.name, msg)
			}
			continue
		}
		var got []string
		for _, e := range msg.GetEvents() {
			got = append(got, e.GetEventId())
		}
		if msg.GetType() != eventsv1.WatchMessageType_WATCH_MESSAGE_TYPE_UPDATE || msg.GetRevision() != tc.wantRev || !slices.Equal(got, tc.want) {
			t.Errorf("%s: update = %v at %d with %v, want UPDATE at %d with %v", tc.name, msg.GetType(), msg.GetRevision(), got, tc.wantRev, tc.want)
		}
	}
}

// An update's events start as the first change's, which other watchers
// share: the events of the changes after it go into a copy, never into
// room left in the shared slice.
func TestUpdateLeavesSharedEventsAlone(t *testing.T) {
	t.Parallel()
	ev := func(id string) *eventsv1.Event { return &eventsv1.Event{RequestId: "r", EventId: id} }
	shared := append(make([]*eventsv1.Event, 0, 4), ev("e2"))
	b := broker.New(0)
	sub := b.Subscribe("r")
	b.Publish([]store.Change{
		{Request: &eventsv1.AuthRequest{RequestId: "r", Revision: 2}, Events: shared},
		{Request: &eventsv1.AuthRequest{RequestId: "r", Revision: 3}, Events: []*eventsv1.Event{ev("e3")}},
	})
	msg := update(sub, 1)
	sub.Close()
	if got := len(msg.GetEvents()); got != 2 {
		t.Fatalf("update has %d events, want 2", got)
	}
	if spare := shared[:2][1]; spare != nil {
		t.Errorf("update wrote %s into the shared events' spare room", spare.GetEventId())
	}
}

// A retention refold is an UPDATE without events to a watcher at the
// revision before it, and after the commit of that revision; published
// before that commit (which it can be: the purge and the commit publish
// on goroutines of their own), it is a SNAPSHOT, since the commit's events
// will not follow.
func TestUpdateOfARefold(t *testing.T) {
	t.Parallel()
	at := func(rev int64) *eventsv1.AuthRequest { return &eventsv1.AuthRequest{RequestId: "r", Revision: rev} }
	commit2 := store.Change{Request: at(2), Events: []*eventsv1.Event{{RequestId: "r", EventId: "e2"}}}
	refold3 := store.Change{Request: at(3), Refold: true}
	for _, tc := range []struct {
		name    string
		changes []store.Change
		last    int64
		want    eventsv1.WatchMessageType
		events  int
	}{
		{"after the watcher's revision", []store.Change{refold3}, 2, eventsv1.WatchMessageType_WATCH_MESSAGE_TYPE_UPDATE, 0},
		{"after the commit before it", []store.Change{commit2, refold3}, 1, eventsv1.WatchMessageType_WATCH_MESSAGE_TYPE_UPDATE, 1},
		{"ahead of the commit before it", []store.Change{refold3, commit2}, 1, eventsv1.WatchMessageType_WATCH_MESSAGE_TYPE_SNAPSHOT, 0},
	} {
		b := broker.New(0)
		sub := b.Subscribe("r")
		b.Publish(tc.changes)
		msg := update(sub, tc.last)
		sub.Close()
		if msg.GetType() != tc.want || msg.GetRevision() != 3 || len(msg.GetEvents()) != tc.events {
			t.Errorf("%s: %v at %d with %d events, want %v at 3 with %d", tc.name, msg.GetType(), msg.GetRevision(), len(msg.GetEvents()), tc.want, tc.events)
		}
	}
}

// A subscription that overflowed drops its oldest changes: a SNAPSHOT
// tells the watcher events are missing only when a dropped change was
// newer than its revision (a watch whose first read came after a burst
// of commits was queued has lost nothing by their dropping).
func TestUpdateAfterAnOverflow(t *testing.T) {
	t.Parallel()
	const max = 4
	for _, tc := range []struct {
		name string
		last int64
		want eventsv1.WatchMessageType
	}{
		{"of changes the watcher has", 2, eventsv1.WatchMessageType_WATCH_MESSAGE_TYPE_UPDATE},
		{"of changes the watcher lacks", 1, eventsv1.WatchMessageType_WATCH_MESSAGE_TYPE_SNAPSHOT},
	} {
		b := broker.New(max)
		sub := b.Subscribe("r")
		for rev := int64(1); rev <= max+2; rev++ { // 1 and 2 are dropped
			b.Publish([]store.Change{{
				Request: &eventsv1.AuthRequest{RequestId: "r", Revision: rev},
				Events:  []*eventsv1.Event{{RequestId: "r", EventId: fmt.Sprint("e", rev)}},
			}})
		}
		msg := update(sub, tc.last)
		sub.Close()
		if msg.GetType() != tc.want || msg.GetRevision() != max+2 {
			t.Errorf("%s: %v at %d, want %v at %d", tc.name, msg.GetType(), msg.GetRevision(), tc.want, max+2)
		}
	}
}

// Events a gRPC client's 4 MiB could not take in one UPDATE (a sender's
// large INITIATEDs landing in one commit) make a SNAPSHOT without them.
func TestUpdateTooLargeForOneMessage(t *testing.T) {
	t.Parallel()
	big := func(id string, rev int64) store.Change {
		channels := make([]string, 64)
		for i := range channels {
			channels[i] = fmt.Sprintf("%04d%s", i, strings.Repeat("C", 4092))
		}
		return store.Change{Request: &eventsv1.AuthRequest{RequestId: "r", Revision: rev},
			Events: []*eventsv1.Event{{RequestId: "r", EventId: id, AuthChannels: channels}}}
	}
	for _, tc := range []struct {
		name    string
		changes []store.Change
		want    eventsv1.WatchMessageType
	}{
		{"seven in turn", []store.Change{big("e1", 1), big("e2", 2), big("e3", 3), big("e4", 4), big("e5", 5), big("e6", 6), big("e7", 7)}, eventsv1.WatchMessageType_WATCH_MESSAGE_TYPE_UPDATE},
		{"nine in turn", []store.Change{big("e1", 1), big("e2", 2), big("e3", 3), big("e4", 4), big("e5", 5), big("e6", 6), big("e7", 7), big("e8", 8), big("e9", 9)}, eventsv1.WatchMessageType_WATCH_MESSAGE_TYPE_SNAPSHOT},
	} {
		b := broker.New(0)
		sub := b.Subscribe("r")
		b.Publish(tc.changes)
		msg := update(sub, 0)
		sub.Close()
		if msg.GetType() != tc.want || msg.GetRevision() != int64(len(tc.changes)) || proto.Size(msg) > 4<<20 {
			t.Errorf("%s: %v at %d, %d bytes, want %v at %d, under 4 MiB", tc.name, msg.GetType(), msg.GetRevision(), proto.Size(msg), tc.want, len(tc.changes))
		}
	}
}

// An UPDATE is bounded as a whole, its snapshot with its events: a
// sender's request whose snapshot lists the most it can (64 channels,
// fallbacks and failures, each text 4 KiB) with several large INITIATEDs
// in one message would be over the 4 MiB a gRPC client takes by default.
func TestUpdateWithTheLargestSnapshot(t *testing.T) {
	t.Parallel()
	text := func(prefix string, i int) string {
		s := fmt.Sprintf("%s%04d", prefix, i)
		return s + strings.Repeat("x", normalize.MaxFieldLen-len(s))
	}
	at := func(i int) *timestamppb.Timestamp { return timestamppb.New(time.Unix(1764153000+int64(i), 0)) }
	var events []*eventsv1.Event
	for i := range state.MaxListed {
		events = append(events,
			&eventsv1.Event{EventId: text("d", i), RequestId: "r", Kind: eventsv1.EventKind_EVENT_KIND_DELIVERY, Status: "FAILED",
				Channel: text("C", i), Identity: text("I", i), EventTime: at(i),
				Error: &eventsv1.ErrorInfo{Code: text("E", i), Message: strings.Repeat("m", 1024) + "…"}},
			&eventsv1.Event{EventId: text("f", i), RequestId: "r", Kind: eventsv1.EventKind_EVENT_KIND_AUTH, Status: "FALLBACK",
				FromChannel: text("F", i), ToChannel: text("T", i), EventTime: at(i)})
	}
	initiated := func(i int) *eventsv1.Event {
		channels := make([]string, normalize.MaxAuthChannels)
		for j := range channels {
			channels[j] = text(fmt.Sprintf("A%d-", i), j)
		}
		return &eventsv1.Event{EventId: fmt.Sprintf("i%d", i), RequestId: "r", Kind: eventsv1.EventKind_EVENT_KIND_AUTH, Status: "INITIATED",
			AuthChannels: channels, AuthMethod: text("M", i), Email: text("e", i), Token: text("t", i), AuthSessionId: text("s", i),
			TraceId: text("r", i), Phone: &eventsv1.PhoneDetails{PhoneNumber: text("1", i), CountryCode: text("9", i)}, EventTime: at(1000 + i)}
	}
	b := broker.New(0)
	sub := b.Subscribe("r")
	defer sub.Close()
	var changes []store.Change
	for i := range 7 {
		e := initiated(i)
		events = append(events, e)
		snap := state.Fold("r", events)
		snap.Revision = int64(2 + i)
		changes = append(changes, store.Change{Request: snap, Events: []*eventsv1.Event{e}})
	}
	b.Publish(changes)
	msg := update(sub, 1)
	if size := proto.Size(msg); size > 4<<20 || msg.GetType() == eventsv1.WatchMessageType_WATCH_MESSAGE_TYPE_UPDATE && size > maxUpdateBytes {
		t.Errorf("%v at %d with %d events: %d bytes, want an UPDATE of at most %d or a SNAPSHOT, under 4 MiB",
			msg.GetType(), msg.GetRevision(), len(msg.GetEvents()), size, maxUpdateBytes)
	}
	if msg.GetRevision() != 8 {
		t.Errorf("revision %d, want 8", msg.GetRevision())
	}
}

type fixedReader struct{ r *eventsv1.AuthRequest }

func (f fixedReader) GetRequest(context.Context, string) (*eventsv1.AuthRequest, error) {
	return f.r, nil
}

func (fixedReader) ListEvents(context.Context, string, store.Page) ([]*eventsv1.Event, string, error) {
	return nil, "", store.ErrNotFound
}

// The first message of a watch resumed at after_revision: a HEARTBEAT when
// the client has the stored revision, and the stored SNAPSHOT when the store
// is newer, or older (it lost what the client saw: waiting for the client's
// revision would hide SUCCESS).
func TestWatchResumeFirstMessage(t *testing.T) {
	t.Parallel()
	done := &eventsv1.AuthRequest{RequestId: "r", Revision: 3, Status: eventsv1.RequestStatus_REQUEST_STATUS_SUCCESS}
	s := NewRequestServer(fixedReader{done}, broker.New(0), WatchOptions{Heartbeat: time.Hour, MaxDuration: time.Hour})
	for _, tc := range []struct {
		after int64
		want  eventsv1.WatchMessageType
	}{
		{0, eventsv1.WatchMessageType_WATCH_MESSAGE_TYPE_SNAPSHOT},
		{2, eventsv1.WatchMessageType_WATCH_MESSAGE_TYPE_SNAPSHOT},
		{3, eventsv1.WatchMessageType_WATCH_MESSAGE_TYPE_HEARTBEAT},
		{9, eventsv1.WatchMessageType_WATCH_MESSAGE_TYPE_SNAPSHOT},
	} {
		stream := &recordingStream{}
		if err := s.WatchRequest(&eventsv1.WatchRequestRequest{RequestId: "r", AfterRevision: tc.after}, stream); err != nil {
			t.Fatalf("after %d: %v", tc.after, err)
		}
		if len(stream.sent) != 1 || stream.sent[0].GetType() != tc.want || stream.sent[0].GetRevision() != 3 {
			t.Errorf("after %d: sent %v, want one %v at revision 3", tc.after, stream.sent, tc.want)
		}
	}
}

// Marked with EndQuietlyWhenFinished, a watch resumed at the revision of a
// finished request sends nothing and ends OK, its place under the limits
// given back; from before that revision it still gets the snapshot. A
// request not finished is unaffected (see TestWatchResumeFirstMessage for
// what an unmarked watch gets).
func TestWatchEndQuietlyWhenFinished(t *testing.T) {
	t.Parallel()
	done := &eventsv1.AuthRequest{RequestId: "r", Revision: 3, Status: eventsv1.RequestStatus_REQUEST_STATUS_SUCCESS}
	s := NewRequestServer(fixedReader{done}, broker.New(0), WatchOptions{Heartbeat: time.Hour, MaxDuration: time.Hour, MaxInAll: 1})
	quiet := EndQuietlyWhenFinished(context.Background())
	for range 2 { // the second is refused if the first kept its place
		stream := &recordingStream{ctx: quiet}
		if err := s.WatchRequest(&eventsv1.WatchRequestRequest{RequestId: "r", AfterRevision: 3}, stream); err != nil || len(stream.sent) != 0 {
			t.Fatalf("resumed at SUCCESS: %v, sent %v; want an OK end without a message", err, stream.sent)
		}
	}
	stream := &recordingStream{ctx: quiet}
	if err := s.WatchRequest(&eventsv1.WatchRequestRequest{RequestId: "r", AfterRevision: 2}, stream); err != nil ||
		len(stream.sent) != 1 || stream.sent[0].GetType() != eventsv1.WatchMessageType_WATCH_MESSAGE_TYPE_SNAPSHOT {
		t.Fatalf("resumed before SUCCESS: %v, sent %v; want the snapshot", err, stream.sent)
	}

	// Not finished: the heartbeat, then the watch goes on (here until its
	// context ends).
	pending := &eventsv1.AuthRequest{RequestId: "r", Revision: 3, Status: eventsv1.RequestStatus_REQUEST_STATUS_IN_PROGRESS}
	s = NewRequestServer(fixedReader{pending}, broker.New(0), WatchOptions{Heartbeat: time.Hour, MaxDuration: time.Hour})
	ctx, cancel := context.WithCancel(quiet)
	cancel()
	stream = &recordingStream{ctx: ctx}
	err := s.WatchRequest(&eventsv1.WatchRequestRequest{RequestId: "r", AfterRevision: 3}, stream)
	if status.Code(err) != codes.Canceled || len(stream.sent) != 1 || stream.sent[0].GetType() != eventsv1.WatchMessageType_WATCH_MESSAGE_TYPE_HEARTBEAT {
		t.Fatalf("resumed at a revision not finished: %v, sent %v; want the heartbeat, then the watch's end with its context", err, stream.sent)
	}
}

type panickingReader struct{ emptyReader }

func (panickingReader) GetRequest(context.Context, string) (*eventsv1.AuthRequest, error) {
	panic("store read panicked")
}

// A panic while a watch reads its snapshot (on a goroutine of its own) is
// raised on the watch's goroutine, where the recovery interceptor takes
// it, instead of ending the process.
func TestWatchSnapshotPanicReachesTheCaller(t *testing.T) {
	t.Parallel()
	s := NewRequestServer(panickingReader{}, broker.New(0), WatchOptions{Heartbeat: time.Hour, MaxDuration: time.Hour})
	defer func() {
		p := recover()
		if msg, _ := p.(string); !strings.Contains(msg, "store read panicked") || !strings.Contains(msg, "panickingReader") {
			t.Errorf("recovered %v, want the store's panic with its stack", p)
		}
	}()
	_ = s.WatchRequest(&eventsv1.WatchRequestRequest{RequestId: "r"}, &recordingStream{})
	t.Error("WatchRequest returned")
}

func TestSize(t *testing.T) {
	t.Parallel()
	for n, want := range map[int64]string{1 << 20: "1 MiB", 8 << 20: "8 MiB", 64 << 10: "64 KiB", 1536 << 10: "1536 KiB", 1000: "1000 bytes", 1048577: "1048577 bytes", 0: "0 bytes"} {
		if got := Size(n); got != want {
			t.Errorf("Size(%d) = %q, want %q", n, got, want)
		}
	}
}

// A watch token lives 10 min unless the caller asks for less, at most 1 h
// (README, Security), and a ttl that is not positive is refused.
func TestCreateWatchTokenLifetimes(t *testing.T) {
	t.Parallel()
	signer, err := auth.NewTokenSigner([][]byte{[]byte(strings.Repeat("k", 32))})
	if err != nil {
		t.Fatal(err)
	}
	s := NewRequestServer(emptyReader{}, broker.New(0), WatchOptions{Tokens: signer})
	for _, tt := range []struct {
		ttl  *durationpb.Duration
		want time.Duration // 0: refused
	}{
		{nil, 10 * time.Minute},
		{durationpb.New(time.Minute), time.Minute},
		{durationpb.New(time.Hour), time.Hour},
		{durationpb.New(2 * time.Hour), time.Hour},
		{durationpb.New(0), 0},
		{durationpb.New(-time.Second), 0},
	} {
		before := time.Now()
		resp, err := s.CreateWatchToken(context.Background(), &eventsv1.CreateWatchTokenRequest{RequestId: "r", Ttl: tt.ttl})
		after := time.Now()
		if tt.want == 0 {
			if status.Code(err) != codes.InvalidArgument {
				t.Errorf("ttl %v: %v, want INVALID_ARGUMENT", tt.ttl.AsDuration(), err)
			}
			continue
		}
		if err != nil {
			t.Fatalf("ttl %v: %v", tt.ttl, err)
		}
		// An expiry is a whole second, rounded up.
		if exp := resp.GetExpireTime().AsTime(); exp.Before(before.Add(tt.want)) || exp.After(after.Add(tt.want+time.Second)) {
			t.Errorf("ttl %v: expires %v after the call, want %v", tt.ttl, exp.Sub(before), tt.want)
		}
	}
	unconfigured := NewRequestServer(emptyReader{}, broker.New(0), WatchOptions{})
	if _, err := unconfigured.CreateWatchToken(context.Background(), &eventsv1.CreateWatchTokenRequest{RequestId: "r"}); status.Code(err) != codes.FailedPrecondition {
		t.Errorf("CreateWatchToken without watch-token keys: %v, want FAILED_PRECONDITION", err)
	}
}

// A negative after_revision is refused, as the gateway refuses it.
func TestWatchRefusesANegativeRevision(t *testing.T) {
	t.Parallel()
	s := NewRequestServer(emptyReader{}, broker.New(0), WatchOptions{Heartbeat: time.Hour, MaxDuration: time.Hour})
	ctx, cancel := context.WithCancel(context.Background())
	cancel() // a watch let through ends at once
	stream := &recordingStream{ctx: ctx}
	err := s.WatchRequest(&eventsv1.WatchRequestRequest{RequestId: "r", AfterRevision: -1}, stream)
	if status.Code(err) != codes.InvalidArgument || len(stream.sent) != 0 {
		t.Fatalf("WatchRequest after revision -1 = %v after %d messages, want INVALID_ARGUMENT and none", err, len(stream.sent))
	}
}

// A request nothing is stored for yet is watched from an empty snapshot
// that names it, at revision 0.
func TestWatchUnknownRequest(t *testing.T) {
	t.Parallel()
	s := NewRequestServer(emptyReader{}, broker.New(0), WatchOptions{Heartbeat: time.Hour, MaxDuration: time.Hour})
	ctx, cancel := context.WithCancel(context.Background())
	stream := &recordingStream{ctx: ctx}
	cancel() // the snapshot is sent before the context is looked at
	err := s.WatchRequest(&eventsv1.WatchRequestRequest{RequestId: "r"}, stream)
	if status.Code(err) != codes.Canceled || len(stream.sent) != 1 {
		t.Fatalf("WatchRequest of an unknown request = %v after %v, want the snapshot, then CANCELED", err, stream.sent)
	}
	want := &eventsv1.WatchRequestResponse{Type: eventsv1.WatchMessageType_WATCH_MESSAGE_TYPE_SNAPSHOT, Request: &eventsv1.AuthRequest{RequestId: "r"}}
	if !proto.Equal(stream.sent[0], want) {
		t.Fatalf("first message %v, want %v", stream.sent[0], want)
	}
}

// racingReader reads its snapshot at the revision of the change it
// publishes meanwhile, as a commit between a watch's subscription and its
// read does.
type racingReader struct {
	b    *broker.Broker
	snap *eventsv1.AuthRequest
}

func (r racingReader) GetRequest(context.Context, string) (*eventsv1.AuthRequest, error) {
	r.b.Publish([]store.Change{{Request: r.snap}})
	return r.snap, nil
}

func (racingReader) ListEvents(context.Context, string, store.Page) ([]*eventsv1.Event, string, error) {
	return nil, "", store.ErrNotFound
}

// sendFunc is a stream whose Send is a function.
type sendFunc struct {
	grpc.ServerStream
	ctx  context.Context
	send func(*eventsv1.WatchRequestResponse) error
}

func (s sendFunc) Context() context.Context                    { return s.ctx }
func (s sendFunc) Send(m *eventsv1.WatchRequestResponse) error { return s.send(m) }

// A change the snapshot already holds wakes the watch for nothing: it goes
// on, and the next change reaches the caller, masked for a caller that may
// not see personal data, its one event too, and SUCCESS ends the watch OK.
// (Whether the change the snapshot holds is taken alone or with the next
// depends on timing; the rounds make the first likely.)
func TestWatchGoesOnAfterAChangeItHas(t *testing.T) {
	t.Parallel()
	ctx := auth.WithPrincipal(context.Background(), &auth.Principal{Name: "k", Scopes: []auth.Scope{auth.ScopeRead}})
	for round := range 20 {
		b := broker.New(0)
		snap := &eventsv1.AuthRequest{RequestId: "r", Revision: 1, Status: eventsv1.RequestStatus_REQUEST_STATUS_IN_PROGRESS}
		s := NewRequestServer(racingReader{b, snap}, b, WatchOptions{Heartbeat: time.Hour, MaxDuration: time.Hour})
		var sent []*eventsv1.WatchRequestResponse
		stream := sendFunc{ctx: ctx, send: func(m *eventsv1.WatchRequestResponse) error {
			sent = append(sent, m)
			if len(sent) == 1 {
				go b.Publish([]store.Change{{
					Request: &eventsv1.AuthRequest{RequestId: "r", Revision: 2, Status: eventsv1.RequestStatus_REQUEST_STATUS_SUCCESS, Email: "a@example.com"},
					Events:  []*eventsv1.Event{{RequestId: "r", EventId: "e2", Email: "a@example.com"}},
				}})
			}
			return nil
		}}
		if err := s.WatchRequest(&eventsv1.WatchRequestRequest{RequestId: "r"}, stream); err != nil {
			t.Fatalf("round %d: WatchRequest = %v", round, err)
		}
		if len(sent) != 2 || sent[0].GetType() != eventsv1.WatchMessageType_WATCH_MESSAGE_TYPE_SNAPSHOT ||
			sent[1].GetType() != eventsv1.WatchMessageType_WATCH_MESSAGE_TYPE_UPDATE || sent[1].GetRevision() != 2 {
			t.Fatalf("round %d: sent %v, want the snapshot at 1, then the update at 2", round, sent)
		}
		if u := sent[1]; u.GetRequest().GetEmail() != "" || len(u.GetEvents()) != 1 || u.GetEvents()[0].GetEmail() != "" {
			t.Fatalf("round %d: update %v shows personal data", round, u)
		}
	}
}

// After an UPDATE, the watch is at its revision: the RECONNECT that ends it
// names that revision, so that the client resumes after the update, not
// before it (and gets its events again).
func TestWatchReconnectsAtTheLastUpdate(t *testing.T) {
	t.Parallel()
	b := broker.New(0)
	snap := &eventsv1.AuthRequest{RequestId: "r", Revision: 1, Status: eventsv1.RequestStatus_REQUEST_STATUS_IN_PROGRESS}
	s := NewRequestServer(fixedReader{snap}, b, WatchOptions{Heartbeat: time.Hour, MaxDuration: time.Hour})
	var sent []*eventsv1.WatchRequestResponse
	stream := sendFunc{ctx: context.Background(), send: func(m *eventsv1.WatchRequestResponse) error {
		sent = append(sent, m)
		switch len(sent) {
		case 1: // the snapshot: a change follows
			b.Publish([]store.Change{{
				Request: &eventsv1.AuthRequest{RequestId: "r", Revision: 2, Status: eventsv1.RequestStatus_REQUEST_STATUS_IN_PROGRESS},
				Events:  []*eventsv1.Event{{RequestId: "r", EventId: "e2"}},
			}})
		case 2: // its update: shutdown follows
			b.Close()
		}
		return nil
	}}
	if err := s.WatchRequest(&eventsv1.WatchRequestRequest{RequestId: "r"}, stream); err != nil {
		t.Fatalf("WatchRequest = %v", err)
	}
	types := []eventsv1.WatchMessageType{eventsv1.WatchMessageType_WATCH_MESSAGE_TYPE_SNAPSHOT, eventsv1.WatchMessageType_WATCH_MESSAGE_TYPE_UPDATE, eventsv1.WatchMessageType_WATCH_MESSAGE_TYPE_RECONNECT}
	if len(sent) != len(types) {
		t.Fatalf("sent %v, want a snapshot, an update and a reconnect", sent)
	}
	for i, m := range sent {
		if want := int64(min(i+1, 2)); m.GetType() != types[i] || m.GetRevision() != want {
			t.Errorf("message %d: %v at revision %d, want %v at %d", i+1, m.GetType(), m.GetRevision(), types[i], want)
		}
	}
}
