package auth

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/tap"

	eventsv1 "github.com/otpless-events/otpless-events/gen/otpless/events/v1"
)

func testKeyring(t *testing.T) (*Keyring, *TokenSigner) {
	t.Helper()
	keys, err := ParseAPIKeys(FormatAPIKey("reader", "reader-secret", []Scope{ScopeRead}) + "\n# comment\n" +
		FormatAPIKey("admin", "admin-secret", []Scope{ScopeAdmin}) + ";" +
		FormatAPIKey("minter", "minter-secret", []Scope{ScopeMintWatchToken, ScopeWatch}))
	if err != nil {
		t.Fatal(err)
	}
	signer, err := NewTokenSigner([][]byte{[]byte("0123456789abcdef0123456789abcdef")})
	if err != nil {
		t.Fatal(err)
	}
	return NewKeyring(keys, signer), signer
}

func TestParseAPIKeys(t *testing.T) {
	t.Parallel()
	// Each error names the key by its name, never by its hash.
	for _, tt := range []struct{ bad, want string }{
		{"name", "api key 1: want NAME SHA256-HEX SCOPES, got 1 fields"},
		{"name nothex read", `api key "name": the second field`},
		{"name " + HashKey("k") + " fly", `api key "name": unknown scope "fly"`},
		{"name " + HashKey("k")[:62] + " read", `api key "name": the second field`}, // a hash a byte short
		{"name " + HashKey("k") + "00 read", `api key "name": the second field`},    // and a byte long
		{"a " + HashKey("k") + " read\na " + HashKey("j") + " read", `api key "a" configured twice`},
	} {
		if _, err := ParseAPIKeys(tt.bad); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("ParseAPIKeys(%q): %v; want an error saying %q", tt.bad, err, tt.want)
		}
	}
}

func TestAuthenticate(t *testing.T) {
	t.Parallel()
	k, signer := testKeyring(t)
	tests := []struct {
		bearer string
		name   string
		err    bool
	}{
		{"reader-secret", "reader", false},
		{"admin-secret", "admin", false},
		{"", "", true},
		{"reader-secre", "", true},
		{"owt1.garbage.sig", "", true},
	}
	for _, tt := range tests {
		p, err := k.Authenticate(tt.bearer)
		if (err != nil) != tt.err || (err == nil && p.Name != tt.name) {
			t.Errorf("Authenticate(%q) = %v, %v", tt.bearer, p, err)
		}
		if err != nil && !errors.Is(err, ErrUnauthenticated) {
			t.Errorf("Authenticate(%q) error %v is not ErrUnauthenticated", tt.bearer, err)
		}
	}
	tok, _ := signer.Mint("req-a", time.Minute)
	p, err := k.Authenticate(tok)
	if err != nil || p.RequestID != "req-a" || p.Name != "watch-token:req-a" || p.Has(ScopeReadPII) || !p.Has(ScopeWatch) {
		t.Fatalf("watch token principal = %+v, %v", p, err)
	}
	// Per-token limits tell a request's tokens apart by Token, a digest:
	// never the token's text, nor a part of it they share.
	other, _ := signer.Mint("req-a", 2*time.Minute)
	if p2, err := k.Authenticate(other); err != nil || p2.Token == p.Token || p.Token == "" || strings.Contains(tok, p.Token) {
		t.Errorf("two tokens of req-a: Token %q and %q (%v); want distinct digests, not in %q", p.Token, p2.Token, err, tok)
	}
	// A key configured as the hash of nothing does not make a call
	// without credentials its holder; and a keyring without watch tokens
	// takes a bearer shaped as one for an unknown key.
	hashOfNothing, err := ParseAPIKeys(FormatAPIKey("empty", "", []Scope{ScopeAdmin}))
	if err != nil {
		t.Fatal(err)
	}
	for _, bearer := range []string{"", tok} {
		if p, err := NewKeyring(hashOfNothing, nil).Authenticate(bearer); !errors.Is(err, ErrUnauthenticated) {
			t.Errorf("without watch tokens, Authenticate(%q) = %+v, %v; want ErrUnauthenticated", bearer, p, err)
		}
	}
	admin, _ := k.Authenticate("admin-secret")
	for _, s := range AllScopes {
		if !admin.Has(s) {
			t.Errorf("admin lacks %s", s)
		}
	}
}

// A token lives at least its ttl, whatever the fraction of a second it is
// minted at (its expiry is whole seconds): rounded down, a 1 s token minted
// at x.999 s lived 1 ms.
func TestWatchTokenLivesItsTTL(t *testing.T) {
	t.Parallel()
	signer, _ := NewTokenSigner([][]byte{[]byte("old-key-old-key-old-key-old-key-!")})
	for _, frac := range []time.Duration{0, time.Nanosecond, 999 * time.Millisecond, time.Second - time.Nanosecond} {
		for _, ttl := range []time.Duration{time.Nanosecond, time.Second, 10 * time.Minute} {
			minted := time.Unix(1_800_000_000, 0).Add(frac)
			signer.now = func() time.Time { return minted }
			tok, exp := signer.Mint("req-a", ttl)
			if exp.Before(minted.Add(ttl)) || !exp.Before(minted.Add(ttl+time.Second)) || exp.Nanosecond() != 0 {
				t.Errorf("minted at +%v with ttl %v: expires %v, want the first whole second not before %v", frac, ttl, exp, minted.Add(ttl))
			}
			signer.now = func() time.Time { return minted.Add(ttl - time.Nanosecond) }
			if _, err := signer.Verify(tok); err != nil {
				t.Errorf("minted at +%v with ttl %v, verified before its ttl ran out: %v", frac, ttl, err)
			}
		}
	}
}

func TestWatchTokens(t *testing.T) {
	t.Parallel()
	old := []byte("old-key-old-key-old-key-old-key-!")
	signer, _ := NewTokenSigner([][]byte{old})
	now := time.Unix(1_800_000_000, 0)
	signer.now = func() time.Time { return now }
	tok, exp := signer.Mint("req-a", 10*time.Minute)
	if !exp.Equal(now.Add(10 * time.Minute)) {
		t.Fatalf("expiry %v", exp)
	}
	if id, err := signer.Verify(tok); err != nil || id != "req-a" {
		t.Fatalf("Verify = %q, %v", id, err)
	}
	// Rotation: a new first key still accepts tokens of the old one.
	rotated, _ := NewTokenSigner([][]byte{[]byte("new-key-new-key-new-key-new-key-!"), old})
	rotated.now = signer.now
	if _, err := rotated.Verify(tok); err != nil {
		t.Fatalf("rotated signer rejects an old token: %v", err)
	}
	other, _ := NewTokenSigner([][]byte{[]byte("new-key-new-key-new-key-new-key-!")})
	other.now = signer.now
	if _, err := other.Verify(tok); err == nil {
		t.Fatal("a signer without the key accepted the token")
	}
	// Tampering with the claims breaks the signature.
	forged, _ := other.Mint("req-b", time.Minute)
	if _, err := signer.Verify(forged); err == nil {
		t.Fatal("forged token accepted")
	}
	tampered := tok[:len(tokenPrefix)+2] + "x" + tok[len(tokenPrefix)+3:]
	if _, err := signer.Verify(tampered); err == nil {
		t.Fatal("tampered token accepted")
	}
	// The signature's last character carries two bits no byte has: a token
	// has one spelling, or per-token limits would count four tokens.
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
	last := strings.IndexByte(alphabet, tok[len(tok)-1])
	if last%4 != 0 {
		t.Fatalf("the signature's last character %q sets an unused bit", tok[len(tok)-1])
	}
	for spare := 1; spare < 4; spare++ {
		respelt := tok[:len(tok)-1] + string(alphabet[last+spare])
		if _, err := signer.Verify(respelt); err == nil {
			t.Errorf("a token spelt with unused bits set (%s) accepted", respelt[len(respelt)-4:])
		}
	}
	// Nor CR or LF, which base64 decoders skip: an access_token of %0A.
	for _, nl := range []string{"\n", "\r", "\r\n"} {
		i := strings.LastIndexByte(tok, '.') + 3
		if _, err := signer.Verify(tok[:i] + nl + tok[i:]); err == nil {
			t.Errorf("a token with %q in its signature accepted", nl)
		}
	}
	now = now.Add(10 * time.Minute)
	if _, err := signer.Verify(tok); err == nil || !errors.Is(err, ErrUnauthenticated) {
		t.Fatalf("expired token: %v", err)
	}
	if _, err := NewTokenSigner([][]byte{[]byte("short")}); err == nil {
		t.Fatal("short key accepted")
	}
}

