package server

// Tests of the operational surface as wired: metrics, request logs, health,
// the OpenAPI route and panic recovery. They are internal so that they can
// add a panicking handler, or flip readiness as the store's ping loop does.

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"database/sql"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"html"
	"io"
	"log/slog"
	"math"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
	"unicode/utf8"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/emptypb"
	"google.golang.org/protobuf/types/known/structpb"
	_ "modernc.org/sqlite"

	eventsv1 "github.com/otpless-events/otpless-events/gen/otpless/events/v1"
	"github.com/otpless-events/otpless-events/internal/ssetest"
	"github.com/otpless-events/otpless-events/internal/testlog"
	"github.com/otpless-events/otpless-events/server/api"
	"github.com/otpless-events/otpless-events/server/auth"
	"github.com/otpless-events/otpless-events/server/normalize"
	"github.com/otpless-events/otpless-events/server/observe"

	"github.com/otpless-events/otpless-events/server/store/pgstore/pgtest"
)

type opsServer struct {
	*Server
	httpURL    string
	metricsURL string
	conn       *grpc.ClientConn
	logs       *testlog.Buffer
}

// startOps runs a server with metrics on, authentication off and every log
// line kept; before, when set, runs between New and Run.
func startOps(t testing.TB, mutate func(*Config), before func(*Server)) *opsServer {
	t.Helper()
	logs := &testlog.Buffer{}
	cfg := DefaultConfig()
	cfg.GRPCAddr, cfg.HTTPAddr, cfg.MetricsAddr = "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0"
	cfg.DataDir = t.TempDir()
	cfg.Security.Disabled = true
	cfg.Logger = slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	if mutate != nil {
		mutate(&cfg)
	}
	ctx, cancel := context.WithCancel(context.Background())
	srv, err := New(ctx, cfg)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	if before != nil {
		before(srv)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	conn, err := grpc.NewClient(srv.GRPCAddr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	s := &opsServer{Server: srv, httpURL: "http://" + srv.HTTPAddr().String(), metricsURL: "http://" + addrString(srv.MetricsAddr()), conn: conn, logs: logs}
	s.waitReady(t)
	return s
}

func (s *opsServer) waitReady(t testing.TB) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	w, err := healthpb.NewHealthClient(s.conn).Watch(ctx, &healthpb.HealthCheckRequest{Service: ReadinessService}, grpc.WaitForReady(true))
	if err != nil {
		t.Fatal(err)
	}
	for {
		resp, err := w.Recv()
		if err != nil {
			t.Fatalf("never ready: %v", err)
		}
		if resp.GetStatus() == healthpb.HealthCheckResponse_SERVING {
			return
		}
	}
}

func do(t *testing.T, method, url, body string, header ...string) (int, http.Header, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, resp.Header, string(b)
}

// scrape returns GET /metrics as series (name{labels}, labels sorted as
// Prometheus writes them) to value.
func (s *opsServer) scrape(t *testing.T) map[string]float64 {
	t.Helper()
	code, _, body := do(t, http.MethodGet, s.metricsURL+"/metrics", "")
	if code != http.StatusOK {
		t.Fatalf("GET /metrics: %d", code)
	}
	series := map[string]float64{}
	for _, line := range strings.Split(body, "\n") {
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			t.Fatalf("metrics line %q: %v", line, err)
		}
		series[line[:i]] = v
	}
	return series
}

const phone = "919812345678"

func dlrBody(requestID, st string, ms int64) string {
	return fmt.Sprintf(`{"data":{"requestId":%q,"traceId":"tr_ops","status":%q,"channel":"WHATSAPP","identity":%q},"eventType":"DLR","timestamp":%d}`, requestID, st, phone, ms)
}

