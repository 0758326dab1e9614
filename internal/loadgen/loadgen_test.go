package loadgen

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/otpless-events/otpless-events/internal/testnet"
)

// Run posts each webhook as OTPLESS would (POST, JSON, the URL's
// credentials as Basic auth) and counts what the target answers: 200s as
// OK with a latency, anything else by status.
func TestRunPostsAndCounts(t *testing.T) {
	t.Parallel()
	var (
		mu     sync.Mutex
		served int
		bad    []string
	)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		user, pass, ok := r.BasicAuth()
		mu.Lock()
		defer mu.Unlock()
		served++
		switch {
		case err != nil || !json.Valid(body):
			bad = append(bad, "body not JSON")
		case r.Method != http.MethodPost || r.URL.Path != "/v1/webhooks/otpless" || r.Header.Get("Content-Type") != "application/json":
			bad = append(bad, r.Method+" "+r.URL.Path+" "+r.Header.Get("Content-Type"))
		case !ok || user != "otpless" || pass != "s3cret":
			bad = append(bad, "no basic auth from the URL")
		}
		if served%4 == 0 {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
	}))
	defer srv.Close()

	url := strings.Replace(srv.URL, "http://", "http://otpless:s3cret@", 1) + "/v1/webhooks/otpless"
	res, err := Run(t.Context(), Config{WebhookURL: url, Rate: 400, Concurrency: 4, Duration: 250 * time.Millisecond, Requests: 10, Mix: DefaultMix, Seed: 3})
	if err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(bad) > 0 {
		t.Fatalf("%d of %d posts were not as OTPLESS sends them, first: %s", len(bad), served, bad[0])
	}
	if res.Sent != 100 || int(res.Sent) != served {
		t.Errorf("sent %d, server saw %d: want 100 (400/s for 250 ms)", res.Sent, served)
	}
	if got, want := res.Errors["http_503"], res.Sent/4; got != want || res.OK != res.Sent-want {
		t.Errorf("ok %d, errors %v: want %d answered 503 and the rest ok", res.OK, res.Errors, want)
	}
	if res.Ingest.Count != uint64(res.OK) || res.Failed.Count != uint64(res.Errors["http_503"]) || res.Ingest.P50 <= 0 || res.Throughput <= 0 {
		t.Errorf("ingest %+v, failed %+v, %.0f/s: want a latency for every 200 in ingest, every 503 in failed", res.Ingest, res.Failed, res.Throughput)
	}
}

// A target that cannot be reached is an error kind of its own, not a
// failed run.
func TestRunConnectionRefused(t *testing.T) {
	t.Parallel()
	addr := testnet.ClosedAddr(t)

	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	// Open loop: the ten posts due are sent however late the senders start.
	res, err := Run(ctx, Config{WebhookURL: "http://" + addr + "/v1/webhooks/otpless", Rate: 200, Concurrency: 2, Duration: 50 * time.Millisecond, Requests: 10, Mix: DefaultMix})
	if err != nil {
		t.Fatal(err)
	}
	if res.OK != 0 || res.Sent == 0 || res.Errors["connection_refused"] != res.Sent {
		t.Errorf("sent %d, ok %d, errors %v: want every post refused", res.Sent, res.OK, res.Errors)
	}
}

// In open loop no webhook leaves before it is due, since its latency counts
// from then: behind a handler that takes 2 ms, none measures less. And the
// count is the rate times the duration, for a rate whose interval is no
// whole number of nanoseconds too.
func TestOpenLoopNeverSendsEarly(t *testing.T) {
	t.Parallel()
	const floor = 2 * time.Millisecond
	srv := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { time.Sleep(floor) }))
	defer srv.Close()
	r := newRunner(t.Context(), Config{WebhookURL: srv.URL, Rate: 3000, Concurrency: 32, Duration: 100 * time.Millisecond, Requests: 10, Mix: DefaultMix, Seed: 1})
	defer r.close()
	r.openLoop(t.Context(), time.Now())
	if sent := r.sent.Load(); sent != 300 {
		t.Errorf("sent %d, want 300 (3,000/s for 100 ms)", sent)
	}
	// Due before the end: at 0 s, 20 s, ..., 80 s for 0.05/s over 90 s;
	// at 0 s only for 0.05/s over 10 s.
	for _, tc := range []struct {
		rate float64
		d    time.Duration
		want int
	}{{0.05, 90 * time.Second, 5}, {0.05, 10 * time.Second, 1}, {0.29, 100 * time.Second, 29}, {12, time.Second, 12}} {
		if got := dueBefore(tc.rate, tc.d); got != tc.want {
			t.Errorf("%v/s for %v: %d due, want %d", tc.rate, tc.d, got, tc.want)
		}
	}
	if least := r.ingest.Quantile(0); least < floor {
		t.Errorf("least latency %v, under the handler's %v: a webhook left before it was due", least, floor)
	}
}

