package gateway

import (
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

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