func TestMetrics(t *testing.T) {
	t.Parallel()
	s := startOps(t, func(c *Config) { c.MaxBodyBytes = 512 }, nil)
	hook := s.httpURL + "/v1/webhooks/otpless"
	// Series of fixed label values are there from the start, at zero.
	initial := s.scrape(t)
	for _, name := range []string{
		`otpless_events_webhooks_rejected_total{reason="overloaded"}`,
		`otpless_events_webhooks_rejected_total{reason="internal"}`,
		`otpless_events_ingest_duration_seconds_count{result="rejected",transport="grpc"}`,
	} {
		if got, ok := initial[name]; !ok || got != 0 {
			t.Errorf("before any webhook: %s = %v (present %v), want 0", name, got, ok)
		}
	}

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	watch, err := eventsv1.NewRequestServiceClient(s.conn).WatchRequest(ctx, &eventsv1.WatchRequestRequest{RequestId: "m-req"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := watch.Recv(); err != nil { // the snapshot: the stream is open
		t.Fatal(err)
	}
	if got := s.scrape(t)[`otpless_events_watch_streams{transport="grpc"}`]; got != 1 {
		t.Fatalf("watch_streams{grpc} = %v with one stream open, want 1", got)
	}

	for _, tc := range []struct {
		body string
		code int
	}{
		{dlrBody("m-req", "SENT", 1764153000400), http.StatusOK},
		{dlrBody("m-req", "SENT", 1764153000400), http.StatusOK}, // a retry: duplicate
		{`{"data":`, http.StatusBadRequest},
		{`{"hello":"world"}`, http.StatusBadRequest},
		{`{"pad":"` + strings.Repeat("x", 600) + `"}`, http.StatusRequestEntityTooLarge},
	} {
		if code, _, body := do(t, http.MethodPost, hook, tc.body); code != tc.code {
			t.Fatalf("POST %.40s: %d %s, want %d", tc.body, code, body, tc.code)
		}
	}
	// No route: not a webhook, so no rejected webhook either.
	if code, _, body := do(t, http.MethodPost, hook+"/a/b", dlrBody("m-req", "SENT", 1764153000400)); code != http.StatusNotFound {
		t.Fatalf("POST to a path under the webhook route: %d %s, want 404", code, body)
	}
	// Over the limit on gRPC: refused where it is counted and logged.
	big := &eventsv1.IngestRequest{EventType: "DLR", Data: &eventsv1.WebhookData{RequestId: "m-big", Status: strings.Repeat("x", 600)}}
	if _, err := eventsv1.NewWebhookServiceClient(s.conn).Ingest(ctx, big); status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("gRPC Ingest over the limit: %v, want RESOURCE_EXHAUSTED", err)
	}
	if lines := s.logs.Matching(t, map[string]any{"msg": "grpc call", "method": eventsv1.WebhookService_Ingest_FullMethodName, "code": "ResourceExhausted", "reason": "too_large"}); len(lines) != 1 {
		t.Errorf("%d log lines for the gRPC Ingest over the limit with its reason, want 1:\n%s", len(lines), s.logs)
	}
	if m, err := watch.Recv(); err != nil || m.GetType() != eventsv1.WatchMessageType_WATCH_MESSAGE_TYPE_UPDATE {
		t.Fatalf("watch: %v %v, want the UPDATE", m, err)
	}

	series := s.scrape(t)
	for name, want := range map[string]float64{
		`otpless_events_events_received_total{channel="WHATSAPP",kind="delivery",status="SENT"}`:  2,
		`otpless_events_events_duplicate_total{channel="WHATSAPP",kind="delivery",status="SENT"}`: 1,
		`otpless_events_webhooks_rejected_total{reason="invalid_body"}`:                           1,
		`otpless_events_webhooks_rejected_total{reason="unrecognized"}`:                           1,
		`otpless_events_webhooks_rejected_total{reason="too_large"}`:                              2,
		`otpless_events_ingest_duration_seconds_count{result="accepted",transport="http"}`:        2,
		`otpless_events_ingest_duration_seconds_count{result="rejected",transport="http"}`:        3,
		`otpless_events_ingest_duration_seconds_count{result="rejected",transport="grpc"}`:        1,
		`otpless_events_watch_delivery_seconds_count`:                                             1,
		`otpless_events_http_requests_total{code="200",route="webhook"}`:                          2,
		`otpless_events_write_queue_webhooks`:                                                     0,
		`otpless_events_ready`:                                                                    1,
	} {
		if got, ok := series[name]; !ok || got != want {
			t.Errorf("%s = %v (present %v), want %v", name, got, ok, want)
		}
	}
	for name, atLeast := range map[string]float64{
		`otpless_events_store_commit_webhooks_count`:         1,
		`otpless_events_store_commit_duration_seconds_count`: 1,
		`grpc_server_started_total{grpc_method="WatchRequest",grpc_service="otpless.events.v1.RequestService",grpc_type="server_stream"}`:  1,
		`grpc_server_handled_total{grpc_code="OK",grpc_method="Ingest",grpc_service="otpless.events.v1.WebhookService",grpc_type="unary"}`: 0,
		`go_goroutines`:                 1,
		`process_resident_memory_bytes`: 1,
	} {
		if got, ok := series[name]; !ok || got < atLeast {
			t.Errorf("%s = %v (present %v), want at least %v", name, got, ok, atLeast)
		}
	}
	if got := series[`otpless_events_webhooks_rejected_total{reason="internal"}`]; got != 0 {
		t.Errorf("webhooks rejected as internal: %v, want none", got)
	}
	cancel() // the watcher leaves
	if !eventually(func() bool { return s.scrape(t)[`otpless_events_watch_streams{transport="grpc"}`] == 0 }) {
		t.Fatal("watch_streams{grpc} stayed up after the stream ended")
	}
}

// The latency histograms an operator reads a p99 from have finite buckets
// past the waits they measure when something is wrong: a webhook's body
// may take the whole --http-read-timeout (30 s) to come, and a webhook
// queued behind a stalled store waits until its sender gives up (a SQLite
// write lock held for 40 s gave ingest times of 14-30 s, commits over
// 10 s). Up to 10 s only, such a p99 fell in +Inf and read as 10 s.
func TestLatencyBucketsReachAMinute(t *testing.T) {
	t.Parallel()
	s := startOps(t, nil, nil)
	if code, _, body := do(t, http.MethodPost, s.httpURL+"/v1/webhooks/otpless", dlrBody("bucket-req", "SENT", 1764153000400)); code != http.StatusOK {
		t.Fatalf("POST webhook: %d %s", code, body)
	}
	want := 2 * DefaultConfig().HTTPReadTimeout.Seconds()
	top := map[string]float64{}
	for series := range s.scrape(t) {
		name, labels, ok := strings.Cut(series, "_bucket{")
		if !ok {
			continue
		}
		_, le, _ := strings.Cut(labels, `le="`)
		le, _, _ = strings.Cut(le, `"`)
		if v, err := strconv.ParseFloat(le, 64); err == nil && !math.IsInf(v, 1) {
			top[name] = max(top[name], v)
		}
	}
	for _, name := range []string{
		"otpless_events_ingest_duration_seconds",
		"otpless_events_store_commit_duration_seconds",
		"otpless_events_watch_delivery_seconds",
		"otpless_events_http_request_duration_seconds",
		"grpc_server_handling_seconds",
	} {
		if got, ok := top[name]; !ok || got < want {
			t.Errorf("%s: highest finite bucket %v s (present %v), want at least %v s", name, got, ok, want)
		}
	}
}

// A watch stream that runs its whole --max-watch-duration ends a little
// past it: its timer starts once its snapshot is read, and its RECONNECT is
// sent after. With the last finite bucket of the call durations at the
// longest --max-watch-duration, an hour, every stream run to that limit
// fell in +Inf.
func TestAWatchRunToItsLimitFallsInAFiniteBucket(t *testing.T) {
	t.Parallel()
	const limit = 50 * time.Millisecond
	s := startOps(t, func(c *Config) { c.MaxWatchDuration = limit }, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	watch, err := eventsv1.NewRequestServiceClient(s.conn).WatchRequest(ctx, &eventsv1.WatchRequestRequest{RequestId: "limit-req"})
	if err != nil {
		t.Fatal(err)
	}
	var last *eventsv1.WatchRequestResponse
	for {
		m, err := watch.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		last = m
	}
	if last.GetType() != eventsv1.WatchMessageType_WATCH_MESSAGE_TYPE_RECONNECT {
		t.Fatalf("the stream ended with %v, want RECONNECT at its limit", last)
	}
	do(t, http.MethodGet, s.httpURL+"/healthz", "") // a series of the HTTP durations
	series := s.scrape(t)
	took, ok := series[`grpc_server_handling_seconds_sum{grpc_method="WatchRequest",grpc_service="otpless.events.v1.RequestService",grpc_type="server_stream"}`]
	if !ok {
		t.Fatal("no handling time of the watch stream")
	}
	past := took - limit.Seconds()
	if past <= 0 {
		t.Fatalf("a stream run to its limit of %v took %v s", limit, took)
	}
	top := map[string]float64{}
	for series := range series {
		name, labels, ok := strings.Cut(series, "_bucket{")
		if !ok {
			continue
		}
		_, le, _ := strings.Cut(labels, `le="`)
		le, _, _ = strings.Cut(le, `"`)
		if v, err := strconv.ParseFloat(le, 64); err == nil && !math.IsInf(v, 1) {
			top[name] = max(top[name], v)
		}
	}
	// A stream run to the longest limit ends as far past it.
	want := observe.MaxCallDuration.Seconds() + past
	for _, name := range []string{"grpc_server_handling_seconds", "otpless_events_http_request_duration_seconds"} {
		if got := top[name]; got < want {
			t.Errorf("%s: highest finite bucket %v s, want at least %v s: a stream run to a limit of %v ends %.3f s past it", name, got, want, observe.MaxCallDuration, past)
		}
	}
}

// A path the gateway routes nowhere because it escapes a letter of a
// route's fixed segments (/v1/webhooks/%6Ftpless) is a 404 of no route, as
// the gateway answers it: not a rejected webhook (as internal, which the
// README says to alert on) nor a request route. An escaped "/", which the
// gateway takes for a separator, still makes the webhook route.
func TestEscapedPathsAreNamedAsTheGatewayRoutesThem(t *testing.T) {
	t.Parallel()
	s := startOps(t, nil, nil)
	for _, tc := range []struct {
		method, path string
		code         int
	}{
		{http.MethodPost, "/v1/webhooks/%6Ftpless", http.StatusNotFound},
		{http.MethodPost, "/v1/webhooks/%6Ftpless/esc-webhook-key-0123456789", http.StatusNotFound},
		{http.MethodGet, "/v1/%72equests/esc-req", http.StatusNotFound},
		{http.MethodPost, "/v1/webhooks/otpless%2Fesc-webhook-key-0123456789", http.StatusOK},
	} {
		if code, _, body := do(t, tc.method, s.httpURL+tc.path, dlrBody("esc-req", "SENT", 1764153000400)); code != tc.code {
			t.Fatalf("%s %s: %d %s, want %d", tc.method, tc.path, code, body, tc.code)
		}
	}
	series := s.scrape(t)
	for name, want := range map[string]float64{
		`otpless_events_http_requests_total{code="404",route="other"}`:                     3,
		`otpless_events_http_requests_total{code="404",route="webhook"}`:                   0,
		`otpless_events_http_requests_total{code="404",route="request"}`:                   0,
		`otpless_events_http_requests_total{code="200",route="webhook"}`:                   1,
		`otpless_events_webhooks_rejected_total{reason="internal"}`:                        0,
		`otpless_events_ingest_duration_seconds_count{result="rejected",transport="http"}`: 0,
		`otpless_events_ingest_duration_seconds_count{result="accepted",transport="http"}`: 1,
	} {
		if got := series[name]; got != want {
			t.Errorf("%s = %v, want %v", name, got, want)
		}
	}
}

// TestMetricsAreDocumented: the README's Operations names every metric
// /metrics exports, as it claims to (its table, or a prefix it names such
// as go_*), and its table names none that is not exported (but the
// PostgreSQL-only ones, on SQLite here, and the TLS-only ones, without TLS
// here: TestCertificateRenewedOnDisk reads those).
func TestMetricsAreDocumented(t *testing.T) {
	t.Parallel()
	s := startOps(t, nil, nil)
	readme := readREADME(t)
	// A webhook and its retry, so that the series that appear with their
	// first observation are there.
	for range 2 {
		if code, _, body := do(t, http.MethodPost, s.httpURL+"/v1/webhooks/otpless", dlrBody("doc-req", "SENT", 1764153000400)); code != http.StatusOK {
			t.Fatalf("POST webhook: %d %s", code, body)
		}
	}
	table := map[string]string{} // metric -> its row
	for _, line := range strings.Split(readme, "\n") {
		if m := metricRow.FindStringSubmatch(line); m != nil {
			table[m[1]] = line
		}
	}
	exported := s.exported(t)
	for name := range exported {
		base := name
		for _, suffix := range []string{"_bucket", "_count", "_sum"} {
			if b, ok := strings.CutSuffix(name, suffix); ok && (table[b] != "" || !strings.HasPrefix(b, "otpless_events_")) {
				base = b
			}
		}
		if table[base] != "" || strings.Contains(readme, "`"+base+"`") {
			continue
		}
		if prefix, _, ok := strings.Cut(base, "_"); ok && strings.Contains(readme, "(`"+prefix+"_*`") {
			continue
		}
		if prefix := "grpc_server_"; strings.HasPrefix(base, prefix) && strings.Contains(readme, "(`"+prefix+"*`") {
			continue
		}
		t.Errorf("/metrics exports %s, which the README's Metrics does not name", base)
	}
	for name, row := range table {
		if !onlySome(row) && !exported[name] && !exported[name+"_count"] {
			t.Errorf("the README's metrics table names %s, which /metrics does not export", name)
		}
	}
}

// TestAlertsNameExportedMetrics: the expressions the README's Operations
// says are worth alerting on name metrics as /metrics exports them, so
// that pasted into a rule they read something (an expression naming no
// metric returns nothing, and its alert never fires). The README's
// PostgreSQL-only and TLS-only metrics, not exported on SQLite without TLS,
// count as exported.
func TestAlertsNameExportedMetrics(t *testing.T) {
	t.Parallel()
	s := startOps(t, nil, nil)
	readme := readREADME(t)
	_, para, ok := strings.Cut(readme, "Worth\nalerting on:")
	if !ok {
		t.Fatal(`the README's Operations has no "Worth alerting on:"`)
	}
	para, _, _ = strings.Cut(para, "\n\n")
	series := s.scrape(t)
	exported := s.exported(t)
	for _, line := range strings.Split(readme, "\n") {
		if m := metricRow.FindStringSubmatch(line); m != nil && onlySome(line) {
			exported[m[1]] = true
		}
	}
	var names int
	for _, span := range codeSpan.FindAllStringSubmatch(para, -1) {
		expr := span[1]
		if strings.HasPrefix(expr, "--") { // a flag
			continue
		}
		// A label value the metric never has matches nothing either: each
		// value a matcher names (each alternative of =~) is on a series
		// that starts at zero.
		for _, sel := range promqlSelector.FindAllStringSubmatch(expr, -1) {
			for _, m := range promqlMatcher.FindAllStringSubmatch(sel[2], -1) {
				values := []string{m[3]}
				if m[2] == "=~" {
					values = strings.Split(m[3], "|")
				}
				for _, v := range values {
					if !hasSeries(series, sel[1], m[1]+"="+strconv.Quote(v)) {
						t.Errorf("the README says to alert on `%s`, where %s{%s=%q}: /metrics exports no such series", span[1], sel[1], m[1], v)
					}
				}
			}
		}
		expr = promqlNoise.ReplaceAllString(expr, " ")
		for _, m := range promqlName.FindAllStringSubmatch(expr, -1) {
			names++
			if !exported[m[1]] {
				t.Errorf("the README says to alert on `%s`, which names %s: /metrics exports no such metric", span[1], m[1])
			}
		}
	}
	if names < 8 {
		t.Errorf("found %d metric names in the README's alerts, want at least 8: %q", names, para)
	}
}

var (
	codeSpan = regexp.MustCompile("`([^`]+)`")
	// promqlSelector is a metric name and its label matchers; promqlMatcher
	// one matcher, = or =~.
	promqlSelector = regexp.MustCompile(`\b([a-z_][a-z0-9_]*)\{([^}]*)\}`)
	promqlMatcher  = regexp.MustCompile(`([a-z_][a-z0-9_]*) *(=~|=) *"([^"]*)"`)
	// promqlNoise is what in an expression is not a metric name: label
	// matchers, ranges, strings, grouping labels.
	promqlNoise = regexp.MustCompile(`\{[^}]*\}|\[[^\]]*\]|"[^"]*"|\b(by|without) *\([^)]*\)`)
	// promqlName is an identifier not called as a function.
	promqlName = regexp.MustCompile(`\b([a-z_][a-z0-9_]*)\b *(?:[^ (a-z0-9_]|$)`)
)

func readREADME(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// exported is the names of the metrics s's /metrics serves (a
// histogram's by its series: _bucket, _count, _sum).
func (s *opsServer) exported(t *testing.T) map[string]bool {
	t.Helper()
	names := map[string]bool{}
	for series := range s.scrape(t) {
		name, _, _ := strings.Cut(series, "{")
		names[name] = true
	}
	return names
}

// hasSeries reports whether series holds one of metric name (or of its
// histogram's _bucket, _count or _sum) with the label pair.
func hasSeries(series map[string]float64, name, pair string) bool {
	for k := range series {
		metric, labels, _ := strings.Cut(k, "{")
		for _, suffix := range []string{"_bucket", "_count", "_sum"} {
			if b, ok := strings.CutSuffix(metric, suffix); ok && b == name {
				metric = b
			}
		}
		if metric == name && slices.Contains(strings.Split(strings.TrimSuffix(labels, "}"), ","), pair) {
			return true
		}
	}
	return false
}

// onlySome reports whether a row of the README's metrics table is of a
// metric exported only on PostgreSQL or only with TLS.
func onlySome(row string) bool {
	return strings.Contains(row, "| PostgreSQL only") || strings.Contains(row, "| TLS only")
}

// metricRow matches a row of the README's metrics table.
var metricRow = regexp.MustCompile("^\\| `(otpless_events_[a-z_]+)` \\|")

// A sender that closes its connection halfway through a body gave up: the
// webhook counts as canceled, not as an invalid body.
// Retention's runs are in the metrics: webhooks purged and the last run
// that succeeded, so that an alert can tell retention has stopped.
func TestRetentionMetrics(t *testing.T) {
	t.Parallel()
	s := startOps(t, func(c *Config) { c.PIIRetention, c.RetentionInterval = time.Millisecond, 20*time.Millisecond }, nil)
	if code, _, body := do(t, http.MethodPost, s.httpURL+"/v1/webhooks/otpless", dlrBody("ret-req", "SENT", 1764153000400)); code != http.StatusOK {
		t.Fatalf("POST: %d %s", code, body)
	}
	var series map[string]float64
	if !eventually(func() bool {
		series = s.scrape(t)
		return series["otpless_events_retention_purged_webhooks_total"] >= 1
	}) {
		t.Fatalf("no purge counted: %v", series)
	}
	if at := series["otpless_events_retention_last_success_timestamp_seconds"]; at < float64(time.Now().Add(-time.Minute).Unix()) {
		t.Errorf("retention_last_success_timestamp_seconds = %v, want a moment ago", at)
	}
	if n, ok := series["otpless_events_retention_failures_total"]; !ok || n != 0 {
		t.Errorf("retention_failures_total = %v (present %v), want 0", n, ok)
	}
}

// A call refused for want of a credential before grpc-go reads its message
// (the keyring's tap handle) is logged and counted, as the interceptors
// would have.
func TestCallsRefusedWithoutCredentialAreLogged(t *testing.T) {
	t.Parallel()
	keys, err := auth.ParseAPIKeys(auth.FormatAPIKey("admin", "ops-admin-key", []auth.Scope{auth.ScopeAdmin}))
	if err != nil {
		t.Fatal(err)
	}
	s := startOps(t, func(c *Config) {
		c.Security = Security{APIKeys: keys, WatchTokenKeys: [][]byte{[]byte("ops-watch-token-key-0123456789abcdef")},
			Webhook: auth.WebhookConfig{Keys: []string{"ops-webhook-key-0123456789"}}}
	}, nil)
	in := &eventsv1.IngestRequest{EventType: "DLR", Data: &eventsv1.WebhookData{RequestId: "no-key", Status: "SENT"}}
	if _, err := eventsv1.NewWebhookServiceClient(s.conn).Ingest(t.Context(), in); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("Ingest without a credential: %v, want UNAUTHENTICATED", err)
	}
	want := map[string]any{"msg": "grpc call", "method": eventsv1.WebhookService_Ingest_FullMethodName, "code": "Unauthenticated", "reason": "unauthenticated"}
	if lines := s.logs.Matching(t, want); len(lines) != 1 {
		t.Errorf("%d lines matching %v, want 1:\n%s", len(lines), want, s.logs)
	}
	// A watch token may not ingest: refused as early, and counted so.
	signer, _ := auth.NewTokenSigner([][]byte{[]byte("ops-watch-token-key-0123456789abcdef")})
	token, _ := signer.Mint("no-key", time.Minute)
	withToken := metadata.AppendToOutgoingContext(t.Context(), "authorization", "Bearer "+token)
	if _, err := eventsv1.NewWebhookServiceClient(s.conn).Ingest(withToken, in); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("Ingest with a watch token: %v, want PERMISSION_DENIED", err)
	}
	want["code"] = "PermissionDenied"
	if lines := s.logs.Matching(t, want); len(lines) != 1 {
		t.Errorf("%d lines matching %v, want 1:\n%s", len(lines), want, s.logs)
	}
	series := s.scrape(t)
	for name, want := range map[string]float64{
		`otpless_events_grpc_refused_total{code="Unauthenticated"}`:        1,
		`otpless_events_grpc_refused_total{code="PermissionDenied"}`:       1,
		`otpless_events_webhooks_rejected_total{reason="unauthenticated"}`: 2,
	} {
		if got := series[name]; got != want {
			t.Errorf("%s = %v, want %v", name, got, want)
		}
	}
}

// rawCodec sends a []byte as the message, whatever it holds.
type rawCodec struct{}

func (rawCodec) Marshal(v any) (mem.BufferSlice, error) {
	return mem.BufferSlice{mem.SliceBuffer(v.([]byte))}, nil
}
func (rawCodec) Unmarshal(data mem.BufferSlice, v any) error {
	*v.(*[]byte) = data.Materialize()
	return nil
}
func (rawCodec) Name() string { return "proto" }

// TestCallsRefusedBeforeTheInterceptors: what grpc-go answers itself, before
// any interceptor, is logged and counted.
func TestCallsRefusedBeforeTheInterceptors(t *testing.T) {
	t.Parallel()
	s := startOps(t, nil, nil)
	ctx := t.Context()

	// A truncated message: field 1 announces 5 bytes and has 1.
	var out []byte
	err := s.conn.Invoke(ctx, eventsv1.WebhookService_Ingest_FullMethodName, []byte{0x0a, 0x05, 'D'}, &out, grpc.ForceCodecV2(rawCodec{}))
	if status.Code(err) != codes.Internal {
		t.Fatalf("Ingest of an undecodable message: %v, want INTERNAL (grpc-go's answer)", err)
	}
	unknown := "/otpless.events.v1.Nope/" + strings.Repeat("é", 100)
	for _, method := range []string{"/otpless.events.v1.Nope/Call", unknown} {
		if err := s.conn.Invoke(ctx, method, &emptypb.Empty{}, &emptypb.Empty{}); status.Code(err) != codes.Unimplemented {
			t.Fatalf("%s: %v, want UNIMPLEMENTED", method, err)
		}
	}

	// The lines come once the answer has gone.
	for _, want := range []map[string]any{
		{"method": eventsv1.WebhookService_Ingest_FullMethodName, "code": "Internal", "reason": "invalid_body", "transport": "grpc", "level": "WARN"},
		// A client's mistake (a method of other protos), logged as
		// INVALID_ARGUMENT is, not as a fault of the server.
		{"method": "/otpless.events.v1.Nope/Call", "code": "Unimplemented", "level": "INFO"},
	} {
		want["msg"] = "grpc call"
		if !eventually(func() bool { return len(s.logs.Matching(t, want)) == 1 }) {
			t.Errorf("no line matching %v:\n%s", want, s.logs)
		}
	}
	var long []map[string]any
	for _, l := range s.logs.Matching(t, map[string]any{"msg": "grpc call", "code": "Unimplemented"}) {
		if m, _ := l["method"].(string); strings.HasPrefix(m, "/otpless.events.v1.Nope/é") {
			long = append(long, l)
		}
	}
	if len(long) != 1 || !utf8.ValidString(long[0]["method"].(string)) || len(long[0]["method"].(string)) > 128+len("…") {
		t.Errorf("the long unknown method's lines: %v, want one naming at most 128 bytes of it, cut between characters", long)
	}

	series := s.scrape(t)
	for name, want := range map[string]float64{
		`otpless_events_grpc_refused_total{code="Internal"}`:            1,
		`otpless_events_grpc_refused_total{code="Unimplemented"}`:       2,
		`otpless_events_grpc_refused_total{code="ResourceExhausted"}`:   0,
		`otpless_events_grpc_refused_total{code="Unauthenticated"}`:     0,
		`otpless_events_grpc_refused_total{code="PermissionDenied"}`:    0,
		`otpless_events_webhooks_rejected_total{reason="invalid_body"}`: 1,
	} {
		if got, ok := series[name]; !ok || got != want {
			t.Errorf("%s = %v (present %v), want %v", name, got, ok, want)
		}
	}
}

// An Ingest in a compression the server lacks is refused by grpc-go before
// any interceptor (UNIMPLEMENTED): the sender's mistake, as a compressed
// body on the webhook route is, so it is a rejected webhook with an
// invalid body, not a fault of the server.
func TestIngestInAnUnknownCompressionIsInvalid(t *testing.T) {
	t.Parallel()
	s := startOps(t, nil, nil)
	msg, err := proto.Marshal(&eventsv1.IngestRequest{EventType: "DLR", Data: &eventsv1.WebhookData{RequestId: "zstd-req", Status: "SENT"}})
	if err != nil {
		t.Fatal(err)
	}
	frame := binary.BigEndian.AppendUint32([]byte{1}, uint32(len(msg))) // compressed, as the header says
	var protocols http.Protocols
	protocols.SetUnencryptedHTTP2(true)
	client := &http.Client{Transport: &http.Transport{Protocols: &protocols}}
	defer client.CloseIdleConnections()
	req, err := http.NewRequest(http.MethodPost, "http://"+s.GRPCAddr().String()+eventsv1.WebhookService_Ingest_FullMethodName,
		bytes.NewReader(append(frame, msg...)))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/grpc")
	req.Header.Set("TE", "trailers")
	req.Header.Set("Grpc-Encoding", "zstd")
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if got := cmp.Or(resp.Header.Get("Grpc-Status"), resp.Trailer.Get("Grpc-Status")); got != strconv.Itoa(int(codes.Unimplemented)) {
		t.Fatalf("Ingest in zstd: grpc-status %q, want %d (UNIMPLEMENTED)", got, codes.Unimplemented)
	}

	want := map[string]any{"msg": "grpc call", "method": eventsv1.WebhookService_Ingest_FullMethodName, "code": "Unimplemented", "reason": "invalid_body", "level": "INFO"}
	if !eventually(func() bool { return len(s.logs.Matching(t, want)) == 1 }) {
		t.Errorf("no line matching %v:\n%s", want, s.logs)
	}
	series := s.scrape(t)
	for name, want := range map[string]float64{
		`otpless_events_webhooks_rejected_total{reason="invalid_body"}`:                    1,
		`otpless_events_webhooks_rejected_total{reason="internal"}`:                        0,
		`otpless_events_ingest_duration_seconds_count{result="rejected",transport="grpc"}`: 1,
	} {
		if got := series[name]; got != want {
			t.Errorf("%s = %v, want %v", name, got, want)
		}
	}
}

func TestAbandonedBodyIsCanceled(t *testing.T) {
	t.Parallel()
	s := startOps(t, nil, nil)
	conn, err := net.Dial("tcp", strings.TrimPrefix(s.httpURL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	body := dlrBody("m-gone", "SENT", 1764153000400)
	fmt.Fprintf(conn, "POST /v1/webhooks/otpless HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s",
		len(body), body[:len(body)/2])
	conn.Close()
	canceled := `otpless_events_webhooks_rejected_total{reason="canceled"}`
	if !eventually(func() bool { return s.scrape(t)[canceled] == 1 }) {
		t.Fatalf("%s never reached 1", canceled)
	}
	series := s.scrape(t)
	if got := series[`otpless_events_webhooks_rejected_total{reason="invalid_body"}`]; got != 0 {
		t.Errorf("rejected as invalid_body: %v, want 0", got)
	}
	if got := series[`otpless_events_http_requests_total{code="408",route="webhook"}`]; got != 1 {
		t.Errorf("408 answers on the webhook route: %v, want 1", got)
	}
}

// eventually polls cond for up to 10 s and reports whether it held.
func eventually(cond func() bool) bool {
	for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			return false
		}
	}
	return true
}

// An event stream runs WatchRequest in process: it counts as an sse watch
// stream (a newline-delimited JSON stream as an ndjson one), its
// deliveries are measured, and its gRPC log line carries the HTTP request
// id.
func TestEventStreamIsObserved(t *testing.T) {
	t.Parallel()
	s := startOps(t, nil, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.httpURL+"/v1/requests/sse-req:watch", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Accept", "text/event-stream")
	req.Header.Set(observe.RequestIDHeader, "sse-1")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	events := ssetest.NewReader(resp.Body)
	// next returns the next event's name, skipping the retry hint and comments.
	next := func() string {
		t.Helper()
		ev, err := events.NextEvent()
		if err != nil {
			t.Fatalf("reading the event stream: %v", err)
		}
		return ev.Event
	}
	if ev := next(); ev != "snapshot" {
		t.Fatalf("first event %q, want snapshot", ev)
	}
	if got := s.scrape(t)[`otpless_events_watch_streams{transport="sse"}`]; got != 1 {
		t.Fatalf("watch_streams{sse} = %v with one event stream open, want 1", got)
	}
	lines, err := http.NewRequestWithContext(ctx, http.MethodGet, s.httpURL+"/v1/requests/ndjson-req:watch", nil)
	if err != nil {
		t.Fatal(err)
	}
	linesResp, err := http.DefaultClient.Do(lines)
	if err != nil {
		t.Fatal(err)
	}
	defer linesResp.Body.Close()
	if _, err := bufio.NewReader(linesResp.Body).ReadBytes('\n'); err != nil {
		t.Fatalf("first line of the NDJSON stream: %v", err)
	}
	m := s.scrape(t)
	if m[`otpless_events_watch_streams{transport="ndjson"}`] != 1 || m[`otpless_events_watch_streams{transport="sse"}`] != 1 {
		t.Fatalf("watch_streams with an event stream and an NDJSON stream open: sse %v, ndjson %v; want 1 each",
			m[`otpless_events_watch_streams{transport="sse"}`], m[`otpless_events_watch_streams{transport="ndjson"}`])
	}
	if _, ok := m[`otpless_events_watch_streams{transport="http"}`]; ok {
		t.Errorf("watch_streams{http} is still there, at %v", m[`otpless_events_watch_streams{transport="http"}`])
	}
	linesResp.Body.Close()
	if code, _, body := do(t, http.MethodPost, s.httpURL+"/v1/webhooks/otpless", dlrBody("sse-req", "SENT", 1764153000400)); code != http.StatusOK {
		t.Fatalf("POST: %d %s", code, body)
	}
	if ev := next(); ev != "update" {
		t.Fatalf("event %q, want update", ev)
	}
	if got := s.scrape(t)[`otpless_events_watch_delivery_seconds_count`]; got != 1 {
		t.Errorf("watch_delivery_seconds_count = %v after one update, want 1", got)
	}

	cancel() // the browser leaves
	if !eventually(func() bool {
		m := s.scrape(t)
		return m[`otpless_events_watch_streams{transport="sse"}`] == 0 && m[`otpless_events_watch_streams{transport="ndjson"}`] == 0
	}) {
		t.Fatal("watch_streams{sse} or {ndjson} stayed up after the streams ended")
	}
	want := map[string]any{"msg": "grpc call", "request_id": "sse-1", "transport": "http", "method": eventsv1.RequestService_WatchRequest_FullMethodName, "otpless_request_id": "sse-req"}
	if !eventually(func() bool { return len(s.logs.Matching(t, want)) == 1 }) {
		t.Fatalf("no gRPC line for the event stream with the HTTP request id:\n%s", s.logs)
	}
}

// Every request gets one log line with its request id, the OTPLESS ids when
// known, and no personal data; a call through the gateway keeps the
// HTTP request id in its gRPC line.
func TestRequestLogs(t *testing.T) {
	t.Parallel()
	s := startOps(t, nil, nil)
	code, header, body := do(t, http.MethodPost, s.httpURL+"/v1/webhooks/otpless", dlrBody("log-req", "DELIVERED", 1764153000400), observe.RequestIDHeader, "hook-1")
	if code != http.StatusOK || header.Get(observe.RequestIDHeader) != "hook-1" {
		t.Fatalf("POST: %d %s, X-Request-Id %q", code, body, header.Get(observe.RequestIDHeader))
	}
	if code, _, body := do(t, http.MethodGet, s.httpURL+"/v1/requests/log-req", "", observe.RequestIDHeader, "read-1"); code != http.StatusOK || !strings.Contains(body, phone) {
		t.Fatalf("GET: %d %s", code, body) // the API shows the data; only logs mask it
	}
	var hdr metadata.MD
	if _, err := eventsv1.NewRequestServiceClient(s.conn).GetRequest(context.Background(), &eventsv1.GetRequestRequest{RequestId: "log-req"}, grpc.Header(&hdr)); err != nil {
		t.Fatal(err)
	}
	if len(hdr.Get(observe.RequestIDMetadata)) != 1 {
		t.Errorf("gRPC response header %v lacks a request id", hdr)
	}

	hook := s.logs.Matching(t, map[string]any{"msg": "http request", "request_id": "hook-1"})
	if len(hook) != 1 {
		t.Fatalf("%d log lines for the webhook: %s", len(hook), s.logs)
	}
	if l := hook[0]; l["status"] != float64(200) || l["otpless_request_id"] != "log-req" || l["otpless_trace_id"] != "tr_ops" || l["path"] != "/v1/webhooks/otpless" {
		t.Errorf("webhook line %v", l)
	}
	// A refused webhook's line names the OTPLESS ids its body has, over
	// HTTP and over gRPC.
	ahead := dlrBody("log-req", "READ", time.Now().Add(48*time.Hour).UnixMilli())
	if code, _, body := do(t, http.MethodPost, s.httpURL+"/v1/webhooks/otpless", ahead, observe.RequestIDHeader, "hook-2"); code != http.StatusBadRequest {
		t.Fatalf("POST of a webhook two days ahead: %d %s", code, body)
	}
	refused := s.logs.Matching(t, map[string]any{"msg": "http request", "request_id": "hook-2", "status": float64(400), "otpless_request_id": "log-req", "otpless_trace_id": "tr_ops"})
	if len(refused) != 1 {
		t.Errorf("%d lines for the refused webhook with its OTPLESS ids, want 1:\n%s", len(refused), s.logs)
	}
	// So does one refused as it does not decode (a field of the wrong
	// type), once, with its reason.
	mistyped := strings.Replace(dlrBody("log-req", "READ", 1764153000500), `"identity":"`+phone+`"`, `"identity":919812345678`, 1)
	if code, _, body := do(t, http.MethodPost, s.httpURL+"/v1/webhooks/otpless", mistyped, observe.RequestIDHeader, "hook-4"); code != http.StatusBadRequest {
		t.Fatalf("POST of a webhook with a number for its identity: %d %s", code, body)
	}
	if n := len(s.logs.Matching(t, map[string]any{"msg": "http request", "request_id": "hook-4", "status": float64(400), "otpless_request_id": "log-req", "otpless_trace_id": "tr_ops", "reason": "invalid_body"})); n != 1 {
		t.Errorf("%d lines for the webhook that does not decode with its OTPLESS ids and reason, want 1:\n%s", n, s.logs)
	}
	// Each refused webhook's line says why, as its sender was told (no
	// gRPC line does, as for the API's requests), masked as any error
	// text is (hook-2's quotes a time in milliseconds, 13 digits, which
	// passes for a phone number).
	for id, body := range map[string]string{"hook-2": ahead, "hook-4": mistyped, "hook-6": `{"requestId":`} {
		code, _, answer := do(t, http.MethodPost, s.httpURL+"/v1/webhooks/otpless", body, observe.RequestIDHeader, id+"-again")
		var st struct{ Message string }
		if err := json.Unmarshal([]byte(answer), &st); err != nil || code != http.StatusBadRequest || st.Message == "" {
			t.Fatalf("POST %s again: %d %s (%v), want 400 with a message", id, code, answer, err)
		}
		if n := len(s.logs.Matching(t, map[string]any{"msg": "http request", "request_id": id + "-again", "error": observe.LoggedText(st.Message)})); n != 1 {
			t.Errorf("%d lines for %s's webhook saying %q (masked), want 1:\n%s", n, id, st.Message, s.logs)
		}
	}
	req, err := normalize.Decode([]byte(ahead))
	if err != nil {
		t.Fatal(err)
	}
	ctx := metadata.AppendToOutgoingContext(context.Background(), observe.RequestIDMetadata, "hook-3")
	if _, err := eventsv1.NewWebhookServiceClient(s.conn).Ingest(ctx, req); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("gRPC Ingest of a webhook two days ahead: %v", err)
	}
	if n := len(s.logs.Matching(t, map[string]any{"msg": "grpc call", "request_id": "hook-3", "code": "InvalidArgument", "otpless_request_id": "log-req", "otpless_trace_id": "tr_ops"})); n != 1 {
		t.Errorf("%d gRPC lines for the refused webhook with its OTPLESS ids, want 1:\n%s", n, s.logs)
	}
	if n := len(s.logs.Matching(t, map[string]any{"msg": "http request", "request_id": "read-1", "status": float64(200)})); n != 1 {
		t.Errorf("%d HTTP lines for the read, want 1", n)
	}
	if n := len(s.logs.Matching(t, map[string]any{"msg": "grpc call", "request_id": "read-1", "transport": "http", "code": "OK", "otpless_request_id": "log-req"})); n != 1 {
		t.Errorf("%d gRPC lines carry the HTTP request id, want 1:\n%s", n, s.logs)
	}
	if n := len(s.logs.Matching(t, map[string]any{"msg": "grpc call", "method": "/otpless.events.v1.RequestService/GetRequest", "transport": "grpc"})); n != 1 {
		t.Errorf("%d lines for the direct gRPC call, want 1", n)
	}
	if strings.Contains(s.logs.String(), "9812345678") {
		t.Errorf("a phone number reached the logs in clear:\n%s", s.logs)
	}
}

// A gRPC Ingest refused once its message has arrived (over the size bound,
// as protobuf or as the JSON kept, or not keepable as JSON) names the
// OTPLESS ids the message has, as a refused webhook's line does over HTTP,
// and counts as one rejection.
func TestRefusedGRPCIngestNamesItsIDs(t *testing.T) {
	t.Parallel()
	s := startOps(t, func(c *Config) { c.MaxBodyBytes = 4 << 10 }, nil)
	data := func(id string) *eventsv1.WebhookData {
		return &eventsv1.WebhookData{RequestId: id, TraceId: "tr_" + id, Status: "SENT", Channel: "WHATSAPP", Identity: phone}
	}
	nan, big, escaped := data("nan-req"), data("big-req"), data("escaped-req")
	nan.MetaData = structpb.NewNumberValue(math.NaN())
	big.ErrorMessage = strings.Repeat("x", 6<<10)                             // under grpc-go's own bound, twice this one
	escaped.MetaData = structpb.NewStringValue(strings.Repeat("\x01", 2<<10)) // six bytes each as JSON
	for _, tc := range []struct {
		data   *eventsv1.WebhookData
		code   codes.Code
		reason string
	}{
		{nan, codes.InvalidArgument, observe.ReasonInvalidBody},
		{big, codes.ResourceExhausted, observe.ReasonTooLarge},
		{escaped, codes.ResourceExhausted, observe.ReasonTooLarge},
	} {
		id := tc.data.GetRequestId()
		ctx := metadata.AppendToOutgoingContext(context.Background(), observe.RequestIDMetadata, "ingest-"+id)
		if _, err := eventsv1.NewWebhookServiceClient(s.conn).Ingest(ctx, &eventsv1.IngestRequest{EventType: "DLR", Data: tc.data}); status.Code(err) != tc.code {
			t.Fatalf("Ingest of %s: %v, want %v", id, err, tc.code)
		}
		want := map[string]any{"msg": "grpc call", "request_id": "ingest-" + id, "code": tc.code.String(), "reason": tc.reason,
			"otpless_request_id": id, "otpless_trace_id": "tr_" + id}
		if n := len(s.logs.Matching(t, want)); n != 1 {
			t.Errorf("%d lines for the refused Ingest of %s with its OTPLESS ids and reason, want 1:\n%s", n, id, s.logs)
		}
	}
	m := s.scrape(t)
	if got := m[`otpless_events_webhooks_rejected_total{reason="too_large"}`]; got != 2 {
		t.Errorf("webhooks_rejected_total{too_large} = %v, want 2", got)
	}
	if got := m[`otpless_events_webhooks_rejected_total{reason="invalid_body"}`]; got != 1 {
		t.Errorf("webhooks_rejected_total{invalid_body} = %v, want 1", got)
	}
	if strings.Contains(s.logs.String(), "9812345678") {
		t.Errorf("a phone number reached the logs in clear:\n%s", s.logs)
	}
}

func TestHealthRoutes(t *testing.T) {
	t.Parallel()
	s := startOps(t, nil, nil)
	health := healthpb.NewHealthClient(s.conn)
	for _, svc := range []string{ReadinessService, LivenessService} {
		resp, err := health.Check(context.Background(), &healthpb.HealthCheckRequest{Service: svc})
		if err != nil || resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
			t.Fatalf("Check(%q) = %v, %v; want SERVING", svc, resp, err)
		}
	}
	if code, _, body := do(t, http.MethodGet, s.httpURL+"/healthz", ""); code != http.StatusOK {
		t.Fatalf("/healthz: %d %s", code, body)
	}
	if code, _, body := do(t, http.MethodGet, s.httpURL+"/readyz", ""); code != http.StatusOK {
		t.Fatalf("/readyz while serving: %d %s", code, body)
	}
	if code, _, _ := do(t, http.MethodPost, s.httpURL+"/readyz", ""); code != http.StatusMethodNotAllowed {
		t.Fatalf("POST /readyz: %d, want 405", code)
	}

	// What the store's ping loop does when the store is unreachable.
	s.health.SetServingStatus(ReadinessService, healthpb.HealthCheckResponse_NOT_SERVING)
	if code, _, body := do(t, http.MethodGet, s.httpURL+"/readyz", ""); code != http.StatusServiceUnavailable {
		t.Fatalf("/readyz while not ready: %d %s, want 503", code, body)
	}
	if code, _, _ := do(t, http.MethodGet, s.httpURL+"/healthz", ""); code != http.StatusOK {
		t.Fatalf("/healthz while not ready: %d, want 200 (the process is alive)", code)
	}
	// Probes log at debug, also while they fail: one line every few seconds.
	if lines := s.logs.Matching(t, map[string]any{"msg": "http request", "path": "/readyz", "status": float64(503)}); len(lines) != 1 || lines[0]["level"] != "DEBUG" {
		t.Errorf("/readyz while not ready logged %v, want one line at DEBUG", lines)
	}
	if lines := s.logs.Matching(t, map[string]any{"msg": "grpc call", "method": "/grpc.health.v1.Health/Check"}); len(lines) != 2 || lines[0]["level"] != "DEBUG" || lines[1]["level"] != "DEBUG" {
		t.Errorf("gRPC health checks logged %v, want two lines at DEBUG", lines)
	}
	if got := s.scrape(t)["otpless_events_ready"]; got != 0 {
		t.Fatalf("otpless_events_ready = %v while not ready", got)
	}
	s.health.SetServingStatus(ReadinessService, healthpb.HealthCheckResponse_SERVING)
	if code, _, _ := do(t, http.MethodGet, s.httpURL+"/readyz", ""); code != http.StatusOK {
		t.Fatalf("/readyz once ready again: %d", code)
	}
}

