package server_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/emptypb"

	eventsv1 "github.com/otpless-events/otpless-events/gen/otpless/events/v1"
	"github.com/otpless-events/otpless-events/internal/fixtures"
	"github.com/otpless-events/otpless-events/internal/testlog"
	"github.com/otpless-events/otpless-events/internal/testserver"
	"github.com/otpless-events/otpless-events/server"
	"github.com/otpless-events/otpless-events/server/api"
	"github.com/otpless-events/otpless-events/server/auth"
	"github.com/otpless-events/otpless-events/server/observe"
)

const (
	testAdminKey   = "test-admin-key"
	testReaderKey  = "test-reader-key"
	testWatcherKey = "test-watcher-key"
	testMinterKey  = "test-minter-key"
	testWebhookKey = "test-webhook-key-0123456789"
	testOldHookKey = "test-webhook-key-previous-1"
)

var testTokenKey = []byte("test-watch-token-key-0123456789abcdef")

// secured turns authentication on with one key per role.
func secured(mutate func(*server.Security)) func(*server.Config) {
	return func(c *server.Config) {
		keys, err := auth.ParseAPIKeys(strings.Join([]string{
			auth.FormatAPIKey("admin", testAdminKey, []auth.Scope{auth.ScopeAdmin}),
			auth.FormatAPIKey("reader", testReaderKey, []auth.Scope{auth.ScopeRead}),
			auth.FormatAPIKey("watcher", testWatcherKey, []auth.Scope{auth.ScopeWatch}),
			auth.FormatAPIKey("minter", testMinterKey, []auth.Scope{auth.ScopeMintWatchToken}),
		}, "\n"))
		if err != nil {
			panic(err)
		}
		c.Security = server.Security{
			APIKeys:        keys,
			WatchTokenKeys: [][]byte{testTokenKey},
			Webhook: auth.WebhookConfig{
				Keys:  []string{testWebhookKey, testOldHookKey},
				Basic: []auth.BasicCredential{{User: "otpless", Password: "basic-password"}},
			},
		}
		if mutate != nil {
			mutate(&c.Security)
		}
	}
}

func startSecured(t *testing.T, mutate func(*server.Security)) *testServer {
	t.Helper()
	ts := startServer(t, secured(mutate))
	ts.webhookPath = "/v1/webhooks/otpless/" + testWebhookKey
	return ts
}

func (ts *testServer) client(t *testing.T, bearer string) eventsv1.RequestServiceClient {
	t.Helper()
	var opts []grpc.DialOption
	if bearer != "" {
		opts = append(opts, grpc.WithPerRPCCredentials(auth.BearerCredentials{Token: bearer, Insecure: true}))
	}
	return eventsv1.NewRequestServiceClient(ts.dial(t, opts...))
}

// dial connects to the server's gRPC port in clear, sending no credential
// unless opts say so; the connection closes when the test ends.
func (ts *testServer) dial(t *testing.T, opts ...grpc.DialOption) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient(strings.TrimPrefix(ts.conn.Target(), "dns:///"),
		append(opts, grpc.WithTransportCredentials(insecure.NewCredentials()))...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// watchToken mints a token for id with the servers' key, as CreateWatchToken
// would.
func watchToken(id string, ttl time.Duration) string {
	signer, _ := auth.NewTokenSigner([][]byte{testTokenKey})
	tok, _ := signer.Mint(id, ttl)
	return tok
}

// A call without a valid credential is refused before its request message
// is read: the interceptors see a unary call only once the message has
// arrived, so a client sending none held its stream, and a goroutine, for
// ever (300 such streams on one connection held 300). Health stays public.
func TestCallsWithoutCredentialRefusedAtOnce(t *testing.T) {
	t.Parallel()
	ts := startSecured(t, nil)
	conn := ts.dial(t)
	for _, bearer := range []string{"", "ak_not-a-key-of-this-server-0123456789"} {
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
		if bearer != "" {
			ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+bearer)
		}
		// A stream that sends no message: GetRequest waits for one.
		stream, err := conn.NewStream(ctx, &grpc.StreamDesc{ServerStreams: true, ClientStreams: true}, eventsv1.RequestService_GetRequest_FullMethodName)
		if err == nil {
			err = stream.RecvMsg(new(eventsv1.GetRequestResponse))
		}
		cancel()
		if status.Code(err) != codes.Unauthenticated {
			t.Errorf("GetRequest with bearer %q and no message sent: %v, want UNAUTHENTICATED before any message", bearer, err)
		}
	}
	if _, err := healthpb.NewHealthClient(conn).Check(t.Context(), &healthpb.HealthCheckRequest{}); err != nil {
		t.Errorf("health check without a credential: %v", err)
	}
}

