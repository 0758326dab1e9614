package observe

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"log/slog"
	"regexp"
	"strconv"
	"strings"
	"unicode/utf8"
)

// MaskPhone hides a phone number but its last two digits: "919812345678"
// becomes "**********78". Numbers of fewer than six digits are hidden
// entirely.
func MaskPhone(s string) string {
	keep := 2
	if len(s) < 6 || !isASCIIDigit(s[len(s)-1]) || !isASCIIDigit(s[len(s)-2]) {
		keep = 0 // nothing but digits is kept, so that no character is cut in two
	}
	return strings.Repeat("*", len(s)-keep) + s[len(s)-keep:]
}

func isASCIIDigit(c byte) bool { return '0' <= c && c <= '9' }

// MaskEmail keeps the first character of the local part and the domain:
// "asha.rao@example.com" becomes "a***@example.com". A value without "@" is
// hidden entirely.
func MaskEmail(s string) string {
	local, domain, ok := strings.Cut(s, "@")
	if !ok || local == "" {
		return strings.Repeat("*", len(s))
	}
	_, first := utf8.DecodeRuneInString(local)
	return local[:first] + "***@" + domain
}

// MaskToken replaces a secret (an OTPLESS token, a key) with a short
// fingerprint, so that log lines about the same token can be matched without
// revealing it.
func MaskToken(s string) string {
	if s == "" {
		return ""
	}
	sum := sha256.Sum256([]byte(s))
	return "sha256:" + hex.EncodeToString(sum[:4])
}

// MaskIdentity masks a delivery identity, which is an email address or a
// phone number.
func MaskIdentity(s string) string {
	if strings.Contains(s, "@") {
		return MaskEmail(s)
	}
	return MaskPhone(s)
}

var emailPattern = regexp.MustCompile(`[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}`)

// Scrub masks email addresses and phone numbers in free text, such as an
// error message that quotes part of a webhook body.
func Scrub(s string) string {
	if !strings.ContainsAny(s, "@0123456789") {
		return s
	}
	return scrubPhones(emailPattern.ReplaceAllStringFunc(s, MaskEmail))
}

// scrubPhones masks what may be a phone number: seven or more digits,
// optionally after "+", that may be grouped by single spaces, dashes or
// parentheses ("+91 98123 45678", "+1 (555) 123-4567"), and stand alone: a
// run touching an ASCII letter or "_", or a "." between digits, is part of
// something else (a hex id, a UUID, a decimal, an address). A date written
// 2006-01-02 is left as it is.
func scrubPhones(s string) string {
	var b strings.Builder
	done := 0 // s[:done] is in b
	// The last run scanned: from scanFrom on it held scanDigits digits,
	// ended at scanEnd and its scan stopped at scanJ. A run starting before
	// scanJ (after a date) is a tail of it, read from these: scanning it
	// again would make a run of dates ("2006-01-02-2006-01-02-…")
	// quadratic.
	var scanFrom, scanJ, scanEnd, scanDigits int
	for i := 0; i < len(s); {
		c := s[i]
		if !(isASCIIDigit(c) || c == '+' || c == '(') || tiedBefore(s, i) {
			i++
			continue
		}
		end, digits, j := i, 0, 0
		if i < scanJ {
			scanDigits -= countDigits(s[scanFrom:i])
			scanFrom = i
			end, digits, j = max(scanEnd, i), scanDigits, scanJ
		} else {
			if c == '+' {
				end++
			}
			j = end // where the run's scan stops
		scan:
			for ; j < len(s); j++ {
				switch c := s[j]; {
				case isASCIIDigit(c):
					digits++
					end = j + 1
				case c == ')':
					end = j + 1
				case (c == ' ' || c == '-' || c == '(') && j+1 < len(s) && (isASCIIDigit(s[j+1]) || s[j+1] == '('):
				default:
					break scan
				}
			}
			scanFrom, scanJ, scanEnd, scanDigits = i, j, end, digits
		}
		if isDate(s[i:end]) {
			i += len("2006-01-02") // what follows the date may be a number
			continue
		}
		if digits < 7 || tiedAfter(s, end) {
			// A run starting anywhere up to j is a tail of this one: no
			// more digits, the same end. Going on from j, not end, keeps
			// the scan linear ("((((…" has no end past its first "(").
			i = max(j, i+1)
			continue
		}
		b.WriteString(s[done:i])
		b.WriteString(MaskPhone(s[i:end]))
		done, i = end, end
	}
	if done == 0 {
		return s
	}
	b.WriteString(s[done:])
	return b.String()
}

func countDigits(s string) int {
	n := 0
	for i := range len(s) {
		if isASCIIDigit(s[i]) {
			n++
		}
	}
	return n
}

// tiedBefore reports whether a run starting at s[i] continues something
// before it: an ASCII letter, digit or "_", or a "." after a digit.
func tiedBefore(s string, i int) bool {
	return i > 0 && (wordByte(s[i-1]) || s[i-1] == '.' && i > 1 && isASCIIDigit(s[i-2]))
}

// tiedAfter reports whether a run ending before s[end] goes on after it: an
// ASCII letter, digit or "_", or a "." before a digit.
func tiedAfter(s string, end int) bool {
	return end < len(s) && (wordByte(s[end]) || s[end] == '.' && end+1 < len(s) && isASCIIDigit(s[end+1]))
}

func wordByte(c byte) bool {
	return isASCIIDigit(c) || 'a' <= c|0x20 && c|0x20 <= 'z' || c == '_'
}

