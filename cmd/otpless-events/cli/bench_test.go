package cli

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"math"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/pprof"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/otpless-events/otpless-events/internal/loadgen"
	"github.com/otpless-events/otpless-events/internal/testnet"
	"github.com/otpless-events/otpless-events/internal/testserver"
)

// TestBenchSmoke runs bench for a moment against a real server in this
// process, with watchers and the ceiling, and checks only that the report
// is sane; the figures themselves are for the README, never for a test.
func TestBenchSmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("runs load for a few seconds; skipped with -short")
	}
	t.Parallel()
	var stdout, stderr bytes.Buffer
	args := []string{"bench", "--self", "--ceiling", "--json", "--duration", "1s", "--rate", "300", "--concurrency", "16", "--watchers", "20", "--requests", "100"}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if code := Main(ctx, args, nil, &stdout, &stderr); code != 0 {
		t.Fatalf("bench exited %d: %s", code, stderr.String())
	}
	var r benchReport
	if err := json.Unmarshal(stdout.Bytes(), &r); err != nil {
		t.Fatalf("bench --json printed %s: %v", stdout.String(), err)
	}
	res := r.Result
	if res == nil || r.Ceiling == nil || r.Server == nil {
		t.Fatalf("report lacks a part: %s", stdout.String())
	}
	if res.OK < 100 || res.OK > res.Sent || res.Throughput <= 0 || len(res.Errors) > 0 {
		t.Errorf("sent %d, ok %d, %.0f/s, errors %v: want most of 300 webhooks answered 200", res.Sent, res.OK, res.Throughput, res.Errors)
	}
	for name, l := range map[string]struct{ p50, p90, p99, max time.Duration }{
		"ingest":   {res.Ingest.P50, res.Ingest.P90, res.Ingest.P99, res.Ingest.Max},
		"delivery": {res.Delivery.P50, res.Delivery.P90, res.Delivery.P99, res.Delivery.Max},
	} {
		if !(0 < l.p50 && l.p50 <= l.p90 && l.p90 <= l.p99 && l.p99 <= l.max && l.max < time.Minute) {
			t.Errorf("%s latency %+v is not ordered and positive", name, l)
		}
	}
	if res.WatchersReady != 20 || res.Delivery.Count == 0 {
		t.Errorf("%d watchers ready, %d deliveries measured", res.WatchersReady, res.Delivery.Count)
	}
	if res.DeliveryExpected == 0 || res.DeliveryLost != 0 || res.DeliveryResynced != 0 {
		t.Errorf("deliveries: %d expected, %d lost, %d resynced", res.DeliveryExpected, res.DeliveryLost, res.DeliveryResynced)
	}
	if r.Ceiling.OK == 0 || r.CeilingRatio != 0 {
		t.Errorf("ceiling: %d ok, ratio %v: want a run and, in open loop (the server takes the rate), no ratio", r.Ceiling.OK, r.CeilingRatio)
	}
	if d := r.Ceiling.Sent - 300; -1 <= d && d <= 1 { // what 300/s for 1 s sends: the ceiling ran open loop
		t.Errorf("the ceiling sent %d webhooks: it ran at --rate, not as fast as it could", r.Ceiling.Sent)
	}
	if m := r.Server; m.Start.RSS == 0 || m.End.RSS == 0 || m.End.PeakRSS < m.End.RSS || m.CPUPerWebhook <= 0 {
		t.Errorf("server process %+v", m)
	}
	if strings.Contains(stdout.String(), "wk_") {
		t.Error("the report shows the webhook key")
	}
}

// In closed loop the report gives the server's throughput as a share of
// the ceiling's.
func TestBenchSmokeClosedLoopCeiling(t *testing.T) {
	if testing.Short() {
		t.Skip("runs load for a few seconds; skipped with -short")
	}
	t.Parallel()
	var stdout, stderr bytes.Buffer
	args := []string{"bench", "--self", "--ceiling", "--duration", "500ms", "--concurrency", "4", "--requests", "50"}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if code := Main(ctx, args, nil, &stdout, &stderr); code != 0 {
		t.Fatalf("bench exited %d: %s", code, stderr.String())
	}
	var share float64
	for line := range strings.Lines(stdout.String()) {
		if rest, ok := strings.CutPrefix(strings.TrimSpace(line), "this server: "); ok {
			fmt.Sscanf(rest, "%g of the ceiling", &share)
		}
	}
	if !(share > 0 && share < 10) {
		t.Errorf("printed %s; want the server's share of the ceiling", stdout.String())
	}
}

