package cli

import (
	"context"
	"io"
	"slices"
	"strings"
	"testing"
	"time"
	"unicode"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/durationpb"

	eventsv1 "github.com/otpless-events/otpless-events/gen/otpless/events/v1"
)

// step is one Recv of a scripted stream: the fake clock moves on by after,
// then Recv returns msg or err.
type step struct {
	after time.Duration
	msg   *eventsv1.WatchRequestResponse
	err   error
}

// scriptedClient opens one scripted stream per WatchRequest, in order.
type scriptedClient struct {
	eventsv1.RequestServiceClient // only WatchRequest is called
	clock                         *time.Time
	streams                       [][]step
}

func (c *scriptedClient) WatchRequest(context.Context, *eventsv1.WatchRequestRequest, ...grpc.CallOption) (grpc.ServerStreamingClient[eventsv1.WatchRequestResponse], error) {
	if len(c.streams) == 0 {
		return nil, status.Error(codes.FailedPrecondition, "the script has no more streams")
	}
	s := &scriptedStream{clock: c.clock, steps: c.streams[0]}
	c.streams = c.streams[1:]
	return s, nil
}

type scriptedStream struct {
	grpc.ClientStream // not called
	clock             *time.Time
	steps             []step
}

func (s *scriptedStream) Recv() (*eventsv1.WatchRequestResponse, error) {
	if len(s.steps) == 0 {
		return nil, io.EOF
	}
	st := s.steps[0]
	s.steps = s.steps[1:]
	*s.clock = s.clock.Add(st.after)
	return st.msg, st.err
}

func watchMsg(typ eventsv1.WatchMessageType, rev int64, st eventsv1.RequestStatus) step {
	m := &eventsv1.WatchRequestResponse{Type: typ, Revision: rev}
	if typ == eventsv1.WatchMessageType_WATCH_MESSAGE_TYPE_SNAPSHOT || typ == eventsv1.WatchMessageType_WATCH_MESSAGE_TYPE_UPDATE {
		m.Request = &eventsv1.AuthRequest{RequestId: "r", Revision: rev, Status: st}
	}
	return step{msg: m}
}

var (
	inProgress = eventsv1.RequestStatus_REQUEST_STATUS_IN_PROGRESS
	succeeded  = eventsv1.RequestStatus_REQUEST_STATUS_SUCCESS

	snapshotAt = func(rev int64) step {
		return watchMsg(eventsv1.WatchMessageType_WATCH_MESSAGE_TYPE_SNAPSHOT, rev, inProgress)
	}
	heartbeatAt = func(rev int64) step {
		return watchMsg(eventsv1.WatchMessageType_WATCH_MESSAGE_TYPE_HEARTBEAT, rev, 0)
	}
	reconnectAt = func(rev int64) step {
		return watchMsg(eventsv1.WatchMessageType_WATCH_MESSAGE_TYPE_RECONNECT, rev, 0)
	}
	successAt = func(rev int64) step {
		return watchMsg(eventsv1.WatchMessageType_WATCH_MESSAGE_TYPE_UPDATE, rev, succeeded)
	}
	lost = step{err: status.Error(codes.Unavailable, "connection reset")}
	// exhausted is a watch limit's refusal, with when to try again.
	exhausted = func() step {
		st, err := status.New(codes.ResourceExhausted, "too many watch streams for this request (limit 20)").
			WithDetails(&errdetails.RetryInfo{RetryDelay: durationpb.New(5 * time.Second)})
		if err != nil {
			panic(err)
		}
		return step{err: st.Err()}
	}()
)

// later is s after d on the fake clock.
func later(d time.Duration, s step) step {
	s.after = d
	return s
}

// repeat is n copies of stream.
func repeat(n int, stream []step) [][]step {
	out := make([][]step, n)
	for i := range out {
		out[i] = stream
	}
	return out
}

