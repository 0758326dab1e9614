package server

// Tests of --max-watches, the bound of watch streams in all: over gRPC, as
// Server-Sent Events and as newline-delimited JSON, by API keys and watch
// tokens alike.

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"

	spb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"

	eventsv1 "github.com/otpless-events/otpless-events/gen/otpless/events/v1"
	"github.com/otpless-events/otpless-events/internal/fixtures"
	"github.com/otpless-events/otpless-events/internal/ssetest"
	"github.com/otpless-events/otpless-events/server/api"
	"github.com/otpless-events/otpless-events/server/auth"
)

// The API keys of startWatchLimits: two that may watch, one that mints
// watch tokens; and its webhook key.
const (
	limitKeyOne     = "limits-watch-key-one"
	limitKeyTwo     = "limits-watch-key-two"
	limitMinterKey  = "limits-minter-key"
	limitWebhookKey = "limits-webhook-key-0123456789"
)

// The series the refusals of a watch for a limit on open streams are
// counted in, whatever the transport (the gateway's streams run
// WatchRequest through the same interceptors), and the HTTP answers among
// them.
const (
	watchesExhausted = `grpc_server_handled_total{grpc_code="ResourceExhausted",grpc_method="WatchRequest",grpc_service="otpless.events.v1.RequestService",grpc_type="server_stream"}`
	watches429       = `otpless_events_http_requests_total{code="429",route="watch"}`
)

// startWatchLimits runs a server with authentication on, metrics, and the
// watch limits mutate sets.
func startWatchLimits(t *testing.T, mutate func(*Security)) *opsServer {
	t.Helper()
	keys, err := auth.ParseAPIKeys(strings.Join([]string{
		auth.FormatAPIKey("one", limitKeyOne, []auth.Scope{auth.ScopeWatch}),
		auth.FormatAPIKey("two", limitKeyTwo, []auth.Scope{auth.ScopeWatch}),
		auth.FormatAPIKey("minter", limitMinterKey, []auth.Scope{auth.ScopeMintWatchToken}),
	}, "\n"))
	if err != nil {
		t.Fatal(err)
	}
	return startOps(t, func(c *Config) {
		c.Security = Security{APIKeys: keys, WatchTokenKeys: [][]byte{[]byte("limits-watch-token-key-0123456789abcdef")},
			Webhook: auth.WebhookConfig{Keys: []string{limitWebhookKey}}}
		mutate(&c.Security)
	}, nil)
}

// mint returns a watch token for id.
func (s *opsServer) mint(t *testing.T, id string) string {
	t.Helper()
	ctx := metadata.AppendToOutgoingContext(t.Context(), "authorization", "Bearer "+limitMinterKey)
	resp, err := eventsv1.NewRequestServiceClient(s.conn).CreateWatchToken(ctx, &eventsv1.CreateWatchTokenRequest{RequestId: id})
	if err != nil {
		t.Fatal(err)
	}
	return resp.GetToken()
}

// watchGRPC opens a watch of id over gRPC with bearer (an API key or a
// watch token) and reads its first message; ending ctx ends it.
func (s *opsServer) watchGRPC(ctx context.Context, bearer, id string) (grpc.ServerStreamingClient[eventsv1.WatchRequestResponse], error) {
	ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+bearer)
	stream, err := eventsv1.NewRequestServiceClient(s.conn).WatchRequest(ctx, &eventsv1.WatchRequestRequest{RequestId: id})
	if err == nil {
		_, err = stream.Recv()
	}
	return stream, err
}

// httpWatch is the answer to a watch on the HTTP route.
type httpWatch struct {
	code   int
	header http.Header
	body   []byte // a refusal's
	leave  func() // the client leaves an admitted stream
}

// watchHTTP opens a watch of id on the HTTP route, as an event stream (sse)
// or newline-delimited JSON, with an API key in Authorization or a watch
// token in ?access_token=, and reads its first message when admitted.
func (s *opsServer) watchHTTP(t *testing.T, id, apiKey, token string, sse bool) httpWatch {
	t.Helper()
	u := s.httpURL + "/v1/requests/" + id + ":watch"
	if token != "" {
		u += "?access_token=" + url.QueryEscape(token)
	}
	ctx, cancel := context.WithCancel(t.Context())
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		t.Fatal(err)
	}
	if sse {
		req.Header.Set("Accept", "text/event-stream")
	}
	if apiKey != "" {
		req.Header.Set("Authorization", "Bearer "+apiKey)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	w := httpWatch{code: resp.StatusCode, header: resp.Header, leave: func() { cancel(); resp.Body.Close() }}
	if resp.StatusCode != http.StatusOK {
		w.body, err = io.ReadAll(resp.Body)
		w.leave()
		if err != nil {
			t.Fatal(err)
		}
		return w
	}
	if sse {
		_, err = ssetest.NewReader(resp.Body).NextEvent()
	} else {
		_, err = bufio.NewReader(resp.Body).ReadBytes('\n')
	}
	if err != nil {
		w.leave()
		t.Fatalf("first message of the watch of %s: %v", id, err)
	}
	return w
}