// A watch token's form is fixed: a token one replica, or the version
// before an upgrade, minted with a shared key is one another verifies.
// The known answer was checked apart from this code (Python's hmac over
// "owt1." and the base64url of {"rid":"req-a","exp":1800000060}).
func TestWatchTokenKnownAnswer(t *testing.T) {
	t.Parallel()
	const want = "owt1.eyJyaWQiOiJyZXEtYSIsImV4cCI6MTgwMDAwMDA2MH0.He0hteXaVU8M1LPsFDXZ4Fupm4M_MzLFVwM0xHqahJI"
	signer, _ := NewTokenSigner([][]byte{[]byte("known-answer-key-known-answer-ke")})
	signer.now = func() time.Time { return time.Unix(1_800_000_000, 0) }
	if tok, _ := signer.Mint("req-a", time.Minute); tok != want {
		t.Errorf("Mint = %s, want %s", tok, want)
	}
	if id, err := signer.Verify(want); err != nil || id != "req-a" {
		t.Errorf("Verify(%s) = %q, %v; want req-a", want, id, err)
	}
}

// Verify refuses, without panicking, what is not a watch token or is cut
// short, even signed with its key: another prefix, no signature, no claims,
// or claims of no request (a principal bound to no request id is bound to
// none: it could read and watch them all).
func TestVerifyMalformedWatchTokens(t *testing.T) {
	t.Parallel()
	signer, _ := NewTokenSigner([][]byte{[]byte(strings.Repeat("k", 32))})
	signed := func(msg string) string {
		return msg + "." + base64.RawURLEncoding.EncodeToString(signer.sign(signer.keys[0], msg))
	}
	tok, _ := signer.Mint("req-a", time.Minute)
	claims := tok[len(tokenPrefix):strings.LastIndexByte(tok, '.')]
	noRequest, _ := signer.Mint("", time.Minute)
	for _, bad := range []string{
		"", "owt1", "owt1.", "no-dot-at-all", "owt1.xyz",
		signed("owt1"),             // a signature over the prefix alone, no claims
		signed("owt2." + claims),   // the claims under another prefix
		signed("x") + "." + claims, // a signature first
		noRequest,
	} {
		if id, err := signer.Verify(bad); err == nil || !errors.Is(err, ErrUnauthenticated) {
			t.Errorf("Verify(%q) = %q, %v; want ErrUnauthenticated", bad, id, err)
		}
	}
	// Well-formed claims of another request under this token's signature.
	other, _ := signer.Mint("req-b", time.Minute)
	swapped := other[:strings.LastIndexByte(other, '.')] + tok[strings.LastIndexByte(tok, '.'):]
	if id, err := signer.Verify(swapped); err == nil {
		t.Errorf("req-b's claims under req-a's signature verified, for %q", id)
	}
}

// A watch-token signer needs a key, of 32 bytes at least, as the README
// says: none, or one of 31 bytes, is refused.
func TestWatchTokenKeys(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		keys [][]byte
		ok   bool
	}{
		{nil, false},
		{[][]byte{}, false},
		{[][]byte{[]byte(strings.Repeat("k", 31))}, false},
		{[][]byte{[]byte(strings.Repeat("k", 32))}, true},
		{[][]byte{[]byte(strings.Repeat("k", 32)), []byte(strings.Repeat("k", 31))}, false},
	} {
		if _, err := NewTokenSigner(tt.keys); (err == nil) != tt.ok {
			t.Errorf("NewTokenSigner(%d keys, of %v bytes): err = %v, want ok = %v", len(tt.keys), keyLens(tt.keys), err, tt.ok)
		}
	}
}

func keyLens(keys [][]byte) []int {
	var out []int
	for _, k := range keys {
		out = append(out, len(k))
	}
	return out
}

func incoming(bearer string) context.Context {
	md := metadata.MD{}
	if bearer != "" {
		md.Set("authorization", "Bearer "+bearer)
	}
	return metadata.NewIncomingContext(context.Background(), md)
}

func TestUnaryInterceptor(t *testing.T) {
	t.Parallel()
	k, signer := testKeyring(t)
	tokA, _ := signer.Mint("req-a", time.Minute)
	intercept := k.UnaryInterceptor()
	get := eventsv1.RequestService_GetRequest_FullMethodName
	tests := []struct {
		name, bearer, method, requestID string
		want                            codes.Code
	}{
		{"no credential", "", get, "r", codes.Unauthenticated},
		{"wrong key", "nope", get, "r", codes.Unauthenticated},
		{"reader reads", "reader-secret", get, "r", codes.OK},
		{"reader cannot mint", "reader-secret", eventsv1.RequestService_CreateWatchToken_FullMethodName, "r", codes.PermissionDenied},
		{"reader cannot ingest", "reader-secret", eventsv1.WebhookService_Ingest_FullMethodName, "r", codes.PermissionDenied},
		{"minter mints", "minter-secret", eventsv1.RequestService_CreateWatchToken_FullMethodName, "r", codes.OK},
		{"admin ingests", "admin-secret", eventsv1.WebhookService_Ingest_FullMethodName, "r", codes.OK},
		{"unknown method needs admin", "reader-secret", "/x.Y/Z", "r", codes.PermissionDenied},
		{"health is public", "", "/grpc.health.v1.Health/Check", "", codes.OK},
		{"token reads its request", tokA, get, "req-a", codes.OK},
		{"token cannot read another", tokA, get, "req-b", codes.PermissionDenied},
		{"token cannot mint", tokA, eventsv1.RequestService_CreateWatchToken_FullMethodName, "req-a", codes.PermissionDenied},
		{"token cannot list events", tokA, eventsv1.RequestService_ListRequestEvents_FullMethodName, "req-a", codes.PermissionDenied},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var seen *Principal
			_, err := intercept(incoming(tt.bearer), &eventsv1.GetRequestRequest{RequestId: tt.requestID},
				&grpc.UnaryServerInfo{FullMethod: tt.method},
				func(ctx context.Context, _ any) (any, error) { seen = FromContext(ctx); return nil, nil })
			if got := status.Code(err); got != tt.want {
				t.Fatalf("code %v (%v), want %v", got, err, tt.want)
			}
			if tt.want == codes.OK && tt.bearer != "" && seen == nil {
				t.Fatal("handler saw no principal")
			}
		})
		// The same through the tap handle, whose principal the
		// interceptor takes rather than authenticating again (its context
		// here has no credential of its own).
		t.Run(tt.name+" tapped", func(t *testing.T) {
			md, _ := metadata.FromIncomingContext(incoming(tt.bearer))
			ctx, err := k.TapHandle(context.Background(), &tap.Info{FullMethodName: tt.method, Header: md})
			if err == nil {
				_, err = intercept(ctx, &eventsv1.GetRequestRequest{RequestId: tt.requestID},
					&grpc.UnaryServerInfo{FullMethod: tt.method}, func(context.Context, any) (any, error) { return nil, nil })
			}
			if got := status.Code(err); got != tt.want {
				t.Fatalf("code %v (%v), want %v", got, err, tt.want)
			}
		})
	}
}

type fakeStream struct {
	grpc.ServerStream
	ctx context.Context
	req *eventsv1.WatchRequestRequest
}

func (f *fakeStream) Context() context.Context { return f.ctx }
func (f *fakeStream) RecvMsg(m any) error {
	m.(*eventsv1.WatchRequestRequest).RequestId = f.req.GetRequestId()
	return nil
}