// dialFrom is a connection to s's gRPC port from ip, a loopback address
// that no other client of s uses (127.0.0.1 is s.conn's). A test of the
// per-address bound holds its calls from there: from 127.0.0.1, startOps's
// readiness watch can still hold a place, its cancel not yet read by the
// server, when the test's first calls come (seen: the 100th of 100 held
// Checks refused, so another was answered).
func (s *opsServer) dialFrom(t *testing.T, ip net.IP) *grpc.ClientConn {
	t.Helper()
	dialer := &net.Dialer{LocalAddr: &net.TCPAddr{IP: ip}}
	conn, err := grpc.NewClient(s.GRPCAddr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) { return dialer.DialContext(ctx, "tcp", addr) }))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// Health/Watch needs no credentials, so it is bounded per client address:
// beyond MaxPublicCalls open streams from one address the next is
// refused, and once one closes a new one is taken again.
func TestHealthWatchesAreBounded(t *testing.T) {
	t.Parallel()
	s := startOps(t, nil, nil)
	health := healthpb.NewHealthClient(s.dialFrom(t, net.IPv4(127, 0, 0, 3)))
	open := func(ctx context.Context) error {
		st, err := health.Watch(ctx, &healthpb.HealthCheckRequest{Service: ReadinessService})
		if err != nil {
			return err
		}
		_, err = st.Recv()
		return err
	}
	cancels := make([]context.CancelFunc, MaxPublicCalls)
	for i := range cancels {
		ctx, cancel := context.WithCancel(context.Background())
		cancels[i] = cancel
		defer cancel()
		if err := open(ctx); err != nil {
			t.Fatalf("health watch %d: %v", i+1, err)
		}
	}
	err := open(context.Background())
	if status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("health watch %d: %v, want RESOURCE_EXHAUSTED", MaxPublicCalls+1, err)
	}
	if d := status.Convert(err).Details(); len(d) != 1 || !isRetryInfo(d[0], api.RetryStreamAfter) {
		t.Fatalf("health watch %d: details %v, want a RetryInfo of %v", MaxPublicCalls+1, d, api.RetryStreamAfter)
	}
	// Another address is not held up by this one.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if st, err := healthpb.NewHealthClient(s.dialFrom(t, net.IPv4(127, 0, 0, 2))).Watch(ctx, &healthpb.HealthCheckRequest{Service: ReadinessService}); err != nil {
		t.Fatal(err)
	} else if _, err := st.Recv(); err != nil {
		t.Fatalf("health watch from another address: %v", err)
	}
	cancels[0]()
	if !eventually(func() bool {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		return open(ctx) == nil
	}) {
		t.Fatal("no health watch taken after one closed")
	}
}

