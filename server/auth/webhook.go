package auth

import (
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"math"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// ErrForbidden: the client address is not allowed.
var ErrForbidden = errors.New("client address not allowed")

// DefaultSignatureTolerance bounds the age of a signed webhook.
const DefaultSignatureTolerance = 5 * time.Minute

// BasicCredential is one HTTP Basic user and password.
type BasicCredential struct{ User, Password string }

// WebhookConfig says how webhook senders are authenticated and limited.
type WebhookConfig struct {
	// Keys are secrets accepted in the URL: POST /v1/webhooks/otpless/{key}.
	// Several may be active at once, for rotation.
	Keys []string
	// Basic credentials accepted on POST /v1/webhooks/otpless (the keyed
	// route checks its key alone).
	Basic []BasicCredential
	// AllowUnauthenticated accepts webhooks without credentials on
	// POST /v1/webhooks/otpless. Off unless the operator turns it on.
	AllowUnauthenticated bool
	// SigningSecrets, when set, require a valid Standard Webhooks signature
	// (webhook-id, webhook-timestamp, webhook-signature) on every webhook,
	// in addition to the above. "whsec_"-prefixed base64, or raw.
	SigningSecrets []string
	// SignatureTolerance bounds how old (or early) a signed webhook may be.
	SignatureTolerance time.Duration
	// AllowedNets, when set, restricts webhook senders to these networks.
	AllowedNets []netip.Prefix
	// TrustedProxies are the only peers whose X-Forwarded-For is believed.
	TrustedProxies []netip.Prefix
	// RatePerSecond and Burst limit authenticated webhooks per client
	// address; FailureRatePerSecond and FailureBurst, from a budget of
	// their own, webhooks whose credentials failed. A rate of 0 disables
	// its limit.
	RatePerSecond        float64
	Burst                int
	FailureRatePerSecond float64
	FailureBurst         int
}

// Configured reports whether any way to authenticate webhooks is set.
func (c *WebhookConfig) Configured() bool {
	return len(c.Keys) > 0 || len(c.Basic) > 0 || len(c.SigningSecrets) > 0 || c.AllowUnauthenticated
}

// WebhookGuard applies a WebhookConfig to requests.
type WebhookGuard struct {
	cfg     WebhookConfig
	signing [][]byte
	// limiter budgets authenticated webhooks, failures failed credentials:
	// senders without credentials cannot fill the first one's table (which,
	// full, refuses new addresses), and cannot guess without limit.
	limiter, failures *addrLimiter
	now               func() time.Time
}

// NewWebhookGuard validates cfg and returns its guard.
func NewWebhookGuard(cfg WebhookConfig) (*WebhookGuard, error) {
	if !cfg.Configured() {
		return nil, errors.New("webhooks: no key, basic credential or signing secret configured, and unauthenticated webhooks not allowed")
	}
	signing, err := cfg.checkSecrets()
	if err != nil {
		return nil, err
	}
	g := &WebhookGuard{cfg: cfg, signing: signing, now: time.Now}
	if g.cfg.SignatureTolerance <= 0 {
		g.cfg.SignatureTolerance = DefaultSignatureTolerance
	}
	if g.limiter, err = newAddrLimiter("webhooks", cfg.RatePerSecond, cfg.Burst); err != nil {
		return nil, err
	}
	if g.failures, err = newAddrLimiter("failed webhooks", cfg.FailureRatePerSecond, cfg.FailureBurst); err != nil {
		return nil, err
	}
	return g, nil
}

// CheckSecrets reports a webhook key or signing secret that cannot work:
// too short, or a key no URL can carry. It needs no other credential, so
// that a start can refuse them before it makes any.
func (c *WebhookConfig) CheckSecrets() error {
	_, err := c.checkSecrets()
	return err
}

// checkSecrets is CheckSecrets, returning the signing secrets decoded.
func (c *WebhookConfig) checkSecrets() ([][]byte, error) {
	for _, k := range c.Keys {
		if len(k) < 16 {
			return nil, errors.New("webhooks: a webhook key is shorter than 16 bytes")
		}
		// The key is the URL's last segment, which the routes split at
		// "/" and at its escape %2F alike: no URL could name it.
		if strings.Contains(k, "/") {
			return nil, errors.New(`webhooks: a webhook key holds "/", which no webhook URL can carry (the key is one path segment)`)
		}
	}
	var signing [][]byte
	for _, s := range c.SigningSecrets {
		key, err := decodeSigningSecret(s)
		if err != nil {
			return nil, err
		}
		signing = append(signing, key)
	}
	return signing, nil
}

// CheckLimits reports the rates and bursts that cannot work: a rate that
// is negative or not a number, a burst that is negative (its rate set or
// not: unused now, it would fail once the rate is set), or a burst under 1
// for a rate that is set.
// It needs no credential, so that a start can refuse them before it makes
// any.
func (c *WebhookConfig) CheckLimits() error {
	return errors.Join(checkLimit("webhooks", c.RatePerSecond, c.Burst),
		checkLimit("failed webhooks", c.FailureRatePerSecond, c.FailureBurst))
}

// checkLimit reports why a limit of perSecond per client address with
// burst cannot work, if it cannot; what names the limited.
func checkLimit(what string, perSecond float64, burst int) error {
	switch {
	case !(perSecond >= 0) || math.IsInf(perSecond, 0): // NaN too
		return fmt.Errorf("webhooks: the rate of %s per client address must be 0 (unlimited) or a positive number, not %v", what, perSecond)
	case burst < 0:
		return fmt.Errorf("webhooks: the burst of %s per client address must not be negative, got %d", what, burst)
	case perSecond > 0 && burst < 1:
		return fmt.Errorf("webhooks: the burst of %s per client address must be at least 1, not %d", what, burst)
	}
	return nil
}

// newAddrLimiter returns a limiter of perSecond per client address with
// burst, nil for a perSecond of 0 (unlimited); what names the limited in
// its errors.
func newAddrLimiter(what string, perSecond float64, burst int) (*addrLimiter, error) {
	if err := checkLimit(what, perSecond, burst); err != nil || perSecond == 0 {
		return nil, err
	}
	return &addrLimiter{limit: rate.Limit(perSecond), burst: burst, entries: map[netip.Addr]*limitEntry{}}, nil
}

func decodeSigningSecret(s string) ([]byte, error) {
	if rest, ok := strings.CutPrefix(s, "whsec_"); ok {
		key, err := base64.StdEncoding.DecodeString(rest)
		if err != nil {
			return nil, errors.New("webhooks: a whsec_ signing secret is not valid base64")
		}
		// Standard Webhooks secrets are 24 to 64 random bytes; a short
		// one would be guessed.
		if len(key) < 16 {
			return nil, errors.New("webhooks: a whsec_ signing secret holds fewer than 16 bytes")
		}
		return key, nil
	}
	if len(s) < 16 {
		return nil, errors.New("webhooks: a signing secret is shorter than 16 bytes")
	}
	return []byte(s), nil
}

// PeerAddr is the address of a peer as net.Conn's RemoteAddr names it
// (host:port, or a bare host), IPv4-mapped addresses unmapped; the zero
// Addr when it names none.
func PeerAddr(remote string) netip.Addr {
	if ap, err := netip.ParseAddrPort(remote); err == nil {
		return ap.Addr().Unmap()
	}
	a, _ := netip.ParseAddr(remote)
	return a.Unmap()
}

// ClientAddr is the client's address: the peer, or, when the peer is a
// trusted proxy, the right-most X-Forwarded-For entry that is not one.
func (g *WebhookGuard) ClientAddr(r *http.Request) netip.Addr {
	addr := PeerAddr(r.RemoteAddr)
	if !addr.IsValid() {
		return addr
	}
	if !inNets(g.cfg.TrustedProxies, addr) {
		return addr
	}
	hops := strings.Split(strings.Join(r.Header.Values("X-Forwarded-For"), ","), ",")
	for i := len(hops) - 1; i >= 0; i-- {
		hop, err := parseHop(strings.TrimSpace(hops[i]))
		if err != nil {
			return addr // a malformed chain: trust only what we saw
		}
		addr = hop.Unmap()
		if !inNets(g.cfg.TrustedProxies, addr) {
			return addr
		}
	}
	return addr
}

// parseHop reads one X-Forwarded-For entry: an address, or an address and
// port, as some proxies (Azure's Application Gateway) write it.
func parseHop(s string) (netip.Addr, error) {
	if a, err := netip.ParseAddr(s); err == nil {
		return a, nil
	}
	ap, err := netip.ParseAddrPort(s)
	return ap.Addr(), err
}

// CheckAddr returns ErrForbidden when an allow-list is set and addr is not
// on it.
func (g *WebhookGuard) CheckAddr(addr netip.Addr) error {
	if len(g.cfg.AllowedNets) > 0 && !inNets(g.cfg.AllowedNets, addr) {
		return ErrForbidden
	}
	return nil
}

// Allow takes one webhook from addr's rate budget, for a webhook whose
// credentials held. When none is left it returns false and how long to
// wait.
func (g *WebhookGuard) Allow(addr netip.Addr) (bool, time.Duration) {
	if g.limiter == nil {
		return true, 0
	}
	return g.limiter.allow(addr, g.now())
}

// AllowFailure is Allow for a webhook whose credentials failed, from a
// budget of its own.
func (g *WebhookGuard) AllowFailure(addr netip.Addr) (bool, time.Duration) {
	if g.failures == nil {
		return true, 0
	}
	return g.failures.allow(addr, g.now())
}

// Spend takes a webhook's place from the budget of its credentials'
// outcome: Allow's, or AllowFailure's when they failed.
func (g *WebhookGuard) Spend(addr netip.Addr, failed bool) (bool, time.Duration) {
	if failed {
		return g.AllowFailure(addr)
	}
	return g.Allow(addr)
}

// FailuresLeft reports whether addr has failure budget left, taking none.
func (g *WebhookGuard) FailuresLeft(addr netip.Addr) (bool, time.Duration) {
	if g.failures == nil {
		return true, 0
	}
	return g.failures.left(addr, g.now())
}

// SignatureDecides reports whether a webhook that CheckCredentials let
// through is authenticated by its signature alone: signing secrets are the
// only credential configured. Who sent it is then known only once its body
// is read and its signature checked.
func (g *WebhookGuard) SignatureDecides() bool {
	return len(g.signing) > 0 && len(g.cfg.Keys) == 0 && len(g.cfg.Basic) == 0 && !g.cfg.AllowUnauthenticated
}

// SignatureRequired reports whether a webhook needs a valid signature as
// well as what CheckCredentials checks: signing secrets are configured.
func (g *WebhookGuard) SignatureRequired() bool { return len(g.signing) > 0 }

// CheckSignatureHeaders checks what CheckSignature can before the body is
// read: the signature's headers are there, and the timestamp is within
// the tolerance.
func (g *WebhookGuard) CheckSignatureHeaders(h http.Header) error {
	if h.Get("webhook-id") == "" || h.Get("webhook-timestamp") == "" || strings.TrimSpace(signatureList(h)) == "" {
		return fmt.Errorf("%w: webhook-id, webhook-timestamp and webhook-signature headers required", ErrUnauthenticated)
	}
	sec, err := strconv.ParseInt(h.Get("webhook-timestamp"), 10, 64)
	if err != nil {
		return fmt.Errorf("%w: webhook-timestamp is not a number", ErrUnauthenticated)
	}
	if d := g.now().Sub(time.Unix(sec, 0)); d > g.cfg.SignatureTolerance || d < -g.cfg.SignatureTolerance {
		return fmt.Errorf("%w: webhook-timestamp outside the tolerance window", ErrUnauthenticated)
	}
	return nil
}

// CheckCredentials authenticates a webhook before its body is read: the key
// from the URL (hasKey false on the keyless route) or HTTP Basic.
func (g *WebhookGuard) CheckCredentials(r *http.Request, key string, hasKey bool) error {
	if hasKey {
		if matchAny(g.cfg.Keys, key) {
			return nil
		}
		return fmt.Errorf("%w: unknown webhook key", ErrUnauthenticated)
	}
	if user, pass, ok := basicAuth(r.Header); ok {
		for _, c := range g.cfg.Basic {
			if subtle.ConstantTimeCompare([]byte(user), []byte(c.User))&subtle.ConstantTimeCompare([]byte(pass), []byte(c.Password)) == 1 {
				return nil
			}
		}
		return fmt.Errorf("%w: wrong basic credentials", ErrUnauthenticated)
	}
	if g.cfg.AllowUnauthenticated || (len(g.cfg.Keys) == 0 && len(g.cfg.Basic) == 0) {
		return nil // nothing to check here; a signature may still be required
	}
	return fmt.Errorf("%w: webhook key or basic credentials required", ErrUnauthenticated)
}

// basicAuth is the user and password of h's HTTP Basic credentials, as
// net/http's Request.BasicAuth reads them but for the spaces after the
// scheme, of which it takes only one.
func basicAuth(h http.Header) (user, password string, ok bool) {
	c, ok := cutCredentials(h.Get("Authorization"), "Basic")
	if !ok {
		return "", "", false
	}
	b, err := base64.StdEncoding.DecodeString(c)
	if err != nil {
		return "", "", false
	}
	return strings.Cut(string(b), ":")
}

// CheckSignature verifies the Standard Webhooks signature over body when
// signing secrets are configured.
func (g *WebhookGuard) CheckSignature(h http.Header, body []byte) error {
	if len(g.signing) == 0 {
		return nil
	}
	if err := g.CheckSignatureHeaders(h); err != nil {
		return err
	}
	id, ts, sigs := h.Get("webhook-id"), h.Get("webhook-timestamp"), signatureList(h)
	msg := make([]byte, 0, len(id)+len(ts)+len(body)+2)
	msg = append(append(append(append(append(msg, id...), '.'), ts...), '.'), body...)
	for _, key := range g.signing {
		want := SignWebhook(key, msg)
		for _, s := range strings.Fields(sigs) {
			// An entry is "v1,<base64>"; lines a proxy joined (RFC 9110,
			// 5.3) put a comma between entries, with or without space
			// around it. base64 holds no comma: a signature is the part
			// after a "v1".
			parts := strings.FieldsFunc(s, func(r rune) bool { return r == ',' })
			for i := 0; i+1 < len(parts); i++ {
				if parts[i] == "v1" && hmac.Equal([]byte(parts[i+1]), []byte(want)) {
					return nil
				}
			}
		}
	}
	return fmt.Errorf("%w: no valid webhook signature", ErrUnauthenticated)
}

// signatureList is the webhook's signatures, a space-separated list of
// "v1,<base64>" (Standard Webhooks): the webhook-signature header's lines
// joined, since HTTP lets a field repeated as lines mean their list.
func signatureList(h http.Header) string {
	return strings.Join(h.Values("webhook-signature"), " ")
}

// SignWebhook returns the base64 HMAC-SHA256 of msg ("id.timestamp.body").
func SignWebhook(key, msg []byte) string {
	m := hmac.New(sha256.New, key)
	m.Write(msg)
	return base64.StdEncoding.EncodeToString(m.Sum(nil))
}

func matchAny(secrets []string, got string) bool {
	ok := 0
	for _, s := range secrets {
		ok |= subtle.ConstantTimeCompare([]byte(s), []byte(got))
	}
	return ok == 1
}

func inNets(nets []netip.Prefix, a netip.Addr) bool {
	for _, n := range nets {
		if n.Contains(a) {
			return true
		}
	}
	return false
}

// ParsePrefixes reads comma-separated CIDRs or single addresses.
func ParsePrefixes(s string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		if p, err := netip.ParsePrefix(f); err == nil {
			if p.Addr().Is4In6() && p.Bits() >= 96 { // as addresses are compared: unmapped
				p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
			}
			out = append(out, p.Masked())
			continue
		}
		a, err := netip.ParseAddr(f)
		if err != nil {
			return nil, fmt.Errorf("%q is neither a CIDR nor an address", f)
		}
		out = append(out, netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()))
	}
	return out, nil
}

