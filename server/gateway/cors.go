package gateway

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// corsPolicy lets pages from a list of origins use the watch route. No
// cookies are involved: credentials travel as ?access_token= or an
// Authorization header, so credentialed CORS is never granted.
type corsPolicy struct {
	anyOrigin bool
	origins   []string
}

// CheckCORSOrigins reports the entries of origins that are neither "*" nor
// an origin (scheme://host[:port], no path), space around them aside (as
// in "https://a.example, https://b.example"). An origin is compared with
// what a browser sends, so its host and port must be written as a browser
// writes them: an ASCII name (an internationalized one in punycode,
// xn--…) or an IP address, no wildcard, and a port in plain decimal.
func CheckCORSOrigins(origins []string) error {
	var errs []error
	for _, o := range origins {
		o = strings.TrimSpace(o)
		if o == "*" {
			continue
		}
		u, err := url.Parse(o)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || !originHost(u) ||
			u.User != nil || (u.Path != "" && u.Path != "/") || strings.ContainsAny(o, "?#") {
			errs = append(errs, fmt.Errorf("CORS origin %q: want * or scheme://host[:port], the host as a browser sends it (ASCII, an internationalized name as xn--…, no wildcard)", o))
		}
	}
	return errors.Join(errs...)
}

// originHost reports whether u's host and port are as a browser writes
// them in an Origin header, so that the origin can match one.
func originHost(u *url.URL) bool {
	if strings.HasSuffix(u.Host, ":") {
		return false // an empty port
	}
	if p := u.Port(); p != "" {
		n, err := strconv.Atoi(p)
		if err != nil || n < 1 || n > 65535 || strconv.Itoa(n) != p {
			return false
		}
	}
	host := u.Hostname()
	if host == "" {
		return false
	}
	if strings.HasPrefix(u.Host, "[") {
		return net.ParseIP(host) != nil
	}
	for _, c := range host {
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '.' || c == '_') {
			return false
		}
	}
	return true
}

func newCORSPolicy(origins []string) corsPolicy {
	var p corsPolicy
	for _, o := range origins {
		o = strings.TrimSpace(o)
		if o == "*" {
			p.anyOrigin = true
			continue
		}
		o = strings.ToLower(strings.TrimSuffix(o, "/"))
		// A browser leaves a scheme's default port out of the origin it
		// sends, so a configured one would never match.
		if strings.HasPrefix(o, "https://") {
			o = strings.TrimSuffix(o, ":443")
		} else {
			o = strings.TrimSuffix(o, ":80")
		}
		p.origins = append(p.origins, o)
	}
	return p
}

func (p corsPolicy) allows(origin string) bool {
	return origin != "" && (p.anyOrigin || slices.Contains(p.origins, strings.ToLower(origin)))
}

// handle adds CORS headers to a watch-route response and answers preflight
// requests; it reports whether it answered.
func (p corsPolicy) handle(w http.ResponseWriter, r *http.Request) bool {
	if !p.anyOrigin && len(p.origins) == 0 {
		return false // CORS not configured: same-origin only
	}
	origin := r.Header.Get("Origin")
	preflight := r.Method == http.MethodOptions && r.Header.Get("Access-Control-Request-Method") != ""
	h := w.Header()
	h.Add("Vary", "Origin")
	if !p.allows(origin) {
		if preflight {
			writeStatus(w, gatewayJSON, http.StatusForbidden, status.New(codes.PermissionDenied, "origin not allowed (--cors-origins)"))
		}
		return preflight
	}
	if p.anyOrigin {
		h.Set("Access-Control-Allow-Origin", "*")
	} else {
		h.Set("Access-Control-Allow-Origin", origin)
	}
	if !preflight {
		// Else the page sees none of them: Retry-After says when a watch
		// refused for a limit (429) or for a store that fails (503) may
		// try again, and X-Request-Id names the request in the logs.
		h.Set("Access-Control-Expose-Headers", "Retry-After, X-Request-Id")
		return false
	}
	h.Set("Access-Control-Allow-Methods", "GET, OPTIONS")
	// The headers the route reads (and Cache-Control, which EventSource
	// sends): a page may set any of them on a fetch.
	h.Set("Access-Control-Allow-Headers", "Accept, Authorization, Cache-Control, Grpc-Timeout, Last-Event-ID, X-Request-Id")
	h.Set("Access-Control-Max-Age", "600")
	w.WriteHeader(http.StatusNoContent)
	return true
}