// A credential calling a method it may not call is refused before the
// call's message is read too: a watch token, which browsers hold, could
// otherwise open any number of Ingest streams and hold each by sending
// nothing. A method the server does not have is UNIMPLEMENTED for any valid
// credential, as grpc-go answers it: not PERMISSION_DENIED, as though it
// were an admin method the key lacks the scope of.
func TestCallsOutsideTheCredentialsScopeRefusedAtOnce(t *testing.T) {
	t.Parallel()
	ts := startSecured(t, nil)
	conn := ts.dial(t)
	token := watchToken("r1", time.Minute)
	for _, tc := range []struct {
		bearer, method string
		want           codes.Code
	}{
		{token, eventsv1.WebhookService_Ingest_FullMethodName, codes.PermissionDenied},
		{testReaderKey, eventsv1.WebhookService_Ingest_FullMethodName, codes.PermissionDenied},
		{token, "/otpless.events.v1.RequestService/NoSuchMethod", codes.Unimplemented},
		{testReaderKey, "/otpless.events.v1.RequestService/NoSuchMethod", codes.Unimplemented},
	} {
		ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
		ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+tc.bearer)
		stream, err := conn.NewStream(ctx, &grpc.StreamDesc{ServerStreams: true, ClientStreams: true}, tc.method)
		if err == nil {
			err = stream.RecvMsg(new(emptypb.Empty))
		}
		cancel()
		if status.Code(err) != tc.want {
			t.Errorf("%s with bearer %.12q… and no message sent: %v, want %v before any message", tc.method, tc.bearer, err, tc.want)
		}
	}
}

