package gateway_test

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/encoding/protojson"

	eventsv1 "github.com/otpless-events/otpless-events/gen/otpless/events/v1"
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
	for _, refused := range []string{``, `[]`, `{}`, `{"status": 1}`, "{\"status\": \"\xff\"}", `{"eventType":"DLR","data":{"requestId":"r\u0000"}}`} {
		f.Add([]byte(refused))
	}
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
		// A refusal names its problem (the README's "400 naming the
		// problem"); an answer is the JSON of an IngestResponse.
		if rec.Code >= 400 {
			var st struct {
				Code    int    `json:"code"`
				Message string `json:"message"`
			}
			if err := json.Unmarshal(rec.Body.Bytes(), &st); err != nil || st.Code == 0 || strings.TrimSpace(st.Message) == "" {
				t.Fatalf("body %q: status %d without a problem named: %s (%v)", body, rec.Code, rec.Body, err)
			}
			return
		}
		var resp eventsv1.IngestResponse
		if err := protojson.Unmarshal(rec.Body.Bytes(), &resp); err != nil || len(resp.GetEvents()) == 0 {
			t.Fatalf("body %q: status %d with an answer that is not an IngestResponse: %s (%v)", body, rec.Code, rec.Body, err)
		}
	})
}
