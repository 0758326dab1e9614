package gateway

import (
	"crypto/sha256"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/otpless-events/otpless-events/server/api"
	"github.com/otpless-events/otpless-events/server/auth"
)

// An API request's body is read only once its Authorization header holds
// a valid credential: a caller without one is refused (401, with the
// Bearer challenge) at the cost of its headers alone. No route outside the
// API reads a body.
func TestAPIBodiesReadOnlyOnceAuthenticated(t *testing.T) {
	t.Parallel()
	h := keyedGateway(t, Options{})
	for _, tc := range []struct {
		name, path, authorization string
		want                      int // 0: any
		read                      bool
	}{
		{"no credential", "/v1/requests/r1:watchToken", "", http.StatusUnauthorized, false},
		{"an unknown key", "/v1/requests/r1:watchToken", "Bearer oek_not-a-key", http.StatusUnauthorized, false},
		{"not a bearer", "/v1/requests/r1:watchToken", "Basic " + key, http.StatusUnauthorized, false},
		{"a forged watch token", "/v1/requests/r1:watchToken", "Bearer owt1.e30.AAAA", http.StatusUnauthorized, false},
		{"a key", "/v1/requests/r1:watchToken", "Bearer " + key, 0, true},
		{"the status page", "/ui/", "", 0, false},
		// No route: 404, as without a body, not a refusal of credentials
		// its sender (OTPLESS, at a mistyped webhook URL) may well hold.
		{"a mistyped webhook URL", "/v1/webhook/otpless/wk_0123456789abcdef", "", http.StatusNotFound, false},
		{"a path of no API", "/v1/nothing", "", http.StatusNotFound, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			reads := 0
			r := httptest.NewRequest(http.MethodPost, tc.path, readCounter{strings.NewReader(`{}`), &reads})
			if tc.authorization != "" {
				r.Header.Set("Authorization", tc.authorization)
			}
			w := httptest.NewRecorder()
			h.ServeHTTP(w, r)
			if (tc.want != 0 && w.Code != tc.want) || (reads > 0) != tc.read {
				t.Errorf("%d, body read %v; want %d, read %v", w.Code, reads > 0, tc.want, tc.read)
			}
			if w.Code == http.StatusUnauthorized && !strings.HasPrefix(w.Header().Get("WWW-Authenticate"), "Bearer ") {
				t.Errorf("401 with WWW-Authenticate %q, want the Bearer challenge", w.Header().Get("WWW-Authenticate"))
			}
			// net/http would read the unread body on, to reuse the connection.
			if w.Code == http.StatusUnauthorized && w.Header().Get("Connection") != "close" {
				t.Errorf("401 with Connection %q, want close", w.Header().Get("Connection"))
			}
		})
	}
}

// A body whose Content-Length is over its route's bound gets 413 at once,
// unread, and its connection is closed after the answer, on the API (with
// a credential or without) as on the webhook route: else net/http reads
// on, up to 256 KiB, to reuse the connection.
func TestAnnouncedOversizedBodiesCloseTheConnection(t *testing.T) {
	t.Parallel()
	h := keyedGateway(t, Options{MaxBodyBytes: 4 << 10})
	for _, tc := range []struct {
		name, path, authorization string
		announced                 int64
	}{
		{"an API body, no credential", "/v1/requests/r1:watchToken", "", maxAPIBodyBytes + 1},
		{"an API body, a key", "/v1/requests/r1:watchToken", "Bearer " + key, maxAPIBodyBytes + 1},
		{"a webhook", WebhookPath, "", 4<<10 + 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			reads := 0
			r := httptest.NewRequest(http.MethodPost, tc.path, readCounter{strings.NewReader(`{}`), &reads})
			r.ContentLength = tc.announced
			if tc.authorization != "" {
				r.Header.Set("Authorization", tc.authorization)
			}
			w := httptest.NewRecorder()
			h.ServeHTTP(w, r)
			if w.Code != http.StatusRequestEntityTooLarge || reads > 0 || w.Header().Get("Connection") != "close" {
				t.Errorf("%d, body read %v, Connection %q; want 413, unread, close", w.Code, reads > 0, w.Header().Get("Connection"))
			}
		})
	}
}

// key is the one API key of keyedGateway's keyring, with the
// mint_watch_token scope.
const key = "oek_0123456789abcdef0123456789abcdef"

// keyedGateway is the gateway with opts, key in its keyring, a discarding
// log, and a gRPC connection that reaches nothing: for what the gateway
// answers before any call.
func keyedGateway(t *testing.T, opts Options) http.Handler {
	t.Helper()
	conn, err := grpc.NewClient("127.0.0.1:1", grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	opts.Keyring = auth.NewKeyring([]auth.APIKey{{Name: "web", Hash: sha256.Sum256([]byte(key)), Scopes: []auth.Scope{auth.ScopeMintWatchToken}}}, nil)
	opts.Logger = slog.New(slog.DiscardHandler)
	h, err := New(t.Context(), conn, api.NewWebhookServer(storingIngester{}, opts.Logger), opts)
	if err != nil {
		t.Fatal(err)
	}
	return h
}
