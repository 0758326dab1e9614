package gateway

import (
	"context"
	"encoding/base64"
	"io"
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
		{http.MethodPost, WebhookPath + "/", true}, // the mux takes an empty key too
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
	guard, err := auth.NewWebhookGuard(auth.WebhookConfig{Keys: []string{"wk_0123456789abcdef"}, FailureRatePerSecond: 1, FailureBurst: 1})
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

// readCounter counts the reads of a body.
type readCounter struct {
	r     io.Reader
	reads *int
}

func (c readCounter) Read(p []byte) (int, error) {
	*c.reads++
	return c.r.Read(p)
}

// sign gives r the Standard Webhooks headers of body signed with key at
// time at, as message msg_1.
func sign(r *http.Request, key []byte, at time.Time, body string) {
	sec := strconv.FormatInt(at.Unix(), 10)
	r.Header.Set("webhook-id", "msg_1")
	r.Header.Set("webhook-timestamp", sec)
	r.Header.Set("webhook-signature", "v1,"+auth.SignWebhook(key, []byte("msg_1."+sec+"."+body)))
}

// guardedHandler is the webhook route behind guard, storing nothing, with
// bodies of 1 KiB at most and one unauthenticated read at a time.
func guardedHandler(guard *auth.WebhookGuard) http.Handler {
	log := slog.New(slog.DiscardHandler)
	mux := runtime.NewServeMux(runtime.WithErrorHandler(errorHandler))
	return webhooksFirst(mux, &webhookHandler{mux: mux, ingest: api.NewWebhookServer(storingIngester{}, log), maxBody: 1 << 10, guard: guard, log: log,
		unauthenticated: make(chan struct{}, 1), unauthenticatedByAddr: api.NewSlots(1)})
}

// With signing secrets the only credential, a webhook's sender is known
// once its signature is checked: an unsigned or forged one spends the
// failure budget of its address, never the budget of signed ones (which,
// full, would refuse OTPLESS). One without the signature's headers, or
// from an address whose failures used up their budget, is refused before
// its body is read; one whose body cannot be read (too large) fails too.
func TestUnsignedWebhooksSpendOnlyTheFailureBudget(t *testing.T) {
	t.Parallel()
	key := []byte("0123456789abcdef0123456789abcdef")
	guard, err := auth.NewWebhookGuard(auth.WebhookConfig{SigningSecrets: []string{"whsec_" + base64.StdEncoding.EncodeToString(key)}, RatePerSecond: 0.001, Burst: 2, FailureRatePerSecond: 0.001, FailureBurst: 2})
	if err != nil {
		t.Fatal(err)
	}
	h := guardedHandler(guard)
	const body = `{"data":{"requestId":"r1","status":"SENT","channel":"SMS"},"eventType":"DLR","timestamp":1764153000400}`
	huge := strings.Repeat(" ", 2<<10) + body
	const unsigned, forged, signed, stale = "unsigned", "forged", "signed", "stale"
	post := func(from, how, content string) (code, reads int) {
		r := httptest.NewRequest(http.MethodPost, WebhookPath, readCounter{strings.NewReader(content), &reads})
		r.RemoteAddr = from + ":4000"
		if how != unsigned {
			ts := time.Now()
			if how == stale {
				ts = ts.Add(-time.Hour)
			}
			signer := key
			if how == forged {
				signer = []byte("not the key, not the key, at all")
			}
			sign(r, signer, ts, content)
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		return w.Code, reads
	}
	for i, step := range []struct {
		from, how, body string
		want            int
		read            bool
	}{
		// Two of each budget per address. Unsigned ones spend the failures'
		// alone: two signed ones still pass.
		{"192.0.2.1", unsigned, body, http.StatusUnauthorized, false},
		{"192.0.2.1", signed, body, http.StatusOK, true},
		{"192.0.2.1", signed, body, http.StatusOK, true},
		{"192.0.2.1", unsigned, body, http.StatusUnauthorized, false},
		{"192.0.2.1", unsigned, body, http.StatusTooManyRequests, false},
		{"192.0.2.1", forged, body, http.StatusTooManyRequests, false}, // no failure budget left: not read
		// Forged ones are read, then spend the failures' budget.
		{"192.0.2.2", forged, body, http.StatusUnauthorized, true},
		{"192.0.2.2", forged, body, http.StatusUnauthorized, true},
		{"192.0.2.2", forged, body, http.StatusTooManyRequests, false},
		// So do bodies that cannot be read whole, and out-of-date signatures
		// (refused before their body).
		{"192.0.2.3", forged, huge, http.StatusRequestEntityTooLarge, true},
		{"192.0.2.3", forged, huge, http.StatusRequestEntityTooLarge, true},
		{"192.0.2.3", forged, body, http.StatusTooManyRequests, false},
		{"192.0.2.4", stale, body, http.StatusUnauthorized, false},
		{"192.0.2.4", stale, body, http.StatusUnauthorized, false},
		{"192.0.2.4", signed, body, http.StatusTooManyRequests, false},
		{"192.0.2.5", signed, body, http.StatusOK, true},
	} {
		code, reads := post(step.from, step.how, step.body)
		if code != step.want || (reads > 0) != step.read {
			t.Errorf("step %d: a webhook from %s, %s: %d, body read %v; want %d, read %v", i+1, step.from, step.how, code, reads > 0, step.want, step.read)
		}
	}
}

// readsAsked records the largest buffer a read of it was given.
type readsAsked struct {
	data    []byte
	largest int
}

func (r *readsAsked) Read(p []byte) (int, error) {
	r.largest = max(r.largest, len(p))
	if len(r.data) == 0 {
		return 0, io.EOF
	}
	n := copy(p, r.data)
	r.data = r.data[n:]
	return n, nil
}

// A body announced large but not sent is not held at its announced size:
// before any credential is checked, a sender could otherwise make the
// server hold --max-body-bytes per connection for a few bytes sent.
func TestReadBodyAllocatesAsItArrives(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		announced int64
		sent      string
		wantErr   bool
		largest   int
	}{
		{1 << 20, "{", true, readUpfront}, // announced 1 MiB, sent a byte
		{int64(readUpfront) + 2, strings.Repeat("x", readUpfront+2), false, readUpfront + 2}, // all of it: read whole
		{10, "0123456789", false, 10},
	} {
		body := &readsAsked{data: []byte(tc.sent)}
		r := httptest.NewRequest(http.MethodPost, WebhookPath, body)
		r.ContentLength = tc.announced
		b, err := readBody(httptest.NewRecorder(), r, 1<<20)
		if (err != nil) != tc.wantErr || (err == nil && string(b) != tc.sent) {
			t.Errorf("announced %d, sent %d: %d bytes, %v", tc.announced, len(tc.sent), len(b), err)
		}
		if body.largest > tc.largest {
			t.Errorf("announced %d, sent %d: a read was given %d bytes, want at most %d", tc.announced, len(tc.sent), body.largest, tc.largest)
		}
	}
}

// heldBody is a body whose sender holds it back: its first read says so on
// started, and waits for release.
type heldBody struct {
	started chan<- struct{}
	release <-chan struct{}
	data    io.Reader
	once    sync.Once
}

func (b *heldBody) Read(p []byte) (int, error) {
	b.once.Do(func() {
		b.started <- struct{}{}
		<-b.release
	})
	return b.data.Read(p)
}

// With signing secrets the only credential, a body must be read before its
// sender is known. Bodies being read so are bounded, in all and from one
// address (a sixteenth of all): past either bound a webhook is answered
// 503 with Retry-After at once, its body unread, and a place is free again
// once a body is read. Through New, so that the route served before the
// gateway mux is the one bounded.
func TestUnauthenticatedReadsAreBounded(t *testing.T) {
	t.Parallel()
	key := []byte("0123456789abcdef0123456789abcdef")
	guard, err := auth.NewWebhookGuard(auth.WebhookConfig{SigningSecrets: []string{"whsec_" + base64.StdEncoding.EncodeToString(key)}})
	if err != nil {
		t.Fatal(err)
	}
	const body = `{"data":{"requestId":"r1","status":"SENT","channel":"SMS"},"eventType":"DLR","timestamp":1764153000400}`
	signed := func(from string, b io.Reader) *http.Request {
		r := httptest.NewRequest(http.MethodPost, WebhookPath, b)
		r.RemoteAddr = from + ":4711"
		sign(r, key, time.Now(), body)
		return r
	}
	for _, tc := range []struct {
		name    string
		max     int      // MaxUnauthenticatedReads; a sixteenth of it per address
		held    []string // the addresses of the bodies held being read
		refused string   // refused while they are
		served  string   // "", or an address served meanwhile
	}{
		{"in all", 4, []string{"192.0.2.1", "192.0.2.2", "192.0.2.3", "192.0.2.4"}, "192.0.2.5", ""},
		{"from one address", 32, []string{"192.0.2.1", "192.0.2.1"}, "192.0.2.1", "192.0.2.2"},
		// An IPv6 client commonly holds a /64 whole, and counts as one
		// address there, as under the webhook rates.
		{"from one /64", 32, []string{"[2001:db8::1]", "[2001:db8::2]"}, "[2001:db8::3]", "[2001:db8:0:1::1]"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			log := slog.New(slog.DiscardHandler)
			h, err := New(t.Context(), nil, api.NewWebhookServer(storingIngester{}, log), Options{Guard: guard, MaxUnauthenticatedReads: tc.max, Logger: log})
			if err != nil {
				t.Fatal(err)
			}
			started, release := make(chan struct{}), make(chan struct{})
			codes := make(chan int, len(tc.held))
			for _, from := range tc.held {
				r := signed(from, &heldBody{started: started, release: release, data: strings.NewReader(body)})
				go func() {
					w := httptest.NewRecorder()
					h.ServeHTTP(w, r)
					codes <- w.Code
				}()
				select {
				case <-started:
				case code := <-codes:
					t.Fatalf("a webhook from %s, with %d held: %d before its body was read", from, len(tc.held), code)
				case <-time.After(10 * time.Second):
					t.Fatal("a held body was never read")
				}
			}
			reads := 0
			w := httptest.NewRecorder()
			h.ServeHTTP(w, signed(tc.refused, readCounter{strings.NewReader(body), &reads}))
			if w.Code != http.StatusServiceUnavailable || w.Header().Get("Retry-After") == "" || reads > 0 || w.Header().Get("Connection") != "close" {
				t.Errorf("from %s with %v held: %d, Retry-After %q, body read %v, Connection %q; want 503, a Retry-After, unread, close",
					tc.refused, tc.held, w.Code, w.Header().Get("Retry-After"), reads > 0, w.Header().Get("Connection"))
			}
			if tc.served != "" {
				w = httptest.NewRecorder()
				h.ServeHTTP(w, signed(tc.served, strings.NewReader(body)))
				if w.Code != http.StatusOK {
					t.Errorf("from %s meanwhile: %d %s, want 200", tc.served, w.Code, w.Body)
				}
			}
			close(release)
			for range tc.held {
				if code := <-codes; code != http.StatusOK {
					t.Errorf("a held webhook, once sent: %d, want 200", code)
				}
			}
			w = httptest.NewRecorder()
			h.ServeHTTP(w, signed(tc.refused, strings.NewReader(body)))
			if w.Code != http.StatusOK {
				t.Errorf("once those were read, a webhook from %s: %d %s, want 200", tc.refused, w.Code, w.Body)
			}
		})
	}
}