// A Check needs no credential either, and its client need never send its
// request message: such calls are bounded too (among Checks, apart from the
// streams), and a place is free again once one ends.
func TestHeldChecksAreBounded(t *testing.T) {
	t.Parallel()
	s := startOps(t, nil, nil)
	conn := s.dialFrom(t, net.IPv4(127, 0, 0, 3))
	held := make([]context.CancelFunc, MaxPublicCalls)
	for i := range held {
		ctx, cancel := context.WithCancel(context.Background())
		held[i] = cancel
		defer cancel()
		// A stream for Check whose message never comes. NewStream
		// returns once its headers are queued, and a refusal would
		// come later unseen: the check below tells whether all were
		// taken.
		if _, err := conn.NewStream(ctx, &grpc.StreamDesc{ClientStreams: true}, healthpb.Health_Check_FullMethodName); err != nil {
			t.Fatal(err)
		}
	}
	check := func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
		return err
	}
	// The held streams' headers went first on the same connection, and the
	// server reads a connection's frames in order, running the tap as it
	// reads each call's headers: the first check comes after every held
	// one was counted, so it is refused at once, or the bound is not kept.
	if err := check(); status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("with %d Checks held, another: %v, want RESOURCE_EXHAUSTED", MaxPublicCalls, err)
	}
	held[0]()
	if !eventually(func() bool { return check() == nil }) {
		t.Fatalf("once a held Check ended, another: %v", check())
	}
}