func TestWebhookAuthentication(t *testing.T) {
	t.Parallel()
	ts := startSecured(t, nil)
	body := dlr("auth-hook-req", "SENT", 1764153000000)
	tests := []struct {
		name, path string
		basic      [2]string
		want       int
	}{
		{"keyless route", "/v1/webhooks/otpless", [2]string{}, http.StatusUnauthorized},
		{"wrong key", "/v1/webhooks/otpless/not-the-key-0123456789", [2]string{}, http.StatusUnauthorized},
		{"wrong basic", "/v1/webhooks/otpless", [2]string{"otpless", "nope"}, http.StatusUnauthorized},
		{"current key", "/v1/webhooks/otpless/" + testWebhookKey, [2]string{}, http.StatusOK},
		{"previous key during rotation", "/v1/webhooks/otpless/" + testOldHookKey, [2]string{}, http.StatusOK},
		{"basic", "/v1/webhooks/otpless", [2]string{"otpless", "basic-password"}, http.StatusOK},
	}
	for i, tt := range tests {
		req, _ := http.NewRequest(http.MethodPost, ts.httpURL+tt.path, bytes.NewReader(body))
		if tt.basic[0] != "" {
			req.SetBasicAuth(tt.basic[0], tt.basic[1])
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tt.want {
			t.Fatalf("%s: %d %s, want %d", tt.name, resp.StatusCode, b, tt.want)
		}
		if i == 2 {
			// Nothing was stored by the rejected attempts.
			if r := ts.get(t, "/v1/requests/auth-hook-req"); r.code != http.StatusNotFound {
				t.Fatalf("after rejected webhooks: GET %d %s, want 404", r.code, r.body)
			}
		}
	}
}

// seedPII ingests a request carrying a phone number, email, identity and
// token, and returns its id.
func seedPII(t *testing.T, ts *testServer) string {
	t.Helper()
	for _, b := range fixtures.Named(t, "phone-and-email").Bodies {
		ts.ingest(t, b)
	}
	return "a6e5b8c7d0f9e2a1b4c3d5e6f7a8b9c0" // the email request of the scenario
}

func hasPII(s string) bool {
	for _, pii := range []string{"asha.rao@example.com", "9812345678", "tok_c4b3a2918f7e6d5c", "raw_body", "rawBody\":\"{"} {
		if strings.Contains(s, pii) {
			return true
		}
	}
	return false
}

func TestAPIKeysAndScopes(t *testing.T) {
	t.Parallel()
	ts := startSecured(t, nil)
	id := seedPII(t, ts)
	ctx := context.Background()

	for name, c := range map[string]eventsv1.RequestServiceClient{"none": ts.client(t, ""), "wrong": ts.client(t, "wrong-key")} {
		if _, err := c.GetRequest(ctx, &eventsv1.GetRequestRequest{RequestId: id}); status.Code(err) != codes.Unauthenticated {
			t.Errorf("%s credential: GetRequest %v, want Unauthenticated", name, err)
		}
	}
	// A large body is refused before anything reads it, credentials or not.
	big := []byte(`{"requestId":"` + strings.Repeat("a", 100<<10) + `"}`)
	if r := ts.do(t, http.MethodPost, "/v1/requests/"+id+":watchToken", "", big); r.code != http.StatusRequestEntityTooLarge {
		t.Errorf("a 100 KiB API body: %d %s, want 413", r.code, r.body)
	}
	for _, body := range [][]byte{big, []byte(`{"ttl":"10s"}`)} { // of unannounced length (chunked)
		req, err := http.NewRequest(http.MethodPost, ts.httpURL+"/v1/requests/"+id+":watchToken", io.MultiReader(bytes.NewReader(body)))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer "+testAdminKey)
		want := http.StatusOK
		if len(body) > 64<<10 {
			want = http.StatusRequestEntityTooLarge
		}
		if r := send(t, req); r.code != want {
			t.Errorf("a chunked API body of %d bytes: %d %s, want %d", len(body), r.code, r.body, want)
		}
	}
	for _, bearer := range []string{"", "wrong-key"} {
		if r := ts.do(t, http.MethodGet, "/v1/requests/"+id, bearer, nil); r.code != http.StatusUnauthorized || r.header.Get("WWW-Authenticate") != `Bearer realm="otpless-events"` {
			t.Errorf("GET with %q: %d, WWW-Authenticate %q; want 401 with a Bearer challenge", bearer, r.code, r.header.Get("WWW-Authenticate"))
		}
	}

	if r := ts.do(t, http.MethodGet, "/v1/requests/"+id, testReaderKey, nil); r.code != http.StatusOK || r.header.Get("Cache-Control") != "no-store" {
		t.Errorf("GET a request: %d, Cache-Control %q; want 200, not to be stored by caches", r.code, r.header.Get("Cache-Control"))
	} else {
		for name := range r.header {
			if strings.HasPrefix(name, "Grpc-") {
				t.Errorf("GET a request: header %s: %q", name, r.header.Get(name))
			}
		}
	}

	reader := ts.client(t, testReaderKey)
	got, err := reader.GetRequest(ctx, &eventsv1.GetRequestRequest{RequestId: id})
	if err != nil {
		t.Fatal(err)
	}
	if s := protojson.Format(got); hasPII(s) || got.GetRequest().GetStatus() != eventsv1.RequestStatus_REQUEST_STATUS_SUCCESS {
		t.Errorf("reader without read_pii got %s", s)
	}
	events, err := reader.ListRequestEvents(ctx, &eventsv1.ListRequestEventsRequest{RequestId: id})
	if err != nil {
		t.Fatal(err)
	}
	if s := protojson.Format(events); hasPII(s) || len(events.GetEvents()) == 0 {
		t.Errorf("reader without read_pii listed %s", s)
	}
	if r := ts.do(t, http.MethodGet, "/v1/requests/"+id+"/events", testReaderKey, nil); r.code != http.StatusOK || hasPII(string(r.body)) {
		t.Errorf("reader over HTTP: %d %s", r.code, r.body)
	}
	stream, err := reader.WatchRequest(ctx, &eventsv1.WatchRequestRequest{RequestId: id})
	if err == nil {
		_, err = stream.Recv()
	}
	if status.Code(err) != codes.PermissionDenied {
		t.Errorf("reader watching: %v, want PermissionDenied", err)
	}
	if r := ts.do(t, http.MethodGet, "/v1/requests/"+id+":watch", testReaderKey, nil); r.code != http.StatusForbidden {
		t.Errorf("reader watching over HTTP: %d, want 403", r.code)
	}

	admin, err := ts.requests.GetRequest(ctx, &eventsv1.GetRequestRequest{RequestId: id})
	if err != nil || admin.GetRequest().GetEmail() != "asha.rao@example.com" {
		t.Errorf("admin (read_pii) GetRequest = %v, %v; want the email", admin, err)
	}
}

func TestWatchTokens(t *testing.T) {
	t.Parallel()
	ts := startSecured(t, nil)
	id := seedPII(t, ts)
	other := "f5d4a7b6c9e8d1f0a3b2c4d5e6f7a8b9"
	ctx := context.Background()

	if _, err := ts.client(t, testReaderKey).CreateWatchToken(ctx, &eventsv1.CreateWatchTokenRequest{RequestId: id}); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("reader minting: %v, want PermissionDenied", err)
	}
	for _, ttl := range []string{"0s", "-5s"} {
		if r := ts.do(t, http.MethodPost, "/v1/requests/"+id+":watchToken", testMinterKey, []byte(`{"ttl":"`+ttl+`"}`)); r.code != http.StatusBadRequest || !strings.Contains(string(r.body), "positive") {
			t.Errorf("mint with ttl %s: %d %s, want 400 saying it must be positive", ttl, r.code, r.body)
		}
	}
	// A typo is refused, naming the field, rather than a token of the
	// default life.
	if r := ts.do(t, http.MethodPost, "/v1/requests/"+id+":watchToken", testMinterKey, []byte(`{"ttl_seconds":60}`)); r.code != http.StatusBadRequest || !strings.Contains(string(r.body), "ttl_seconds") {
		t.Errorf("mint with an unknown field: %d %s, want 400 naming it", r.code, r.body)
	}
	// The body's schema is ttl alone: a request id there, which the path
	// gives, is refused rather than a token for the path's request.
	for _, body := range []string{`{"requestId":"` + other + `"}`, `{"request_id":"` + id + `"}`} {
		if r := ts.do(t, http.MethodPost, "/v1/requests/"+id+":watchToken", testMinterKey, []byte(body)); r.code != http.StatusBadRequest || !strings.Contains(string(r.body), "requestId") {
			t.Errorf("mint with %s: %d %s, want 400 naming requestId", body, r.code, r.body)
		}
	}
	r := ts.do(t, http.MethodPost, "/v1/requests/"+id+":watchToken", testMinterKey, []byte(`{"ttl":"60s"}`))
	if r.code != http.StatusOK {
		t.Fatalf("mint over HTTP: %d %s", r.code, r.body)
	}
	minted := &eventsv1.CreateWatchTokenResponse{}
	if err := protojson.Unmarshal(r.body, minted); err != nil {
		t.Fatal(err)
	}
	if left := time.Until(minted.GetExpireTime().AsTime()); left <= 0 || left > 61*time.Second {
		t.Fatalf("token expires in %v, want about 60s", left)
	}
	tok := minted.GetToken()

	// Over gRPC as a bearer token: its own request only, without PII.
	byToken := ts.client(t, tok)
	stream, err := byToken.WatchRequest(ctx, &eventsv1.WatchRequestRequest{RequestId: id})
	if err != nil {
		t.Fatal(err)
	}
	first, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if s := protojson.Format(first); hasPII(s) || first.GetRequest().GetStatus() != eventsv1.RequestStatus_REQUEST_STATUS_SUCCESS {
		t.Errorf("watch by token sent %s", s)
	}
	stream, err = byToken.WatchRequest(ctx, &eventsv1.WatchRequestRequest{RequestId: other})
	if err == nil {
		_, err = stream.Recv()
	}
	if status.Code(err) != codes.PermissionDenied {
		t.Errorf("token for A watching B: %v, want PermissionDenied", err)
	}
	if _, err := byToken.CreateWatchToken(ctx, &eventsv1.CreateWatchTokenRequest{RequestId: id}); status.Code(err) != codes.PermissionDenied {
		t.Errorf("token minting tokens: %v, want PermissionDenied", err)
	}

	// Over HTTP as ?access_token=, as a browser's EventSource sends it.
	resp, err := http.Get(ts.httpURL + "/v1/requests/" + id + ":watch?access_token=" + tok)
	if err != nil {
		t.Fatal(err)
	}
	line, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || hasPII(string(line)) || !strings.Contains(string(line), "REQUEST_STATUS_SUCCESS") {
		t.Errorf("HTTP watch with access_token: %d %s", resp.StatusCode, line)
	}
	if r := ts.do(t, http.MethodGet, "/v1/requests/"+other+":watch?access_token="+tok, "", nil); r.code != http.StatusForbidden {
		t.Errorf("HTTP watch of B with A's token: %d, want 403", r.code)
	}

	// An expired token (signed with the server's key) no longer works.
	expired := watchToken(id, -time.Second)
	if r := ts.do(t, http.MethodGet, "/v1/requests/"+id+":watch?access_token="+expired, "", nil); r.code != http.StatusUnauthorized {
		t.Errorf("expired token: %d, want 401", r.code)
	}

	// An API key, even one that may watch, is refused in a URL, saying so:
	// URLs end up in proxies' logs and browsers' histories.
	// Not cached either, as no answer about requests is; and behind an
	// empty first value too.
	for i, query := range []string{"access_token=" + testAdminKey, "access_token=" + testWatcherKey, "access_token=&access_token=" + testAdminKey} {
		r := ts.do(t, http.MethodGet, "/v1/requests/"+id+":watch?"+query, "", nil)
		if r.code != http.StatusUnauthorized || !strings.Contains(string(r.body), "only a watch token") || r.header.Get("Cache-Control") != "no-store" {
			t.Errorf("an API key as access_token (query %d): %d %s, Cache-Control %q; want 401 saying only a watch token is taken, no-store",
				i, r.code, r.body, r.header.Get("Cache-Control"))
		}
	}
}

