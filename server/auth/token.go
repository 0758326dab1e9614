package auth

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
)

// Watch-token lifetimes.
const (
	DefaultWatchTokenTTL = 10 * time.Minute
	MaxWatchTokenTTL     = time.Hour
)

const tokenPrefix = "owt1."

// IsWatchToken reports whether a bearer credential is shaped as a watch token.
func IsWatchToken(s string) bool { return strings.HasPrefix(s, tokenPrefix) }

// TokenSigner mints and verifies watch tokens: HMAC-SHA256 over the request
// id and expiry. It signs with the first key and accepts any, so keys can be
// rotated by prepending a new one.
type TokenSigner struct {
	keys [][]byte
	now  func() time.Time
}

// NewTokenSigner returns a signer; keys must not be empty.
func NewTokenSigner(keys [][]byte) (*TokenSigner, error) {
	if len(keys) == 0 {
		return nil, errors.New("watch tokens: no signing key")
	}
	if err := CheckTokenKeys(keys); err != nil {
		return nil, err
	}
	return &TokenSigner{keys: keys, now: time.Now}, nil
}

// CheckTokenKeys reports a watch-token signing key too short to sign with,
// so that a start can refuse it before it makes any credential.
func CheckTokenKeys(keys [][]byte) error {
	for _, k := range keys {
		if len(k) < 32 {
			return errors.New("watch tokens: a signing key is shorter than 32 bytes")
		}
	}
	return nil
}

// decodeCanonical decodes what Mint encodes and nothing else: a token has
// one spelling, so per-token limits, which count its digest, cannot be
// passed by spelling it another way. Strict alone is not enough: it
// refuses set bits past the last byte, but skips CR and LF anywhere.
func decodeCanonical(s string) ([]byte, bool) {
	b, err := base64.RawURLEncoding.Strict().DecodeString(s)
	return b, err == nil && base64.RawURLEncoding.EncodedLen(len(b)) == len(s)
}

type tokenClaims struct {
	RequestID string `json:"rid"`
	Expires   int64  `json:"exp"`
}

// Mint returns a token for requestID that expires after ttl.
func (s *TokenSigner) Mint(requestID string, ttl time.Duration) (string, time.Time) {
	// Whole seconds, rounded up: a token lives at least ttl.
	exp := s.now().Add(ttl + time.Second - 1).Truncate(time.Second)
	payload, _ := json.Marshal(tokenClaims{RequestID: requestID, Expires: exp.Unix()}) // cannot fail
	signed := tokenPrefix + base64.RawURLEncoding.EncodeToString(payload)
	return signed + "." + base64.RawURLEncoding.EncodeToString(s.sign(s.keys[0], signed)), exp
}

// Verify returns the request id a valid, unexpired token is bound to.
func (s *TokenSigner) Verify(token string) (string, error) {
	i := strings.LastIndexByte(token, '.')
	if !IsWatchToken(token) || i < len(tokenPrefix) {
		return "", fmt.Errorf("%w: malformed watch token", ErrUnauthenticated)
	}
	signed, sig := token[:i], token[i+1:]
	mac, ok := decodeCanonical(sig)
	if !ok {
		return "", fmt.Errorf("%w: malformed watch token", ErrUnauthenticated)
	}
	ok = false
	for _, k := range s.keys {
		if hmac.Equal(mac, s.sign(k, signed)) {
			ok = true
		}
	}
	if !ok {
		return "", fmt.Errorf("%w: watch token signature does not match", ErrUnauthenticated)
	}
	payload, ok := decodeCanonical(signed[len(tokenPrefix):])
	var c tokenClaims
	if !ok || json.Unmarshal(payload, &c) != nil || c.RequestID == "" {
		return "", fmt.Errorf("%w: malformed watch token", ErrUnauthenticated)
	}
	if !s.now().Before(time.Unix(c.Expires, 0)) {
		return "", fmt.Errorf("%w: watch token expired", ErrUnauthenticated)
	}
	return c.RequestID, nil
}

func (s *TokenSigner) sign(key []byte, msg string) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(msg))
	return m.Sum(nil)
}