// Health/Watch and reflection streams live as long as their clients keep
// them, and need no credential: however many a client holds, from however
// many addresses, a Check (a gRPC liveness probe's call) is answered, since
// Checks have places of their own. The streams stay bounded in all.
func TestChecksAnsweredWhileStreamsFillTheBound(t *testing.T) {
	t.Parallel()
	s := startOps(t, nil, nil)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	open := func(health healthpb.HealthClient) error {
		st, err := health.Watch(ctx, &healthpb.HealthCheckRequest{Service: ReadinessService})
		if err == nil {
			_, err = st.Recv() // admitted: the tap ran
		}
		return err
	}
	for a := range MaxPublicCallsInAll / MaxPublicCalls {
		health := healthpb.NewHealthClient(s.dialFrom(t, net.IPv4(127, 0, 1, byte(a+1))))
		for i := range MaxPublicCalls {
			// startOps's readiness watch, canceled, can hold its place
			// a little longer.
			var err error
			if !eventually(func() bool { err = open(health); return status.Code(err) != codes.ResourceExhausted }) || err != nil {
				t.Fatalf("health watch %d from address %d: %v", i+1, a+1, err)
			}
		}
	}
	health := healthpb.NewHealthClient(s.dialFrom(t, net.IPv4(127, 0, 2, 1)))
	if err := open(health); status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("with %d streams held, a health watch from another address: %v, want RESOURCE_EXHAUSTED", MaxPublicCallsInAll, err)
	}
	for _, service := range []string{LivenessService, ReadinessService} {
		if r, err := health.Check(ctx, &healthpb.HealthCheckRequest{Service: service}); err != nil || r.GetStatus() != healthpb.HealthCheckResponse_SERVING {
			t.Errorf("with %d streams held, Check(%q): %v, %v; want SERVING", MaxPublicCallsInAll, service, r.GetStatus(), err)
		}
	}
}

