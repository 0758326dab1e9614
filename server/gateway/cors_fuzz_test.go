package gateway

import (
	"fmt"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"testing"
)

// FuzzCORSOrigins: an origin that CheckCORSOrigins accepts is held by the
// policy exactly as a browser serializes it in its Origin header (the URL
// Standard's origin serialization, written out here on its own), so that
// every accepted entry matches its pages and nothing else.
func FuzzCORSOrigins(f *testing.F) {
	for _, o := range []string{"*", "https://a.example", "http://localhost:3000", " https://b.example ",
		"https://xn--bcher-kva.example", "http://127.0.0.1:8080", "http://[::1]:3000", "https://A.Example:443/",
		"http://[::ffff:7f00:1]", "http://[2001:DB8::1]:8443", "https://1password.example", "HTTP://A.EXAMPLE:80",
		"https://a.example:80", "http://a.example:443", "https://a.example.:8443/", "http://[::1:0:0:0:1]",
		"http://127.1:8080", "https://a.example:0443", "http://[0:0:0:0:0:0:0:1]:3000", "http://0x", "", " "} {
		f.Add(o)
	}
	f.Fuzz(func(t *testing.T, o string) {
		if CheckCORSOrigins([]string{o}) != nil {
			return
		}
		p := newCORSPolicy([]string{o})
		if strings.TrimSpace(o) == "" { // a list's empty entry, skipped
			if p.anyOrigin || len(p.origins) != 0 {
				t.Fatalf("%q: policy %+v, want none", o, p)
			}
			return
		}
		if strings.TrimSpace(o) == "*" {
			if !p.anyOrigin || len(p.origins) != 0 {
				t.Fatalf("%q: policy %+v, want any origin", o, p)
			}
			return
		}
		want, err := serializeOrigin(strings.TrimSpace(o))
		if err != nil {
			t.Fatalf("%q accepted, but %v", o, err)
		}
		if p.anyOrigin || len(p.origins) != 1 || p.origins[0] != want {
			t.Fatalf("%q: policy holds %q, a browser sends %q", o, p.origins, want)
		}
		if !p.allows(want) {
			t.Fatalf("%q: the browser's origin %q not allowed", o, want)
		}
	})
}

// serializeOrigin is the origin of URL o as a browser writes it: scheme
// and host in lower case, an IPv6 address compressed in hexadecimal
// pieces, the scheme's default port left out.
func serializeOrigin(o string) (string, error) {
	u, err := url.Parse(o)
	if err != nil {
		return "", err
	}
	scheme := strings.ToLower(u.Scheme)
	host := strings.ToLower(u.Hostname())
	if strings.HasPrefix(u.Host, "[") {
		a, err := netip.ParseAddr(host)
		if err != nil || !a.Is6() {
			return "", fmt.Errorf("host %q is not an IPv6 address", host)
		}
		host = "[" + urlIPv6(a.As16()) + "]"
	}
	out := scheme + "://" + host
	if p := u.Port(); p != "" {
		n, err := strconv.Atoi(p)
		if err != nil {
			return "", err
		}
		if !(scheme == "http" && n == 80 || scheme == "https" && n == 443) {
			out += ":" + strconv.Itoa(n)
		}
	}
	return out, nil
}

// urlIPv6 is the URL Standard's IPv6 serializer: eight hexadecimal pieces,
// the first longest run of two or more zero pieces written "::".
func urlIPv6(b [16]byte) string {
	var pieces [8]uint16
	for i := range pieces {
		pieces[i] = uint16(b[2*i])<<8 | uint16(b[2*i+1])
	}
	start, length := -1, 1
	for i := 0; i < 8; {
		j := i
		for j < 8 && pieces[j] == 0 {
			j++
		}
		if j-i > length {
			start, length = i, j-i
		}
		i = max(j, i+1)
	}
	var sb strings.Builder
	for i := 0; i < 8; i++ {
		if i == start {
			sb.WriteString("::")
			i += length - 1
			continue
		}
		if i > 0 && i != start+length {
			sb.WriteByte(':')
		}
		sb.WriteString(strconv.FormatUint(uint64(pieces[i]), 16))
	}
	return sb.String()
}
