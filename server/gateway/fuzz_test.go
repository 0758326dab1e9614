package gateway_test

import (
	"bytes"
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/otpless-events/otpless-events/internal/fixtures"
	"github.com/otpless-events/otpless-events/server/api"
	"github.com/otpless-events/otpless-events/server/gateway"
	"github.com/otpless-events/otpless-events/server/store"
)

// acceptingIngester stores nothing and answers as a healthy store would.
type acceptingIngester struct{}

func (acceptingIngester) Submit(_ context.Context, w store.Webhook) (store.Result, error) {
	return store.Result{Events: make([]store.EventResult, len(w.Events))}, nil
}

// FuzzWebhookHandler: whatever the body, the webhook route answers 2xx or
// 4xx, never a panic or a 5xx, with a healthy store.
func FuzzWebhookHandler(f *testing.F) {
	for _, d := range fixtures.Docs(f) {
		f.Add(d.Body)
	}
	for _, sc := range fixtures.Scenarios(f) {
		for _, b := range sc.Bodies {
			f.Add(b)
		}
	}
	f.Add([]byte(`{"data":{"metaData":[1,{"a":null}]},"eventType":"DLR","timestamp":"2024-13-45T99:00:00Z"}`))
	conn, err := grpc.NewClient("127.0.0.1:1", grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		f.Fatal(err)
	}
	defer conn.Close()
	log := slog.New(slog.DiscardHandler)
	h, err := gateway.New(context.Background(), conn, api.NewWebhookServer(acceptingIngester{}, log), gateway.Options{MaxBodyBytes: 64 << 10, Logger: log})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, gateway.WebhookPath, bytes.NewReader(body)))
		if rec.Code < 200 || rec.Code >= 500 {
			t.Fatalf("body %q: status %d %s", body, rec.Code, rec.Body)
		}
	})
}