// A Check's or List's message comes with its headers: one that has not
// come within --http-read-header-timeout (shorter than --http-read-timeout,
// the wait of other calls) is given up, CANCELED, so that calls held by
// sending nothing give their places back soon.
func TestHeldCheckEndsAfterTheHeaderTimeout(t *testing.T) {
	t.Parallel()
	s := startOps(t, func(c *Config) { c.HTTPReadHeaderTimeout, c.HTTPReadTimeout = 2*time.Second, 10*time.Minute }, nil)
	methods := []string{healthpb.Health_Check_FullMethodName, healthpb.Health_List_FullMethodName}
	t.Run("held", func(t *testing.T) {
		for i, method := range methods {
			t.Run(method, func(t *testing.T) {
				t.Parallel()
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				defer cancel()
				stream, err := s.dialFrom(t, net.IPv4(127, 0, 2, byte(2+i))).NewStream(ctx, &grpc.StreamDesc{ServerStreams: true, ClientStreams: true}, method)
				if err == nil {
					err = stream.RecvMsg(new(healthpb.HealthCheckResponse))
				}
				if status.Code(err) != codes.Canceled {
					t.Errorf("a %s whose message never came: %v, want CANCELED by the server", method, err)
				}
			})
		}
	})
	const canceled = `otpless_events_grpc_refused_total{code="Canceled"}`
	if !eventually(func() bool { return s.scrape(t)[canceled] == float64(len(methods)) }) {
		t.Errorf("%s = %v, want %d", canceled, s.scrape(t)[canceled], len(methods))
	}
}

