package observe_test

import (
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/otpless-events/otpless-events/internal/testlog"
	"github.com/otpless-events/otpless-events/server/gateway"
	"github.com/otpless-events/otpless-events/server/observe"
)

func newObserver(t *testing.T) (*observe.Observer, *testlog.Buffer) {
	t.Helper()
	logs := &testlog.Buffer{}
	log := slog.New(observe.MaskingHandler(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})))
	return observe.New(log), logs
}

// metric returns the value of the counter or gauge name with labels, or
// the sample count of the histogram; 0 when absent.
func metric(t *testing.T, reg prometheus.Gatherer, name string, labels map[string]string) float64 {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
	next:
		for _, m := range f.GetMetric() {
			have := map[string]string{}
			for _, l := range m.GetLabel() {
				have[l.GetName()] = l.GetValue()
			}
			for k, v := range labels {
				if have[k] != v {
					continue next
				}
			}
			switch {
			case m.GetCounter() != nil:
				return m.GetCounter().GetValue()
			case m.GetGauge() != nil:
				return m.GetGauge().GetValue()
			case m.GetHistogram() != nil:
				return float64(m.GetHistogram().GetSampleCount())
			}
		}
	}
	return 0
}

func TestWebhookPathMatchesGateway(t *testing.T) {
	t.Parallel()
	// observe keeps its own copy to stay free of the gateway; it must agree.
	o, _ := newObserver(t)
	srv := httptest.NewServer(o.HTTP(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusRequestEntityTooLarge)
	})))
	t.Cleanup(srv.Close)
	resp, err := http.Post(srv.URL+gateway.WebhookPath, "application/json", strings.NewReader("{}"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if got := metric(t, o.Registry, "otpless_events_webhooks_rejected_total", map[string]string{"reason": "too_large"}); got != 1 {
		t.Fatalf("a 413 on %s counted %v times as too_large, want 1", gateway.WebhookPath, got)
	}
}

// A panicking handler answers 500, is logged with its stack and request id,
// and the server goes on serving.
func TestHTTPPanicIsRecovered(t *testing.T) {
	t.Parallel()
	o, logs := newObserver(t)
	srv := httptest.NewServer(o.HTTP(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/boom" {
			panic("kaboom")
		}
		io.WriteString(w, "fine")
	})))
	t.Cleanup(srv.Close)

	req, _ := http.NewRequest(http.MethodGet, srv.URL+"/boom", nil)
	req.Header.Set(observe.RequestIDHeader, "panic-req-1")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusInternalServerError || !strings.Contains(string(body), "internal error") {
		t.Fatalf("panicking handler answered %d %s, want 500 internal error", resp.StatusCode, body)
	}
	if resp.Header.Get(observe.RequestIDHeader) != "panic-req-1" {
		t.Errorf("X-Request-Id = %q, want the caller's", resp.Header.Get(observe.RequestIDHeader))
	}

	resp, err = http.Get(srv.URL + "/ok")
	if err != nil {
		t.Fatalf("server stopped serving after a panic: %v", err)
	}
	body, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || string(body) != "fine" {
		t.Fatalf("after the panic: %d %s", resp.StatusCode, body)
	}

	var found bool
	for _, l := range logs.Lines(t) {
		if l["request_id"] == "panic-req-1" {
			found = true
			if l["level"] != "ERROR" || l["panic"] != "kaboom" || !strings.Contains(l["stack"].(string), "TestHTTPPanicIsRecovered") || l["status"] != float64(500) {
				t.Errorf("panic logged as %v", l)
			}
		}
	}
	if !found {
		t.Error("the panic was not logged")
	}
	if got := metric(t, o.Registry, "otpless_events_panics_recovered_total", map[string]string{"transport": "http"}); got != 1 {
		t.Errorf("panics_recovered_total{transport=http} = %v, want 1", got)
	}
}

// One line per request: request id (the caller's when valid, else a new
// one, also in the handler's context), status, path
// without query and with a webhook key masked.
func TestHTTPRequestLog(t *testing.T) {
	t.Parallel()
	o, logs := newObserver(t)
	var forwarded sync.Map
	srv := httptest.NewServer(o.HTTP(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		forwarded.Store(r.URL.Path, observe.RequestID(r.Context()))
		if err := http.NewResponseController(w).Flush(); err != nil {
			t.Errorf("Flush through the middleware: %v", err)
		}
		io.WriteString(w, "ok")
	})))
	t.Cleanup(srv.Close)

	get := func(path, id string) string {
		req, _ := http.NewRequest(http.MethodGet, srv.URL+path, nil)
		if id != "" {
			req.Header.Set(observe.RequestIDHeader, id)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.Header.Get(observe.RequestIDHeader)
	}
	if got := get("/v1/requests/r1?access_token=secret-token", "caller-id-1"); got != "caller-id-1" {
		t.Errorf("valid caller id answered as %q", got)
	}
	generated := get("/v1/webhooks/otpless/wk_supersecretkey0123", "bad id with spaces")
	if generated == "" || generated == "bad id with spaces" {
		t.Errorf("invalid caller id answered as %q, want a new id", generated)
	}
	if v, _ := forwarded.Load("/v1/requests/r1"); v != "caller-id-1" {
		t.Errorf("request id in the handler's context: %q", v)
	}

	// A request's line is written once its handler has returned, which can
	// be after the client has its answer: wait for both, in any order.
	var lines []map[string]any
	waitFor(t, func() bool { lines = logs.Lines(t); return len(lines) >= 2 })
	if len(lines) != 2 {
		t.Fatalf("%d log lines for 2 requests: %v", len(lines), lines)
	}
	byID := map[any]map[string]any{}
	for _, l := range lines {
		if l["msg"] != "http request" || l["method"] != "GET" || l["status"] != float64(200) || l["duration"] == nil {
			t.Errorf("log line %v lacks method, status or duration", l)
		}
		byID[l["request_id"]] = l
	}
	if l := byID["caller-id-1"]; l == nil || l["path"] != "/v1/requests/r1" {
		t.Errorf("line of the caller's id: %v, in %v", l, lines)
	}
	if l := byID[generated]; l == nil || strings.Contains(l["path"].(string), "supersecret") {
		t.Errorf("line of the generated id: %v, in %v: want it, with the webhook key masked", l, lines)
	}
	if got := metric(t, o.Registry, "otpless_events_http_requests_total", map[string]string{"route": "request", "code": "200"}); got != 1 {
		t.Errorf("http_requests_total{route=request,code=200} = %v, want 1", got)
	}
}

// A request's line names its method and path bounded: both are the
// client's to choose, and the HTTP port reads up to 1 MiB of them.
func TestHTTPRequestLogBoundsWhatTheClientNames(t *testing.T) {
	t.Parallel()
	o, logs := newObserver(t)
	req := httptest.NewRequest(http.MethodGet, "/v1/requests/"+strings.Repeat("é", 50_000), nil)
	req.Method = strings.Repeat("M", 10_000)
	o.HTTP(http.NotFoundHandler()).ServeHTTP(httptest.NewRecorder(), req)
	lines := logs.Lines(t)
	if len(lines) != 1 {
		t.Fatalf("%d lines: %v", len(lines), lines)
	}
	method, path := lines[0]["method"].(string), lines[0]["path"].(string)
	if len(method) > 200 || len(path) > 2200 || !strings.HasSuffix(path, "…") || !utf8.ValidString(path) {
		t.Errorf("a line named a method of %d bytes and a path of %d (%q…); want both cut, marked, and valid UTF-8",
			len(method), len(path), path[:min(len(path), 40)])
	}
}