func TestWebhookRateLimit(t *testing.T) {
	t.Parallel()
	var logs testlog.Buffer
	ts := startServer(t, func(c *server.Config) {
		secured(func(s *server.Security) {
			s.Webhook.RatePerSecond, s.Webhook.Burst = 0.001, 2
			s.Webhook.FailureRatePerSecond, s.Webhook.FailureBurst = 0.001, 3
		})(c)
		c.Logger = slog.New(slog.NewJSONHandler(&logs, nil))
	})
	ts.webhookPath = "/v1/webhooks/otpless/" + testWebhookKey
	// Without credentials: refused, and none of the address's budget for
	// webhooks spent; failures have a budget of their own, so guessing is
	// limited too.
	for i := range 5 {
		want := http.StatusUnauthorized
		if i >= 3 {
			want = http.StatusTooManyRequests
		}
		if r := ts.post(t, "/v1/webhooks/otpless/not-the-key-0123456789", dlr("rate-req", "SENT", 1764153000000)); r.code != want {
			t.Fatalf("wrong key, attempt %d: %d %s, want %d", i+1, r.code, r.body, want)
		}
	}
	for i := range 2 {
		ts.ingest(t, dlr("rate-req", "SENT", 1764153000000+int64(i)))
	}
	r := ts.post(t, ts.webhookPath, dlr("rate-req", "DELIVERED", 1764153009000))
	if r.code != http.StatusTooManyRequests || r.header.Get("Retry-After") == "" {
		t.Fatalf("over the rate: %d (Retry-After %q) %s, want 429 with Retry-After", r.code, r.header.Get("Retry-After"), r.body)
	}
	// The log tells the two budgets apart: a wrong key's guesses limited
	// are not OTPLESS held back by --webhook-rate.
	for reason, want := range map[string]int{"failure_rate_limited": 2, "rate_limited": 1} {
		lines := logs.Matching(t, map[string]any{"msg": "http request", "status": float64(http.StatusTooManyRequests), "reason": reason})
		if len(lines) != want {
			t.Errorf("%d 429 lines with reason %s, want %d:\n%s", len(lines), reason, want, logs.String())
		}
		for _, l := range lines {
			if msg, _ := l["error"].(string); (reason == "failure_rate_limited") != strings.Contains(msg, "failed credentials") {
				t.Errorf("429 line with reason %s says %q", reason, msg)
			}
		}
	}
}

