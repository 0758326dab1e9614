package loadgen

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
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
	if res.Ingest.Count != uint64(res.OK) || res.Ingest.P50 <= 0 || res.Throughput <= 0 {
		t.Errorf("ingest %+v, %.0f/s: want a latency for every 200", res.Ingest, res.Throughput)
	}
}

// A target that cannot be reached is an error kind of its own, not a
// failed run.
func TestRunConnectionRefused(t *testing.T) {
	t.Parallel()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := lis.Addr().String()
	lis.Close() // nothing listens there now

	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	res, err := Run(ctx, Config{WebhookURL: "http://" + addr + "/v1/webhooks/otpless", Concurrency: 2, Duration: 50 * time.Millisecond, Requests: 10, Mix: DefaultMix})
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
	r := newRunner(Config{WebhookURL: srv.URL, Rate: 3000, Concurrency: 32, Duration: 100 * time.Millisecond, Requests: 10, Mix: DefaultMix, Seed: 1})
	defer r.client.CloseIdleConnections()
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
