package gateway

import (
	"context"
	"encoding/base64"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"

	"github.com/otpless-events/otpless-events/server/api"
	"github.com/otpless-events/otpless-events/server/auth"
	"github.com/otpless-events/otpless-events/server/store"
)

type storingIngester struct{}

func (storingIngester) Submit(_ context.Context, wh store.Webhook) (store.Result, error) {
	res := store.Result{Events: make([]store.EventResult, len(wh.Events))}
	for i := range res.Events {
		res.Events[i].Revision = 1
	}
	return res, nil
}

// webhooksFirst serves the webhook POSTs it takes as the mux would, and
// leaves everything else to the mux.
func TestWebhooksFirstAnswersAsTheMux(t *testing.T) {
	t.Parallel()
	log := slog.New(slog.DiscardHandler)
	newMux := func(routes bool) (*runtime.ServeMux, *webhookHandler) {
		mux := runtime.NewServeMux(runtime.WithErrorHandler(errorHandler))
		wh := &webhookHandler{mux: mux, ingest: api.NewWebhookServer(storingIngester{}, log), maxBody: DefaultMaxBodyBytes, log: log}
		if routes {
			if err := wh.register(); err != nil {
				t.Fatal(err)
			}
		}
		return mux, wh
	}
	const body = `{"data":{"requestId":"r1","status":"SENT","channel":"SMS"},"eventType":"DLR","timestamp":1764153000400}`
	answer := func(h http.Handler, method, target string) (int, string) {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(method, target, strings.NewReader(body)))
		return rec.Code, rec.Body.String()
	}

	mux, wh := newMux(true)
	first := webhooksFirst(mux, wh)
	bare, bareWH := newMux(false) // knows no webhook route: only the shortcut can answer
	shortcut := webhooksFirst(bare, bareWH)
	for _, tt := range []struct {
		method, target string
		taken          bool // by the shortcut
	}{
		{http.MethodPost, WebhookPath, true},
		{http.MethodPost, WebhookPath + "/wk_key0123456789", true},
		{http.MethodPost, WebhookPath + "/wk_key%2Fwith-slash", false},
		{http.MethodPost, WebhookPath + "/", false},
		{http.MethodPost, WebhookPath + "/a/b", false},
		{http.MethodPost, WebhookPath + "x", false},
		{http.MethodGet, WebhookPath + "/wk_key0123456789", false},
		{http.MethodPut, WebhookPath, false},
		{http.MethodPost, WebhookPath + "/wk:colon", true},
	} {
		t.Run(tt.method+" "+tt.target, func(t *testing.T) {
			code, got := answer(first, tt.method, tt.target)
			wantCode, want := answer(mux, tt.method, tt.target)
			if code != wantCode || got != want {
				t.Errorf("answered %d %s; the mux answers %d %s", code, got, wantCode, want)
			}
			if code, _ := answer(shortcut, tt.method, tt.target); (code == http.StatusOK) != tt.taken {
				t.Errorf("taken by the shortcut: %v (answer %d), want %v", code == http.StatusOK, code, tt.taken)
			}
		})
	}
}

// recordingHandler keeps the messages of the records it handles.
type recordingHandler struct {
	mu   sync.Mutex
	msgs []string
}

func (h *recordingHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h *recordingHandler) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.msgs = append(h.msgs, r.Message)
	return nil
}
func (h *recordingHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *recordingHandler) WithGroup(string) slog.Handler      { return h }

// A refused webhook (401, 403, 429) gets no log line from the gateway: the
// request's own line (observe) says it, with the reason.
func TestRejectedWebhooksLogNothingMore(t *testing.T) {
	t.Parallel()
	guard, err := auth.NewWebhookGuard(auth.WebhookConfig{Keys: []string{"wk_0123456789abcdef"}, RatePerSecond: 1, Burst: 1})
	if err != nil {
		t.Fatal(err)
	}
	rec := &recordingHandler{}
	log := slog.New(rec)
	mux := runtime.NewServeMux(runtime.WithErrorHandler(errorHandler))
	wh := &webhookHandler{mux: mux, ingest: api.NewWebhookServer(storingIngester{}, log), maxBody: DefaultMaxBodyBytes, guard: guard, log: log}
	h := webhooksFirst(mux, wh)
	for _, want := range []int{http.StatusUnauthorized, http.StatusTooManyRequests} {
		w := httptest.NewRecorder()
		h.ServeHTTP(w, httptest.NewRequest(http.MethodPost, WebhookPath+"/wk_wrong0123456789", strings.NewReader(`{}`)))
		if w.Code != want {
			t.Fatalf("answered %d %s, want %d", w.Code, w.Body, want)
		}
	}
	if len(rec.msgs) != 0 {
		t.Errorf("the gateway logged %q for refused webhooks", rec.msgs)
	}
}

// With signing secrets the only credential, a webhook's sender is known
// once its signature is checked: an unsigned one spends the failure budget
// of its address, never the budget of signed ones (which, full, would
// refuse OTPLESS), and once that is spent it is refused before its body
// is read.
func TestUnsignedWebhooksSpendOnlyTheFailureBudget(t *testing.T) {
	t.Parallel()
	key := []byte("0123456789abcdef0123456789abcdef")
	guard, err := auth.NewWebhookGuard(auth.WebhookConfig{SigningSecrets: []string{"whsec_" + base64.StdEncoding.EncodeToString(key)}, RatePerSecond: 0.001, Burst: 1})
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.DiscardHandler)
	mux := runtime.NewServeMux(runtime.WithErrorHandler(errorHandler))
	h := webhooksFirst(mux, &webhookHandler{mux: mux, ingest: api.NewWebhookServer(storingIngester{}, log), maxBody: DefaultMaxBodyBytes, guard: guard, log: log})
	const body = `{"data":{"requestId":"r1","status":"SENT","channel":"SMS"},"eventType":"DLR","timestamp":1764153000400}`
	const unsigned, forged, signed = "unsigned", "forged", "signed"
	post := func(from, how string) int {
		r := httptest.NewRequest(http.MethodPost, WebhookPath, strings.NewReader(body))
		r.RemoteAddr = from + ":4000"
		if how != unsigned {
			ts := strconv.FormatInt(time.Now().Unix(), 10)
			signer := key
			if how == forged {
				signer = []byte("not the key, not the key, at all")
			}
			r.Header.Set("webhook-id", "msg_1")
			r.Header.Set("webhook-timestamp", ts)
			r.Header.Set("webhook-signature", "v1,"+auth.SignWebhook(signer, []byte("msg_1."+ts+"."+body)))
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		return w.Code
	}
	for i, step := range []struct {
		from, how string
		want      int
	}{
		{"192.0.2.1", unsigned, http.StatusUnauthorized},    // refused before its body, from the failure budget
		{"192.0.2.1", signed, http.StatusOK},                // the signed budget is whole
		{"192.0.2.1", unsigned, http.StatusTooManyRequests}, // no failure budget left
		{"192.0.2.1", signed, http.StatusTooManyRequests},   // the signed budget is spent too
		{"192.0.2.2", forged, http.StatusUnauthorized},      // read, then refused, from the failure budget
		{"192.0.2.2", forged, http.StatusTooManyRequests},
		{"192.0.2.2", signed, http.StatusOK},
	} {
		if got := post(step.from, step.how); got != step.want {
			t.Errorf("step %d: a webhook from %s, %s: %d, want %d", i+1, step.from, step.how, got, step.want)
		}
	}
}
