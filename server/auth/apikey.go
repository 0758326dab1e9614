package auth

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"unicode"
)

// APIKey is a configured key. Only its SHA-256 is kept.
type APIKey struct {
	Name   string
	Hash   [sha256.Size]byte
	Scopes []Scope
}

// ErrUnauthenticated: no credential, or one that is not valid.
var ErrUnauthenticated = errors.New("missing or invalid credentials")

// NewSecret returns a random URL-safe secret with the given prefix.
func NewSecret(prefix string) string {
	b := make([]byte, 32)
	_, _ = rand.Read(b) // crypto/rand.Read never fails
	return prefix + base64.RawURLEncoding.EncodeToString(b)
}

// HashKey returns the hex SHA-256 of key, as API keys are configured.
func HashKey(key string) string {
	h := sha256.Sum256([]byte(key))
	return hex.EncodeToString(h[:])
}

// FormatAPIKey renders a key as one line of the API-key configuration.
func FormatAPIKey(name, key string, scopes []Scope) string {
	return fmt.Sprintf("%s %s %s", name, HashKey(key), joinScopes(scopes))
}

// CheckKeyName reports why name cannot name an API key in its configuration
// line: it must be one field, not a comment, and not split the line.
func CheckKeyName(name string) error {
	if name == "" || strings.HasPrefix(name, "#") || strings.ContainsRune(name, ';') || strings.ContainsFunc(name, unicode.IsSpace) {
		return fmt.Errorf("key name %q: want one word, without spaces or ';', not starting with '#'", name)
	}
	return nil
}

// ParseAPIKeys reads API-key configuration: one key per line (or separated
// by ';'), each "NAME SHA256-HEX SCOPE[,SCOPE...]". Blank entries are
// skipped, and so is a line from an entry starting with '#' to its end, the
// keys of a line commented out included.
func ParseAPIKeys(text string) ([]APIKey, error) {
	var keys []APIKey
	names := map[string]bool{}
	for i, entry := range entries(text, ";") {
		f := strings.Fields(entry)
		if len(f) != 3 {
			return nil, fmt.Errorf("api key %d: want NAME SHA256-HEX SCOPES, got %d fields", i+1, len(f))
		}
		k := APIKey{Name: f[0]}
		h, err := hex.DecodeString(f[1])
		if err != nil || len(h) != sha256.Size {
			return nil, fmt.Errorf("api key %q: the second field must be the 64-digit hex SHA-256 of the key", f[0])
		}
		copy(k.Hash[:], h)
		if k.Scopes, err = ParseScopes(f[2]); err != nil {
			return nil, fmt.Errorf("api key %q: %w", f[0], err)
		}
		if names[k.Name] {
			return nil, fmt.Errorf("api key %q configured twice", k.Name)
		}
		names[k.Name] = true
		keys = append(keys, k)
	}
	return keys, nil
}

// Keyring checks bearer credentials: API keys and watch tokens.
type Keyring struct {
	keys   []APIKey
	tokens *TokenSigner
}

// NewKeyring returns a keyring over keys; tokens may be nil (no watch tokens).
func NewKeyring(keys []APIKey, tokens *TokenSigner) *Keyring {
	return &Keyring{keys: keys, tokens: tokens}
}

// Authenticate returns the principal a bearer credential stands for.
func (k *Keyring) Authenticate(bearer string) (*Principal, error) {
	if bearer == "" {
		return nil, ErrUnauthenticated
	}
	if k.tokens != nil && IsWatchToken(bearer) {
		id, err := k.tokens.Verify(bearer)
		if err != nil {
			return nil, err
		}
		digest := sha256.Sum256([]byte(bearer))
		return &Principal{Name: "watch-token:" + id, Scopes: []Scope{ScopeWatch, ScopeRead}, RequestID: id, Token: string(digest[:16])}, nil
	}
	h := sha256.Sum256([]byte(bearer))
	var found *APIKey
	for i := range k.keys { // compare with every key so timing says nothing
		if subtle.ConstantTimeCompare(h[:], k.keys[i].Hash[:]) == 1 {
			found = &k.keys[i]
		}
	}
	if found == nil {
		return nil, ErrUnauthenticated
	}
	return &Principal{Name: found.Name, Scopes: found.Scopes}, nil
}