// refusedInAll reports what is wrong with err for a watch refused for the
// bound in all of limit: RESOURCE_EXHAUSTED naming it, with a RetryInfo of
// api.RetryStreamAfter.
func refusedInAll(err error, limit int) error {
	st := status.Convert(err)
	want := fmt.Sprintf("too many watch streams on this server (limit %d)", limit)
	if st.Code() != codes.ResourceExhausted || st.Message() != want {
		return fmt.Errorf("%v %q, want ResourceExhausted %q", st.Code(), st.Message(), want)
	}
	if d := st.Details(); len(d) != 1 || !isRetryInfo(d[0], api.RetryStreamAfter) {
		return fmt.Errorf("details %v, want a RetryInfo of %v", d, api.RetryStreamAfter)
	}
	return nil
}

// refusedInAllHTTP is refusedInAll for the HTTP route: 429 with
// Retry-After, and the status in the body as the gateway writes any error.
func refusedInAllHTTP(w httpWatch, limit int) error {
	if w.code != http.StatusTooManyRequests || w.header.Get("Retry-After") != "5" {
		return fmt.Errorf("%d with Retry-After %q (%s), want 429 with Retry-After 5", w.code, w.header.Get("Retry-After"), w.body)
	}
	var body spb.Status
	if err := protojson.Unmarshal(w.body, &body); err != nil {
		return fmt.Errorf("body %s: %v", w.body, err)
	}
	return refusedInAll(status.FromProto(&body).Err(), limit)
}

// Past --max-watches, a watch is refused over each transport, whatever
// its credential, as the other watch limits refuse, and counted where
// they are; a place comes back as a stream ends, whichever way it ends.
func TestMaxWatchesAcrossTransports(t *testing.T) {
	t.Parallel()
	const limit = 3
	s := startWatchLimits(t, func(sec *Security) { sec.MaxWatches = limit })

	// Three streams, one of each transport, by three credentials.
	grpcCtx, leaveGRPC := context.WithCancel(t.Context())
	defer leaveGRPC()
	if _, err := s.watchGRPC(grpcCtx, limitKeyOne, "all-a"); err != nil {
		t.Fatalf("watch 1 (gRPC): %v", err)
	}
	sse := s.watchHTTP(t, "all-b", "", s.mint(t, "all-b"), true)
	ndjson := s.watchHTTP(t, "all-c", limitKeyTwo, "", false)
	if sse.code != http.StatusOK || ndjson.code != http.StatusOK {
		t.Fatalf("watches 2 (SSE) and 3 (NDJSON): %d %s, %d %s", sse.code, sse.body, ndjson.code, ndjson.body)
	}

	// The fourth is refused over each transport, by credentials and for
	// requests far from their own bounds.
	_, err := s.watchGRPC(t.Context(), limitKeyTwo, "all-d")
	if err := refusedInAll(err, limit); err != nil {
		t.Errorf("a fourth watch over gRPC: %v", err)
	}
	if err := refusedInAllHTTP(s.watchHTTP(t, "all-e", "", s.mint(t, "all-e"), true), limit); err != nil {
		t.Errorf("a fourth watch as Server-Sent Events, by a watch token: %v", err)
	}
	if err := refusedInAllHTTP(s.watchHTTP(t, "all-d", limitKeyOne, "", false), limit); err != nil {
		t.Errorf("a fourth watch as NDJSON: %v", err)
	}
	if !eventually(func() bool {
		m := s.scrape(t)
		return m[watchesExhausted] == 3 && m[watches429] == 2
	}) {
		m := s.scrape(t)
		t.Errorf("%s = %v, %s = %v after three refusals, two of them over HTTP; want 3 and 2", watchesExhausted, m[watchesExhausted], watches429, m[watches429])
	}

	// admitted waits until a stream is admitted in the place one left,
	// then checks that no other place is free.
	admitted := func(what string, open func() error) {
		t.Helper()
		if !eventually(func() bool { return open() == nil }) {
			t.Fatalf("%s: not admitted once a stream ended", what)
		}
		_, err := s.watchGRPC(t.Context(), limitKeyTwo, "all-f")
		if err := refusedInAll(err, limit); err != nil {
			t.Fatalf("after %s, another: %v", what, err)
		}
	}
	// The event stream's client leaves: a gRPC watch takes its place.
	sse.leave()
	var done grpc.ServerStreamingClient[eventsv1.WatchRequestResponse]
	sc := fixtures.Named(t, "whatsapp-happy-path")
	finished := fixtures.Events(t, sc.Bodies[0])[0].GetRequestId()
	admitted("a gRPC watch after an event stream left", func() (err error) {
		done, err = s.watchGRPC(t.Context(), limitKeyOne, finished)
		return err
	})
	// The gRPC client leaves: an event stream takes its place.
	leaveGRPC()
	admitted("an event stream after a gRPC watch left", func() error {
		if w := s.watchHTTP(t, "all-g", limitKeyOne, "", true); w.code != http.StatusOK {
			return fmt.Errorf("%d %s", w.code, w.body)
		}
		return nil
	})
	// The server ends a watch, its request finished: an NDJSON stream
	// takes its place.
	for _, b := range sc.Bodies {
		if code, _, body := do(t, http.MethodPost, s.httpURL+"/v1/webhooks/otpless/"+limitWebhookKey, string(b)); code != http.StatusOK {
			t.Fatalf("POST webhook: %d %s", code, body)
		}
	}
	for {
		if _, err := done.Recv(); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatalf("the watch of a request that finished: %v, want its end", err)
		}
	}
	admitted("an NDJSON stream after a finished request's watch ended", func() error {
		if w := s.watchHTTP(t, "all-h", limitKeyTwo, "", false); w.code != http.StatusOK {
			return fmt.Errorf("%d %s", w.code, w.body)
		}
		return nil
	})
	ndjson.leave()
}