func TestStreamInterceptorBindsWatchTokens(t *testing.T) {
	t.Parallel()
	k, signer := testKeyring(t)
	tokA, _ := signer.Mint("req-a", time.Minute)
	info := &grpc.StreamServerInfo{FullMethod: eventsv1.RequestService_WatchRequest_FullMethodName, IsServerStream: true}
	for id, want := range map[string]codes.Code{"req-a": codes.OK, "req-b": codes.PermissionDenied} {
		ss := &fakeStream{ctx: incoming(tokA), req: &eventsv1.WatchRequestRequest{RequestId: id}}
		err := k.StreamInterceptor()(nil, ss, info, func(_ any, s grpc.ServerStream) error {
			if FromContext(s.Context()) == nil {
				t.Error("stream context has no principal")
			}
			return s.RecvMsg(&eventsv1.WatchRequestRequest{})
		})
		if status.Code(err) != want {
			t.Errorf("watch %s with a token for req-a: %v, want %v", id, err, want)
		}
	}
	reader := &fakeStream{ctx: incoming("reader-secret"), req: &eventsv1.WatchRequestRequest{RequestId: "x"}}
	if err := k.StreamInterceptor()(nil, reader, info, func(any, grpc.ServerStream) error { return nil }); status.Code(err) != codes.PermissionDenied {
		t.Errorf("reader without watch scope: %v", err)
	}
}

// failingStream fills in the request id, as a message cut short may, and
// fails.
type failingStream struct{ fakeStream }

func (f *failingStream) RecvMsg(m any) error {
	m.(*eventsv1.WatchRequestRequest).RequestId = f.req.GetRequestId()
	return io.ErrUnexpectedEOF
}

// A stream's message that fails to arrive is that failure to the handler,
// for a watch token of its request and an API key alike: never a message
// to serve.
func TestStreamInterceptorPassesReceiveErrors(t *testing.T) {
	t.Parallel()
	k, signer := testKeyring(t)
	tok, _ := signer.Mint("req-a", time.Minute)
	info := &grpc.StreamServerInfo{FullMethod: eventsv1.RequestService_WatchRequest_FullMethodName, IsServerStream: true}
	for _, bearer := range []string{tok, "admin-secret"} {
		ss := &failingStream{fakeStream{ctx: incoming(bearer), req: &eventsv1.WatchRequestRequest{RequestId: "req-a"}}}
		err := k.StreamInterceptor()(nil, ss, info, func(_ any, s grpc.ServerStream) error {
			return s.RecvMsg(&eventsv1.WatchRequestRequest{})
		})
		if !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Errorf("a message that failed to arrive: %v, want %v", err, io.ErrUnexpectedEOF)
		}
	}
}

// ParseScopes reads the scopes the README names, spelt as it spells them,
// space around each and blank entries left out, each once; a list of none
// is refused, and an unknown scope is refused naming those known.
func TestParseScopes(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		in   string
		want []Scope
		err  string
	}{
		{"read,read_pii,watch,mint_watch_token,ingest,admin", AllScopes, ""},
		{" read , watch ,", []Scope{ScopeRead, ScopeWatch}, ""},
		{"read,,read", []Scope{ScopeRead}, ""},
		{"", nil, `no scope in ""`},
		{" , ", nil, `no scope in " , "`},
		{"read,fly", nil, `unknown scope "fly" (known: read,read_pii,watch,mint_watch_token,ingest,admin)`},
	} {
		got, err := ParseScopes(tt.in)
		if msg := fmt.Sprint(err); !slices.Equal(got, tt.want) || (err == nil) != (tt.err == "") || (err != nil && msg != tt.err) {
			t.Errorf("ParseScopes(%q) = %q, %v; want %q, %q", tt.in, got, err, tt.want, tt.err)
		}
	}
	var nobody *Principal
	if nobody.Has(ScopeRead) {
		t.Error("a nil principal has a scope")
	}
}

func TestMaySeePII(t *testing.T) {
	t.Parallel()
	if !MaySeePII(context.Background()) {
		t.Error("no principal (auth disabled) should see PII")
	}
	if MaySeePII(WithPrincipal(context.Background(), &Principal{Scopes: []Scope{ScopeRead}})) {
		t.Error("read scope sees PII")
	}
	if !MaySeePII(WithPrincipal(context.Background(), &Principal{Scopes: []Scope{ScopeReadPII}})) {
		t.Error("read_pii scope does not see PII")
	}
}

func webhookRequest(remote string, xff string) *http.Request {
	r := httptest.NewRequest(http.MethodPost, "/v1/webhooks/otpless", nil)
	r.RemoteAddr = remote
	if xff != "" {
		r.Header.Set("X-Forwarded-For", xff)
	}
	return r
}

