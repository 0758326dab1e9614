package gateway_test

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/otpless-events/otpless-events/server/api"
	"github.com/otpless-events/otpless-events/server/gateway"
	"github.com/otpless-events/otpless-events/server/store"
)

type failingIngester struct{ err error }

func (f failingIngester) Submit(context.Context, store.Webhook) (store.Result, error) {
	return store.Result{}, f.err
}

// unreachableGateway serves the gateway with webhooks going to ingester and
// RequestService behind a connection to nothing.
func unreachableGateway(t *testing.T, ingester api.Ingester) *httptest.Server {
	t.Helper()
	conn, err := grpc.NewClient("127.0.0.1:1", grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	log := slog.New(slog.DiscardHandler)
	h, err := gateway.New(context.Background(), conn, api.NewWebhookServer(ingester, log), gateway.Options{Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv
}

// A store that cannot take the webhook answers 503 with Retry-After, so
// OTPLESS retries; never a 2xx, never a 500.
func TestWebhookStoreTroubleIs503(t *testing.T) {
	t.Parallel()
	for _, err := range []error{store.ErrOverloaded, store.ErrUnavailable, store.ErrClosed} {
		t.Run(err.Error(), func(t *testing.T) {
			t.Parallel()
			srv := unreachableGateway(t, failingIngester{err})
			body := `{"data":{"requestId":"r1","status":"SENT","channel":"SMS"},"eventType":"DLR","timestamp":1764153000400}`
			resp, perr := http.Post(srv.URL+gateway.WebhookPath, "application/json", strings.NewReader(body))
			if perr != nil {
				t.Fatal(perr)
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != http.StatusServiceUnavailable {
				t.Fatalf("status %d (%s), want 503", resp.StatusCode, b)
			}
			if resp.Header.Get("Retry-After") == "" {
				t.Error("503 without Retry-After")
			}
			var e struct{ Message string }
			if jerr := json.Unmarshal(b, &e); jerr != nil || !strings.Contains(e.Message, "retry") {
				t.Errorf("error body %s does not say to retry", b)
			}
		})
	}
}

// A method a route does not serve is the client's mistake: 405 with Allow
// naming the ones it does (which RFC 9110 requires of every 405, whatever
// the method), never grpc-gateway's 501. The routes keep the
// methods they serve, the more specific template first.
func TestMethodNotAllowed(t *testing.T) {
	t.Parallel()
	srv := unreachableGateway(t, failingIngester{store.ErrUnavailable})
	for _, tc := range []struct {
		method, path, allow string // allow "": served
	}{
		{http.MethodGet, gateway.WebhookPath, "POST"},
		{http.MethodPut, gateway.WebhookPath + "/wk_key", "POST"},
		{http.MethodHead, gateway.WebhookPath, "POST"},
		{http.MethodPost, "/v1/requests/r1", "GET, HEAD"},
		{http.MethodDelete, "/v1/requests/r1/events", "GET, HEAD"},
		{http.MethodPost, "/v1/requests/r1:watch", "GET"},
		{http.MethodHead, "/v1/requests/r1:watch", "GET"}, // a stream, not a document; not a request id "r1:watch" either
		{http.MethodPut, "/v1/requests/r1:watchToken", "POST"},
		{http.MethodPost, "/v1/requests/r1:watchToken", ""},
		{http.MethodPost, gateway.WebhookPath, ""},
		{http.MethodGet, "/v1/requests/r1", ""},
		{http.MethodHead, "/v1/requests/r1", ""},
		{http.MethodPost, "/ui/", "GET, HEAD"}, // the status page
		{http.MethodDelete, "/ui/app.js", "GET, HEAD"},
		{http.MethodGet, "/ui/", ""},
		{http.MethodHead, "/v1/requests/r1/events", ""},
		// Methods no route serves, which the mux refuses by itself.
		{http.MethodTrace, gateway.WebhookPath, "POST"},
		{"PROPFIND", "/v1/requests/r1", "GET, HEAD"},
		{http.MethodTrace, "/v1/requests/r1:watch", "GET"},
		{"get", "/v1/requests/r1:watchToken", "POST"}, // methods are case-sensitive
	} {
		resp, b := send(t, tc.method, srv.URL+tc.path, "{}")
		if tc.allow == "" {
			if resp.StatusCode == http.StatusMethodNotAllowed || resp.StatusCode == http.StatusNotImplemented {
				t.Errorf("%s %s: %d %s, want it served", tc.method, tc.path, resp.StatusCode, b)
			}
			continue
		}
		if resp.StatusCode != http.StatusMethodNotAllowed || resp.Header.Get("Allow") != tc.allow {
			t.Errorf("%s %s: %d with Allow %q (%s), want 405 with Allow %q", tc.method, tc.path, resp.StatusCode, resp.Header.Get("Allow"), b, tc.allow)
		}
		if tc.method != http.MethodHead && !strings.Contains(string(b), "not allowed") {
			t.Errorf("%s %s: body %s does not say the method is not allowed", tc.method, tc.path, b)
		}
	}
}

// Every error body has the shape of grpc-gateway's own, details included,
// whether the mux wrote it or a refusal before the mux did.
func TestErrorBodiesHaveOneShape(t *testing.T) {
	t.Parallel()
	srv := unreachableGateway(t, failingIngester{store.ErrUnavailable})
	for _, tc := range []struct {
		method, path, body string
		code               int
		status             codes.Code // the body's code, which gRPC would answer
	}{
		{http.MethodGet, "/v1/requests/r1", "", http.StatusServiceUnavailable, codes.Unavailable}, // the mux's
		{http.MethodPut, "/v1/requests/r1", "", http.StatusMethodNotAllowed, codes.Unimplemented},
		{http.MethodGet, "/v1/requests/a%2Fb", "", http.StatusNotFound, codes.NotFound},
		{http.MethodGet, "/v1/requests/%ff", "", http.StatusBadRequest, codes.InvalidArgument},
		{http.MethodPost, "/v1/requests/r1:watchToken", strings.Repeat(" ", 65<<10), http.StatusRequestEntityTooLarge, codes.ResourceExhausted},
		{http.MethodPost, gateway.WebhookPath, "{", http.StatusBadRequest, codes.InvalidArgument},
	} {
		resp, b := send(t, tc.method, srv.URL+tc.path, tc.body)
		var fields map[string]json.RawMessage
		if resp.StatusCode != tc.code || json.Unmarshal(b, &fields) != nil {
			t.Errorf("%s %s: %d %s, want %d with a JSON status", tc.method, tc.path, resp.StatusCode, b, tc.code)
			continue
		}
		if len(fields) != 3 || fields["code"] == nil || fields["message"] == nil || fields["details"] == nil {
			t.Errorf("%s %s: %s, want code, message and details", tc.method, tc.path, b)
		}
		if got := string(fields["code"]); got != strconv.Itoa(int(tc.status)) {
			t.Errorf("%s %s: code %s, want %d (%v)", tc.method, tc.path, got, tc.status, tc.status)
		}
	}
}

// A webhook URL with something after the key (a trailing "/", pasted with
// the URL) gets 404 saying what a webhook URL is, rather than a bare "Not
// Found" that leaves its sender (OTPLESS, send, curl) to guess. The key is
// not repeated.
func TestWebhookPathPastTheKey(t *testing.T) {
	t.Parallel()
	srv := unreachableGateway(t, failingIngester{store.ErrUnavailable})
	for _, path := range []string{
		gateway.WebhookPath + "/whk_SECRET0123456789/",
		gateway.WebhookPath + "/whk_SECRET0123456789/x",
		gateway.WebhookPath + "//",
	} {
		resp, b := send(t, http.MethodPost, srv.URL+path, "{}")
		if resp.StatusCode != http.StatusNotFound || !strings.Contains(string(b), "nothing after the key") || strings.Contains(string(b), "SECRET") {
			t.Errorf("POST %s: %d %s; want 404 saying what a webhook URL is, without the key", path, resp.StatusCode, b)
		}
	}
	// Other paths unknown stay a plain 404.
	if resp, b := send(t, http.MethodPost, srv.URL+"/v1/webhook/otpless/k", "{}"); resp.StatusCode != http.StatusNotFound || strings.Contains(string(b), "key") {
		t.Errorf("POST to a path of no route: %d %s, want a plain 404", resp.StatusCode, b)
	}
}

// send makes one request and reads its answer whole.
func send(t *testing.T, method, url, body string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, b
}

// statusOf records the status its handler answered.
type statusOf struct {
	http.ResponseWriter
	code int
}

func (s *statusOf) WriteHeader(code int)        { s.code = code; s.ResponseWriter.WriteHeader(code) }
func (s *statusOf) Unwrap() http.ResponseWriter { return s.ResponseWriter }

// A sender that gives up halfway through a body over HTTP/2 (it cancels
// the stream) stopped sending: 408, as over HTTP/1.1, not a bad body.
func TestWebhookAbandonedOverHTTP2(t *testing.T) {
	t.Parallel()
	log := slog.New(slog.DiscardHandler)
	h, err := gateway.New(context.Background(), nil, api.NewWebhookServer(failingIngester{}, log), gateway.Options{Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	codes := make(chan int, 1)
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ProtoMajor != 2 {
			t.Errorf("the test spoke %s, want HTTP/2", r.Proto)
		}
		rec := &statusOf{ResponseWriter: w}
		h.ServeHTTP(rec, r)
		codes <- rec.code
	}))
	srv.EnableHTTP2 = true
	srv.StartTLS()
	defer srv.Close()

	ctx, cancel := context.WithCancel(context.Background())
	body, w := io.Pipe()
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, srv.URL+gateway.WebhookPath, body)
	req.ContentLength = 1000
	go func() {
		w.Write([]byte(`{"data":{"requestId":"r1",`)) // then nothing more
		cancel()
	}()
	if resp, err := srv.Client().Do(req); err == nil {
		resp.Body.Close()
	}
	if code := <-codes; code != http.StatusRequestTimeout {
		t.Errorf("status %d, want 408", code)
	}
}
