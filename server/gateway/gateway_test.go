package gateway_test

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/otpless-events/otpless-events/server/api"
	"github.com/otpless-events/otpless-events/server/gateway"
	"github.com/otpless-events/otpless-events/server/store"
)

type failingIngester struct{ err error }

func (f failingIngester) Submit(context.Context, store.Webhook) (store.Result, error) {
	return store.Result{}, f.err
}

// A store that cannot take the webhook answers 503 with Retry-After, so
// OTPLESS retries; never a 2xx, never a 500.
func TestWebhookStoreTroubleIs503(t *testing.T) {
	t.Parallel()
	for _, err := range []error{store.ErrOverloaded, store.ErrUnavailable, store.ErrClosed} {
		t.Run(err.Error(), func(t *testing.T) {
			t.Parallel()
			conn, cerr := grpc.NewClient("127.0.0.1:1", grpc.WithTransportCredentials(insecure.NewCredentials()))
			if cerr != nil {
				t.Fatal(cerr)
			}
			defer conn.Close()
			log := slog.New(slog.DiscardHandler)
			h, gerr := gateway.New(context.Background(), conn, api.NewWebhookServer(failingIngester{err}, log), gateway.Options{Logger: log})
			if gerr != nil {
				t.Fatal(gerr)
			}
			srv := httptest.NewServer(h)
			defer srv.Close()
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