// The reconnect backoff grows only while streams fail quickly: a stream
// that brought any message but RECONNECT (a heartbeat will do), or that
// stayed up for the longest backoff, shows the connection works, and the
// next failure starts from the shortest backoff again.
func TestWatchBackoff(t *testing.T) {
	t.Parallel()
	const ms = time.Millisecond
	tests := []struct {
		name    string
		streams [][]step
		sleeps  []time.Duration // the waits before reconnecting, in order
	}{
		{
			name: "streams ended by the maximum watch duration",
			streams: slices.Concat(
				[][]step{{snapshotAt(2), later(time.Hour, reconnectAt(2))}},
				repeat(4, []step{heartbeatAt(2), later(time.Hour, reconnectAt(2))}),
				[][]step{{heartbeatAt(2), successAt(3)}},
			),
		},
		{
			name: "short streams of a request not begun, each with its snapshot at 0",
			streams: slices.Concat(
				[][]step{{snapshotAt(0), reconnectAt(0)}},
				repeat(4, []step{snapshotAt(0), reconnectAt(0)}),
				[][]step{{snapshotAt(0), successAt(1)}},
			),
		},
		{
			name: "quick failures, then a heartbeat",
			streams: slices.Concat(
				[][]step{{snapshotAt(1), lost}},
				repeat(8, []step{lost}),
				[][]step{{heartbeatAt(1), lost}, {lost}, {heartbeatAt(1), successAt(2)}},
			),
			sleeps: []time.Duration{100 * ms, 200 * ms, 400 * ms, 800 * ms, 1600 * ms, 3200 * ms, 5000 * ms, 5000 * ms, 100 * ms},
		},
		{
			name: "a stream up for a minute without a message",
			streams: [][]step{
				{snapshotAt(1), lost}, {lost}, {lost},
				{later(time.Minute, lost)}, {lost},
				{heartbeatAt(1), successAt(2)},
			},
			sleeps: []time.Duration{100 * ms, 200 * ms, 100 * ms},
		},
		{
			// A watch limit's refusal says when to try again: watch waits
			// that long, rather than failing, whether or not a stream
			// worked before.
			name: "refused for a watch limit",
			streams: [][]step{
				{exhausted}, {exhausted}, {snapshotAt(1), lost}, {exhausted}, {lost},
				{heartbeatAt(1), successAt(2)},
			},
			sleeps: []time.Duration{5 * time.Second, 5 * time.Second, 5 * time.Second, 100 * ms},
		},
		{
			// A server shutting down refuses new streams, the first one
			// too: watch waits for it, as after a reconnect.
			name: "the first streams refused as unavailable",
			streams: [][]step{
				{lost}, {lost},
				{heartbeatAt(0), successAt(1)},
			},
			sleeps: []time.Duration{100 * ms, 200 * ms},
		},
		{
			// As a server that is shutting down might: RECONNECT alone
			// proves nothing.
			name: "RECONNECT at once",
			streams: [][]step{
				{snapshotAt(1), reconnectAt(1)}, {reconnectAt(1)}, {reconnectAt(1)},
				{heartbeatAt(1), successAt(2)},
			},
			sleeps: []time.Duration{100 * ms, 200 * ms},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			clock := time.Date(2025, 11, 26, 10, 31, 0, 0, time.UTC)
			client := &scriptedClient{clock: &clock, streams: tt.streams}
			var slept []time.Duration
			w := &watcher{
				client: client, id: "r", stdout: io.Discard, stderr: io.Discard,
				now: func() time.Time { return clock },
				sleep: func(_ context.Context, d time.Duration) bool {
					slept = append(slept, d)
					clock = clock.Add(d)
					return true
				},
			}
			if err := w.run(t.Context()); err != nil {
				t.Fatalf("watch: %v", err)
			}
			if len(client.streams) != 0 {
				t.Errorf("watch ended with %d streams of the script left", len(client.streams))
			}
			if !slices.Equal(slept, tt.sleeps) {
				t.Errorf("watch waited %v before reconnecting, want %v", slept, tt.sleeps)
			}
		})
	}
}

// silentClient's first stream brings a snapshot and then nothing, as a
// connection that died without a word; its second brings SUCCESS.
type silentClient struct {
	eventsv1.RequestServiceClient
	opened int
	after  []int64 // the revision each stream resumed after
}