// Watchers refused for good (here, a server without RequestService) give
// up at once instead of retrying until the start times out.
func TestWatchersRefusedGiveUp(t *testing.T) {
	t.Parallel()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer()
	defer gs.Stop()
	go gs.Serve(lis)
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	hook := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	defer hook.Close()
	res, err := Run(t.Context(), Config{WebhookURL: hook.URL, Rate: 100, Concurrency: 2, Duration: 50 * time.Millisecond, Requests: 10, Watchers: 3, WatchConns: []*grpc.ClientConn{conn}, Mix: DefaultMix})
	if err != nil {
		t.Fatal(err)
	}
	if res.WatchersReady != 0 || res.WatchErrors["Unimplemented"] != 3 {
		t.Errorf("%d watchers ready, errors %v: want none ready and one Unimplemented each", res.WatchersReady, res.WatchErrors)
	}
}

// Canceling a run ends the posts in flight at once, counted as canceled,
// rather than when they time out (here: never).
func TestCancelEndsPostsInFlight(t *testing.T) {
	t.Parallel()
	const senders = 4
	arrived := make(chan struct{}, senders)
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(_ http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body) // then net/http notices the client closing
		arrived <- struct{}{}
		select { // until the client closes the connection
		case <-r.Context().Done():
		case <-release:
		}
	}))
	defer srv.Close()
	defer close(release) // before Close, which waits for the handlers

	ctx, cancel := context.WithCancel(t.Context())
	type result struct {
		res *Result
		err error
	}
	done := make(chan result, 1)
	go func() {
		res, err := Run(ctx, Config{WebhookURL: srv.URL, Concurrency: senders, Duration: time.Hour, Requests: 10, Mix: DefaultMix, sendTimeout: 24 * time.Hour})
		done <- result{res, err}
	}()
	// Deadlock guards, not measures: without the fix the run ends in a day.
	guard := time.After(time.Minute)
	for i := range senders {
		select {
		case <-arrived:
		case <-guard:
			t.Fatalf("%d of %d posts arrived\n%s", i, senders, goroutines())
		}
	}
	cancel()
	var got result
	select {
	case got = <-done:
	case <-guard:
		t.Fatalf("the run did not end after it was canceled, with its posts in flight\n%s", goroutines())
	}
	if got.err != nil {
		t.Fatal(got.err)
	}
	if res := got.res; res.Sent != senders || res.Errors["canceled"] != senders || res.OK != 0 {
		t.Errorf("sent %d, ok %d, errors %v: want the %d in flight canceled", res.Sent, res.OK, res.Errors, senders)
	}
}

// Failed posts are named by kind; every timeout fasthttp has is a timeout.
func TestTransportErrorKinds(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		err  error
		want string
	}{
		{fmt.Errorf("error when dialing 10.0.0.1:80: %w", fasthttp.ErrDialTimeout), "timeout"},
		{fasthttp.ErrTLSHandshakeTimeout, "timeout"},
		{fasthttp.ErrTimeout, "timeout"},
		{fasthttp.ErrNoFreeConns, "timeout"},
		{&net.OpError{Op: "dial", Net: "tcp", Err: os.ErrDeadlineExceeded}, "timeout"},
		{context.DeadlineExceeded, "timeout"},
		{&net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}, "connection_refused"},
		{fasthttp.ErrConnectionClosed, "connection_reset"},
		{&net.OpError{Op: "read", Net: "tcp", Err: syscall.ECONNRESET}, "connection_reset"},
		{io.ErrUnexpectedEOF, "connection_reset"},
		{&net.OpError{Op: "write", Net: "tcp", Err: os.NewSyscallError("write", syscall.EPIPE)}, "connection_reset"},
		{&net.OpError{Op: "read", Net: "tcp", Err: syscall.ECONNABORTED}, "connection_reset"},
		{fmt.Errorf("dial: %w", context.Canceled), "canceled"},
		{errors.New("x509: certificate signed by unknown authority"), "transport"},
	} {
		if got := transportError(tc.err); got != tc.want {
			t.Errorf("%v: %s, want %s", tc.err, got, tc.want)
		}
	}
}