// The bound of calls that need no credential, health's and reflection's,
// holds per address and in all, for the unary calls (Check, List) and the
// streams (Watch, reflection) apart, and gives a place back as a call's
// stream ends; other calls pass.
func TestPublicCallLimit(t *testing.T) {
	t.Parallel()
	limit := publicCallLimit(2, 3)
	const reflection = "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"
	var ends []context.CancelFunc
	defer func() {
		for _, end := range ends {
			end()
		}
	}()
	open := func(ip, method string) error {
		ctx, end := context.WithCancel(peer.NewContext(context.Background(), &peer.Peer{Addr: &net.TCPAddr{IP: net.ParseIP(ip), Port: 1}}))
		ends = append(ends, end)
		return limit(ctx, method)
	}
	watch, check, list := healthpb.Health_Watch_FullMethodName, healthpb.Health_Check_FullMethodName, healthpb.Health_List_FullMethodName
	for i, tc := range []struct {
		ip, method string
		ok         bool
	}{
		{"10.0.0.1", watch, true}, {"10.0.0.1", reflection, true}, {"10.0.0.1", watch, false}, // two streams from one address
		{"10.0.0.1", check, true}, {"10.0.0.1", list, true}, {"10.0.0.1", check, false}, // and two unary calls besides
		{"2001:db8::1", watch, true}, {"2001:db8::2", reflection, false}, // three streams in all; IPv6 too
		{"2001:db8::2", check, true}, {"10.0.0.3", list, false}, // three unary calls in all
		{"10.0.0.1", eventsv1.RequestService_WatchRequest_FullMethodName, true}, // needs a credential: bounded elsewhere
	} {
		if err := open(tc.ip, tc.method); (err == nil) != tc.ok {
			t.Errorf("call %d from %s (%s): %v, want admitted %v", i+1, tc.ip, tc.method, err, tc.ok)
		}
	}
	ends[0]() // the first stream from 10.0.0.1 ends
	if !eventually(func() bool { return open("10.0.0.1", reflection) == nil }) {
		t.Error("no place for a stream from 10.0.0.1 once one of its streams ended")
	}
	ends[3]() // its first Check ends
	if !eventually(func() bool { return open("10.0.0.1", check) == nil }) {
		t.Error("no place for a Check from 10.0.0.1 once one of its Checks ended")
	}
}

// A second Run is refused and leaves the running server as it was (it
// used to close the listeners and the store under it).
func TestRunTwice(t *testing.T) {
	t.Parallel()
	var srv *Server
	s := startOps(t, nil, func(x *Server) { srv = x })
	if !eventually(func() bool { return srv.ran.Load() }) {
		t.Fatal("Run never began")
	}
	if err := srv.Run(context.Background()); err == nil {
		t.Fatal("a second Run returned nil")
	}
	if code, _, body := do(t, http.MethodPost, s.httpURL+"/v1/webhooks/otpless", dlrBody("twice", "SENT", 1764153000400)); code != http.StatusOK {
		t.Fatalf("webhook after a second Run: %d %s", code, body)
	}
}

func TestOpenAPIRoute(t *testing.T) {
	t.Parallel()
	s := startOps(t, nil, nil)
	code, header, body := do(t, http.MethodGet, s.httpURL+"/openapi.json", "")
	if code != http.StatusOK || header.Get("Content-Type") != "application/json" {
		t.Fatalf("/openapi.json: %d %q", code, header.Get("Content-Type"))
	}
	var doc struct {
		Paths map[string]any `json:"paths"`
	}
	if err := json.Unmarshal([]byte(body), &doc); err != nil || doc.Paths["/v1/requests/{requestId}"] == nil {
		t.Fatalf("/openapi.json is not the API's document (%v): %.200s", err, body)
	}
}

// The metrics listener serves the runtime's profiles, but not the command
// line, which may hold a store DSN with its password.
func TestProfilesRoute(t *testing.T) {
	t.Parallel()
	s := startOps(t, nil, nil)
	for path, want := range map[string]int{
		"/debug/pprof/":                  http.StatusOK,
		"/debug/pprof/heap?debug=1":      http.StatusOK,
		"/debug/pprof/goroutine?debug=1": http.StatusOK,
		"/debug/pprof/profile?seconds=1": http.StatusOK,
		"/debug/pprof/trace?seconds=0.1": http.StatusOK,
		"/debug/pprof/symbol":            http.StatusOK,
		"/debug/pprof/cmdline":           http.StatusNotFound,
	} {
		code, _, body := do(t, http.MethodGet, s.metricsURL+path, "")
		if code != want {
			t.Errorf("GET %s: %d, want %d: %.200s", path, code, want, body)
		}
	}
}

// The profiles' index offers only what the listener serves: every link of
// it answers 200 (the command line, which answers 404, is not among them).
func TestProfilesIndexLinksAreServed(t *testing.T) {
	t.Parallel()
	s := startOps(t, nil, nil)
	code, _, index := do(t, http.MethodGet, s.metricsURL+"/debug/pprof/", "")
	if code != http.StatusOK {
		t.Fatalf("GET /debug/pprof/: %d", code)
	}
	hrefs := regexp.MustCompile(`href=['"]([^'"]*)['"]`).FindAllStringSubmatch(index, -1)
	seen := map[string]bool{}
	for _, m := range hrefs {
		link, err := url.Parse(html.UnescapeString(m[1]))
		if err != nil {
			t.Fatalf("link %q: %v", m[1], err)
		}
		seen[link.Path] = true
		if link.Path == "profile" || link.Path == "trace" {
			continue // they take seconds, and one CPU profile at a time: TestProfilesRoute reads them
		}
		target := (&url.URL{Path: "/debug/pprof/"}).ResolveReference(link)
		if code, _, body := do(t, http.MethodGet, s.metricsURL+target.String(), ""); code != http.StatusOK {
			t.Errorf("the index links %s, which answers %d: %.200s", target, code, body)
		}
	}
	for _, want := range []string{"heap", "goroutine", "profile", "trace", "symbol"} {
		if !seen[want] {
			t.Errorf("the index does not link %s: %s", want, index)
		}
	}
}

// What net/http says of the metrics listener (here an accept that failed,
// as one does when the process is out of file descriptors) is a line of the
// server's log, as it is for the HTTP port: not a line of Go's default
// logger on standard error, which is neither JSON nor masked.
func TestMetricsListenerErrorsAreLogged(t *testing.T) {
	t.Parallel()
	s := startOps(t, nil, func(s *Server) { s.metricsLis = &failingAccept{Listener: s.metricsLis} })
	s.scrape(t) // its connection was accepted after the failed accept was logged
	var lines []map[string]any
	for _, l := range s.logs.Lines(t) {
		if m, _ := l["msg"].(string); strings.HasPrefix(m, "http: Accept error: ") && strings.Contains(m, "too many open files") {
			lines = append(lines, l)
		}
	}
	if len(lines) != 1 || lines[0]["level"] != "WARN" {
		t.Errorf("lines of the failed accept: %v, want one at WARN:\n%s", lines, s.logs)
	}
}

// failingAccept fails its first Accept as a listener does when the process
// has no file descriptor left: an error net/http takes as temporary.
type failingAccept struct {
	net.Listener
	failed atomic.Bool
}

func (l *failingAccept) Accept() (net.Conn, error) {
	if l.failed.CompareAndSwap(false, true) {
		return nil, &net.OpError{Op: "accept", Net: "tcp", Addr: l.Addr(), Err: os.NewSyscallError("accept4", syscall.EMFILE)}
	}
	return l.Listener.Accept()
}

