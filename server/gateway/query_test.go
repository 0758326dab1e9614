package gateway

import (
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/otpless-events/otpless-events/server/api"
)

// A gateway reads its query while another is being built, as the servers
// of a process's tests are: the query parser grpc-gateway keeps for the
// whole process is set once, not by each New (which the race detector
// caught writing it under a gateway reading it).
func TestQueryReadWhileAnotherGatewayIsBuilt(t *testing.T) {
	t.Parallel()
	conn, err := grpc.NewClient("127.0.0.1:1", grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	log := slog.New(slog.DiscardHandler)
	build := func() (http.Handler, error) {
		return New(t.Context(), conn, api.NewWebhookServer(storingIngester{}, log), Options{Logger: log})
	}
	h, err := build()
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		if _, err := build(); err != nil {
			t.Error(err)
		}
	})
	w := httptest.NewRecorder()
	h.ServeHTTP(w, httptest.NewRequest(http.MethodGet, "/v1/requests/r1/events?page_sise=1", nil))
	wg.Wait()
	if w.Code != http.StatusBadRequest {
		t.Errorf("GET ?page_sise=1: %d %s, want 400", w.Code, w.Body)
	}
}