// TestBenchSmokeSSE: the same with watchers on Server-Sent Events.
func TestBenchSmokeSSE(t *testing.T) {
	if testing.Short() {
		t.Skip("runs load for a few seconds; skipped with -short")
	}
	t.Parallel()
	var stdout, stderr bytes.Buffer
	profile := filepath.Join(t.TempDir(), "load.pprof")
	args := []string{"bench", "--self", "--json", "--duration", "1s", "--rate", "300", "--concurrency", "16", "--watchers", "20", "--requests", "100", "--watch-via", "sse", "--cpu-profile", profile}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if code := Main(ctx, args, nil, &stdout, &stderr); code != 0 {
		t.Fatalf("bench exited %d: %s", code, stderr.String())
	}
	var r benchReport
	if err := json.Unmarshal(stdout.Bytes(), &r); err != nil {
		t.Fatalf("bench --json printed %s: %v", stdout.String(), err)
	}
	if res := r.Result; r.WatchVia != "sse" || res.WatchersReady != 20 || res.Delivery.Count == 0 || len(res.WatchErrors) > 0 || res.OK == 0 || res.DeliveryExpected == 0 || res.DeliveryLost != 0 {
		t.Errorf("over SSE: %s", stdout.String())
	}
	// A pprof profile is a gzipped protocol buffer.
	f, err := os.Open(profile)
	if err != nil {
		t.Fatalf("--cpu-profile: %v", err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatalf("--cpu-profile wrote no gzip stream: %v", err)
	}
	if n, err := io.Copy(io.Discard, zr); err != nil || n == 0 {
		t.Errorf("--cpu-profile: %d bytes, %v", n, err)
	}
}

// The ceiling runs the main run's traffic: as many senders and requests in
// progress (by default as many as watchers, which it has none of), closed
// loop, and TLS when the main run posts over TLS.
func TestCeilingConfig(t *testing.T) {
	t.Parallel()
	for _, useTLS := range []bool{false, true} {
		c, err := loadgen.StartCeiling(useTLS)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		cfg := loadgen.Config{WebhookURL: "https://otpless-events.example/v1/webhooks/otpless/k", TLS: &tls.Config{}, Rate: 5000, Concurrency: 256,
			Duration: time.Second, Watchers: 5000, Mix: loadgen.DefaultMix, Seed: 9}
		bare := ceilingConfig(cfg, c)
		if bare.InProgress() != 5000 || bare.Concurrency != 256 || bare.Rate != 0 || bare.Watchers != 0 || bare.Mix != cfg.Mix || bare.Seed != 9 {
			t.Errorf("ceiling %+v: want 5,000 requests in progress, 256 senders, closed loop, no watchers, the same mix and seed", bare)
		}
		if bare.WebhookURL != c.URL || (bare.TLS != nil) != useTLS || bare.TLS != c.TLS {
			t.Errorf("TLS %v: ceiling posts to %s with %v", useTLS, bare.WebhookURL, bare.TLS)
		}
	}
}

// Deliveries that never arrived are in the report, printed and in JSON,
// and fail the run.
func TestBenchReportLostDeliveries(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		lost, resynced int64
		want           string
		fails          bool
	}{
		{0, 0, "1200 expected, 0 lost (never arrived)", false},
		{3, 0, "1200 expected, 3 lost (never arrived)", true},
		{0, 7, "1200 expected, 0 lost (never arrived), 7 skipped by the server", false},
	} {
		r := &benchReport{Target: "http://127.0.0.1:8080", Watchers: 10, Result: &loadgen.Result{Sent: 1500, OK: 1500, WatchersReady: 10,
			DeliveryExpected: 1200, DeliveryLost: tc.lost, DeliveryResynced: tc.resynced}}
		var out bytes.Buffer
		r.print(&out)
		if !strings.Contains(out.String(), tc.want) {
			t.Errorf("report:\n%s\nwant %q", out.String(), tc.want)
		}
		if err := r.failed(); (err != nil) != tc.fails {
			t.Errorf("%d lost, %d resynced: failed() = %v, want failing %v", tc.lost, tc.resynced, err, tc.fails)
		}
		js, _ := json.Marshal(r)
		if want := fmt.Sprintf(`"delivery_expected":1200,"delivery_lost":%d,"delivery_resynced":%d`, tc.lost, tc.resynced); !strings.Contains(string(js), want) {
			t.Errorf("JSON %s lacks %s", js, want)
		}
	}
}