// A panicking gRPC handler becomes INTERNAL and a panicking HTTP handler
// 500; both are logged with their stack, and the server goes on serving.
func TestPanicsAreRecovered(t *testing.T) {
	t.Parallel()
	s := startOps(t, nil, func(s *Server) {
		s.grpc.RegisterService(&grpc.ServiceDesc{
			ServiceName: "test.Panics",
			HandlerType: (*any)(nil),
			Methods: []grpc.MethodDesc{{
				MethodName: "Panic",
				Handler: func(srv any, ctx context.Context, dec func(any) error, interceptor grpc.UnaryServerInterceptor) (any, error) {
					in := new(emptypb.Empty)
					if err := dec(in); err != nil {
						return nil, err
					}
					info := &grpc.UnaryServerInfo{Server: srv, FullMethod: "/test.Panics/Panic"}
					return interceptor(ctx, in, info, func(context.Context, any) (any, error) { panic("grpc kaboom") })
				},
			}},
		}, struct{}{})
		gw := s.http.Handler
		s.http.Handler = s.httpHandler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/boom" {
				panic("http kaboom")
			}
			gw.ServeHTTP(w, r)
		}))
	})

	for range 2 {
		err := s.conn.Invoke(context.Background(), "/test.Panics/Panic", &emptypb.Empty{}, &emptypb.Empty{})
		if status.Code(err) != codes.Internal {
			t.Fatalf("panicking RPC: %v, want INTERNAL", err)
		}
		// As the gateway calls: counted as http, as its log line says.
		err = s.Server.conn.Invoke(context.Background(), "/test.Panics/Panic", &emptypb.Empty{}, &emptypb.Empty{})
		if status.Code(err) != codes.Internal {
			t.Fatalf("panicking RPC through the gateway's connection: %v, want INTERNAL", err)
		}
		if code, _, body := do(t, http.MethodGet, s.httpURL+"/boom", ""); code != http.StatusInternalServerError {
			t.Fatalf("panicking route: %d %s, want 500", code, body)
		}
	}
	if _, err := healthpb.NewHealthClient(s.conn).Check(context.Background(), &healthpb.HealthCheckRequest{}); err != nil {
		t.Fatalf("gRPC after the panics: %v", err)
	}
	if code, _, _ := do(t, http.MethodGet, s.httpURL+"/healthz", ""); code != http.StatusOK {
		t.Fatalf("HTTP after the panics: %d", code)
	}

	for _, want := range []map[string]any{
		{"msg": "grpc call", "method": "/test.Panics/Panic", "code": "Internal", "panic": "grpc kaboom", "level": "ERROR", "transport": "grpc"},
		{"msg": "grpc call", "method": "/test.Panics/Panic", "code": "Internal", "panic": "grpc kaboom", "level": "ERROR", "transport": "http"},
		{"msg": "http request", "path": "/boom", "status": float64(500), "panic": "http kaboom", "level": "ERROR"},
	} {
		lines := s.logs.Matching(t, want)
		if len(lines) != 2 {
			t.Errorf("%d log lines like %v, want one per panic", len(lines), want)
			continue
		}
		if stack, _ := lines[0]["stack"].(string); !strings.Contains(stack, "observability_test.go") {
			t.Errorf("panic logged without its stack: %v", lines[0])
		}
	}
	series := s.scrape(t)
	for name, want := range map[string]float64{`otpless_events_panics_recovered_total{transport="grpc"}`: 2, `otpless_events_panics_recovered_total{transport="http"}`: 4} {
		if series[name] != want {
			t.Errorf("%s = %v, want %v", name, series[name], want)
		}
	}
}

// With PostgreSQL, /metrics tells whether the listener that carries the
// other replicas' commits to this one's watchers is up, and how often it
// was lost; with SQLite there is no listener and no such series.
func TestPostgresListenerMetrics(t *testing.T) {
	t.Parallel()
	const listening, losses = "otpless_events_pg_listening", "otpless_events_pg_listener_losses_total"
	m := startOps(t, nil, nil).scrape(t)
	for _, name := range []string{listening, losses} {
		if _, ok := m[name]; ok {
			t.Errorf("SQLite: %s is there", name)
		}
	}
	dsn, _ := pgtest.Schema(t)
	proxy := pgtest.NewProxy(t, pgtest.Addr(t, dsn))
	s := startOps(t, func(c *Config) { c.Store = pgtest.WithAddr(t, dsn, proxy.Addr()) }, nil)
	if !eventually(func() bool { return s.scrape(t)[listening] == 1 }) {
		t.Fatalf("%s never 1", listening)
	}
	if got := s.scrape(t)[losses]; got != 0 {
		t.Errorf("%s = %v before any loss", losses, got)
	}
	proxy.Cut()
	if !eventually(func() bool { m := s.scrape(t); return m[listening] == 0 && m[losses] >= 1 }) {
		t.Fatalf("with the database cut: %s %v, %s %v; want 0 and at least 1", listening, s.scrape(t)[listening], losses, s.scrape(t)[losses])
	}
	proxy.Restore()
	if !eventually(func() bool { return s.scrape(t)[listening] == 1 }) {
		t.Fatalf("%s never 1 again", listening)
	}
}

// A read that fails for a fault of the server answers INTERNAL (500) with
// a generic message, and its log line says what went wrong.
func TestReadFaultsAreLoggedWithTheirCause(t *testing.T) {
	t.Parallel()
	var dir string
	s := startOps(t, func(c *Config) { dir = c.DataDir }, nil)
	if code, _, body := do(t, http.MethodPost, s.httpURL+"/v1/webhooks/otpless", dlrBody("broken-req", "SENT", 1764153000400)); code != http.StatusOK {
		t.Fatalf("POST: %d %s", code, body)
	}
	db, err := sql.Open("sqlite", filepath.Join(dir, "otpless-events.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Exec(`UPDATE requests SET events = X'01' WHERE request_id = 'broken-req'`); err != nil {
		t.Fatal(err)
	}
	code, _, body := do(t, http.MethodGet, s.httpURL+"/v1/requests/broken-req/events", "", observe.RequestIDHeader, "broken-1")
	if code != http.StatusInternalServerError || !strings.Contains(body, `"internal error"`) {
		t.Fatalf("GET events of a broken row: %d %s, want 500 and a generic message", code, body)
	}
	lines := s.logs.Matching(t, map[string]any{"msg": "grpc call", "request_id": "broken-1", "code": "Internal"})
	if len(lines) != 1 || !strings.Contains(fmt.Sprint(lines[0]["cause"]), "events") {
		t.Errorf("log lines of the read %v, want one with the cause", lines)
	}
}

// isRetryInfo reports whether detail is a google.rpc.RetryInfo of delay.
func isRetryInfo(detail any, delay time.Duration) bool {
	ri, ok := detail.(*errdetails.RetryInfo)
	return ok && ri.GetRetryDelay().AsDuration() == delay
}

// The metrics port guards against slow clients as the HTTP port does: a
// keep-alive connection left idle after a scrape, and a request whose
// body never comes (a GET's announced body, which net/http reads past the
// handler, or pprof's symbol lookup), are closed within the HTTP port's
// timeouts rather than held for as long as the client keeps them.
func TestMetricsPortCutsOffSlowClients(t *testing.T) {
	t.Parallel()
	// The timeouts wait (each case once, the cases side by side), but a
	// request sent whole must be read within them: at 200 ms, a client
	// stalled that long between its dial and its write on a loaded
	// machine would be cut off before it was answered.
	s := startOps(t, func(c *Config) {
		c.HTTPReadHeaderTimeout, c.HTTPReadTimeout, c.HTTPIdleTimeout = time.Second, time.Second, time.Second
	}, nil)
	for _, tc := range []struct {
		name, request string
		answered      bool // a whole response comes before the wait
	}{
		{"idle after a scrape", "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n", true},
		{"a scrape's body never sent", "GET /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n", false},
		{"a symbol lookup's body never sent", "POST /debug/pprof/symbol HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			conn, err := net.Dial("tcp", addrString(s.MetricsAddr()))
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			if _, err := conn.Write([]byte(tc.request)); err != nil {
				t.Fatal(err)
			}
			conn.SetReadDeadline(time.Now().Add(20 * time.Second))
			r := bufio.NewReader(conn)
			if tc.answered {
				resp, err := http.ReadResponse(r, nil)
				if err != nil {
					t.Fatal(err)
				}
				if _, err := io.Copy(io.Discard, resp.Body); err != nil {
					t.Fatal(err)
				}
				resp.Body.Close()
			}
			if _, err := io.Copy(io.Discard, r); err != nil {
				t.Fatalf("the metrics port held the connection: %v", err)
			}
		})
	}
}

// TestRunLeavesNoServeGoroutineBlocked: Run serves on four goroutines
// (gRPC on its port and in process, HTTP, metrics), each of which sends how
// its Serve ended on one channel, which Run reads at most once. When Run
// reads it not at all (its context ended first) and the metrics server
// failed, each of the four must still be able to send and end.
func TestRunLeavesNoServeGoroutineBlocked(t *testing.T) {
	cfg := DefaultConfig()
	cfg.GRPCAddr, cfg.HTTPAddr, cfg.MetricsAddr = "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0"
	cfg.DataDir = t.TempDir()
	cfg.Security.Disabled = true
	ctx, cancel := context.WithCancel(context.Background())
	srv, err := New(ctx, cfg)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	// The metrics listener fails once shutdown has begun, after Run chose
	// its context's end, and before shutdown closes the metrics server.
	srv.metricsLis = failAfter{Listener: srv.metricsLis, after: srv.shuttingDown}
	cancel()
	if err := srv.Run(ctx); err != nil {
		t.Fatalf("Run: %v", err)
	}
	// Each sends once its Serve has returned, which Run does not wait for:
	// wait until every one has ended, or those left are stuck sending.
	deadline := time.Now().Add(10 * time.Second)
	for {
		running, stuck := serveGoroutines()
		if running == 0 && stuck == 0 {
			return
		}
		if running == 0 {
			t.Fatalf("%d of Run's serve goroutines blocked for good sending how their Serve ended", stuck)
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of Run's serve goroutines still running after 10s", running)
		}
		time.Sleep(time.Millisecond)
	}
}

// failAfter is a listener whose Accept fails once after is done.
type failAfter struct {
	net.Listener
	after context.Context
}

func (l failAfter) Accept() (net.Conn, error) {
	<-l.after.Done()
	return nil, errors.New("accept failed")
}

// serveGoroutines counts the goroutines of Run and serveMetrics that send
// how a Serve ended: those blocked on the send, and the others.
func serveGoroutines() (running, stuck int) {
	buf := make([]byte, 1<<22)
	buf = buf[:runtime.Stack(buf, true)]
	for g := range strings.SplitSeq(string(buf), "\n\n") {
		if !strings.Contains(g, "server.(*Server).Run.func") && !strings.Contains(g, "server.(*Server).serveMetrics.func") {
			continue
		}
		if strings.Contains(g, " [chan send") {
			stuck++
		} else {
			running++
		}
	}
	return running, stuck
}
