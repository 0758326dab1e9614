package observe_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/otpless-events/otpless-events/server/observe"
)

func TestMaskers(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		mask func(string) string
		in   string
		want string
	}{
		{"phone", observe.MaskPhone, "919812345678", "**********78"},
		{"phone with plus", observe.MaskPhone, "+919812345678", "***********78"},
		{"short phone", observe.MaskPhone, "12345", "*****"},
		{"six-digit phone", observe.MaskPhone, "123456", "****56"},
		{"phone ending in a letter", observe.MaskPhone, "98123456x", "*********"},
		{"empty phone", observe.MaskPhone, "", ""},
		{"email", observe.MaskEmail, "asha.rao@example.com", "a***@example.com"},
		{"not an email", observe.MaskEmail, "asha", "****"},
		{"identity phone", observe.MaskIdentity, "919812345678", "**********78"},
		{"identity email", observe.MaskIdentity, "asha@example.com", "a***@example.com"},
		{"token", observe.MaskToken, "tok_5f2a9c0e71d84b3a", "sha256:547aa13c"}, // its SHA-256's first 4 bytes
		{"empty token", observe.MaskToken, "", ""},
		{"scrub phone", observe.Scrub, `unexpected token "919812345678" at offset 12`, `unexpected token "**********78" at offset 12`},
		{"scrub email", observe.Scrub, "bad address asha.rao@example.com here", "bad address a***@example.com here"},
		{"scrub keeps hex ids", observe.Scrub, "request b1f0c2d3e4a5968778695a4b3c2d1e0f", "request b1f0c2d3e4a5968778695a4b3c2d1e0f"},
		{"scrub keeps short numbers", observe.Scrub, "offset 1234", "offset 1234"},
		{"scrub keeps six digits", observe.Scrub, "code 123456 sent", "code 123456 sent"},
		{"scrub seven digits", observe.Scrub, "code 1234567 sent", "code *****67 sent"},
		{"scrub phone in parentheses", observe.Scrub, "call (98123 45678)", "call *************"},
		{"scrub phone before a trailing separator", observe.Scrub, "call 9812345678 ", "call ********78 "},
		{"scrub phone ending in a one-digit group", observe.Scrub, "call 981234 5", "call ********"},
		{"scrub seven digits after a date", observe.Scrub, "on 2026-11-30 1234567", "on 2026-11-30 *****67"},
		{"scrub keeps six digits after a date", observe.Scrub, "on 2026-11-30 123456", "on 2026-11-30 123456"},
		{"phone ending in another script", observe.MaskPhone, "98123456７８", "**************"},
		{"email starting in another script", observe.MaskEmail, "üser@example.de", "ü***@example.de"},
		{"scrub spaced phone", observe.Scrub, "number +91 98123 45678 is barred", "number *************78 is barred"},
		{"scrub grouped phone", observe.Scrub, "call +1 (555) 123-4567.", "call ***************67."},
		{"scrub dashed phone", observe.Scrub, "to 98123-45678, to 98123 4567", "to *********78, to ********67"},
		{"scrub phone after a date", observe.Scrub, "on 2026-11-30 9812345678", "on 2026-11-30 ********78"},
		{"scrub keeps dates and times", observe.Scrub, "at 2026-11-30 20:50:20 and 2026-11-30T20:50:20Z", "at 2026-11-30 20:50:20 and 2026-11-30T20:50:20Z"},
		{"scrub keeps uuids", observe.Scrub, "id 12345678-1234-5678-9abc-def012345678", "id 12345678-1234-5678-9abc-def012345678"},
		{"scrub keeps decimals and addresses", observe.Scrub, "timestamp -98123.4567891 from 10.0.0.1:5432", "timestamp -98123.4567891 from 10.0.0.1:5432"},
		{"scrub keeps digits inside words", observe.Scrub, "id_919812345678 phone=919812345678x", "id_919812345678 phone=919812345678x"},
		{"scrub keeps numbers apart", observe.Scrub, "1234 and 5678", "1234 and 5678"},
		{"scrub keeps a number after a letter", observe.Scrub, "x9812345678", "x9812345678"},
		{"scrub keeps a number after z", observe.Scrub, "z9812345678", "z9812345678"},
		{"scrub a date cut short", observe.Scrub, "until 2026-01-0", "until *********"},
		{"scrub keeps a decimal's fraction", observe.Scrub, "1.9812345678", "1.9812345678"},
		{"scrub keeps a decimal", observe.Scrub, "9812345678.5", "9812345678.5"},
		{"scrub phone after a dot", observe.Scrub, ".9812345678", ".********78"},
		{"scrub phone after a dot after a letter", observe.Scrub, "1a.9812345678", "1a.********78"},
		{"scrub phone before a comma", observe.Scrub, "9812345678,1", "********78,1"},
		{"scrub phone before a dot", observe.Scrub, "9812345678.x", "********78.x"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got := tt.mask(tt.in)
			if got != tt.want {
				t.Fatalf("got %q, want %q", got, tt.want)
			}
		})
	}
}