func TestWebhookAllowList(t *testing.T) {
	t.Parallel()
	ts := startSecured(t, func(s *server.Security) {
		s.Webhook.AllowedNets = []netip.Prefix{netip.MustParsePrefix("203.0.113.0/24")}
	})
	if r := ts.post(t, ts.webhookPath, dlr("cidr-req", "SENT", 1764153000000)); r.code != http.StatusForbidden {
		t.Fatalf("webhook from outside the allow-list: %d %s, want 403", r.code, r.body)
	}
}

// Behind a trusted proxy, a request's log line names the sender the
// proxy forwarded for as client, beside the proxy's own address: the lines
// of refused webhooks can be traced to who sent them.
func TestLogsNameTheClientBehindAProxy(t *testing.T) {
	t.Parallel()
	var logs testlog.Buffer
	ts := startServer(t, func(c *server.Config) {
		secured(func(s *server.Security) {
			s.Webhook.TrustedProxies = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}
		})(c)
		c.Logger = slog.New(slog.NewJSONHandler(&logs, nil))
	})
	if r := ts.do(t, http.MethodPost, "/v1/webhooks/otpless/wrong-key-0123456789", "", dlr("xff-req", "SENT", 1764153000000), "X-Forwarded-For", "203.0.113.7"); r.code != http.StatusUnauthorized {
		t.Fatalf("wrong key: %d %s, want 401", r.code, r.body)
	}
	lines := logs.Matching(t, map[string]any{"msg": "http request", "status": float64(401)})
	if len(lines) != 1 || lines[0]["client"] != "203.0.113.7" || !strings.HasPrefix(lines[0]["remote"].(string), "127.0.0.1:") {
		t.Fatalf("401 lines %v: want one naming client 203.0.113.7 and the proxy as remote", lines)
	}
	// Straight from the peer: remote says it all.
	if r := ts.do(t, http.MethodPost, "/v1/webhooks/otpless/wrong-key-0123456789", "", dlr("xff-req", "SENT", 1764153000000), observe.RequestIDHeader, "direct-1"); r.code != http.StatusUnauthorized {
		t.Fatalf("wrong key: %d %s, want 401", r.code, r.body)
	}
	if lines := logs.Matching(t, map[string]any{"msg": "http request", "request_id": "direct-1"}); len(lines) != 1 || lines[0]["client"] != nil {
		t.Errorf("lines of a direct request %v: want one, without client", lines)
	}
}

// HEAD on a request route answers as GET would, headers and all, without
// the body: a client may ask whether a request is known, and what its
// answer would weigh, without reading it.
func TestHeadAnswersAsGet(t *testing.T) {
	t.Parallel()
	ts := startSecured(t, nil)
	ts.ingest(t, dlr("head-req", "SENT", 1764153000000))
	for i := range 20 { // events past net/http's buffer: it would send them chunked, without a length
		ts.ingest(t, dlr("head-req", "SENT", 1764153001000+int64(i)*1000))
	}
	for _, tc := range []struct {
		path, bearer string
	}{
		{"/v1/requests/head-req", testAdminKey},
		{"/v1/requests/head-req/events", testAdminKey},
		{"/v1/requests/nobody", testAdminKey},
		{"/v1/requests/head-req", ""},
		{"/v1/requests/head-req", testWatcherKey},
	} {
		get := ts.do(t, http.MethodGet, tc.path, tc.bearer, nil)
		head := ts.do(t, http.MethodHead, tc.path, tc.bearer, nil)
		if head.code != get.code || len(head.body) != 0 || head.header.Get("Content-Type") != get.header.Get("Content-Type") ||
			head.header.Get("Content-Length") != strconv.Itoa(len(get.body)) {
			t.Errorf("%s as %q: HEAD %d %v %q; GET %d %v (%d bytes)", tc.path, tc.bearer, head.code, head.header, head.body, get.code, get.header, len(get.body))
		}
	}
}