// With signing secrets beside a webhook key (or beside
// --allow-unauthenticated-webhooks), a webhook the key admits is read, and
// a forged signature then spends the failure budget of its address, which
// must have some left before the body is read: authenticated webhooks are
// unlimited by default, and forged ones were limited by nothing.
func TestForgedSignaturesBesideOtherCredentialsSpendFailures(t *testing.T) {
	t.Parallel()
	key := []byte("0123456789abcdef0123456789abcdef")
	secret := "whsec_" + base64.StdEncoding.EncodeToString(key)
	const body = `{"data":{"requestId":"r1","status":"SENT","channel":"SMS"},"eventType":"DLR","timestamp":1764153000400}`
	for _, tc := range []struct {
		name   string
		cfg    auth.WebhookConfig
		target string
	}{
		{"beside a key", auth.WebhookConfig{Keys: []string{"wk_0123456789abcdef"}, SigningSecrets: []string{secret}}, WebhookPath + "/wk_0123456789abcdef"},
		{"beside allow-unauthenticated", auth.WebhookConfig{AllowUnauthenticated: true, SigningSecrets: []string{secret}}, WebhookPath},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tc.cfg.FailureRatePerSecond, tc.cfg.FailureBurst = 0.001, 2
			guard, err := auth.NewWebhookGuard(tc.cfg)
			if err != nil {
				t.Fatal(err)
			}
			h := guardedHandler(guard)
			post := func(from string, signer []byte) (code, reads int) {
				r := httptest.NewRequest(http.MethodPost, tc.target, readCounter{strings.NewReader(body), &reads})
				r.RemoteAddr = from + ":4000"
				sign(r, signer, time.Now(), body)
				w := httptest.NewRecorder()
				h.ServeHTTP(w, r)
				return w.Code, reads
			}
			forger := []byte("not the key, not the key, at all")
			for i, step := range []struct {
				from   string
				signer []byte
				want   int
				read   bool
			}{
				{"192.0.2.1", key, http.StatusOK, true},
				{"192.0.2.1", forger, http.StatusUnauthorized, true},
				{"192.0.2.1", forger, http.StatusUnauthorized, true},
				{"192.0.2.1", forger, http.StatusTooManyRequests, false},
				{"192.0.2.1", key, http.StatusTooManyRequests, false},
				{"192.0.2.2", key, http.StatusOK, true},
			} {
				code, reads := post(step.from, step.signer)
				if code != step.want || (reads > 0) != step.read {
					t.Errorf("step %d: from %s: %d, body read %v; want %d, read %v", i+1, step.from, code, reads > 0, step.want, step.read)
				}
			}
		})
	}
}

