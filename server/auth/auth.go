// Package auth authenticates the service's callers: API keys with scopes for
// the internal API, short-lived watch tokens for browsers, and the webhook
// credentials OTPLESS can carry (a secret in the URL, HTTP Basic, optionally
// a Standard Webhooks signature), plus the client-address checks in front of
// the webhook route. Which caller may see personal data is decided here
// (MaySeePII); package pii removes it.
//
// It imports the generated API types and gRPC; nothing from the servers.
package auth

import (
	"context"
	"fmt"
	"slices"
	"strings"
)

// Scope is a permission an API key grants.
type Scope string

// Scopes. ScopeAdmin grants every other scope.
const (
	// ScopeRead: snapshots and events, personal data removed.
	ScopeRead Scope = "read"
	// ScopeReadPII: personal data (phone, email, identity, token, raw bodies).
	ScopeReadPII Scope = "read_pii"
	// ScopeWatch: WatchRequest on any request.
	ScopeWatch Scope = "watch"
	// ScopeMintWatchToken: CreateWatchToken.
	ScopeMintWatchToken Scope = "mint_watch_token"
	// ScopeIngest: WebhookService.Ingest over gRPC (the HTTP webhook route
	// uses webhook credentials instead).
	ScopeIngest Scope = "ingest"
	// ScopeAdmin: everything.
	ScopeAdmin Scope = "admin"
)

// AllScopes lists every scope, for validation and help texts.
var AllScopes = []Scope{ScopeRead, ScopeReadPII, ScopeWatch, ScopeMintWatchToken, ScopeIngest, ScopeAdmin}

// ParseScopes reads a comma-separated scope list.
func ParseScopes(s string) ([]Scope, error) {
	var out []Scope
	for _, f := range strings.Split(s, ",") {
		sc := Scope(strings.TrimSpace(f))
		if sc == "" {
			continue
		}
		if !slices.Contains(AllScopes, sc) {
			return nil, fmt.Errorf("unknown scope %q (known: %s)", sc, joinScopes(AllScopes))
		}
		if !slices.Contains(out, sc) {
			out = append(out, sc)
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no scope in %q", s)
	}
	return out, nil
}

func joinScopes(scopes []Scope) string {
	s := make([]string, len(scopes))
	for i, sc := range scopes {
		s[i] = string(sc)
	}
	return strings.Join(s, ",")
}

// Principal is an authenticated caller.
type Principal struct {
	// Name identifies the credential in logs and limits: the API key's name,
	// or "watch-token:<request id>".
	Name string
	// Scopes the credential grants.
	Scopes []Scope
	// RequestID, for a watch token, is the only request it may read.
	RequestID string
	// Token, for a watch token, tells it from the other tokens of its
	// request, for per-token limits: a digest of it, never the token.
	Token string
}

// Has reports whether p holds scope (admin holds them all).
func (p *Principal) Has(scope Scope) bool {
	return p != nil && (slices.Contains(p.Scopes, scope) || slices.Contains(p.Scopes, ScopeAdmin))
}

type principalKey struct{}

// WithPrincipal returns ctx carrying p.
func WithPrincipal(ctx context.Context, p *Principal) context.Context {
	return context.WithValue(ctx, principalKey{}, p)
}

// FromContext returns the caller, or nil when the call was not authenticated
// (authentication disabled).
func FromContext(ctx context.Context) *Principal {
	p, _ := ctx.Value(principalKey{}).(*Principal)
	return p
}

// MaySeePII reports whether the caller in ctx may see personal data. With
// authentication disabled (no principal) everything is visible.
func MaySeePII(ctx context.Context) bool {
	p := FromContext(ctx)
	return p == nil || p.Has(ScopeReadPII)
}