// In open loop n webhooks take n intervals: a server that keeps up is
// credited with the rate, not with more because the last webhook was
// answered early in its interval.
func TestOpenLoopThroughput(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	defer srv.Close()
	const rate, d = 10, 300 * time.Millisecond // due at 0, 100 and 200 ms
	res, err := Run(t.Context(), Config{WebhookURL: srv.URL, Rate: rate, Concurrency: 2, Duration: d, Requests: 10, Mix: DefaultMix})
	if err != nil {
		t.Fatal(err)
	}
	if res.OK != 3 || res.Elapsed < d || res.Throughput > rate {
		t.Errorf("%d ok in %v: %.2f/s, want 3 in at least %v, at most %d/s", res.OK, res.Elapsed, res.Throughput, d, rate)
	}
}

// With TLS the ceiling serves HTTPS with a certificate its client trusts.
func TestCeilingTLS(t *testing.T) {
	t.Parallel()
	c, err := StartCeiling(true)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if !strings.HasPrefix(c.URL, "https://") || c.TLS == nil {
		t.Fatalf("ceiling at %s, TLS %v", c.URL, c.TLS)
	}
	res, err := Run(t.Context(), Config{WebhookURL: c.URL, TLS: c.TLS, Rate: 200, Concurrency: 2, Duration: 50 * time.Millisecond, Requests: 10, Mix: DefaultMix})
	if err != nil {
		t.Fatal(err)
	}
	if res.OK == 0 || len(res.Errors) > 0 {
		t.Errorf("%d ok, errors %v", res.OK, res.Errors)
	}
}

// goroutines is every goroutine's stack, for a test that gives up.
func goroutines() []byte {
	buf := make([]byte, 1<<20)
	return buf[:runtime.Stack(buf, true)]
}

// A stall that ends in timeouts shows in the failed posts' latencies, each
// counted until its failure.
func TestStallEndingInTimeoutsShows(t *testing.T) {
	t.Parallel()
	var n atomic.Int64
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		if n.Add(1)%10 == 0 {
			select { // stalls past the post's timeout
			case <-release:
			case <-r.Context().Done():
			}
		}
	}))
	defer srv.Close()
	defer close(release)
	res, err := Run(t.Context(), Config{WebhookURL: srv.URL + "/v1/webhooks/otpless", Rate: 200, Concurrency: 32, Duration: time.Second,
		Requests: 10, Mix: DefaultMix, Seed: 5, sendTimeout: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if n := res.Errors["timeout"]; n == 0 || res.Failed.Count != uint64(n) || res.Failed.P50 < 300*time.Millisecond || res.Ingest.Count != uint64(res.OK) {
		t.Errorf("errors %v, failed %+v, ingest %+v: want each timed-out post in failed, at 300 ms or more", res.Errors, res.Failed, res.Ingest)
	}
}

// Watched slots are spread evenly among all, so that watched webhooks go
// out all along the round-robin.
func TestWatchedSlotsSpread(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ requests, watchers int }{{1000, 200}, {10, 3}, {7, 7}, {5, 0}, {10000, 10000}, {1000, 999}} {
		r := newRunner(t.Context(), Config{Requests: tc.requests, Watchers: tc.watchers, Concurrency: 1})
		r.close()
		if len(r.watched) != tc.watchers {
			t.Errorf("%d of %d: %d slots watched", tc.watchers, tc.requests, len(r.watched))
			continue
		}
		// Any window of slots holds its share of watchers, give or take one.
		for _, w := range []int{tc.requests / 10, tc.requests / 2} {
			for start := 0; start+w <= tc.requests; start += max(w/3, 1) {
				watched := 0
				for _, s := range r.slots[start : start+w] {
					if s.watched {
						watched++
					}
				}
				if want := float64(w) * float64(tc.watchers) / float64(tc.requests); math.Abs(float64(watched)-want) > 1 {
					t.Errorf("%d of %d: slots %d to %d hold %d watched, want about %.1f", tc.watchers, tc.requests, start, start+w, watched, want)
				}
			}
		}
	}
}

