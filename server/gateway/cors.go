package gateway

import (
	"errors"
	"fmt"
	"iter"
	"net/http"
	"net/netip"
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
// in "https://a.example, https://b.example") and empty ones skipped (as in
// "https://a.example,"; see corsEntries). An origin is compared with
// what a browser sends, so its host and port must be written as a browser
// writes them: an ASCII name (an internationalized one in punycode,
// xn--…) or an IP address in the form a browser gives it (IPv4 dotted in
// decimal, not 127.1; IPv6 compressed, not [0:0:0:0:0:0:0:1]), no
// wildcard, and a port in plain decimal.
func CheckCORSOrigins(origins []string) error {
	var errs []error
	for o := range corsEntries(origins) {
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
		a, err := netip.ParseAddr(host)
		return err == nil && a.Is6() && a.Zone() == "" && strings.EqualFold(host, browserIPv6(a))
	}
	if endsInNumber(host) {
		// A browser takes the host for an IPv4 address (127.1, 0x7f.0.0.1
		// and 2130706433 alike) and sends it dotted, in decimal.
		a, err := netip.ParseAddr(host)
		return err == nil && a.Is4() && a.String() == host
	}
	for _, c := range host {
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '.' || c == '_') {
			return false
		}
	}
	return true
}

// browserIPv6 is a as a browser writes it in an origin (the URL
// Standard's serializer): compressed, in lower case, and an IPv4-mapped
// address in hexadecimal pieces (::ffff:7f00:1) rather than dotted.
func browserIPv6(a netip.Addr) string {
	if !a.Is4In6() {
		return a.String()
	}
	b := a.As16()
	return fmt.Sprintf("::ffff:%x:%x", uint16(b[12])<<8|uint16(b[13]), uint16(b[14])<<8|uint16(b[15]))
}

// endsInNumber reports whether a browser parses host as an IPv4 address:
// its last label (before a final dot) is decimal digits, or 0x and
// hexadecimal ones.
func endsInNumber(host string) bool {
	labels := strings.Split(host, ".")
	last := labels[len(labels)-1]
	if last == "" && len(labels) > 1 {
		last = labels[len(labels)-2]
	}
	if last == "" {
		return false
	}
	digits, isHex := last, false
	if len(last) >= 2 && last[0] == '0' && (last[1] == 'x' || last[1] == 'X') {
		digits, isHex = last[2:], true
	}
	for _, c := range digits {
		if !('0' <= c && c <= '9' || isHex && ('a' <= c && c <= 'f' || 'A' <= c && c <= 'F')) {
			return false
		}
	}
	return true
}

// corsEntries yields the entries of origins without the space around
// them, skipping those left empty: a list split at its commas has one
// after a trailing comma, which the other comma-separated lists (of
// networks, of scopes) skip too.
func corsEntries(origins []string) iter.Seq[string] {
	return func(yield func(string) bool) {
		for _, o := range origins {
			if o = strings.TrimSpace(o); o != "" && !yield(o) {
				return
			}
		}
	}
}

func newCORSPolicy(origins []string) corsPolicy {
	var p corsPolicy
	for o := range corsEntries(origins) {
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