// The watchers' line counts the requests a watcher was late for and those
// it gave up (every post of their SUCCESS refused, or one unanswered and no
// SUCCESS within --drain): overload shows, and does not fail the run.
func TestBenchReportWatchers(t *testing.T) {
	t.Parallel()
	r := &benchReport{Target: "http://127.0.0.1:8080", Watchers: 10, Result: &loadgen.Result{Sent: 1500, OK: 1000, WatchersReady: 10,
		DeliveryExpected: 1200, WatchLate: 3, WatchAbandoned: 5}}
	var out bytes.Buffer
	r.print(&out)
	if want := "watchers  10 subscribed at the start, 3 requests late, 5 given up (SUCCESS refused or unanswered), errors: none"; !strings.Contains(out.String(), want) {
		t.Errorf("report:\n%s\nwant %q", out.String(), want)
	}
	if err := r.failed(); err != nil {
		t.Errorf("requests given up, none lost: failed() = %v", err)
	}
	if js, _ := json.Marshal(r); !strings.Contains(string(js), `"watch_late":3,"watch_abandoned":5`) {
		t.Errorf("JSON %s lacks the late and given-up counts", js)
	}
}

// A run cut short by a signal (its context canceled) says so and fails: a
// script must not take its figures for the run asked for.
func TestBenchInterrupted(t *testing.T) {
	if testing.Short() {
		t.Skip("runs load for a moment; skipped with -short")
	}
	t.Parallel()
	// The signal comes once the first webhook is answered: at a fixed time
	// it could come before the traffic began, while a busy machine was
	// still starting the server (with --self, in the run), and the run
	// then failed before it had a report.
	ts := testserver.Start(t, nil)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	target, err := url.Parse(ts.HTTPURL)
	if err != nil {
		t.Fatal(err)
	}
	server := httputil.NewSingleHostReverseProxy(target)
	server.ErrorLog = log.New(io.Discard, "", 0) // the posts the cancel cuts short
	var answered sync.Once
	front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		server.ServeHTTP(w, r)
		answered.Do(cancel)
	}))
	defer front.Close()
	var stdout, stderr bytes.Buffer
	args := []string{"bench", "--http-addr", front.URL, "--json", "--duration", "1m", "--rate", "100", "--concurrency", "4"}
	if code := Main(ctx, args, nil, &stdout, &stderr); code != 1 || !strings.Contains(stderr.String(), "interrupted") {
		t.Fatalf("bench interrupted: exit %d, stderr %q; want 1, saying it was interrupted", code, stderr.String())
	}
	var r benchReport
	if err := json.Unmarshal(stdout.Bytes(), &r); err != nil || !r.Interrupted || r.Result == nil {
		t.Errorf("bench --json interrupted printed %s (%v); want the report of what ran, marked interrupted", stdout.String(), err)
	}
}

// Watchers that cannot reach a gRPC server end the run in seconds, not
// after the minute allowed for many to subscribe.
func TestBenchWatchersUnreachable(t *testing.T) {
	if testing.Short() {
		t.Skip("waits seconds for watchers; skipped with -short")
	}
	t.Parallel()
	ts := testserver.Start(t, nil)
	addr := testnet.ClosedAddr(t)
	var stdout, stderr bytes.Buffer
	args := []string{"bench", "--http-addr", ts.HTTPURL, "--grpc-addr", addr, "--watchers", "2", "--rate", "20", "--duration", "1s"}
	start := time.Now()
	if code := Main(t.Context(), args, nil, &stdout, &stderr); code != 1 || !strings.Contains(stderr.String(), "no watcher subscribed") {
		t.Fatalf("bench with its watchers' server down: exit %d, stderr %q; want 1, saying no watcher subscribed", code, stderr.String())
	}
	if took := time.Since(start); took > 45*time.Second {
		t.Errorf("bench took %s to give up on watchers that could not connect", took)
	}
}

// Numeric flags out of their range are refused before any traffic (with
// --self no server would even start), each named.
func TestBenchRefusesNumbersOutOfRange(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ flag, value string }{
		{"watchers", "-3"}, {"requests", "-1"}, {"watch-conns", "0"}, {"concurrency", "0"},
		{"requests", "10"}, // fewer than the 64 senders
		{"duplicates", "2"}, {"fallbacks", "-1"}, {"reorder", "1.5"}, {"reorder", "NaN"},
		{"rate", "-1"}, {"rate", "+Inf"}, {"duration", "-1s"}, {"drain", "0s"},
	} {
		var stdout, stderr bytes.Buffer
		args := []string{"bench", "--self", "--duration", "1s", "--" + tc.flag, tc.value}
		if code := Main(t.Context(), args, nil, &stdout, &stderr); code != 1 || !strings.Contains(stderr.String(), "--"+tc.flag+" ") || stdout.Len() != 0 {
			t.Errorf("--%s %s: exit %d, stderr %q, stdout %q; want 1 naming the flag, and no report", tc.flag, tc.value, code, stderr.String(), stdout.String())
		}
	}
}