// isDate reports whether s starts as a date written 2006-01-02.
func isDate(s string) bool {
	if len(s) < 10 || s[4] != '-' || s[7] != '-' {
		return false
	}
	for _, i := range []int{0, 1, 2, 3, 5, 6, 8, 9} {
		if !isASCIIDigit(s[i]) {
			return false
		}
	}
	return true
}

// LoggedText is a free text as the log keeps it (an error, a cause, a line
// grpc-go logs): Scrub's s, cut to maxLoggedText. It is cut a little past
// the bound first, so that a number across the bound is masked whole and
// no more of a long text is read than that.
func LoggedText(s string) string {
	const margin = 64 // over any phone number's length, grouping included
	return clip(Scrub(clip(s, maxLoggedText+margin)), maxLoggedText)
}

// masker says how the value of an attribute key is masked; nil: it is not.
func masker(key string) func(string) string {
	switch key { // the keys of every request's log line, without normalizing them
	case "request_id", "method", "path", "status", "code", "duration", "bytes", "remote", "client",
		"transport", "component", "otpless_request_id", "otpless_trace_id":
		return nil
	}
	switch normalizeKey(key) {
	case "phone", "phonenumber", "mobile", "number":
		return MaskPhone
	case "email":
		return MaskEmail
	case "identity":
		return MaskIdentity
	case "token", "authorization", "password", "secret", "key", "apikey", "webhookkey", "signature":
		return MaskToken
	case "error", "err", "cause", "panic", "reason", "body":
		return LoggedText
	}
	return nil
}

// normalizeKey lower-cases key and drops '_' and '-': "phone_number" and
// "phoneNumber" are both "phonenumber".
func normalizeKey(key string) string {
	if !strings.ContainsAny(key, "_-ABCDEFGHIJKLMNOPQRSTUVWXYZ") {
		return key
	}
	b := make([]byte, 0, len(key))
	for i := range len(key) {
		switch c := key[i]; {
		case c == '_' || c == '-':
		case 'A' <= c && c <= 'Z':
			b = append(b, c+'a'-'A')
		default:
			b = append(b, c)
		}
	}
	return string(b)
}

// MaskAttr masks the value of a with personal data or secrets in it: keys
// naming a phone, email, identity, token or secret, and error texts, which
// may quote a body. It descends into groups.
func MaskAttr(a slog.Attr) slog.Attr {
	switch a.Value.Kind() {
	case slog.KindGroup:
		attrs := a.Value.Group()
		masked := make([]slog.Attr, len(attrs))
		for i, g := range attrs {
			masked[i] = MaskAttr(g)
		}
		return slog.Attr{Key: a.Key, Value: slog.GroupValue(masked...)}
	case slog.KindLogValuer:
		return MaskAttr(slog.Attr{Key: a.Key, Value: a.Value.Resolve()})
	}
	mask := masker(a.Key)
	if mask == nil {
		return a
	}
	// Every kind is masked: a phone number a decoder made a float, or a
	// secret of any kind, must not pass because of its type.
	switch a.Value.Kind() {
	case slog.KindAny:
		if err, ok := a.Value.Any().(error); ok {
			return slog.String(a.Key, mask(err.Error()))
		}
	case slog.KindFloat64: // in digits, as the number was written, not 9.19812345678e+11
		return slog.String(a.Key, mask(strconv.FormatFloat(a.Value.Float64(), 'f', -1, 64)))
	}
	return slog.String(a.Key, mask(a.Value.String()))
}

// MaskingHandler wraps h so that every attribute passes through MaskAttr
// before h sees it: personal data cannot reach the logs in clear, whoever
// logs it.
func MaskingHandler(h slog.Handler) slog.Handler {
	if m, ok := h.(*maskingHandler); ok {
		return m
	}
	return &maskingHandler{h: h}
}

type maskingHandler struct{ h slog.Handler }

func (m *maskingHandler) Enabled(ctx context.Context, l slog.Level) bool { return m.h.Enabled(ctx, l) }

// Handle passes r on as it is when MaskAttr would leave every attribute
// as it is (a request's line, usually), and otherwise a copy with the
// attributes masked.
func (m *maskingHandler) Handle(ctx context.Context, r slog.Record) error {
	clean := true
	r.Attrs(func(a slog.Attr) bool {
		clean = unmasked(a)
		return clean
	})
	if clean {
		return m.h.Handle(ctx, r)
	}
	out := slog.NewRecord(r.Time, r.Level, r.Message, r.PC)
	var buf [16]slog.Attr // a line has about ten: added at once, they grow out's storage once
	attrs := buf[:0]
	r.Attrs(func(a slog.Attr) bool {
		attrs = append(attrs, MaskAttr(a))
		return true
	})
	out.AddAttrs(attrs...)
	return m.h.Handle(ctx, out)
}

// unmasked reports whether MaskAttr returns a as it is: neither a group
// nor a LogValuer, and a key that names nothing to mask.
func unmasked(a slog.Attr) bool {
	k := a.Value.Kind()
	return k != slog.KindGroup && k != slog.KindLogValuer && masker(a.Key) == nil
}

func (m *maskingHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	masked := make([]slog.Attr, len(attrs))
	for i, a := range attrs {
		masked[i] = MaskAttr(a)
	}
	return &maskingHandler{h: m.h.WithAttrs(masked)}
}

func (m *maskingHandler) WithGroup(name string) slog.Handler {
	return &maskingHandler{h: m.h.WithGroup(name)}
}