func TestWatchStreamLimits(t *testing.T) {
	t.Parallel()
	ts := startSecured(t, func(s *server.Security) { s.MaxWatchesPerRequest, s.MaxWatchesPerCredential = 2, 3 })
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	watcher := ts.client(t, testWatcherKey)
	open := func(id string) error {
		stream, err := watcher.WatchRequest(ctx, &eventsv1.WatchRequestRequest{RequestId: id})
		if err == nil {
			_, err = stream.Recv()
		}
		return err
	}
	for _, id := range []string{"lim-a", "lim-a", "lim-b"} {
		if err := open(id); err != nil {
			t.Fatalf("watch %s: %v", id, err)
		}
	}
	// A refusal says when to try again, in a RetryInfo generated clients
	// read.
	for _, tc := range []struct{ id, what string }{{"lim-a", "third watch of one request"}, {"lim-c", "fourth watch of one credential"}} {
		err := open(tc.id)
		if status.Code(err) != codes.ResourceExhausted {
			t.Errorf("%s: %v, want ResourceExhausted", tc.what, err)
			continue
		}
		if d := retryInfoDelay(err); d != api.RetryStreamAfter {
			t.Errorf("%s: RetryInfo delay %v (details %v), want %v", tc.what, d, status.Convert(err).Details(), api.RetryStreamAfter)
		}
	}
	// The event stream runs WatchRequest in process, through the same
	// interceptors: the same credential is at its limit there too, and
	// another credential, or none, gets what the gRPC port would answer.
	for _, tt := range []struct {
		bearer string
		want   int
	}{
		{testWatcherKey, http.StatusTooManyRequests},
		{"", http.StatusUnauthorized},
		{testReaderKey, http.StatusForbidden}, // no watch scope
	} {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, ts.httpURL+"/v1/requests/lim-c:watch", nil)
		req.Header.Set("Accept", "text/event-stream")
		if tt.bearer != "" {
			req.Header.Set("Authorization", "Bearer "+tt.bearer)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != tt.want {
			t.Errorf("event stream with %q: %d, want %d", tt.bearer, resp.StatusCode, tt.want)
		}
		want := ""
		if tt.want == http.StatusTooManyRequests {
			want = "5"
		}
		if got := resp.Header.Get("Retry-After"); got != want {
			t.Errorf("event stream with %q: Retry-After %q, want %q", tt.bearer, got, want)
		}
	}
}

// One watch token cannot take all of its request's watch slots: past its
// own bound it is refused, as the other limits refuse, over gRPC and as
// ?access_token=, while another token of the same request still watches.
func TestWatchStreamsPerToken(t *testing.T) {
	t.Parallel()
	ts := startSecured(t, func(s *server.Security) { s.MaxWatchesPerToken, s.MaxWatchesPerRequest = 2, 20 })
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	const id = "per-token-limit"
	mint := func(ttl time.Duration) string { // tokens of one request differ by their expiry
		resp, err := ts.client(t, testMinterKey).CreateWatchToken(ctx, &eventsv1.CreateWatchTokenRequest{RequestId: id, Ttl: durationpb.New(ttl)})
		if err != nil {
			t.Fatal(err)
		}
		return resp.GetToken()
	}
	first, second := mint(time.Minute), mint(2*time.Minute)
	open := func(tok string) error {
		stream, err := ts.client(t, tok).WatchRequest(ctx, &eventsv1.WatchRequestRequest{RequestId: id})
		if err == nil {
			_, err = stream.Recv()
		}
		return err
	}
	for i := range 2 {
		if err := open(first); err != nil {
			t.Fatalf("watch %d by one token: %v", i+1, err)
		}
	}
	if err := open(first); status.Code(err) != codes.ResourceExhausted || !strings.Contains(err.Error(), "watch token") || retryInfoDelay(err) != api.RetryStreamAfter {
		t.Errorf("a third watch by one token: %v, want ResourceExhausted naming the watch token, with a RetryInfo of %v", err, api.RetryStreamAfter)
	}
	if r := ts.do(t, http.MethodGet, "/v1/requests/"+id+":watch?access_token="+first, "", nil, "Accept", "text/event-stream"); r.code != http.StatusTooManyRequests {
		t.Errorf("an event stream by that token: %d %s, want 429", r.code, r.body)
	}
	if err := open(second); err != nil {
		t.Errorf("a watch by another token of the request: %v", err)
	}
}

// retryInfoDelay is the delay of err's google.rpc.RetryInfo, or -1.
func retryInfoDelay(err error) time.Duration {
	for _, d := range status.Convert(err).Details() {
		if ri, ok := d.(*errdetails.RetryInfo); ok {
			return ri.GetRetryDelay().AsDuration()
		}
	}
	return -1
}

func TestLogsCarryNoPII(t *testing.T) {
	t.Parallel()
	var logs testlog.Buffer
	ts := startServer(t, func(c *server.Config) {
		secured(nil)(c)
		c.Logger = slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	})
	ts.webhookPath = "/v1/webhooks/otpless/" + testWebhookKey
	id := seedPII(t, ts)
	ts.do(t, http.MethodGet, "/v1/requests/"+id, testAdminKey, nil)
	ts.post(t, "/v1/webhooks/otpless/wrong-key-0123456789", []byte(`{"token":"tok_c4b3a2918f7e6d5c"}`))
	if hasPII(logs.String()) || strings.Contains(logs.String(), testWebhookKey) {
		t.Fatalf("logs carry personal data or secrets:\n%s", logs.String())
	}
	var n int
	for _, line := range strings.Split(strings.TrimSpace(logs.String()), "\n") {
		var m map[string]any
		if json.Unmarshal([]byte(line), &m) == nil {
			n++
		}
	}
	if n == 0 {
		t.Fatal("no log line written: the check above proved nothing")
	}
}