// addrLimiter is a token bucket per client address (per /64 for IPv6, which
// one client commonly holds whole). It tracks at most limiterMaxEntries
// addresses, forgetting those idle for a minute at most every ten seconds;
// when full, new addresses wait.
type addrLimiter struct {
	limit rate.Limit
	burst int

	mu        sync.Mutex
	entries   map[netip.Addr]*limitEntry
	lastSweep time.Time
}

type limitEntry struct {
	lim  *rate.Limiter
	seen time.Time
}

const (
	limiterSweepAt    = 10000
	limiterMaxEntries = 100000
)

// ClientKey is the address whose budget addr spends under the limits per
// client address: addr, or for IPv6 its /64.
func ClientKey(addr netip.Addr) netip.Addr {
	if addr.Is6() && !addr.Is4In6() {
		return netip.PrefixFrom(addr, 64).Masked().Addr()
	}
	return addr
}

func (l *addrLimiter) allow(addr netip.Addr, now time.Time) (bool, time.Duration) {
	addr = ClientKey(addr)
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.entries) >= limiterSweepAt && now.Sub(l.lastSweep) > 10*time.Second {
		l.lastSweep = now
		for a, e := range l.entries {
			if now.Sub(e.seen) > time.Minute {
				delete(l.entries, a)
			}
		}
	}
	e := l.entries[addr]
	if e == nil {
		if len(l.entries) >= limiterMaxEntries {
			return false, time.Second
		}
		e = &limitEntry{lim: rate.NewLimiter(l.limit, l.burst)}
		l.entries[addr] = e
	}
	e.seen = now
	r := e.lim.ReserveN(now, 1)
	if d := r.DelayFrom(now); d > 0 {
		r.CancelAt(now)
		return false, d
	}
	return true, 0
}

// left is allow without taking a token, nor adding addr: an address not
// tracked has its whole budget.
func (l *addrLimiter) left(addr netip.Addr, now time.Time) (bool, time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	e := l.entries[ClientKey(addr)]
	if e == nil {
		return true, 0
	}
	if tokens := e.lim.TokensAt(now); tokens < 1 {
		return false, time.Duration((1 - tokens) / float64(l.limit) * float64(time.Second))
	}
	return true, 0
}
