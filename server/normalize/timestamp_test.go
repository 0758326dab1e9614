package normalize_test

import (
	"errors"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/otpless-events/otpless-events/server/normalize"
	"google.golang.org/protobuf/types/known/structpb"
)

func TestParseTime(t *testing.T) {
	t.Parallel()
	num, str := structpb.NewNumberValue, structpb.NewStringValue
	ist := time.FixedZone("IST", 5*3600+30*60)
	tests := []struct {
		name string
		v    *structpb.Value
		want time.Time // zero: ErrNoTime
	}{
		// Numbers, told apart by magnitude.
		{"seconds", num(1734518721), time.Unix(1734518721, 0)},
		{"seconds with fraction", num(1734518721.5), time.Unix(1734518721, 5e8)},
		{"seconds with ms fraction", num(1734518721.123), time.Unix(1734518721, 123e6)},
		{"seconds with µs fraction", num(1734518721.000001), time.Unix(1734518721, 1e3)},
		{"small seconds", num(1), time.Unix(1, 0)},
		{"largest seconds", num(99999999999), time.Unix(99999999999, 0)},
		{"smallest ms", num(1e11), time.UnixMilli(1e11)},
		{"ms", num(1734516528720), time.UnixMilli(1734516528720)},
		{"ms ending in 1", num(1734615829169), time.UnixMilli(1734615829169)},
		{"ms with fraction", num(1734516528720.5), time.UnixMicro(1734516528720500)},
		{"largest ms", num(99999999999999), time.UnixMilli(99999999999999)},
		{"smallest µs", num(1e14), time.UnixMicro(1e14)},
		{"µs with fraction, rounded", num(1734516528720123.5), time.UnixMicro(1734516528720124)},
		{"largest µs", str("99999999999999999"), time.UnixMicro(99999999999999999)},
		{"smallest ns", num(1e17), time.Unix(0, 1e17)},
		{"µs", num(1734516528720123), time.UnixMicro(1734516528720123)},
		{"ns", num(1734516528720123904), time.Unix(0, 1734516528720123904)},
		// Numeric strings.
		{"seconds string", str("1734518721"), time.Unix(1734518721, 0)},
		{"seconds string with fraction", str("1734518721.25"), time.Unix(1734518721, 25e7)},
		{"ms string", str("1734516528720"), time.UnixMilli(1734516528720)},
		{"seconds string, a negative exponent", str("17345187215e-1"), time.Unix(1734518721, 5e8)},
		{"ms string with space", str(" 1734516528720 "), time.UnixMilli(1734516528720)},
		{"µs string", str("1734516528720123"), time.UnixMicro(1734516528720123)},
		{"ns string, exact", str("1734516528720123456"), time.Unix(0, 1734516528720123456)},
		{"ns string past 2^62, exact", str("4611686018427387905"), time.Unix(0, 4611686018427387905)},
		// ISO 8601 / RFC 3339.
		{"RFC 3339 Z", str("2024-12-18T10:45:21Z"), time.Unix(1734518721, 0)},
		{"lower-case t and z", str("2024-12-18t10:45:21z"), time.Unix(1734518721, 0)},
		{"ms fraction Z", str("2024-12-18T10:08:48.720Z"), time.UnixMilli(1734516528720)},
		{"ns fraction Z", str("2024-12-18T10:08:48.720123456Z"), time.Unix(1734516528, 720123456)},
		{"offset with colon", str("2024-12-18T16:15:21+05:30"), time.Date(2024, 12, 18, 16, 15, 21, 0, ist)},
		{"offset without colon", str("2024-12-18T16:15:21+0530"), time.Date(2024, 12, 18, 16, 15, 21, 0, ist)},
		{"negative offset", str("2024-12-18T02:45:21-08:00"), time.Unix(1734518721, 0)},
		{"fraction and offset without colon", str("2024-12-18T16:15:21.5+0530"), time.Date(2024, 12, 18, 16, 15, 21, 5e8, ist)},
		{"space Z", str("2024-12-18 10:45:21Z"), time.Unix(1734518721, 0)},
		{"space fraction offset", str("2024-12-18 16:15:21.250+05:30"), time.Date(2024, 12, 18, 16, 15, 21, 25e7, ist)},
		{"no zone: UTC", str("2024-12-18T10:45:21"), time.Unix(1734518721, 0)},
		{"space no zone: UTC", str("2024-12-18 10:45:21.720"), time.Unix(1734518721, 720e6)},
		{"date", str("2024-12-18"), time.Date(2024, 12, 18, 0, 0, 0, 0, time.UTC)},
		{"offset in whole hours", str("2024-12-18T12:45:21+02"), time.Unix(1734518721, 0)},
		{"PostgreSQL's timestamptz in UTC", str("2024-12-18 10:45:21.72+00"), time.Unix(1734518721, 720e6)},
		{"negative offset in whole hours", str("2024-12-18T02:45:21-08"), time.Unix(1734518721, 0)},
		{"no seconds Z", str("2024-12-18T10:45Z"), time.Unix(1734518700, 0)},
		{"no seconds, offset with colon", str("2024-12-18T16:15+05:30"), time.Date(2024, 12, 18, 16, 15, 0, 0, ist)},
		{"no seconds, offset without colon", str("2024-12-18T16:15+0530"), time.Date(2024, 12, 18, 16, 15, 0, 0, ist)},
		{"no seconds, offset in whole hours", str("2024-12-18T12:45+02"), time.Unix(1734518700, 0)},
		{"no seconds, no zone: UTC", str("2024-12-18T10:45"), time.Unix(1734518700, 0)},
		{"the last time a Timestamp holds", str("9999-12-31T23:59:59.999999999Z"), time.Date(9999, 12, 31, 23, 59, 59, 999999999, time.UTC)},
		{"year 9999 ahead of UTC", str("9999-12-31T23:59:59+05:30"), time.Date(9999, 12, 31, 18, 29, 59, 0, time.UTC)},
		{"surrounding space", str(" 2024-12-18T10:45:21Z\n"), time.Unix(1734518721, 0)},
		{"RFC 1123 in GMT", str("Wed, 18 Dec 2024 10:45:21 GMT"), time.Unix(1734518721, 0)},
		{"RFC 1123 in UTC", str("Wed, 18 Dec 2024 10:45:21 UTC"), time.Unix(1734518721, 0)},
		{"RFC 1123 with an offset", str("Wed, 18 Dec 2024 16:15:21 +0530"), time.Unix(1734518721, 0)},
		{"exponent string", str("1.7345187215e12"), time.UnixMicro(1734518721500000)},
		{"exponent string with sign", str("1.734518721E+9"), time.Unix(1734518721, 0)},
		{"space before the offset", str("2024-12-18 16:15:21.100 +0530"), time.Date(2024, 12, 18, 16, 15, 21, 1e8, ist)},
		{"space before Z", str("2024-12-18T10:45:21 Z"), time.Unix(1734518721, 0)},
		{"Java's zone suffix", str("2024-12-18T16:15:21.100+05:30[Asia/Kolkata]"), time.Date(2024, 12, 18, 16, 15, 21, 1e8, ist)},
		{"basic form", str("20241218T104521Z"), time.Unix(1734518721, 0)},
		{"basic form with offset", str("20241218T161521+0530"), time.Unix(1734518721, 0)},
		{"basic form, no zone: UTC", str("20241218T104521"), time.Unix(1734518721, 0)},
		{"basic form, fraction, no zone: UTC", str("20241218T104521.720"), time.Unix(1734518721, 720e6)},
		{"basic date", str("20241218"), time.Date(2024, 12, 18, 0, 0, 0, 0, time.UTC)},
		{"eight digits that are no date: epoch seconds", str("20241318"), time.Unix(20241318, 0)},
		{"eight digits as a number: epoch seconds", num(20241218), time.Unix(20241218, 0)},
		// No time.
		{"nil", nil, time.Time{}},
		{"no kind", &structpb.Value{}, time.Time{}},
		{"null", structpb.NewNullValue(), time.Time{}},
		{"zero", num(0), time.Time{}},
		{"zero string", str("0"), time.Time{}},
		{"zero string with a point", str("0.0"), time.Time{}},
		{"zeros", str("00"), time.Time{}},
		{"negative zero string", str("-0"), time.Time{}},
		{"zero with an exponent", str("0e0"), time.Time{}},
		{"zero with a signed exponent", str("0.0E-3"), time.Time{}},
		{"positive zero", str("+0"), time.Time{}},
		{"zero, an exponent past int64", str("0e-99999999999999999999"), time.Time{}},
		{"negative zero", num(math.Copysign(0, -1)), time.Time{}},
		{"empty string", str(""), time.Time{}},
		{"blank string", str(" \t"), time.Time{}},
	}
	unreadable := []struct {
		name string
		v    *structpb.Value
		err  string
	}{
		{"bool", structpb.NewBoolValue(true), "is not a number or a string"},
		{"list", structpb.NewListValue(&structpb.ListValue{Values: []*structpb.Value{num(1734518721)}}), "is not a number or a string"},
		{"object", structpb.NewStructValue(&structpb.Struct{}), "is not a number or a string"},
		{"negative", num(-1734518721), "is not an epoch time"},
		{"below a µs", num(1e-9), "is not after 1970"},
		{"NaN", num(math.NaN()), "is not an epoch time"},
		{"infinity", num(math.Inf(1)), "is not an epoch time"},
		{"beyond int64 ns", num(1e19), "is not an epoch time"},
		{"2^63 ns, just past int64", num(math.Exp2(63)), "is not an epoch time"},
		{"negative string", str("-1734518721"), "is not an epoch time"},
		{"huge string", str("99999999999999999999"), "is not an epoch time"},
		{"exponent out of range", str("1e400"), "is not an epoch time"},
		{"two points", str("1734518721.1.2"), "is not an epoch time"},
		{"lone point", str("."), "is not an epoch time"},
		{"zeros and points, not a number", str("0.0.0"), "is not an epoch time"},
		{"a hexadecimal zero", str("0x0p0"), "is not an epoch time"},
		{"a zero with an underscore", str("0_0"), "is not an epoch time"},
		{"zero only as a float64", str("1e-400"), "is not an epoch time"},
		{"two signs", str("--0"), "is not an epoch time"},
		{"words", str("yesterday"), "is not an epoch time"},
		{"epoch", str("1970-01-01T00:00:00Z"), "is not after 1970"},
		{"before epoch", str("1969-07-20T20:17:40Z"), "is not after 1970"},
		{"bad month", str("2024-13-18T10:45:21Z"), "is not an epoch time"},
		{"year 9999 behind UTC: after it in UTC", str("9999-12-31T23:59:59-23:59"), "is after the year 9999"},
		{"the first second of the year 10000 in UTC", str("9999-12-31T23:59:00-00:01"), "is after the year 9999"},
		{"RFC 1123 in another zone", str("Wed, 18 Dec 2024 16:15:21 IST"), "is not an epoch time"},
		{"offset of three digits", str("2024-12-18T10:45:21+053"), "is not an epoch time"},
		{"hour only", str("2024-12-18T10Z"), "is not an epoch time"},
		{"bracket without a zone before it", str("[Asia/Kolkata]"), "is not an epoch time"},
		{"a closing bracket alone", str("2024-12-18T10:45:21Z]"), "is not an epoch time"},
		{"zero with an empty exponent", str("0e"), "is not an epoch time"},
		{"zero with a sign for an exponent", str("0e+"), "is not an epoch time"},
	}
	for _, tt := range unreadable {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := normalize.ParseTime(tt.v)
			if err == nil || errors.Is(err, normalize.ErrNoTime) || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("ParseTime(%v) = %v, %v; want an error saying %q", tt.v, got, err, tt.err)
			}
		})
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := normalize.ParseTime(tt.v)
			if tt.want.IsZero() != errors.Is(err, normalize.ErrNoTime) || (err != nil && !errors.Is(err, normalize.ErrNoTime)) {
				t.Fatalf("ParseTime(%v) = %v, %v; want %v", tt.v, got, err, tt.want)
			}
			if !got.Equal(tt.want) {
				t.Errorf("ParseTime(%v) = %v, want %v", tt.v, got, tt.want)
			}
			if err == nil && got.Location() != time.UTC {
				t.Errorf("ParseTime(%v) location %v, want UTC", tt.v, got.Location())
			}
		})
	}
}