func (c *silentClient) WatchRequest(ctx context.Context, req *eventsv1.WatchRequestRequest, _ ...grpc.CallOption) (grpc.ServerStreamingClient[eventsv1.WatchRequestResponse], error) {
	c.opened++
	c.after = append(c.after, req.GetAfterRevision())
	steps := []step{snapshotAt(1), successAt(2)}
	if c.opened == 1 {
		steps = []step{snapshotAt(1)}
	}
	return &silentStream{ctx: ctx, steps: steps}, nil
}

type silentStream struct {
	grpc.ClientStream
	ctx   context.Context
	steps []step
}

// Recv returns the steps, then waits for the call's context as a gRPC
// stream does.
func (s *silentStream) Recv() (*eventsv1.WatchRequestResponse, error) {
	if len(s.steps) > 0 {
		st := s.steps[0]
		s.steps = s.steps[1:]
		return st.msg, st.err
	}
	<-s.ctx.Done()
	return nil, status.FromContextError(s.ctx.Err()).Err()
}

// A stream that brings nothing, not even a heartbeat, for the idle timeout
// is dropped and opened again after the last revision.
func TestWatchDropsASilentStream(t *testing.T) {
	t.Parallel()
	client := &silentClient{}
	var stderr strings.Builder
	w := &watcher{client: client, id: "r", idle: 50 * time.Millisecond, stdout: io.Discard, stderr: &stderr}
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	if err := w.run(ctx); err != nil {
		t.Fatalf("watch: %v (stderr %q)", err, stderr.String())
	}
	if client.opened != 2 || !slices.Equal(client.after, []int64{0, 1}) || !strings.Contains(stderr.String(), "nothing from the server for 50ms at revision 1") {
		t.Errorf("%d streams opened after revisions %v, stderr %q; want 2, the silent one dropped and the next after revision 1", client.opened, client.after, stderr.String())
	}
}

// What watch prints of a change comes from webhook senders: control
// characters in it are escaped, so that none reaches the terminal (ESC
// sequences cleared the screen or set its title; a newline faked a line).
func TestWatchPrintsNoControlCharacters(t *testing.T) {
	var out strings.Builder
	w := &watcher{stdout: &out}
	msg := &eventsv1.WatchRequestResponse{
		Type: eventsv1.WatchMessageType_WATCH_MESSAGE_TYPE_UPDATE, Revision: 2,
		Request: &eventsv1.AuthRequest{Revision: 2, Status: eventsv1.RequestStatus_REQUEST_STATUS_FAILED},
		Events:  []*eventsv1.Event{{Status: "FAILED", Channel: "SMS\x1b[2J", Error: &eventsv1.ErrorInfo{Code: "0\x1b]0;PWNED\a33\n"}}},
	}
	if err := w.print(msg); err != nil {
		t.Fatal(err)
	}
	got := out.String()
	if strings.ContainsFunc(strings.TrimSuffix(got, "\n"), unicode.IsControl) || !strings.Contains(got, `SMS\x1b[2J FAILED`) || !strings.Contains(got, `0\x1b]0;PWNED\a33\n`) {
		t.Errorf("printed %q; want one line with the control characters escaped", got)
	}
}

// watch --json (and get) escape what protojson leaves of the control
// characters: DEL and the C1 controls, one of which a terminal may take for
// ESC [. The line stays JSON that means the same.
func TestWatchJSONPrintsNoControlCharacters(t *testing.T) {
	var out strings.Builder
	w := &watcher{stdout: &out, json: true}
	channel := "SMS\u009b2J\x7f\x1b"
	msg := &eventsv1.WatchRequestResponse{
		Type: eventsv1.WatchMessageType_WATCH_MESSAGE_TYPE_UPDATE, Revision: 2,
		Events: []*eventsv1.Event{{Status: "SENT", Channel: channel}},
	}
	if err := w.print(msg); err != nil {
		t.Fatal(err)
	}
	got := out.String()
	if strings.ContainsFunc(strings.TrimSuffix(got, "\n"), unicode.IsControl) || !strings.Contains(got, `SMS\u009b2J\u007f\u001b`) {
		t.Fatalf("printed %q; want the control characters escaped", got)
	}
	var back eventsv1.WatchRequestResponse
	if err := protojson.Unmarshal([]byte(got), &back); err != nil || back.GetEvents()[0].GetChannel() != channel {
		t.Errorf("the line reads back as channel %q (%v), want %q", back.GetEvents()[0].GetChannel(), err, channel)
	}
}