func TestWebhookCredentials(t *testing.T) {
	t.Parallel()
	g, err := NewWebhookGuard(WebhookConfig{
		Keys:  []string{"current-key-0123456789", "previous-key-012345678"},
		Basic: []BasicCredential{{"otpless", "s3cret-pass"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	r := webhookRequest("1.2.3.4:5", "")
	for key, ok := range map[string]bool{"current-key-0123456789": true, "previous-key-012345678": true, "current-key-012345678": false, "": false} {
		if err := g.CheckCredentials(r, key, true); (err == nil) != ok {
			t.Errorf("key %q: %v", key, err)
		}
	}
	if err := g.CheckCredentials(r, "", false); !errors.Is(err, ErrUnauthenticated) {
		t.Errorf("keyless route without basic: %v", err)
	}
	r.SetBasicAuth("otpless", "s3cret-pass")
	if err := g.CheckCredentials(r, "", false); err != nil {
		t.Errorf("basic: %v", err)
	}
	r.SetBasicAuth("otpless", "wrong")
	if err := g.CheckCredentials(r, "", false); err == nil {
		t.Error("wrong basic password accepted")
	}
	if _, err := NewWebhookGuard(WebhookConfig{}); err == nil {
		t.Error("a guard with nothing configured was built")
	}
	for _, c := range []struct {
		rate  float64
		burst int
		ok    bool
	}{{0, 0, true}, {200, 400, true}, {0.5, 1, true}, {-5, 400, false}, {-0.5, 400, false}, {math.NaN(), 400, false}, {math.Inf(1), 400, false}, {200, 0, false}, {200, -1, false}, {0.5, 0, false}, {0, -1, false}} {
		_, err := NewWebhookGuard(WebhookConfig{Keys: []string{"wk_0123456789abcdef"}, RatePerSecond: c.rate, Burst: c.burst})
		if (err == nil) != c.ok || err != nil && !strings.Contains(err.Error(), "of webhooks") {
			t.Errorf("rate %v, burst %d: %v, want ok %v", c.rate, c.burst, err, c.ok)
		}
		_, err = NewWebhookGuard(WebhookConfig{Keys: []string{"wk_0123456789abcdef"}, FailureRatePerSecond: c.rate, FailureBurst: c.burst})
		if (err == nil) != c.ok || err != nil && !strings.Contains(err.Error(), "of failed webhooks") {
			t.Errorf("failure rate %v, burst %d: %v, want ok %v", c.rate, c.burst, err, c.ok)
		}
	}
	open, _ := NewWebhookGuard(WebhookConfig{AllowUnauthenticated: true})
	if err := open.CheckCredentials(webhookRequest("1.2.3.4:5", ""), "", false); err != nil {
		t.Errorf("explicitly open route: %v", err)
	}
}

// The keyed route checks its key alone: a wrong key fails though Basic
// credentials that hold come with it, and though webhooks without
// credentials are let through.
func TestWrongWebhookKeyFails(t *testing.T) {
	t.Parallel()
	for name, cfg := range map[string]WebhookConfig{
		"basic too":           {Keys: []string{"wk_0123456789abcdef"}, Basic: []BasicCredential{{"otpless", "s3cret-pass"}}},
		"unauthenticated too": {Keys: []string{"wk_0123456789abcdef"}, AllowUnauthenticated: true},
	} {
		g, err := NewWebhookGuard(cfg)
		if err != nil {
			t.Fatal(err)
		}
		r := webhookRequest("1.2.3.4:5", "")
		r.SetBasicAuth("otpless", "s3cret-pass")
		if err := g.CheckCredentials(r, "wk_0123456789abcdeX", true); err == nil {
			t.Errorf("%s: a wrong key accepted", name)
		}
	}
}

// Over the webhook configurations: on the keyless route a webhook without
// credentials is let through by --allow-unauthenticated-webhooks, or where
// signing secrets are the only credential (its signature decides), and by
// nothing else: a URL key or Basic credential configured makes it 401,
// with or without the other kinds beside it. SignatureDecides holds only
// where signing secrets are the sole credential, SignatureRequired
// wherever one is configured.
func TestWebhookConfigurations(t *testing.T) {
	t.Parallel()
	key := []string{"wk_0123456789abcdef"}
	basic := []BasicCredential{{"otpless", "s3cret-pass"}}
	signing := []string{"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"}
	for _, tt := range []struct {
		name              string
		cfg               WebhookConfig
		keyless           bool // a webhook without credentials let through
		decides, required bool
	}{
		{"keys", WebhookConfig{Keys: key}, false, false, false},
		{"basic", WebhookConfig{Basic: basic}, false, false, false},
		{"keys and basic", WebhookConfig{Keys: key, Basic: basic}, false, false, false},
		{"keys and signing secrets", WebhookConfig{Keys: key, SigningSecrets: signing}, false, false, true},
		{"basic and signing secrets", WebhookConfig{Basic: basic, SigningSecrets: signing}, false, false, true},
		{"signing secrets", WebhookConfig{SigningSecrets: signing}, true, true, true},
		{"signing secrets, unauthenticated too", WebhookConfig{SigningSecrets: signing, AllowUnauthenticated: true}, true, false, true},
		{"unauthenticated", WebhookConfig{AllowUnauthenticated: true}, true, false, false},
		{"keys, unauthenticated too", WebhookConfig{Keys: key, AllowUnauthenticated: true}, true, false, false},
		{"basic, unauthenticated too", WebhookConfig{Basic: basic, AllowUnauthenticated: true}, true, false, false},
	} {
		g, err := NewWebhookGuard(tt.cfg)
		if err != nil {
			t.Fatal(err)
		}
		if err := g.CheckCredentials(webhookRequest("1.2.3.4:5", ""), "", false); (err == nil) != tt.keyless {
			t.Errorf("%s: CheckCredentials without credentials = %v, want ok = %v", tt.name, err, tt.keyless)
		}
		if got := g.SignatureDecides(); got != tt.decides {
			t.Errorf("%s: SignatureDecides = %v, want %v", tt.name, got, tt.decides)
		}
		if got := g.SignatureRequired(); got != tt.required {
			t.Errorf("%s: SignatureRequired = %v, want %v", tt.name, got, tt.required)
		}
	}
}

// RFC 9110 (11.4) puts one or more spaces between an Authorization
// header's scheme, in any case, and its credentials: Basic and Bearer
// alike are read whatever their number, and a wrong credential so written
// is a wrong one, not none.
func TestAuthorizationSchemeSpacing(t *testing.T) {
	t.Parallel()
	g, err := NewWebhookGuard(WebhookConfig{Basic: []BasicCredential{{"otpless", "s3cret-pass"}}})
	if err != nil {
		t.Fatal(err)
	}
	open, err := NewWebhookGuard(WebhookConfig{Basic: []BasicCredential{{"otpless", "s3cret-pass"}}, AllowUnauthenticated: true})
	if err != nil {
		t.Fatal(err)
	}
	k, _ := testKeyring(t)
	good := base64.StdEncoding.EncodeToString([]byte("otpless:s3cret-pass"))
	wrong := base64.StdEncoding.EncodeToString([]byte("otpless:wrong-pass"))
	for _, sep := range []string{" ", "  ", "   "} {
		r := webhookRequest("1.2.3.4:5", "")
		r.Header.Set("Authorization", "Basic"+sep+good)
		if err := g.CheckCredentials(r, "", false); err != nil {
			t.Errorf("%q: %v", r.Header.Get("Authorization"), err)
		}
		r.Header.Set("Authorization", "basic"+sep+wrong)
		for _, g := range []*WebhookGuard{g, open} { // a wrong one fails, even where none is let through
			if err := g.CheckCredentials(r, "", false); err == nil {
				t.Errorf("%q accepted", r.Header.Get("Authorization"))
			}
		}
		h := http.Header{"Authorization": {"Bearer" + sep + "reader-secret"}}
		if p, err := k.AuthenticateHeader(h); err != nil || p.Name != "reader" {
			t.Errorf("%q: %v, %v; want the reader", h.Get("Authorization"), p, err)
		}
	}
}

// A credential under another scheme is none: an API key sent as Basic or
// Token does not authenticate, nor Basic's user and password sent as
// Bearer.
func TestAuthorizationOtherSchemes(t *testing.T) {
	t.Parallel()
	k, _ := testKeyring(t)
	for _, v := range []string{"Basic reader-secret", "Token reader-secret", "reader-secret", "Bearerreader-secret"} {
		if p, err := k.AuthenticateHeader(http.Header{"Authorization": {v}}); err == nil {
			t.Errorf("%q authenticated %s", v, p.Name)
		}
	}
	g, err := NewWebhookGuard(WebhookConfig{Basic: []BasicCredential{{"otpless", "s3cret-pass"}}})
	if err != nil {
		t.Fatal(err)
	}
	good := base64.StdEncoding.EncodeToString([]byte("otpless:s3cret-pass"))
	for _, v := range []string{"Bearer " + good, "Digest " + good, good} {
		r := webhookRequest("1.2.3.4:5", "")
		r.Header.Set("Authorization", v)
		if err := g.CheckCredentials(r, "", false); err == nil {
			t.Errorf("%q accepted as Basic", v)
		}
	}
}

// Basic credentials whose base64 goes on past its end are none, though
// what comes before decodes to the right user and password.
func TestMalformedBasicCredentials(t *testing.T) {
	t.Parallel()
	g, err := NewWebhookGuard(WebhookConfig{Basic: []BasicCredential{{"otpless", "s3cret-pass"}}})
	if err != nil {
		t.Fatal(err)
	}
	r := webhookRequest("1.2.3.4:5", "")
	r.Header.Set("Authorization", "Basic "+base64.StdEncoding.EncodeToString([]byte("otpless:s3cret-pass"))+"!")
	if err := g.CheckCredentials(r, "", false); err == nil {
		t.Errorf("%q accepted", r.Header.Get("Authorization"))
	}
}

func TestWebhookSignature(t *testing.T) {
	t.Parallel()
	secret := "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
	g, err := NewWebhookGuard(WebhookConfig{SigningSecrets: []string{secret}})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Unix(1_800_000_000, 0)
	g.now = func() time.Time { return now }
	key, _ := decodeSigningSecret(secret)
	body := []byte(`{"eventType":"DLR"}`)
	sign := func(id string, ts time.Time, body []byte) http.Header {
		h := http.Header{}
		sec := strconv.FormatInt(ts.Unix(), 10)
		h.Set("webhook-id", id)
		h.Set("webhook-timestamp", sec)
		h.Set("webhook-signature", "v1,bogus v1,"+SignWebhook(key, []byte(id+"."+sec+"."+string(body))))
		return h
	}
	if err := g.CheckSignature(sign("msg_1", now, body), body); err != nil {
		t.Fatalf("valid signature: %v", err)
	}
	if err := g.CheckSignature(sign("msg_1", now, body), []byte(`{"eventType":"AUTH"}`)); err == nil {
		t.Error("signature over another body accepted")
	}
	if err := g.CheckSignature(sign("msg_1", now.Add(-6*time.Minute), body), body); err == nil {
		t.Error("replayed old signature accepted")
	}
	if err := g.CheckSignature(http.Header{}, body); err == nil {
		t.Error("unsigned webhook accepted")
	}
	// The header repeated as lines is the list of all of them, whether
	// net/http keeps the lines or a proxy joined them with a comma (RFC
	// 9110, 5.3): a valid signature counts on any line, and in any place.
	valid := sign("msg_1", now, body).Get("webhook-signature")
	valid = valid[strings.LastIndexByte(valid, ' ')+1:]
	for _, lines := range [][]string{
		{"v1,bogus", valid},
		{"", valid},
		{"v1,bogus v1,other", "v1,more " + valid},
		{valid + ", v1,bogus"},
		{"v1,bogus, " + valid},
		{"v1,bogus," + valid}, // joined with no space (OWS is optional)
		{valid + ",v1,bogus"},
		{"v1,bogus ," + valid},
	} {
		h := sign("msg_1", now, body)
		h.Del("webhook-signature")
		for _, l := range lines {
			h.Add("webhook-signature", l)
		}
		if err := g.CheckSignatureHeaders(h); err != nil {
			t.Errorf("signature lines %q: headers refused: %v", lines, err)
		}
		if err := g.CheckSignature(h, body); err != nil {
			t.Errorf("signature lines %q: %v", lines, err)
		}
	}
	for _, lines := range [][]string{{"v1,bogus", "v1,other"}, {"", ""}, {valid[:len(valid)-1] + ","}} {
		h := sign("msg_1", now, body)
		h.Del("webhook-signature")
		for _, l := range lines {
			h.Add("webhook-signature", l)
		}
		if err := g.CheckSignature(h, body); err == nil {
			t.Errorf("signature lines %q accepted", lines)
		}
	}
	// Lines that hold no signature at all are refused before the body
	// is read, as no line is.
	blank := sign("msg_1", now, body)
	blank["Webhook-Signature"] = []string{"", " "}
	if err := g.CheckSignatureHeaders(blank); err == nil {
		t.Error("signature lines holding nothing: headers accepted")
	}
	if err := g.CheckCredentials(webhookRequest("1.2.3.4:5", ""), "", false); err != nil {
		t.Errorf("signature-only config should pass the credential step: %v", err)
	}
}

// The Standard Webhooks specification's example verifies: a known answer
// pins how a whsec_ secret is decoded and what is signed, which a test
// signing with the guard's own decoding could not.
func TestWebhookSignatureKnownAnswer(t *testing.T) {
	t.Parallel()
	g, err := NewWebhookGuard(WebhookConfig{SigningSecrets: []string{"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"}})
	if err != nil {
		t.Fatal(err)
	}
	g.now = func() time.Time { return time.Unix(1614265330, 0) }
	h := http.Header{}
	h.Set("webhook-id", "msg_p5jXN8AQM9LWM0D4loKWxJek")
	h.Set("webhook-timestamp", "1614265330")
	h.Set("webhook-signature", "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=")
	if err := g.CheckSignature(h, []byte(`{"test": 2432232314}`)); err != nil {
		t.Errorf("the specification's example: %v", err)
	}
}

// The README promises a window of ±5 min around the webhook's timestamp,
// by default: its ends are in, a second past either is out, and a webhook
// dated ahead of the server's clock is bounded as one dated behind it.
func TestWebhookSignatureWindow(t *testing.T) {
	t.Parallel()
	secret := "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
	key, _ := decodeSigningSecret(secret)
	body := []byte(`{"eventType":"DLR"}`)
	now := time.Unix(1_800_000_000, 0)
	for _, tolerance := range []time.Duration{0, 2 * time.Minute} {
		g, err := NewWebhookGuard(WebhookConfig{SigningSecrets: []string{secret}, SignatureTolerance: tolerance})
		if err != nil {
			t.Fatal(err)
		}
		g.now = func() time.Time { return now }
		window := tolerance
		if window == 0 {
			window = 5 * time.Minute
		}
		for _, tt := range []struct {
			skew time.Duration
			ok   bool
		}{
			{0, true},
			{-window, true},
			{window, true},
			{-window - time.Second, false},
			{window + time.Second, false},
		} {
			sec := strconv.FormatInt(now.Add(tt.skew).Unix(), 10)
			h := http.Header{}
			h.Set("webhook-id", "msg_1")
			h.Set("webhook-timestamp", sec)
			h.Set("webhook-signature", "v1,"+SignWebhook(key, []byte("msg_1."+sec+"."+string(body))))
			for name, check := range map[string]func() error{
				"CheckSignatureHeaders": func() error { return g.CheckSignatureHeaders(h) },
				"CheckSignature":        func() error { return g.CheckSignature(h, body) },
			} {
				if err := check(); (err == nil) != tt.ok {
					t.Errorf("tolerance %v, timestamp %+v from now: %s = %v, want ok = %v", tolerance, tt.skew, name, err, tt.ok)
				}
			}
		}
	}
}

// Each of the three signature headers is required before the body is
// read: one missing fails CheckSignatureHeaders, and CheckSignature, even
// with a signature made with the secret over what the others name.
func TestSignatureHeadersEachRequired(t *testing.T) {
	t.Parallel()
	secret := "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
	g, err := NewWebhookGuard(WebhookConfig{SigningSecrets: []string{secret}})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Unix(1_800_000_000, 0)
	g.now = func() time.Time { return now }
	key, _ := decodeSigningSecret(secret)
	body := []byte(`{"eventType":"DLR"}`)
	for _, missing := range []string{"webhook-id", "webhook-timestamp", "webhook-signature"} {
		h := http.Header{}
		id, sec := "msg_1", strconv.FormatInt(now.Unix(), 10)
		if missing == "webhook-id" {
			id = ""
		}
		if missing == "webhook-timestamp" {
			sec = ""
		}
		h.Set("webhook-id", id)
		h.Set("webhook-timestamp", sec)
		h.Set("webhook-signature", "v1,"+SignWebhook(key, []byte(id+"."+sec+"."+string(body))))
		h.Del(missing)
		if err := g.CheckSignatureHeaders(h); err == nil {
			t.Errorf("without %s: headers accepted", missing)
		}
		if err := g.CheckSignature(h, body); err == nil {
			t.Errorf("without %s: signature accepted", missing)
		}
	}
}

// A signature is the part after a "v1": the valid HMAC under another
// version's label is none, and a "v1" with nothing after it, last in the
// list, is refused without reading past the list's end.
func TestSignatureEntriesOtherThanV1(t *testing.T) {
	t.Parallel()
	secret := "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
	g, err := NewWebhookGuard(WebhookConfig{SigningSecrets: []string{secret}})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Unix(1_800_000_000, 0)
	g.now = func() time.Time { return now }
	key, _ := decodeSigningSecret(secret)
	body := []byte(`{"eventType":"DLR"}`)
	sec := strconv.FormatInt(now.Unix(), 10)
	sig := SignWebhook(key, []byte("msg_1."+sec+"."+string(body)))
	for _, list := range []string{"v1a," + sig, "v2," + sig, "," + sig, sig, "v1", "v1,bogus,v1", "v1,bogus v1"} {
		h := http.Header{}
		h.Set("webhook-id", "msg_1")
		h.Set("webhook-timestamp", sec)
		h.Set("webhook-signature", list)
		if err := g.CheckSignature(h, body); err == nil {
			t.Errorf("signatures %q accepted", list)
		}
	}
}

// Without signing secrets a webhook needs no signature: CheckSignature
// passes one that has none.
func TestNoSigningSecretsNoSignature(t *testing.T) {
	t.Parallel()
	g, err := NewWebhookGuard(WebhookConfig{Keys: []string{"wk_0123456789abcdef"}})
	if err != nil {
		t.Fatal(err)
	}
	if err := g.CheckSignature(http.Header{}, []byte(`{"eventType":"DLR"}`)); err != nil {
		t.Errorf("an unsigned webhook without signing secrets: %v", err)
	}
}

func TestSigningSecretStrength(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		secret string
		ok     bool
	}{
		{"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", true}, // 24 bytes
		{"whsec_AAAAAAAAAAAAAAAAAAAAAA==", true},         // 16 bytes
		{"whsec_AAAAAAAAAAAAAAAAAAAA", false},            // 15 bytes
		{"whsec_QQ==", false},                            // 1 byte
		{"whsec_", false},
		{"whsec_not base64!", false},
		{"whsec_AAAAAAAAAAAAAAAAAAAAAAAA!", false}, // 18 bytes, then not base64
		{"raw-secret-of-16", true},
		{"raw-secret-15ch", false},
	} {
		_, err := NewWebhookGuard(WebhookConfig{SigningSecrets: []string{tt.secret}})
		if (err == nil) != tt.ok {
			t.Errorf("NewWebhookGuard(%q): err = %v, want ok = %v", tt.secret, err, tt.ok)
		}
	}
}

// A webhook key is the last segment of the URL OTPLESS posts to: one that
// holds "/" (as base64 often does) cannot be named there, escaped or not,
// and would have every webhook answered 404.
func TestWebhookKeysFitTheURL(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		key string
		ok  bool
	}{
		{"wk_0123456789abcdef", true},
		{"wk_0123456789abc+=?", true}, // sent escaped where it must be
		{"wk_01234567", false},
		{"wk_0123456789abc", true}, // 16 bytes, the least
		{"wk_0123456789ab", false},
		{"wk_0123456789abc/de", false},
	} {
		_, err := NewWebhookGuard(WebhookConfig{Keys: []string{tt.key}})
		if (err == nil) != tt.ok {
			t.Errorf("NewWebhookGuard with key %q: err = %v, want ok = %v", tt.key, err, tt.ok)
		}
	}
}

func TestClientAddrAndAllowList(t *testing.T) {
	t.Parallel()
	proxies, _ := ParsePrefixes("10.0.0.0/8, 192.168.1.1")
	allowed, _ := ParsePrefixes("203.0.113.0/24")
	g, _ := NewWebhookGuard(WebhookConfig{AllowUnauthenticated: true, TrustedProxies: proxies, AllowedNets: allowed})
	tests := []struct{ remote, xff, want string }{
		{"203.0.113.9:1", "", "203.0.113.9"},
		{"203.0.113.9:1", "1.1.1.1", "203.0.113.9"},                     // not a trusted proxy: XFF ignored
		{"10.1.2.3:1", "203.0.113.7", "203.0.113.7"},                    // trusted proxy
		{"10.1.2.3:1", "6.6.6.6, 203.0.113.7, 10.9.9.9", "203.0.113.7"}, // right-most untrusted hop
		{"10.1.2.3:1", "garbage", "10.1.2.3"},
		{"10.1.2.3:1", "203.0.113.7:51234, 10.9.9.9:443", "203.0.113.7"}, // hops with ports, as some proxies write them
		{"10.1.2.3:1", "[2001:db8::7]:51234", "2001:db8::7"},
		{"10.1.2.3:1", "203.0.113.7:", "10.1.2.3"},
		{"[::ffff:203.0.113.9]:1", "", "203.0.113.9"},
		{"10.1.2.3:1", "::ffff:203.0.113.7", "203.0.113.7"},           // hops compared and named unmapped
		{"10.1.2.3:1", "203.0.113.7, ::ffff:10.9.9.9", "203.0.113.7"}, // a mapped hop of a trusted proxy
		{"10.1.2.3:1", "10.9.9.9, 192.168.1.1", "10.9.9.9"},           // every hop trusted: the left-most
	}
	for _, tt := range tests {
		if got := g.ClientAddr(webhookRequest(tt.remote, tt.xff)); got.String() != tt.want {
			t.Errorf("ClientAddr(%s, %q) = %s, want %s", tt.remote, tt.xff, got, tt.want)
		}
	}
	if err := g.CheckAddr(netip.MustParseAddr("203.0.113.200")); err != nil {
		t.Error(err)
	}
	if err := g.CheckAddr(netip.MustParseAddr("198.51.100.1")); !errors.Is(err, ErrForbidden) {
		t.Errorf("address outside the allow-list: %v", err)
	}
	if _, err := ParsePrefixes("10.0.0.0/33"); err == nil {
		t.Error("bad CIDR accepted")
	}
}

// Client addresses are compared unmapped (PeerAddr, ClientAddr), so a
// network written in its IPv4-mapped form, as dual-stack logs show
// addresses, is unmapped too, as a single address is: else an allow-list
// entry so written refused every sender in it, and a trusted proxy so
// written was not believed.
func TestMappedNetworks(t *testing.T) {
	t.Parallel()
	nets, err := ParsePrefixes("::ffff:203.0.113.0/120, ::ffff:198.51.100.7")
	if err != nil {
		t.Fatal(err)
	}
	for a, want := range map[string]bool{"203.0.113.9": true, "198.51.100.7": true, "198.51.100.8": false, "2001:db8::1": false} {
		if got := inNets(nets, netip.MustParseAddr(a)); got != want {
			t.Errorf("%s in %v: %v, want %v", a, nets, got, want)
		}
	}
}

// ParsePrefixes reads what the allow-list and trusted-proxy flags hold:
// blank entries (an unset flag, a trailing comma) are none, networks are
// kept masked, and IPv4-mapped ones of /96 or longer become the IPv4
// networks they are; a mapped one shorter than that, or any other IPv6
// network, stays as written.
func TestParsePrefixes(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct{ in, want string }{
		{"", ""},
		{" , ", ""},
		{"10.1.2.3/8, ", "10.0.0.0/8"},
		{"192.168.1.1,2001:db8::1", "192.168.1.1/32,2001:db8::1/128"},
		{"::ffff:203.0.113.0/120", "203.0.113.0/24"},
		{"::ffff:0.0.0.0/96", "0.0.0.0/0"},
		{"::ffff:0:0/95", "::fffe:0:0/95"},
		{"2001:db8::/96", "2001:db8::/96"},
		{"2001:db8::5/127", "2001:db8::4/127"},
	} {
		nets, err := ParsePrefixes(tt.in)
		got := make([]string, len(nets))
		for i, n := range nets {
			got[i] = n.String()
		}
		if err != nil || strings.Join(got, ",") != tt.want {
			t.Errorf("ParsePrefixes(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
		}
	}
}

func TestRateLimitPerAddress(t *testing.T) {
	t.Parallel()
	g, _ := NewWebhookGuard(WebhookConfig{AllowUnauthenticated: true, RatePerSecond: 1, Burst: 3, FailureRatePerSecond: 100, FailureBurst: 100})
	now := time.Unix(1_800_000_000, 0)
	g.now = func() time.Time { return now }
	a, b := netip.MustParseAddr("1.1.1.1"), netip.MustParseAddr("2.2.2.2")
	for i := range 3 {
		if ok, _ := g.Allow(a); !ok {
			t.Fatalf("request %d within the burst refused", i)
		}
	}
	ok, wait := g.Allow(a)
	if ok || wait <= 0 || wait > time.Second {
		t.Fatalf("over the burst: ok=%v wait=%v", ok, wait)
	}
	if ok, _ := g.Allow(b); !ok {
		t.Fatal("another address was limited too")
	}
	now = now.Add(time.Second)
	if ok, _ := g.Allow(a); !ok {
		t.Fatal("not refilled after a second")
	}
	// One IPv6 client rotating through its /64 shares one budget.
	for i := range 3 {
		if ok, _ := g.Allow(netip.MustParseAddr("2001:db8::" + strconv.Itoa(i+1))); !ok {
			t.Fatalf("IPv6 address %d within the burst refused", i)
		}
	}
	if ok, _ := g.Allow(netip.MustParseAddr("2001:db8::ffff")); ok {
		t.Fatal("a fourth address of the same /64 got a fresh burst")
	}
	if ok, _ := g.Allow(netip.MustParseAddr("2001:db8:0:1::1")); !ok {
		t.Fatal("another /64 was limited too")
	}
}

// Authenticated webhooks and failed ones are limited apart, each by its
// own rate and burst, and either may be unlimited alone.
func TestRateLimitsApart(t *testing.T) {
	t.Parallel()
	now := time.Unix(1_800_000_000, 0)
	a := netip.MustParseAddr("1.1.1.1")
	onlyFailures, _ := NewWebhookGuard(WebhookConfig{Keys: []string{"wk_0123456789abcdef"}, FailureRatePerSecond: 1, FailureBurst: 2})
	onlyFailures.now = func() time.Time { return now }
	for i := range 1000 {
		if ok, _ := onlyFailures.Allow(a); !ok {
			t.Fatalf("authenticated webhook %d refused without a rate for them", i+1)
		}
	}
	for i, want := range []bool{true, true, false} {
		if ok, _ := onlyFailures.AllowFailure(a); ok != want {
			t.Fatalf("failure %d: allowed %v, want %v", i+1, ok, want)
		}
	}

	both, _ := NewWebhookGuard(WebhookConfig{Keys: []string{"wk_0123456789abcdef"}, RatePerSecond: 1, Burst: 1, FailureRatePerSecond: 1, FailureBurst: 3})
	both.now = func() time.Time { return now }
	if ok, _ := both.Allow(a); !ok {
		t.Fatal("first authenticated webhook refused")
	}
	if ok, _ := both.Allow(a); ok {
		t.Fatal("authenticated webhook over a burst of 1 allowed")
	}
	for i := range 3 {
		if ok, _ := both.AllowFailure(a); !ok {
			t.Fatalf("failure %d within its own burst of 3 refused", i+1)
		}
	}
	if ok, _ := both.AllowFailure(a); ok {
		t.Fatal("failure over its burst allowed")
	}

	none, _ := NewWebhookGuard(WebhookConfig{Keys: []string{"wk_0123456789abcdef"}})
	for range 1000 {
		if ok, _ := none.AllowFailure(a); !ok {
			t.Fatal("failure refused without a rate for them")
		}
	}
}

// FailuresLeft answers as AllowFailure would, taking nothing: an address
// never seen has its whole budget (and is not added to the table), one
// that spent it waits until a whole token is back, with that wait, and it
// has one again the moment AllowFailure would let it through.
func TestFailuresLeftTakesNothing(t *testing.T) {
	t.Parallel()
	g, err := NewWebhookGuard(WebhookConfig{SigningSecrets: []string{"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"}, FailureRatePerSecond: 2, FailureBurst: 1})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Unix(1_800_000_000, 0)
	g.now = func() time.Time { return now }
	a := netip.MustParseAddr("2001:db8::1")
	for range 3 {
		if ok, wait := g.FailuresLeft(a); !ok || wait != 0 {
			t.Fatalf("an address never seen: %v, %v; want its budget", ok, wait)
		}
	}
	if len(g.failures.entries) != 0 {
		t.Fatalf("FailuresLeft added %d addresses to the table", len(g.failures.entries))
	}
	if ok, _ := g.AllowFailure(a); !ok {
		t.Fatal("first failure refused")
	}
	now = now.Add(250 * time.Millisecond) // half a token back, at 2/s
	if ok, wait := g.FailuresLeft(netip.MustParseAddr("2001:db8::2")); ok || wait != 250*time.Millisecond {
		t.Errorf("the same /64 a quarter second after its burst: %v, %v; want none left for 250ms", ok, wait)
	}
	now = now.Add(250 * time.Millisecond) // a whole token back
	if ok, wait := g.FailuresLeft(a); !ok || wait != 0 {
		t.Errorf("a token back: %v, %v; want one left", ok, wait)
	}
	if ok, _ := g.AllowFailure(a); !ok {
		t.Error("AllowFailure refused the token FailuresLeft saw")
	}
	open, err := NewWebhookGuard(WebhookConfig{Keys: []string{"wk_0123456789abcdef"}})
	if err != nil {
		t.Fatal(err)
	}
	if ok, wait := open.FailuresLeft(a); !ok || wait != 0 {
		t.Errorf("no failure rate: %v, %v; want unlimited", ok, wait)
	}
}

// A limiter's table of addresses is bounded: full, it refuses a new
// address for a second while those it holds go on, and it forgets those
// idle for over a minute, so that new ones get in again.
func TestRateLimiterTableIsBounded(t *testing.T) {
	t.Parallel()
	l, err := newAddrLimiter("webhooks", 1, 2)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Unix(1_800_000_000, 0)
	addr := func(i int) netip.Addr { return netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}) }
	for i := range limiterMaxEntries {
		if ok, _ := l.allow(addr(i), now); !ok {
			t.Fatalf("address %d of a table not full refused", i+1)
		}
	}
	stranger := netip.MustParseAddr("203.0.113.9")
	if ok, wait := l.allow(stranger, now.Add(30*time.Second)); ok || wait != time.Second {
		t.Errorf("a new address with the table full: %v, %v; want refused for 1s", ok, wait)
	}
	if ok, _ := l.allow(addr(0), now.Add(30*time.Second)); !ok {
		t.Error("an address the full table holds refused within its budget")
	}
	// addr(0) was seen at +30s; the others only at 0, over a minute before.
	if ok, _ := l.allow(stranger, now.Add(61*time.Second)); !ok {
		t.Error("a new address refused once the table's addresses were idle for over a minute")
	}
	if len(l.entries) != 2 {
		t.Errorf("after the sweep the table holds %d addresses, want 2 (the two seen within the minute)", len(l.entries))
	}
}

// A limiter sweeps its table at most every ten seconds, as its table
// grows past limiterSweepAt: a sweep walks every address under the lock,
// so sweeping on each webhook of a full table would make each one cost
// the whole table. A sweep forgets addresses idle for over a minute, and
// keeps one idle for exactly that.
func TestRateLimiterSweepsEveryTenSeconds(t *testing.T) {
	t.Parallel()
	l, err := newAddrLimiter("webhooks", 1, 2)
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Unix(1_800_000_000, 0)
	addr := func(i int) netip.Addr { return netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}) }
	for i := range limiterSweepAt - 1 {
		l.allow(addr(i), t0)
	}
	steps := []struct {
		at      time.Duration
		entries int
		what    string
	}{
		{5500 * time.Millisecond, limiterSweepAt, "the table reaches its sweep size"},
		{55 * time.Second, limiterSweepAt + 1, "a sweep, with none idle for a minute"},
		{65 * time.Second, limiterSweepAt + 2, "ten seconds after that sweep, none"},
		{65500 * time.Millisecond, 4, "past ten seconds, a sweep forgets those idle over a minute"},
	}
	for i, s := range steps {
		if ok, _ := l.allow(netip.MustParseAddr("203.0.113."+strconv.Itoa(i+1)), t0.Add(s.at)); !ok {
			t.Fatalf("at +%v: a new address refused", s.at)
		}
		if len(l.entries) != s.entries {
			t.Fatalf("at +%v (%s): the table holds %d addresses, want %d", s.at, s.what, len(l.entries), s.entries)
		}
	}
}

