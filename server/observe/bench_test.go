package observe_test

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/otpless-events/otpless-events/server/observe"
)

// BenchmarkHTTP is the middleware's cost per request: request id, metrics
// and the log line (JSON, masked, discarded).
func BenchmarkHTTP(b *testing.B) {
	log := slog.New(observe.MaskingHandler(slog.NewJSONHandler(io.Discard, nil)))
	h := observe.New(log).HTTP(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		io.WriteString(w, "{}")
	}))
	req := httptest.NewRequest(http.MethodPost, "/v1/webhooks/otpless/wk_secretsecretsecret", nil).WithContext(context.Background())
	b.ReportAllocs()
	for b.Loop() {
		h.ServeHTTP(httptest.NewRecorder(), req)
	}
}
