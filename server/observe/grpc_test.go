package observe_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/stats"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	eventsv1 "github.com/otpless-events/otpless-events/gen/otpless/events/v1"
	"github.com/otpless-events/otpless-events/server/observe"
	"github.com/otpless-events/otpless-events/server/store/groupcommit"
)

type healthStream struct{ grpc.ServerStream }

func (healthStream) Context() context.Context    { return context.Background() }
func (healthStream) SetHeader(metadata.MD) error { return nil }

// Health probes log at debug whatever their end: a Watch ends UNAVAILABLE
// at every shutdown, which is no fault to warn of.
func TestHealthCallsLogAtDebug(t *testing.T) {
	t.Parallel()
	o, logs := newObserver(t)
	info := &grpc.StreamServerInfo{FullMethod: "/grpc.health.v1.Health/Watch", IsServerStream: true}
	o.StreamServerInterceptor()(nil, healthStream{}, info, func(any, grpc.ServerStream) error {
		return status.Error(codes.Unavailable, "server is shutting down")
	})
	if lines := logs.Lines(t); len(lines) != 1 || lines[0]["level"] != "DEBUG" || lines[0]["code"] != "Unavailable" {
		t.Errorf("a health watch ended by shutdown logged %v, want one line at DEBUG", lines)
	}
}

// A call the interceptors saw is theirs to log: the stats handler logs only
// the calls that ended before any interceptor.
func TestStatsHandlerLogsOnlyCallsNoInterceptorSaw(t *testing.T) {
	t.Parallel()
	o, logs := newObserver(t)
	h := o.StatsHandler(func(string) bool { return true })
	const method = "/otpless.events.v1.RequestService/GetRequest"
	fail := status.Error(codes.NotFound, "no such request")

	seen := h.TagRPC(context.Background(), &stats.RPCTagInfo{FullMethodName: method})
	_, _ = o.UnaryServerInterceptor()(seen, nil, &grpc.UnaryServerInfo{FullMethod: method}, func(context.Context, any) (any, error) {
		return nil, fail
	})
	h.HandleRPC(seen, &stats.End{Error: fail})
	if lines := logs.Lines(t); len(lines) != 1 {
		t.Fatalf("a call the interceptor saw logged %d lines, want its one: %v", len(lines), lines)
	}

	unseen := h.TagRPC(context.Background(), &stats.RPCTagInfo{FullMethodName: method})
	h.HandleRPC(unseen, &stats.InPayload{})
	h.HandleRPC(unseen, &stats.End{Error: status.Error(codes.Internal, "grpc: error unmarshalling request")})
	ok := h.TagRPC(context.Background(), &stats.RPCTagInfo{FullMethodName: method})
	h.HandleRPC(ok, &stats.End{})
	if lines := logs.Lines(t); len(lines) != 2 || lines[1]["code"] != "Internal" || lines[1]["method"] != method {
		t.Errorf("after a call no interceptor saw and one that ended well: %v, want one more line, the first's", lines)
	}
}

type watchStream struct{ healthStream }

func (watchStream) SendMsg(any) error { return nil }

// A snapshot's update time from another replica, whose clock is ahead, is
// a delivery of no time: a negative one would lower the histogram's sum,
// which Prometheus takes for a counter reset.
func TestDeliveryFromAClockAheadIsNotNegative(t *testing.T) {
	t.Parallel()
	o, _ := newObserver(t)
	info := &grpc.StreamServerInfo{FullMethod: eventsv1.RequestService_WatchRequest_FullMethodName, IsServerStream: true}
	ahead := timestamppb.New(time.Now().Add(time.Hour))
	o.StreamServerInterceptor()(nil, watchStream{}, info, func(_ any, ss grpc.ServerStream) error {
		return ss.SendMsg(&eventsv1.WatchRequestResponse{
			Type:    eventsv1.WatchMessageType_WATCH_MESSAGE_TYPE_UPDATE,
			Request: &eventsv1.AuthRequest{RequestId: "r", UpdateTime: ahead},
		})
	})
	families, err := o.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() == "otpless_events_watch_delivery_seconds" {
			h := f.GetMetric()[0].GetHistogram()
			if h.GetSampleCount() != 1 || h.GetSampleSum() != 0 {
				t.Errorf("delivery of an update an hour ahead: %d samples summing to %v s, want 1 of 0 s", h.GetSampleCount(), h.GetSampleSum())
			}
			return
		}
	}
	t.Error("no otpless_events_watch_delivery_seconds")
}

// Call durations are histograms with buckets up to an hour, the default
// --max-watch-duration: a watch stream's is its whole life, and with
// buckets of request latencies only, every stream fell past the last.
func TestDurationBucketsSpanAWatchStream(t *testing.T) {
	t.Parallel()
	o, _ := newObserver(t)
	info := &grpc.StreamServerInfo{FullMethod: eventsv1.RequestService_WatchRequest_FullMethodName, IsServerStream: true}
	o.GRPC.StreamServerInterceptor()(nil, watchStream{}, info, func(any, grpc.ServerStream) error { return nil })
	o.HTTP(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {})).
		ServeHTTP(httptest.NewRecorder(), httptest.NewRequest(http.MethodGet, "/healthz", nil))
	families, err := o.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	seen := 0
	for _, f := range families {
		switch f.GetName() {
		case "grpc_server_handling_seconds", "otpless_events_http_request_duration_seconds":
			seen++
			b := f.GetMetric()[0].GetHistogram().GetBucket()
			if last := b[len(b)-1].GetUpperBound(); last < observe.MaxCallDuration.Seconds() {
				t.Errorf("%s: the last bucket ends at %v s, short of the longest --max-watch-duration", f.GetName(), last)
			}
		}
	}
	if seen != 2 {
		t.Errorf("found %d of the two duration histograms", seen)
	}
}

// The largest batch --max-batch allows is counted in a bucket of its own
// size, not in +Inf.
func TestCommitBucketsSpanTheLargestBatch(t *testing.T) {
	t.Parallel()
	o, _ := newObserver(t)
	o.ObserveCommit(groupcommit.Batch{Webhooks: observe.MaxCommitWebhooks})
	families, err := o.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() == "otpless_events_store_commit_webhooks" {
			b := f.GetMetric()[0].GetHistogram().GetBucket()
			if last := b[len(b)-1]; last.GetUpperBound() != observe.MaxCommitWebhooks || last.GetCumulativeCount() != 1 {
				t.Errorf("the last bucket ends at %v with %d batches, want %d with the one", last.GetUpperBound(), last.GetCumulativeCount(), observe.MaxCommitWebhooks)
			}
			return
		}
	}
	t.Error("no otpless_events_store_commit_webhooks")
}

// The help of grpc_refused_total explains every code it counts: those
// whose series start at zero, and the two that appear with their first.
// It left PermissionDenied out (a credential calling a method it may not
// call), though that series is there from the start.
func TestRefusedHelpNamesEveryCode(t *testing.T) {
	t.Parallel()
	o, _ := newObserver(t)
	families, err := o.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() != "otpless_events_grpc_refused_total" {
			continue
		}
		want := []string{codes.Canceled.String(), codes.DeadlineExceeded.String()}
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "code" {
					want = append(want, l.GetValue())
				}
			}
		}
		if len(want) < 7 {
			t.Fatalf("codes %q: want the five that start at zero as well", want)
		}
		for _, code := range want {
			if !strings.Contains(f.GetHelp(), code) {
				t.Errorf("the help %q does not say what %s counts", f.GetHelp(), code)
			}
		}
		return
	}
	t.Fatal("no otpless_events_grpc_refused_total")
}