func TestLoadOrCreateSecret(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "data")
	var wg sync.WaitGroup
	got := make([]string, 8)
	created := make([]bool, 8)
	for i := range got {
		wg.Go(func() {
			var err error
			got[i], created[i], err = LoadOrCreateSecret(dir, "webhook-key", "whk_")
			if err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	n := 0
	for i := range got {
		if got[i] != got[0] {
			t.Fatalf("processes disagree on the secret: %q vs %q", got[i], got[0])
		}
		if created[i] {
			n++
		}
	}
	if n != 1 {
		t.Fatalf("secret created %d times, want once", n)
	}
	if rest, ok := strings.CutPrefix(got[0], "whk_"); !ok || len(rest) < 20 {
		t.Errorf("new secret %q: want whk_ and a random part", got[0])
	}
	fi, err := os.Stat(filepath.Join(dir, "webhook-key"))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("secret file mode %v, %v; want 0600", fi.Mode(), err)
	}
	if fi, err := os.Stat(dir); err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("secret directory mode %v, %v; want 0700", fi.Mode(), err)
	}
	// The file holds the secret as a line, and nothing else is left
	// beside it (the temporary files are another name of the secret).
	if b, err := os.ReadFile(filepath.Join(dir, "webhook-key")); err != nil || string(b) != got[0]+"\n" {
		t.Errorf("secret file holds %q, %v; want %q", b, err, got[0]+"\n")
	}
	if names, err := os.ReadDir(dir); err != nil || len(names) != 1 {
		t.Errorf("the secret directory holds %v, %v; want the secret alone", names, err)
	}
	again, createdAgain, err := LoadOrCreateSecret(dir, "webhook-key", "whk_")
	if err != nil || createdAgain || again != got[0] {
		t.Fatalf("reload = %q, %v, %v", again, createdAgain, err)
	}
	secrets, err := ReadSecrets("a, b\n#c", "")
	if err != nil || len(secrets) != 2 {
		t.Fatalf("ReadSecrets = %v, %v", secrets, err)
	}
	file := filepath.Join(t.TempDir(), "secrets")
	if err := os.WriteFile(file, []byte("c"), 0o600); err != nil {
		t.Fatal(err)
	}
	if secrets, err := ReadSecrets("a, b", file); err != nil || !slices.Equal(secrets, []string{"a", "b", "c"}) {
		t.Errorf("ReadSecrets from the environment and a file = %q, %v; want [a b c]", secrets, err)
	}
	// A file named but missing (a typo) is an error, not a list of none.
	if secrets, err := ReadSecrets("a", file+"-typo"); err == nil {
		t.Errorf("ReadSecrets of a missing file = %q, no error", secrets)
	}
}

