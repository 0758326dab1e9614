package normalize_test

import (
	"math"
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
		want time.Time // zero: not readable
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
		{"µs", num(1734516528720123), time.UnixMicro(1734516528720123)},
		{"ns", num(1734516528720123904), time.Unix(0, 1734516528720123904)},
		// Numeric strings.
		{"seconds string", str("1734518721"), time.Unix(1734518721, 0)},
		{"seconds string with fraction", str("1734518721.25"), time.Unix(1734518721, 25e7)},
		{"ms string", str("1734516528720"), time.UnixMilli(1734516528720)},
		{"ms string with space", str(" 1734516528720 "), time.UnixMilli(1734516528720)},
		{"µs string", str("1734516528720123"), time.UnixMicro(1734516528720123)},
		{"ns string, exact", str("1734516528720123456"), time.Unix(0, 1734516528720123456)},
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
		// Not readable.
		{"nil", nil, time.Time{}},
		{"no kind", &structpb.Value{}, time.Time{}},
		{"null", structpb.NewNullValue(), time.Time{}},
		{"bool", structpb.NewBoolValue(true), time.Time{}},
		{"list", structpb.NewListValue(&structpb.ListValue{Values: []*structpb.Value{num(1734518721)}}), time.Time{}},
		{"zero", num(0), time.Time{}},
		{"negative", num(-1734518721), time.Time{}},
		{"below a µs", num(1e-9), time.Time{}},
		{"NaN", num(math.NaN()), time.Time{}},
		{"infinity", num(math.Inf(1)), time.Time{}},
		{"beyond int64 ns", num(1e19), time.Time{}},
		{"zero string", str("0"), time.Time{}},
		{"negative string", str("-1734518721"), time.Time{}},
		{"huge string", str("99999999999999999999"), time.Time{}},
		{"exponent string", str("1.7e12"), time.Time{}},
		{"two points", str("1734518721.1.2"), time.Time{}},
		{"lone point", str("."), time.Time{}},
		{"empty string", str(""), time.Time{}},
		{"words", str("yesterday"), time.Time{}},
		{"epoch", str("1970-01-01T00:00:00Z"), time.Time{}},
		{"before epoch", str("1969-07-20T20:17:40Z"), time.Time{}},
		{"bad month", str("2024-13-18T10:45:21Z"), time.Time{}},
		{"year 9999 behind UTC: after it in UTC", str("9999-12-31T23:59:59-23:59"), time.Time{}},
		{"RFC 1123", str("Wed, 18 Dec 2024 10:45:21 GMT"), time.Time{}},
		{"offset of three digits", str("2024-12-18T10:45:21+053"), time.Time{}},
		{"hour only", str("2024-12-18T10Z"), time.Time{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, ok := normalize.ParseTime(tt.v)
			if want := !tt.want.IsZero(); ok != want {
				t.Fatalf("ParseTime(%v) = %v, %t; want ok %t", tt.v, got, ok, want)
			}
			if !got.Equal(tt.want) {
				t.Errorf("ParseTime(%v) = %v, want %v", tt.v, got, tt.want)
			}
			if ok && got.Location() != time.UTC {
				t.Errorf("ParseTime(%v) location %v, want UTC", tt.v, got.Location())
			}
		})
	}
}