// Whoever logs personal data through a MaskingHandler, it never reaches the
// output in clear: attributes, groups, With attributes and errors.
func TestMaskingHandler(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	log := slog.New(observe.MaskingHandler(slog.NewJSONHandler(&buf, nil)))
	log = log.With("email", "asha.rao@example.com")
	log.Info("webhook",
		"phone", "9812345678",
		"phone_number", 919812345678,
		"identity", "919812345678",
		"token", "tok_5f2a9c0e71d84b3a",
		slog.Group("data", "mobile", "919812345678", "requestId", "req-1"),
		"error", errors.New(`bad value "919812345678"`),
		"request_id", "b1f0c2d3e4a5968778695a4b3c2d1e0f",
	)
	out := buf.String()
	for _, secret := range []string{"9812345678", "asha.rao", "tok_5f2a9c0e71d84b3a"} {
		if strings.Contains(out, secret) {
			t.Errorf("log line holds %q in clear: %s", secret, out)
		}
	}
	for _, kept := range []string{"req-1", "b1f0c2d3e4a5968778695a4b3c2d1e0f", "a***@example.com", "********78", `"msg":"webhook"`} {
		if !strings.Contains(out, kept) {
			t.Errorf("log line lost %q: %s", kept, out)
		}
	}
}

// Every key naming personal data, a secret or a free text is masked, in
// any case and with "_" or "-" between its words.
func TestMaskingHandlerKeys(t *testing.T) {
	t.Parallel()
	for _, key := range []string{
		"phone", "phonenumber", "mobile", "number", "email", "identity",
		"token", "authorization", "password", "secret", "key", "apikey", "webhookkey", "signature",
		"error", "err", "cause", "panic", "reason", "body",
		"phoneNumber", "Phone_Number", "API_KEY", "Webhook-Key", "AUTHORIZATION",
	} {
		var buf bytes.Buffer
		slog.New(observe.MaskingHandler(slog.NewJSONHandler(&buf, nil))).Info("m", key, "919812345678")
		if strings.Contains(buf.String(), "9812345678") {
			t.Errorf("%s logged in clear: %s", key, buf.String())
		}
	}
}

// The wrapped handler's level holds: a line under it is not written (a
// handler's Handle writes whatever it is given).
func TestMaskingHandlerKeepsTheLevel(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	log := slog.New(observe.MaskingHandler(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelWarn})))
	log.Info("below", "phone", "919812345678")
	log.Warn("at")
	if out := buf.String(); strings.Contains(out, "below") || !strings.Contains(out, `"msg":"at"`) {
		t.Errorf("at level warn, the log holds %s", out)
	}
}

// A value under a key naming personal data or a secret is masked whatever
// its kind: a phone number a decoder made a float (as encoding/json does
// into an any), and a bool, duration or time too, which print in clear
// otherwise.
func TestMaskingHandlerMasksEveryKind(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		attr slog.Attr
		want string // "": a token's fingerprint
	}{
		{slog.Float64("phone", 919812345678), "**********78"},
		{slog.Any("mobile", float32(98123456)), "******56"},
		{slog.Float64("phone", 919812345678.5), "**************"},
		{slog.Float64("token", 5.25), ""},
		{slog.Bool("secret", true), ""},
		{slog.Duration("key", 1500*time.Millisecond), ""},
		{slog.Time("password", time.Date(2026, 12, 3, 0, 0, 0, 0, time.UTC)), ""},
	} {
		t.Run(tt.attr.String(), func(t *testing.T) {
			t.Parallel()
			var buf bytes.Buffer
			slog.New(observe.MaskingHandler(slog.NewJSONHandler(&buf, nil))).Info("m", tt.attr)
			var line map[string]any
			if err := json.Unmarshal(buf.Bytes(), &line); err != nil {
				t.Fatal(err)
			}
			got, ok := line[tt.attr.Key].(string)
			if !ok || (tt.want != "" && got != tt.want) || (tt.want == "" && !strings.HasPrefix(got, "sha256:")) {
				t.Errorf("%s logged as %s; want it masked", tt.attr, buf.String())
			}
		})
	}
}

