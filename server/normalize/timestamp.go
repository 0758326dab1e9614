package normalize

import (
	"errors"
	"math"
	"strconv"
	"strings"
	"time"

	"google.golang.org/protobuf/types/known/structpb"
)

// Epoch numbers are told apart by magnitude: below maxSeconds a number is
// epoch seconds (up to the year 5138), below maxMillis milliseconds (from
// 1973), below maxMicros microseconds, and nanoseconds above.
const (
	maxSeconds = 1e11
	maxMillis  = 1e14
	maxMicros  = 1e17
)

// isoLayouts are the ISO 8601 forms ParseTime reads, tried in order, after a
// space between date and time has been replaced by "T", a space before the
// zone removed and a "[Zone]" suffix dropped. time.Parse accepts fractional
// seconds after the seconds field even where the layout has none.
var isoLayouts = [...]string{
	time.RFC3339,               // "Z" or "+05:30"
	"2006-01-02T15:04:05Z0700", // "+0530"
	"2006-01-02T15:04:05Z07",   // "+05", as PostgreSQL writes whole hours
	"2006-01-02T15:04:05",      // no zone: UTC
	"2006-01-02T15:04Z07:00",   // no seconds, as Java writes a time at :00
	"2006-01-02T15:04Z0700",
	"2006-01-02T15:04Z07",
	"2006-01-02T15:04",
	"2006-01-02",           // a plain date: midnight UTC
	"20060102T150405Z0700", // the basic form
	"20060102T150405",      // the basic form with no zone: UTC
}

// lastTime is the latest time a google.protobuf.Timestamp holds.
var lastTime = time.Date(9999, 12, 31, 23, 59, 59, 999999999, time.UTC)

// ErrNoTime is ParseTime's error for a value that holds no time: missing,
// null, a blank string, or zero.
var ErrNoTime = errors.New("no time")

// ParseTime reads an OTPLESS timestamp: a number or a numeric string of
// epoch seconds, milliseconds, microseconds or nanoseconds (told apart by
// magnitude; fractions are rounded to the microsecond, which is all a
// float64 carries at these magnitudes), an ISO 8601 / RFC 3339 string, or
// HTTP's RFC 1123 date in GMT (or UTC) or with an offset. A value that
// holds no time (missing, null, blank, or a number or numeric string of
// zero) is ErrNoTime; another JSON
// type, an unreadable string, a time not after the Unix epoch or after the
// year 9999 (which a google.protobuf.Timestamp cannot hold) is an error
// saying so, worded to follow the value ("is not …"). The time returned is
// in UTC.
func ParseTime(v *structpb.Value) (time.Time, error) {
	var (
		t  time.Time
		ok bool
	)
	switch k := v.GetKind().(type) {
	case nil, *structpb.Value_NullValue:
		return time.Time{}, ErrNoTime
	case *structpb.Value_NumberValue:
		if k.NumberValue == 0 {
			return time.Time{}, ErrNoTime
		}
		t, ok = fromNumber(k.NumberValue)
	case *structpb.Value_StringValue:
		s := strings.TrimSpace(k.StringValue)
		if s == "" || isZero(s) {
			return time.Time{}, ErrNoTime
		}
		t, ok = fromString(s)
	default:
		return time.Time{}, errors.New("is not a number or a string")
	}
	switch {
	case !ok:
		return time.Time{}, errors.New("is not an epoch time (seconds to nanoseconds), an ISO 8601 time, nor HTTP's date")
	case !t.After(time.Unix(0, 0)):
		return time.Time{}, errors.New("is not after 1970")
	case t.After(lastTime):
		return time.Time{}, errors.New("is after the year 9999")
	}
	return t.UTC(), nil
}

// fromInt reads an epoch number exactly.
func fromInt(n int64) time.Time {
	switch {
	case n < maxSeconds:
		return time.Unix(n, 0)
	case n < maxMillis:
		return time.UnixMilli(n)
	case n < maxMicros:
		return time.UnixMicro(n)
	}
	return time.Unix(0, n)
}

