package normalize_test

import (
	"encoding/json"
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/structpb"

	"github.com/otpless-events/otpless-events/server/normalize"
)

// FuzzParseTime: a JSON number sent as a string is read as the number is
// (the same time, no time, or refused), but for the eight-digit basic form
// of a date and a string that is zero only once rounded to a float64; and
// any time read, written in RFC 3339, reads back the same.
func FuzzParseTime(f *testing.F) {
	for _, s := range []string{"1700000000", "1700000000123", "1700000000123456", "1700000000123456789", "1700000000.5",
		"1.7e9", "1.7E+12", "17000000000000e-4", "1e-05", "0", "-0", "0.0", "0e5", "0e99999999999999999999", "1e-400",
		"20240102", "2024-01-02T03:04:05.123+05:30", "Tue, 02 Jan 2024 03:04:05 GMT", "9999-12-31T23:59:59.999999999Z",
		"-5", "1e20", " 1700000000 ", "2024-01-02 03:04:05 +0530"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got, err := normalize.ParseTime(structpb.NewStringValue(s))
		if err == nil {
			again, err := normalize.ParseTime(structpb.NewStringValue(got.Format(time.RFC3339Nano)))
			if err != nil || !again.Equal(got) || got.Location() != time.UTC {
				t.Fatalf("%q read as %v; written %q, read back as %v, %v", s, got, got.Format(time.RFC3339Nano), again, err)
			}
		}
		n := strings.TrimSpace(s)
		if !json.Valid([]byte(n)) || strings.Trim(n, "-0123456789.eE+") != "" || n == "" {
			return // not a JSON number
		}
		v, perr := strconv.ParseFloat(n, 64)
		if perr != nil && !errors.Is(perr, strconv.ErrRange) {
			t.Fatalf("%q: a JSON number ParseFloat refuses: %v", n, perr)
		}
		if len(n) == len("20060102") && !errors.Is(err, normalize.ErrNoTime) {
			if _, derr := time.Parse("20060102", n); derr == nil {
				return // a date, as documented
			}
		}
		if v == 0 && strings.Trim(mantissa(n), "0.") != "" {
			return // zero only as a float64 ("1e-400"): no time only as a number
		}
		if digits := strings.TrimLeft(strings.ReplaceAll(mantissa(n), ".", ""), "0"); len(digits) > 15 {
			return // more digits than a float64 holds: the string is read exactly
		}
		want, werr := normalize.ParseTime(structpb.NewNumberValue(v))
		switch {
		case errors.Is(werr, normalize.ErrNoTime) != errors.Is(err, normalize.ErrNoTime),
			(werr == nil) != (err == nil),
			err == nil && !got.Equal(want):
			t.Fatalf("the string %q: %v, %v; the number %v: %v, %v", s, got, err, v, want, werr)
		}
	})
}

// mantissa is the JSON number n without its sign and exponent.
func mantissa(n string) string {
	m, _, _ := strings.Cut(strings.ToLower(strings.TrimLeft(n, "-")), "e")
	return m
}