// The report counts requests started and sent whole: a request is whole
// once its slot moved on to the next, or its script is all sent.
func TestRequestsCounted(t *testing.T) {
	t.Parallel()
	r := newRunner(t.Context(), Config{Requests: 3, Concurrency: 1, Mix: DefaultMix, Seed: 1})
	defer r.close()
	if started, whole := r.requests(); started != 0 || whole != 0 {
		t.Fatalf("before any webhook: %d started, %d whole", started, whole)
	}
	type gen struct{ slot, gen int }
	sent := map[gen]int{}
	length := map[gen]int{}
	for range 200 {
		j := r.next()
		sent[gen{j.slot.index, j.gen}]++
		length[gen{j.slot.index, j.gen}] = len(j.slot.script)
	}
	var wantWhole int64
	for g, n := range sent {
		if n == length[g] {
			wantWhole++
		}
	}
	if started, whole := r.requests(); started != int64(len(sent)) || whole != wantWhole {
		t.Errorf("%d started, %d whole; want %d and %d", started, whole, len(sent), wantWhole)
	}
}

// TrafficDone comes once, after the last answer, so that the CPU a report
// counts per webhook is that of the traffic.
func TestTrafficDoneAfterTheLastAnswer(t *testing.T) {
	t.Parallel()
	var answered atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		answered.Add(1)
	}))
	defer srv.Close()
	var calls, atCall int64
	res, err := Run(t.Context(), Config{WebhookURL: srv.URL + "/v1/webhooks/otpless", Rate: 200, Concurrency: 4, Duration: 200 * time.Millisecond,
		Requests: 5, Mix: DefaultMix, Seed: 2, TrafficDone: func() { calls++; atCall = answered.Load() }})
	if err != nil {
		t.Fatal(err)
	}
	if calls != 1 || atCall != res.Sent || res.Sent == 0 {
		t.Errorf("TrafficDone called %d times, with %d of %d posts answered", calls, atCall, res.Sent)
	}
}

// In closed loop the senders send for Duration: a server that answers the
// first posts and then fails every one (here it resets the connection) is
// credited with its answers over the whole run, not over the moment until
// its last answer, as if it had kept up that pace.
func TestClosedLoopThroughputOverTheRun(t *testing.T) {
	t.Parallel()
	const answered = 20
	var n atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		if n.Add(1) <= answered {
			return
		}
		time.Sleep(5 * time.Millisecond) // no busy loop of resets
		if conn, _, err := w.(http.Hijacker).Hijack(); err == nil {
			conn.Close()
		}
	}))
	defer srv.Close()
	const d = 2 * time.Second // ample for the 20 answers on a loaded machine
	res, err := Run(t.Context(), Config{WebhookURL: srv.URL, Concurrency: 2, Duration: d, Requests: 10, Mix: DefaultMix, Seed: 4})
	if err != nil {
		t.Fatal(err)
	}
	if res.OK != answered || res.Errors["connection_reset"] == 0 {
		t.Fatalf("%d ok, errors %v: want %d answered, then resets", res.OK, res.Errors, answered)
	}
	if res.Elapsed < d || res.Throughput > answered/d.Seconds() {
		t.Errorf("%d ok in %v: %.0f/s; want them over the run's %v, at most %.0f/s", res.OK, res.Elapsed, res.Throughput, d, answered/d.Seconds())
	}
}

// A stall the server recovers from shows in the latency of every webhook
// due during it, not only in that of the one in flight when it began: in
// open loop the webhooks due meanwhile wait, and each counts from when it
// was due (no coordinated omission), however few the senders.
func TestOpenLoopStallShowsInEveryWebhookDue(t *testing.T) {
	t.Parallel()
	var first atomic.Bool
	srv := httptest.NewServer(http.HandlerFunc(func(_ http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		if first.CompareAndSwap(false, true) {
			time.Sleep(300 * time.Millisecond)
		}
	}))
	defer srv.Close()
	// 100 webhooks, one every 5 ms; the 60 due during the first one's
	// 300 ms wait behind it, from 295 ms down to nothing: the 10 slowest
	// waited 250 ms or more.
	res, err := Run(t.Context(), Config{WebhookURL: srv.URL, Rate: 200, Concurrency: 1, Duration: 500 * time.Millisecond, Requests: 10, Mix: DefaultMix, Seed: 6})
	if err != nil {
		t.Fatal(err)
	}
	if res.OK != 100 || res.Ingest.P90 < 150*time.Millisecond || res.Ingest.Max < 300*time.Millisecond {
		t.Errorf("%d ok, ingest %+v: want the webhooks due during a 300 ms stall to count their wait", res.OK, res.Ingest)
	}
}