// A secret file that is empty, or a directory, is an error: neither is
// taken for a secret of nothing, nor replaced (were the directory's read
// error taken for a missing file, the creation would retry forever).
func TestLoadOrCreateSecretRefuses(t *testing.T) {
	t.Parallel()
	for name, setup := range map[string]func(path string) error{
		"empty":     func(path string) error { return os.WriteFile(path, []byte(" \n"), 0o600) },
		"directory": func(path string) error { return os.Mkdir(path, 0o700) },
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			if err := setup(filepath.Join(dir, "webhook-key")); err != nil {
				t.Fatal(err)
			}
			if s, created, err := LoadOrCreateSecret(dir, "webhook-key", "whk_"); err == nil {
				t.Errorf("LoadOrCreateSecret = %q, %v, no error", s, created)
			}
		})
	}
}

func TestMissingDirs(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	got := missingDirs(filepath.Join(root, "a", "b", "c"))
	want := []string{filepath.Join(root, "a", "b", "c"), filepath.Join(root, "a", "b"), filepath.Join(root, "a")}
	if !slices.Equal(got, want) {
		t.Errorf("missingDirs = %q, want %q", got, want)
	}
	if got := missingDirs(filepath.Join(root, "a", "b") + "/"); !slices.Equal(got, want[1:]) {
		t.Errorf("missingDirs with a trailing slash = %q, want %q", got, want[1:])
	}
	if got := missingDirs(root); len(got) != 0 {
		t.Errorf("missingDirs of an existing directory = %q", got)
	}
}