// A --server-pid of no process is refused before any traffic, --ceiling's
// included, not once the ceiling has run for --duration.
func TestBenchRefusesUnknownServerPIDFirst(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second) // a bound for "does not run the ceiling"
	defer cancel()
	var stdout, stderr bytes.Buffer
	args := []string{"bench", "--http-addr", "127.0.0.1:1", "--ceiling", "--duration", "1h", "--concurrency", "1", "--server-pid", fmt.Sprint(math.MaxInt32)}
	code := Main(ctx, args, nil, &stdout, &stderr)
	if code != 1 || !strings.Contains(stderr.String(), "--server-pid") || ctx.Err() != nil || stdout.Len() != 0 {
		t.Errorf("bench --ceiling --server-pid of no process: exit %d, stderr %q, stdout %q, context %v; want 1 naming the flag at once, and no report", code, stderr.String(), stdout.String(), ctx.Err())
	}
}

// A --cpu-profile file that cannot be made is refused before any traffic,
// --ceiling's included, not once the ceiling has run for --duration.
func TestBenchRefusesUnwritableCPUProfileFirst(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second) // a bound for "does not run the ceiling"
	defer cancel()
	var stdout, stderr bytes.Buffer
	profile := filepath.Join(t.TempDir(), "missing", "cpu.prof")
	args := []string{"bench", "--http-addr", "127.0.0.1:1", "--ceiling", "--duration", "1h", "--concurrency", "1", "--cpu-profile", profile}
	code := Main(ctx, args, nil, &stdout, &stderr)
	if code != 1 || !strings.Contains(stderr.String(), "--cpu-profile") || ctx.Err() != nil || stdout.Len() != 0 {
		t.Errorf("bench --ceiling --cpu-profile in no directory: exit %d, stderr %q, stdout %q, context %v; want 1 naming the flag at once, and no report", code, stderr.String(), stdout.String(), ctx.Err())
	}
}

// A rate below a few webhooks a second is printed as it is, the rate asked
// for and the throughput measured, not rounded to a whole number (0.5/s
// read "open loop at 0 webhooks/s" and "0/s"); large ones stay whole.
func TestBenchReportSlowRates(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		rate, throughput float64
		want             []string
	}{
		{0.5, 0.5, []string{"open loop at 0.5 webhooks/s", " ok in 4s: 0.5/s"}},
		{0.05, 0.25, []string{"open loop at 0.05 webhooks/s", " ok in 4s: 0.25/s"}},
		{12.5, 12.345, []string{"open loop at 12.5 webhooks/s", " ok in 4s: 12.3/s"}},
		{5000, 4999.6, []string{"open loop at 5000 webhooks/s", " ok in 4s: 5000/s"}},
	} {
		r := &benchReport{Target: "http://127.0.0.1:8080", Rate: tc.rate, Concurrency: 2, Duration: 4 * time.Second,
			Result: &loadgen.Result{Sent: 2, OK: 2, Elapsed: 4 * time.Second, Throughput: tc.throughput}}
		var out bytes.Buffer
		r.print(&out)
		for _, want := range tc.want {
			if !strings.Contains(out.String(), want) {
				t.Errorf("report:\n%s\nwant %q", out.String(), want)
			}
		}
	}
}

// A ceiling run that got no answer is no ceiling: the report says so, not
// "0.00 of the ceiling", and bench exits 1.
func TestBenchReportCeilingWithoutAnswers(t *testing.T) {
	t.Parallel()
	r := &benchReport{Target: "http://127.0.0.1:8080", Concurrency: 2, Duration: time.Second,
		Result:  &loadgen.Result{Sent: 10, OK: 10, Elapsed: time.Second, Throughput: 10},
		Ceiling: &loadgen.Result{Sent: 10, Elapsed: time.Second, Errors: map[string]int64{"connection_refused": 10}}}
	var out bytes.Buffer
	r.print(&out)
	if strings.Contains(out.String(), "of the ceiling") || !strings.Contains(out.String(), "no share of a ceiling that answered nothing") {
		t.Errorf("report:\n%s\nwant no share of a ceiling that answered nothing", out.String())
	}
	if err := r.failed(); err == nil || !strings.Contains(err.Error(), "no ceiling") {
		t.Errorf("failed() = %v, want an error naming the missing ceiling", err)
	}
}