// A line whose attributes need no masking is handed on as it is; one whose
// last attribute needs it is still masked.
func TestMaskingHandlerCleanAndLateAttributes(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	log := slog.New(observe.MaskingHandler(slog.NewJSONHandler(&buf, nil)))
	log.Info("clean", "request_id", "r-1", "status", 200, "list", []string{"a", "b"})
	log.Info("late", "request_id", "r-2", "method", "POST", "path", "/x", "status", 200, "bytes", 2, "remote", "127.0.0.1:1", "mobile", "919812345678")
	out := buf.String()
	if !strings.Contains(out, `"msg":"clean","request_id":"r-1","status":200,"list":["a","b"]}`) {
		t.Errorf("the clean line changed: %s", out)
	}
	if strings.Contains(out, "9812345678") || !strings.Contains(out, `"mobile":"**********78"`) {
		t.Errorf("the late phone number is not masked: %s", out)
	}
}

// A run is a date, and kept, only with a digit at each of a date's digit
// places: any other character there makes it seven digits, masked.
func TestScrubReadsDatesWhole(t *testing.T) {
	t.Parallel()
	for _, i := range []int{0, 1, 2, 3, 5, 6, 8, 9} {
		other := ")" // it goes on with a run, whatever follows
		if i == 0 || i == 5 || i == 8 {
			other = "(" // a run neither starts with ")" nor goes on from "-" to it
		}
		s := "2026-11-30"[:i] + other + "2026-11-30"[i+1:]
		if got := observe.Scrub(s); !strings.Contains(got, "*****") {
			t.Errorf("Scrub(%q) = %q, want it masked", s, got)
		}
	}
}

// Scrub reads what a client can put in an error text (a grpc-encoding a
// call without any credential sends is quoted in its refusal, up to the
// 2 MiB of headers the gRPC port reads): it must take time in proportion
// to the text. It went back over every "(" of a run that held no digit
// from each of them, so that 1 MiB of "(" cost about a quarter of an hour
// of CPU; this test did not end within go test's timeout then. A run of
// dates was read again after each of them (a date's tail may be a
// number): 2 MiB of "2006-01-02-" took minutes.
func TestScrubIsLinear(t *testing.T) {
	for _, run := range []string{"(", "+(", "(-", "( (", "-", "2026-01-02-", "2026-01-02 "} {
		s := `grpc-encoding "` + strings.Repeat(run, 1<<20/len(run)) + `x1"`
		if got := observe.Scrub(s); got != s {
			t.Errorf("Scrub changed %.40q… to %.40q…", s, got)
		}
	}
	for in, want := range map[string]string{
		"((((9812345678 and ((12 ((9812345678x": "************78 and ((12 ((9812345678x",
		"(((1 2 3 (((98123 45678":               "*********************78",
		"(((((( 9812345678 ((((((-1234567":      "(((((( ********78 ((((((-*****67",
		"2026-01-02-2026-01-03 9812345678-1234": "2026-01-02-2026-01-03 *************34",
	} {
		if got := observe.Scrub(in); got != want {
			t.Errorf("Scrub(%q) = %q, want %q", in, got, want)
		}
	}
}

// An error text is cut, after its masking, to a bound: a client can put up
// to 2 MiB of its own in one (a grpc-encoding that grpc-go quotes when it
// refuses the call), and each such call would log it whole. A phone number
// across the cut is masked all the same.
func TestMaskingHandlerBoundsErrorText(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	log := slog.New(observe.MaskingHandler(slog.NewJSONHandler(&buf, nil)))
	long := strings.Repeat("x", 4090) + " 919812345678 " + strings.Repeat("(", 1<<20)
	log.Info("grpc call", "error", long, "cause", errors.New(long))
	out := buf.String()
	if len(out) > 3*4096 {
		t.Errorf("a line of two 1 MiB error texts is %d bytes long", len(out))
	}
	if strings.Contains(out, "9198") || !strings.Contains(out, " *****…") || strings.Count(out, "…") != 2 {
		t.Errorf("want each text masked, then cut and marked …: %.300q…", out[4000:])
	}
}