// The keyless route with a trailing slash, as a webhook URL is often
// written, is the keyless route: an empty key is no key, so HTTP Basic
// authenticates it, and without credentials the refusal asks for them
// rather than calling a key unknown that was never sent.
func TestEmptyWebhookKeyIsNoKey(t *testing.T) {
	t.Parallel()
	guard, err := auth.NewWebhookGuard(auth.WebhookConfig{Keys: []string{"wk_0123456789abcdef"},
		Basic: []auth.BasicCredential{{User: "otpless", Password: "0123456789abcdef"}}})
	if err != nil {
		t.Fatal(err)
	}
	h := guardedHandler(guard)
	const body = `{"data":{"requestId":"r1","status":"SENT","channel":"SMS"},"eventType":"DLR","timestamp":1764153000400}`
	for _, tc := range []struct {
		name, user, password string
		want                 int
		says                 string
	}{
		{"basic", "otpless", "0123456789abcdef", http.StatusOK, ""},
		{"wrong basic", "otpless", "wrong", http.StatusUnauthorized, "wrong basic credentials"},
		{"no credentials", "", "", http.StatusUnauthorized, "webhook key or basic credentials required"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodPost, WebhookPath+"/", strings.NewReader(body))
			if tc.user != "" {
				r.SetBasicAuth(tc.user, tc.password)
			}
			w := httptest.NewRecorder()
			h.ServeHTTP(w, r)
			if w.Code != tc.want || !strings.Contains(w.Body.String(), tc.says) {
				t.Errorf("%d %s, want %d saying %q", w.Code, w.Body, tc.want, tc.says)
			}
		})
	}
}