// fromNumber reads an epoch number that arrived as a float64. Whole numbers
// (every JSON integer below 2^53) are read exactly.
func fromNumber(f float64) (time.Time, bool) {
	if math.IsNaN(f) || f <= 0 || f >= math.MaxInt64 {
		return time.Time{}, false
	}
	if f == math.Trunc(f) {
		return fromInt(int64(f)), true
	}
	// A float64 with a fraction is below 2^53 < maxMicros.
	perUnit := int64(1) // microseconds per unit of f
	switch {
	case f < maxSeconds:
		perUnit = 1e6
	case f < maxMillis:
		perUnit = 1e3
	}
	whole := math.Floor(f)
	frac := int64(math.Round((f - whole) * float64(perUnit)))
	return time.UnixMicro(int64(whole)*perUnit + frac), true
}

func fromString(s string) (time.Time, bool) {
	// Eight digits are the basic form of a date, not epoch seconds of 1970
	// to 1973 (a number, unlike a string, is always epoch).
	if len(s) == len("20060102") {
		if t, err := time.Parse("20060102", s); err == nil {
			return t, true
		}
	}
	if isDigits(s) {
		if n, err := strconv.ParseInt(s, 10, 64); err == nil {
			return fromInt(n), true
		}
	}
	// "1.7e12", "17e-1", a fraction, and digits ParseInt refused; what
	// ParseFloat refuses may still be a date ("2024-12-18").
	if strings.Trim(s, "0123456789.eE+-") == "" {
		if f, err := strconv.ParseFloat(s, 64); err == nil {
			return fromNumber(f)
		}
	}
	// HTTP's date: in GMT (or UTC), or with an offset (time.Parse would put
	// any other zone's name at offset zero).
	if t, err := time.Parse(time.RFC1123, s); err == nil && (strings.HasSuffix(s, " GMT") || strings.HasSuffix(s, " UTC")) {
		return t, true
	}
	if t, err := time.Parse(time.RFC1123Z, s); err == nil {
		return t, true
	}
	s = strings.ToUpper(s) // RFC 3339 allows "t" and "z"
	if len(s) > len("2006-01-02") && s[len("2006-01-02")] == ' ' {
		s = s[:len("2006-01-02")] + "T" + s[len("2006-01-02")+1:]
	}
	if i := strings.IndexByte(s, '['); i > 0 && strings.HasSuffix(s, "]") { // Java's "+05:30[Asia/Kolkata]"
		s = s[:i]
	}
	if i := strings.LastIndexByte(s, ' '); i > 0 && i+1 < len(s) && strings.IndexByte("+-Z", s[i+1]) >= 0 { // "16:01:02.100 +0530"
		s = s[:i] + s[i+1:]
	}
	for _, layout := range isoLayouts {
		if t, err := time.Parse(layout, s); err == nil {
			return t, true
		}
	}
	return time.Time{}, false
}

// isZero reports whether s writes the number zero: zeros and at most one
// point, signed or not, with any exponent ("0", "0.0", "-0", "0e5"; not
// "1e-400", which is zero only as a float64, nor "0x0p0" or "0_0").
func isZero(s string) bool {
	if s != "" && (s[0] == '+' || s[0] == '-') {
		s = s[1:]
	}
	mantissa, exponent, hasExponent := strings.Cut(strings.ToLower(s), "e")
	if hasExponent {
		// Any count of digits: a zero is zero whatever its exponent,
		// though an int cannot hold it.
		if exponent != "" && (exponent[0] == '+' || exponent[0] == '-') {
			exponent = exponent[1:]
		}
		if exponent == "" || strings.Trim(exponent, "0123456789") != "" {
			return false
		}
	}
	return strings.Contains(mantissa, "0") && strings.Trim(mantissa, "0.") == "" && strings.Count(mantissa, ".") <= 1
}

// isDigits reports whether s is one or more decimal digits.
func isDigits(s string) bool {
	return s != "" && strings.Trim(s, "0123456789") == ""
}