// A watch refused by one bound holds no place in another: the bound in all
// is checked after a client's own (which it is then told of), and a
// refusal by the bound in all gives back the places the client's own
// bounds had given it.
func TestMaxWatchesRefusalsHoldNothing(t *testing.T) {
	t.Parallel()
	const limit = 3
	s := startWatchLimits(t, func(sec *Security) {
		sec.MaxWatches = limit
		sec.MaxWatchesPerCredential, sec.MaxWatchesPerToken, sec.MaxWatchesPerRequest = 1, 1, 1
	})
	first, leaveFirst := context.WithCancel(t.Context())
	defer leaveFirst()
	if _, err := s.watchGRPC(first, limitKeyOne, "hold-a"); err != nil {
		t.Fatal(err)
	}
	// Refused for its credential, more often than the bound in all has
	// places left.
	for i := range limit {
		if _, err := s.watchGRPC(t.Context(), limitKeyOne, "hold-b"); status.Code(err) != codes.ResourceExhausted || !strings.Contains(err.Error(), "for this credential") {
			t.Fatalf("refusal %d for a credential at its bound: %v", i+1, err)
		}
	}
	// The bound in all still has its two places.
	if _, err := s.watchGRPC(t.Context(), limitKeyTwo, "hold-c"); err != nil {
		t.Fatalf("a second watch in all after refusals for a credential: %v", err)
	}
	if w := s.watchHTTP(t, "hold-d", "", s.mint(t, "hold-d"), true); w.code != http.StatusOK {
		t.Fatalf("a third watch in all after refusals for a credential: %d %s", w.code, w.body)
	}
	// A token, its credential and its request each at a bound of 1: a
	// place left taken by a refusal in all would name one of them next.
	token := s.mint(t, "hold-e")
	for i := range limit {
		_, err := s.watchGRPC(t.Context(), token, "hold-e")
		if err := refusedInAll(err, limit); err != nil {
			t.Fatalf("refusal %d in all: %v", i+1, err)
		}
	}
	if err := refusedInAllHTTP(s.watchHTTP(t, "hold-e", "", token, true), limit); err != nil {
		t.Fatalf("refusal in all as an event stream: %v", err)
	}
	leaveFirst()
	if !eventually(func() bool {
		_, err := s.watchGRPC(t.Context(), token, "hold-e")
		return err == nil
	}) {
		_, err := s.watchGRPC(t.Context(), token, "hold-e")
		t.Fatalf("once a stream ended, the token refused in all: %v", err)
	}
}

// --max-watches 0 bounds nothing.
func TestMaxWatchesZeroIsUnlimited(t *testing.T) {
	t.Parallel()
	s := startWatchLimits(t, func(sec *Security) { sec.MaxWatches = 0 })
	for i := range 50 {
		if _, err := s.watchGRPC(t.Context(), limitKeyOne, fmt.Sprintf("free-%d", i)); err != nil {
			t.Fatalf("gRPC watch %d: %v", i+1, err)
		}
	}
	if w := s.watchHTTP(t, "free-sse", "", s.mint(t, "free-sse"), true); w.code != http.StatusOK {
		t.Fatalf("an event stream after 50 gRPC watches: %d %s", w.code, w.body)
	}
	if w := s.watchHTTP(t, "free-ndjson", limitKeyTwo, "", false); w.code != http.StatusOK {
		t.Fatalf("an NDJSON stream after 50 gRPC watches: %d %s", w.code, w.body)
	}
	if got := s.scrape(t)[watchesExhausted]; got != 0 {
		t.Errorf("%s = %v, want 0", watchesExhausted, got)
	}
}