// A snapshot's line counts its events in words that agree with the count.
func TestWatchSnapshotCount(t *testing.T) {
	for _, tc := range []struct {
		count int32
		want  string
	}{
		{1, "snapshot of 1 event: SMS DELIVERED"},
		{2, "snapshot of 2 events: SMS DELIVERED"},
	} {
		msg := &eventsv1.WatchRequestResponse{
			Type: eventsv1.WatchMessageType_WATCH_MESSAGE_TYPE_SNAPSHOT, Revision: 1,
			Request: &eventsv1.AuthRequest{Revision: 1, EventCount: tc.count, Channels: []*eventsv1.ChannelProgress{{Channel: "SMS", Status: eventsv1.DeliveryStatus_DELIVERY_STATUS_DELIVERED}}},
		}
		if got := describeChange(msg); got != tc.want {
			t.Errorf("a count of %d: %q, want %q", tc.count, got, tc.want)
		}
	}
}

// A DEADLINE_EXCEEDED that watch did not ask for (no --timeout: a proxy's,
// or the server's own) is reported in the server's words, not as the
// timeout of the user's that never was.
func TestWatchServersDeadlineIsNotATimeout(t *testing.T) {
	t.Parallel()
	clock := time.Date(2025, 11, 26, 10, 31, 0, 0, time.UTC)
	deadline := step{err: status.Error(codes.DeadlineExceeded, "upstream request timeout")}
	for _, streams := range [][][]step{{{snapshotAt(1), deadline}}, {{deadline}}} {
		client := &scriptedClient{clock: &clock, streams: streams}
		w := &watcher{client: client, id: "r", stdout: io.Discard, stderr: io.Discard, sleep: func(context.Context, time.Duration) bool { return true }}
		err := w.run(t.Context())
		if err == nil || strings.Contains(err.Error(), "timed out") || !strings.Contains(err.Error(), "upstream request timeout (DeadlineExceeded)") {
			t.Errorf("watch without --timeout, the server answering DEADLINE_EXCEEDED: %v; want the server's words, not a timeout of watch's", err)
		}
	}
}

// A server's or a proxy's words in a gRPC status reach the terminal escaped,
// as a change's do: grpc-go puts a proxy's non-gRPC answer after a newline,
// and a message may hold anything.
func TestWatchStatusMessagesPrintNoControlCharacters(t *testing.T) {
	t.Parallel()
	const words = "502 Bad Gateway\ndata: \x1b]0;PWNED\a"
	clock := time.Date(2025, 11, 26, 10, 31, 0, 0, time.UTC)
	client := &scriptedClient{clock: &clock, streams: [][]step{
		{{err: status.Error(codes.Unavailable, words)}},
		{snapshotAt(1), {err: status.Error(codes.Unavailable, words)}},
		{{err: status.Error(codes.PermissionDenied, words)}},
	}}
	var stderr strings.Builder
	w := &watcher{client: client, id: "r", stdout: io.Discard, stderr: &stderr, sleep: func(context.Context, time.Duration) bool { return true }}
	err := w.run(t.Context())
	if err == nil {
		t.Fatal("watch ended without an error after PERMISSION_DENIED")
	}
	const escaped = `502 Bad Gateway\ndata: \x1b]0;PWNED\a`
	for what, tc := range map[string]struct {
		got  string
		want int // times the words appear
	}{"stderr": {strings.TrimSuffix(stderr.String(), "\n"), 2}, "the error": {err.Error(), 1}} {
		if strings.Count(tc.got, escaped) != tc.want {
			t.Errorf("%s: %q; want the server's words %d times, their control characters escaped", what, tc.got, tc.want)
		}
		for _, line := range strings.Split(tc.got, "\n") {
			if strings.ContainsFunc(line, unicode.IsControl) {
				t.Errorf("%s: line %q holds control characters", what, line)
			}
		}
	}
}