// Every 401 on the webhook route carries a WWW-Authenticate challenge, as
// HTTP requires of a 401 (RFC 9110, 15.5.2): a forged signature, found
// once the body is read, as much as a missing key or wrong credentials.
func TestWebhook401sChallenge(t *testing.T) {
	t.Parallel()
	key := []byte("0123456789abcdef0123456789abcdef")
	secret := "whsec_" + base64.StdEncoding.EncodeToString(key)
	forger := []byte("not the key, not the key, at all")
	const body = `{"data":{"requestId":"r1","status":"SENT","channel":"SMS"},"eventType":"DLR","timestamp":1764153000400}`
	for _, tc := range []struct {
		name   string
		cfg    auth.WebhookConfig
		target string
		signer []byte
	}{
		{"forged, signatures alone", auth.WebhookConfig{SigningSecrets: []string{secret}}, WebhookPath, forger},
		{"unsigned, signatures alone", auth.WebhookConfig{SigningSecrets: []string{secret}}, WebhookPath, nil},
		{"forged, beside a key", auth.WebhookConfig{Keys: []string{"wk_0123456789abcdef"}, SigningSecrets: []string{secret}}, WebhookPath + "/wk_0123456789abcdef", forger},
		{"unknown key", auth.WebhookConfig{Keys: []string{"wk_0123456789abcdef"}}, WebhookPath + "/wk_wrong0123456789", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			guard, err := auth.NewWebhookGuard(tc.cfg)
			if err != nil {
				t.Fatal(err)
			}
			r := httptest.NewRequest(http.MethodPost, tc.target, strings.NewReader(body))
			if tc.signer != nil {
				sign(r, tc.signer, time.Now(), body)
			}
			w := httptest.NewRecorder()
			guardedHandler(guard).ServeHTTP(w, r)
			if w.Code != http.StatusUnauthorized || w.Header().Get("WWW-Authenticate") == "" {
				t.Errorf("%d %s, WWW-Authenticate %q; want 401 with a challenge", w.Code, w.Body, w.Header().Get("WWW-Authenticate"))
			}
		})
	}
}