// Personal data and raw bodies go after the retention period; the status
// history stays.
func TestRetentionPurgesPersonalData(t *testing.T) {
	t.Parallel()
	ts := startServer(t, func(c *server.Config) {
		c.PIIRetention, c.RetentionInterval = time.Millisecond, 20*time.Millisecond
	})
	id := seedPII(t, ts)
	deadline := time.Now().Add(20 * time.Second)
	for {
		r := ts.get(t, "/v1/requests/"+id+"/events")
		if r.code != http.StatusOK {
			t.Fatalf("list events: %d %s", r.code, r.body)
		}
		if !hasPII(string(r.body)) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("personal data still there after the retention period: %s", r.body)
		}
		time.Sleep(20 * time.Millisecond)
	}
	got, err := ts.requests.GetRequest(context.Background(), &eventsv1.GetRequestRequest{RequestId: id})
	if err != nil {
		t.Fatal(err)
	}
	if s := protojson.Format(got); hasPII(s) || got.GetRequest().GetStatus() != eventsv1.RequestStatus_REQUEST_STATUS_SUCCESS || len(got.GetRequest().GetChannels()) == 0 {
		t.Fatalf("after purge the snapshot is %s; want the status history without personal data", s)
	}
}

// A client that sends its headers too slowly is cut off.
func TestSlowHeadersAreCutOff(t *testing.T) {
	t.Parallel()
	ts := startServer(t, func(c *server.Config) { c.HTTPReadHeaderTimeout = 200 * time.Millisecond })
	conn, err := net.Dial("tcp", strings.TrimPrefix(ts.httpURL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.Write([]byte("POST /v1/webhooks/otpless HTTP/1.1\r\nHost: x\r\n")); err != nil {
		t.Fatal(err)
	}
	conn.SetReadDeadline(time.Now().Add(20 * time.Second))
	if _, err := io.ReadAll(conn); err != nil {
		t.Fatalf("the server did not close a connection stuck in its headers: %v", err)
	}
}

// TestWatchRouteAnswersAsTheAPI: both forms of the watch route, newline-
// delimited JSON and Server-Sent Events, refuse as the rest of the API does
// (the status in the body as {"code", "message"}, a 401's challenge) and
// read the query alike: after_revision or afterRevision, once, well formed.
func TestWatchRouteAnswersAsTheAPI(t *testing.T) {
	t.Parallel()
	ts := startSecured(t, nil)
	id := seedPII(t, ts) // a finished request: its watches end after the first message
	var got struct {
		Request struct {
			Revision string `json:"revision"`
		} `json:"request"`
	}
	if r := ts.get(t, "/v1/requests/"+id); r.code != http.StatusOK || json.Unmarshal(r.body, &got) != nil {
		t.Fatalf("GET: %d %s", r.code, r.body)
	}
	for _, accept := range []string{"", "text/event-stream"} {
		for _, tc := range []struct {
			query, bearer string
			code          int
			want          string
		}{
			{"", "", http.StatusUnauthorized, `"code":16`},
			{"?after_revision=-1", testAdminKey, http.StatusBadRequest, `"code":3`},
			{"?after_revision=abc", testAdminKey, http.StatusBadRequest, `"code":3`},
			{"?after_revision=%zz", testAdminKey, http.StatusBadRequest, `"code":3`},
			{"?after_revision=1&after_revision=2", testAdminKey, http.StatusBadRequest, `"code":3`},
			{"?afterRevision=" + got.Request.Revision, testAdminKey, http.StatusOK, "HEARTBEAT"},
			{"?after_revision=" + got.Request.Revision, testAdminKey, http.StatusOK, "HEARTBEAT"},
			{"", testAdminKey, http.StatusOK, "SNAPSHOT"},
		} {
			if accept != "" && tc.want == "HEARTBEAT" {
				// A resume at a finished request's last revision: an
				// event stream's is answered 204 No Content.
				tc.code, tc.want = http.StatusNoContent, ""
			}
			r := ts.do(t, http.MethodGet, "/v1/requests/"+id+":watch"+tc.query, tc.bearer, nil, "Accept", accept)
			body := strings.ReplaceAll(string(r.body), " ", "")
			if accept != "" && tc.code == http.StatusOK {
				body = strings.ToUpper(body) // event: snapshot
			}
			if r.code != tc.code || !strings.Contains(body, tc.want) || strings.HasPrefix(body, `{"error"`) ||
				(tc.code == http.StatusNoContent && body != "") {
				t.Errorf("watch%s (Accept %q): %d %s, want %d with %q", tc.query, accept, r.code, r.body, tc.code, tc.want)
			}
			if tc.code == http.StatusUnauthorized && r.header.Get("WWW-Authenticate") == "" {
				t.Errorf("watch%s (Accept %q): 401 without WWW-Authenticate", tc.query, accept)
			}
			for name := range r.header {
				if strings.HasPrefix(name, "Grpc-Metadata-") {
					t.Errorf("watch%s (Accept %q): header %s: %q", tc.query, accept, name, r.header.Get(name))
				}
			}
		}
	}
	// A reconnecting EventSource's Last-Event-ID comes before the query,
	// which must still be well formed (the request is finished, and the
	// client has its last revision: 204).
	for query, want := range map[string]int{"?after_revision=0": http.StatusNoContent, "?after_revision=abc": http.StatusBadRequest} {
		r := ts.do(t, http.MethodGet, "/v1/requests/"+id+":watch"+query, testAdminKey, nil, "Accept", "text/event-stream", "Last-Event-ID", got.Request.Revision)
		if r.code != want || (want == http.StatusNoContent && len(r.body) != 0) {
			t.Errorf("watch%s with Last-Event-ID %s: %d %s, want %d (without a body when 204)", query, got.Request.Revision, r.code, r.body, want)
		}
	}
}

// TestHugeHeaderListsAreRefused: gRPC headers are bounded as the HTTP
// port's are, not by grpc-go's 16 MiB, which let every connection make
// the server hold 16 MiB of metadata for one call; a header the HTTP port
// takes still reaches the credential check through the gateway (401, not
// an error of the in-process call).
func TestHugeHeaderListsAreRefused(t *testing.T) {
	t.Parallel()
	ts := startSecured(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	huge := metadata.AppendToOutgoingContext(ctx, "x-pad", strings.Repeat("x", 4<<20))
	_, err := ts.client(t, testAdminKey).GetRequest(huge, &eventsv1.GetRequestRequest{RequestId: "r1"})
	if code := status.Code(err); code == codes.OK || code == codes.NotFound {
		t.Errorf("a call with 4 MiB of metadata: %v, want it refused", err)
	}
	// The largest header the HTTP port reads, as a credential.
	r := ts.do(t, http.MethodGet, "/v1/requests/r1", strings.Repeat("x", 1<<20), nil)
	if r.code != http.StatusUnauthorized {
		t.Errorf("GET with a 1 MiB Authorization header: %d %s, want 401", r.code, r.body)
	}
}

// A call whose request message never comes ends once --http-read-timeout
// has passed, credential or not, rather than holding its stream for as
// long as the client keeps the connection; a call whose message came (a
// watch) lives on.
func TestCallsWaitForTheirMessageBoundedly(t *testing.T) {
	t.Parallel()
	// Long enough that a loaded machine reads a watch's message, sent with
	// its headers, well within it; the HTTP port's reads have it too.
	const wait = 2 * time.Second
	ts := startServer(t, func(c *server.Config) { c.HTTPReadTimeout = wait })
	unsent, stop := context.WithTimeout(t.Context(), 10*time.Second)
	stream, err := ts.conn.NewStream(unsent, &grpc.StreamDesc{ServerStreams: true, ClientStreams: true}, eventsv1.RequestService_GetRequest_FullMethodName)
	if err == nil {
		err = stream.RecvMsg(new(eventsv1.GetRequestResponse))
	}
	stop()
	if status.Code(err) != codes.Canceled {
		t.Errorf("GetRequest whose message never came: %v, want CANCELED by the server", err)
	}

	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	watch, err := ts.requests.WatchRequest(ctx, &eventsv1.WatchRequestRequest{RequestId: "waits-req"})
	if err != nil {
		t.Fatal(err)
	}
	if m, err := watch.Recv(); err != nil || m.GetType() != eventsv1.WatchMessageType_WATCH_MESSAGE_TYPE_SNAPSHOT {
		t.Fatalf("first watch message: %v, %v", m, err)
	}
	time.Sleep(2 * wait) // past the bound: the watch is not cut
	ts.ingest(t, dlr("waits-req", "SENT", 1764153000000))
	if m, err := watch.Recv(); err != nil || m.GetType() != eventsv1.WatchMessageType_WATCH_MESSAGE_TYPE_UPDATE {
		t.Errorf("a watch past the message bound: %v, %v; want its UPDATE", m, err)
	}
}

// TestIdleGRPCConnectionsAreClosed: a gRPC connection on which no call is
// in flight is closed after --http-idle-timeout, as an idle connection of
// the HTTP port is. grpc-go keeps one as long as its client answers the
// keepalive pings (which every HTTP/2 client does by itself), so a client
// without any credential could hold connections, each with three
// goroutines and about 40 KiB, and file descriptors the HTTP port shares,
// for as long as it liked.
func TestIdleGRPCConnectionsAreClosed(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t, func(c *server.Config) {
		secured(nil)(c)
		c.HTTPIdleTimeout = 200 * time.Millisecond
	})
	conn := srv.Dial(t) // no credential, and no call
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	conn.Connect()
	for s := conn.GetState(); s != connectivity.Ready; s = conn.GetState() {
		if !conn.WaitForStateChange(ctx, s) {
			t.Fatalf("the connection never became ready: %v", s)
		}
	}
	if !conn.WaitForStateChange(ctx, connectivity.Ready) {
		t.Fatal("a gRPC connection without a call was kept open for 30 s; want it closed after --http-idle-timeout")
	}
}

// TestSilentGRPCConnectionsAreClosed: a connection to the gRPC port that
// never completes its HTTP/2 handshake is closed after
// --http-read-header-timeout, as one that sends the HTTP port no headers
// is; grpc-go's own bound is 120 s.
func TestSilentGRPCConnectionsAreClosed(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t, func(c *server.Config) {
		secured(nil)(c)
		c.HTTPReadHeaderTimeout = 200 * time.Millisecond
	})
	conn, err := net.Dial("tcp", srv.GRPCAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetReadDeadline(time.Now().Add(30 * time.Second))
	if _, err := io.Copy(io.Discard, conn); errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatal("a connection that sent nothing was kept open for 30 s; want it closed after --http-read-header-timeout")
	}
}