// A --server-pid process that ends during the run (a crash, the OOM
// killer) has no readings from then on: the report says so, printed and in
// JSON, instead of an RSS of 0 at the end and a CPU time per webhook that
// is the difference with nothing (negative).
func TestBenchServerGoneDuringTheRun(t *testing.T) {
	t.Parallel()
	for _, asJSON := range []bool{false, true} {
		child := exec.Command("sleep", "60")
		if err := child.Start(); err != nil {
			t.Fatal(err)
		}
		var once sync.Once
		end := func() { once.Do(func() { child.Process.Kill(); child.Wait() }) } // reaped: no /proc entry
		defer end()
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			io.Copy(io.Discard, r.Body)
			end() // the server process ends with the first webhook
		}))
		defer srv.Close()
		var stdout, stderr bytes.Buffer
		args := []string{"bench", "--http-addr", srv.URL, "--rate", "50", "--duration", "100ms", "--concurrency", "1", "--requests", "2",
			"--server-pid", fmt.Sprint(child.Process.Pid)}
		if asJSON {
			args = append(args, "--json")
		}
		if code := Main(t.Context(), args, nil, &stdout, &stderr); code != 0 {
			t.Fatalf("bench exited %d: %s", code, stderr.String())
		}
		if !asJSON {
			if out := stdout.String(); strings.Contains(out, "at the end") || !strings.Contains(out, "no such file") {
				t.Errorf("report of a server gone during the run:\n%s\nwant no reading after it went, and why", out)
			}
			continue
		}
		var r struct {
			Server map[string]json.RawMessage `json:"server"`
		}
		if err := json.Unmarshal(stdout.Bytes(), &r); err != nil {
			t.Fatalf("bench --json printed %s: %v", stdout.String(), err)
		}
		if _, ok := r.Server["end"]; ok || !strings.Contains(string(r.Server["gone"]), "no such file") || r.Server["cpu_per_webhook_ns"] != nil {
			t.Errorf("server of a run it did not last: %s; want no end reading, no CPU per webhook, and why", stdout.String())
		}
	}
}

// --cpu-profile profiles the traffic, as its help says and as the load's
// CPU per webhook counts it: not the watchers' subscribing before it,
// which with thousands of watchers is a cost of its own. (Not parallel:
// it asks the process whether it is being profiled.)
func TestBenchCPUProfileOfTheTraffic(t *testing.T) {
	profiling := func() bool {
		if err := pprof.StartCPUProfile(io.Discard); err != nil {
			return true // bench's profile is running
		}
		pprof.StopCPUProfile()
		return false
	}
	var mu sync.Mutex
	var subscribing, posting []bool
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		mu.Lock() // one profiling() at a time: two would find each other's profile
		defer mu.Unlock()
		p := profiling()
		if r.Method == http.MethodPost {
			posting = append(posting, p)
			return
		}
		subscribing = append(subscribing, p)
		w.Header().Set("Content-Type", "text/event-stream")
		fmt.Fprintf(w, "event: snapshot\ndata: {\"type\":\"WATCH_MESSAGE_TYPE_SNAPSHOT\"}\n\n")
		w.(http.Flusher).Flush()
		mu.Unlock()
		<-r.Context().Done()
		mu.Lock()
	}))
	defer srv.Close()
	var stdout, stderr bytes.Buffer
	args := []string{"bench", "--http-addr", srv.URL, "--rate", "20", "--duration", "100ms", "--concurrency", "1", "--requests", "2",
		"--watchers", "2", "--watch-via", "sse", "--drain", "10ms", "--cpu-profile", filepath.Join(t.TempDir(), "load.pprof")}
	Main(t.Context(), args, nil, &stdout, &stderr) // the fake delivers nothing: exit 1 for the deliveries lost
	mu.Lock()
	defer mu.Unlock()
	if len(subscribing) != 2 || len(posting) == 0 || slices.Contains(subscribing, true) || slices.Contains(posting, false) {
		t.Errorf("profiling while watchers subscribed %v, while webhooks were posted %v; want only the latter (%s)", subscribing, posting, stderr.String())
	}
}