func TestPeerAddr(t *testing.T) {
	t.Parallel()
	for remote, want := range map[string]string{
		"203.0.113.7:5000":          "203.0.113.7",
		"203.0.113.7":               "203.0.113.7",
		"[::ffff:203.0.113.7]:5000": "203.0.113.7",
		"[2001:db8::1]:443":         "2001:db8::1",
		"[fe80::1%eth0]:80":         "fe80::1%eth0",
		"pipe":                      "invalid IP",
	} {
		if got := PeerAddr(remote).String(); got != want {
			t.Errorf("PeerAddr(%q) = %s, want %s", remote, got, want)
		}
	}
}

// A comment in a file of secrets is not a secret, whatever it holds: split
// at its commas, the tail of "# ..., rotated ..." was a webhook key, and
// that of a watch-token key file's first comment the key tokens were
// signed with: anyone who guessed the words could post webhooks or forge
// tokens.
func TestCommentsInSecretsAreNotSecrets(t *testing.T) {
	t.Parallel()
	read := func(text string) []string {
		t.Helper()
		file := filepath.Join(t.TempDir(), "secrets")
		if err := os.WriteFile(file, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		secrets, err := ReadSecrets("", file)
		if err != nil {
			t.Fatal(err)
		}
		return secrets
	}

	keys := read("# OTPLESS's URL key, rotated 2026-01-15 by the ops team\n" +
		"whk_current-0123456789abcdef\n" +
		"whk_previous-0123456789abcdef, # kept until OTPLESS moves, then removed for good\n")
	if want := []string{"whk_current-0123456789abcdef", "whk_previous-0123456789abcdef"}; !slices.Equal(keys, want) {
		t.Errorf("webhook keys = %q, want %q", keys, want)
	}
	if g, err := NewWebhookGuard(WebhookConfig{Keys: keys}); err != nil {
		t.Error(err)
	} else {
		for _, guess := range []string{"rotated 2026-01-15 by the ops team", "then removed for good"} {
			if err := g.CheckCredentials(webhookRequest("198.51.100.7:1234", ""), guess, true); err == nil {
				t.Errorf("words of a comment, %q, are a webhook key", guess)
			}
		}
	}

	tokenKeys := read("# watch-token keys, newest first: prepend a new one to rotate\n" +
		"a-real-watch-token-key-0123456789abcdef\n")
	var raw [][]byte
	for _, k := range tokenKeys {
		raw = append(raw, []byte(k))
	}
	signer, err := NewTokenSigner(raw)
	if err != nil {
		t.Fatal(err)
	}
	guessed, _ := NewTokenSigner([][]byte{[]byte("newest first: prepend a new one to rotate")})
	forged, _ := guessed.Mint("someone-elses-request", time.Minute)
	if id, err := signer.Verify(forged); err == nil {
		t.Errorf("a token signed with the words of a comment is valid, for %q (keys %q)", id, tokenKeys)
	}
}

// A line of API keys commented out is out whole: split at its ";" first,
// the keys after the first stayed configured, an admin key among them.
func TestCommentedOutAPIKeysAreOut(t *testing.T) {
	t.Parallel()
	text := "# retired: " + FormatAPIKey("web", "web-secret", []Scope{ScopeRead}) + "; " + FormatAPIKey("ops", "ops-secret", []Scope{ScopeAdmin}) + "\n" +
		FormatAPIKey("reader", "reader-secret", []Scope{ScopeRead}) + "; # old: " + FormatAPIKey("old", "old-secret", []Scope{ScopeAdmin}) + "\n"
	keys, err := ParseAPIKeys(text)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, k := range keys {
		names = append(names, k.Name)
	}
	if !slices.Equal(names, []string{"reader"}) {
		t.Errorf("keys configured: %q, want only reader", names)
	}
	if p, err := NewKeyring(keys, nil).Authenticate("ops-secret"); err == nil {
		t.Errorf("a key commented out authenticates, as %q with %v", p.Name, p.Scopes)
	}
}

// FuzzWatchToken: without the key, the only token that verifies is the one
// minted, spelt as minted; any other spelling of it is refused.
func FuzzWatchToken(f *testing.F) {
	signer, _ := NewTokenSigner([][]byte{[]byte("fuzz-key-fuzz-key-fuzz-key-fuzz!")})
	now := time.Unix(1_800_000_000, 0)
	signer.now = func() time.Time { return now }
	tok, _ := signer.Mint("req-a", time.Minute)
	f.Add(tok)
	f.Add(tok + "\n")
	f.Add(strings.Replace(tok, ".", ".\r\n", 2))
	f.Add(tok[:len(tok)-1] + "B")
	f.Fuzz(func(t *testing.T, s string) {
		id, err := signer.Verify(s)
		if err == nil && (s != tok || id != "req-a") {
			t.Fatalf("Verify(%q) = %q: only %q verifies", s, id, tok)
		}
		if err != nil && !errors.Is(err, ErrUnauthenticated) {
			t.Fatalf("Verify(%q): %v is not ErrUnauthenticated", s, err)
		}
	})
}