// A run in which no webhook was answered 200 has no figure per webhook:
// neither CPU time per webhook (the server's, the load's) nor a share of
// the ceiling is printed as 0, as if measured.
func TestBenchReportNothingAnswered(t *testing.T) {
	t.Parallel()
	proc := loadgen.Proc{RSS: 20 << 20, PeakRSS: 20 << 20, CPU: time.Second}
	r := &benchReport{Target: "http://127.0.0.1:8080", Concurrency: 2, Duration: time.Second,
		Result:  &loadgen.Result{Sent: 10, Elapsed: time.Second, Errors: map[string]int64{"http_503": 10}},
		Server:  &benchServer{PID: 42, Start: proc, WatchersIdle: proc, End: proc},
		Ceiling: &loadgen.Result{Sent: 10, OK: 10, Elapsed: time.Second, Throughput: 10}}
	var out bytes.Buffer
	r.print(&out)
	for _, bad := range []string{"0.0µs", "0.00 of the ceiling"} {
		if strings.Contains(out.String(), bad) {
			t.Errorf("report of a run with nothing answered:\n%s\nprints %q", out.String(), bad)
		}
	}
	if n := strings.Count(out.String(), "no webhook answered 200"); n != 3 {
		t.Errorf("report:\n%s\nsays %d times that no webhook was answered 200; want it for the server's CPU, the load's and the share of the ceiling", out.String(), n)
	}
}

// A signal while the server of --self is starting ends bench saying it was
// interrupted, not that the server is not serving (as if it had failed).
func TestBenchSelfInterruptedWhileStarting(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(t.Context())
	cancel() // the signal came before the server served
	var stdout, stderr bytes.Buffer
	args := []string{"bench", "--self", "--duration", "1s", "--rate", "1"}
	code := Main(ctx, args, nil, &stdout, &stderr)
	if code != 1 || !strings.Contains(stderr.String(), "interrupted") || strings.Contains(stderr.String(), "not serving") || stdout.Len() != 0 {
		t.Errorf("bench --self interrupted while its server started: exit %d, stderr %q, stdout %q; want 1, saying it was interrupted", code, stderr.String(), stdout.String())
	}
}

// A run that fails before its profile starts (here the watchers' API key
// file is missing) leaves no --cpu-profile file, and a file that was there
// keeps what it held: an empty file is no profile.
func TestBenchCPUProfileOfARunThatFailedFirst(t *testing.T) {
	t.Parallel()
	for _, existed := range []bool{false, true} {
		dir := t.TempDir()
		profile := filepath.Join(dir, "load.pprof")
		if existed {
			if err := os.WriteFile(profile, []byte("an earlier profile"), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		var stdout, stderr bytes.Buffer
		args := []string{"bench", "--http-addr", "127.0.0.1:1", "--duration", "1s", "--rate", "1", "--watchers", "1", "--watch-via", "sse",
			"--api-key-file", filepath.Join(dir, "missing"), "--cpu-profile", profile}
		if code := Main(t.Context(), args, nil, &stdout, &stderr); code != 1 || !strings.Contains(stderr.String(), "missing") {
			t.Fatalf("bench with a missing --api-key-file: exit %d, stderr %q; want 1 for the file", code, stderr.String())
		}
		b, err := os.ReadFile(profile)
		switch {
		case existed && string(b) != "an earlier profile":
			t.Errorf("a failed run left the earlier --cpu-profile file holding %q (%v)", b, err)
		case !existed && !os.IsNotExist(err):
			t.Errorf("a failed run left a --cpu-profile file of %d bytes (%v)", len(b), err)
		}
	}
}

// A run too short or too slow for the CPU time read from /proc (in ticks
// of 10 ms) to advance measured no CPU time: the report says so, not that
// each webhook took 0.0µs.
func TestBenchReportCPUBelowATick(t *testing.T) {
	t.Parallel()
	proc := loadgen.Proc{RSS: 20 << 20, PeakRSS: 20 << 20, CPU: time.Second}
	r := &benchReport{Target: "http://127.0.0.1:8080", Rate: 1, Concurrency: 2, Duration: time.Second,
		Result: &loadgen.Result{Sent: 1, OK: 1, Elapsed: time.Second, Throughput: 1},
		Server: &benchServer{PID: 42, Start: proc, WatchersIdle: proc, End: proc}}
	var out bytes.Buffer
	r.print(&out)
	if strings.Contains(out.String(), "0.0µs") || strings.Count(out.String(), "less than a tick") != 2 {
		t.Errorf("report of a run whose CPU time did not advance:\n%s\nwant no CPU time per webhook, for the server and the load, and why", out.String())
	}
}
