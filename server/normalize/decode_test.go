package normalize_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/otpless-events/otpless-events/server/normalize"
)

func TestDecodeErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		body string
		want string // the whole message, or a part of it after "..."
	}{
		{"nil", "", "invalid webhook body: body is empty"},
		{"whitespace", " \r\n\t ", "invalid webhook body: body is empty"},
		{"null", "null", "invalid webhook body: expected a JSON object, got null"},
		{"array", " [] ", "invalid webhook body: expected a JSON object, got an array"},
		{"string", `"x"`, "invalid webhook body: expected a JSON object, got a string"},
		{"number", "42", "invalid webhook body: expected a JSON object, got a number"},
		{"boolean", "true", "invalid webhook body: expected a JSON object, got a boolean"},
		{"truncated", `{"status": "SENT"`, "invalid webhook body: not valid JSON: unexpected end of JSON input at offset 17"},
		{"garbage", `{"status": SENT}`, "invalid webhook body: not valid JSON: invalid character 'S' looking for beginning of value at offset 12"},
		{"trailing data", `{"status": "SENT"} {}`, "...not valid JSON: invalid character '{' after top-level value"},
		{"invalid UTF-8", "{\"status\": \"SENT\xff\"}", "invalid webhook body: not valid UTF-8"},
		{"invalid UTF-8 outside JSON", "\xfe{}", "invalid webhook body: not valid UTF-8"},
		{"data not an object", `{"data": 5}`, "invalid webhook body: data: expected an object, got a number"},
		{"mobile not an object", `{"notificationType": "UNREACHABLE", "mobile": "919899038845"}`, "invalid webhook body: mobile: expected an object, got a string"},
		{"status not a string", `{"status": 5}`, "invalid webhook body: status: expected a string, got a number"},
		{"a null beside a wrong type", `{"eventType": null, "status": 5}`, "invalid webhook body: status: expected a string, got a number"},
		{"nested string field", `{"data": {"requestId": true}}`, "invalid webhook body: data.requestId: expected a string, got a boolean"},
		{"snake_case name", `{"data": {"request_id": {}}}`, "invalid webhook body: data.request_id: expected a string, got an object"},
		{"channel not an array", `{"data": {"authenticationDetails": {"phone": {"channel": "SMS"}}}}`, "invalid webhook body: data.authenticationDetails.phone.channel: expected an array, got a string"},
		{"channel element", `{"data": {"authenticationDetails": {"email": {"channel": ["EMAIL", 7]}}}}`, "invalid webhook body: data.authenticationDetails.email.channel[1]: expected a string, got a number"},
		{"duplicate field", `{"eventType": "DLR", "eventType": "AUTH"}`, `...duplicate field "eventType"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			req, err := normalize.Decode([]byte(tt.body))
			if !errors.Is(err, normalize.ErrInvalidBody) || req != nil {
				t.Fatalf("Decode(%q) = %v, %v; want ErrInvalidBody", tt.body, req, err)
			}
			if part, ok := strings.CutPrefix(tt.want, "..."); ok {
				if !strings.HasPrefix(err.Error(), "invalid webhook body: ") || !strings.Contains(err.Error(), part) {
					t.Errorf("Decode(%q) error %q, want one containing %q", tt.body, err, part)
				}
			} else if err.Error() != tt.want {
				t.Errorf("Decode(%q) error %q, want %q", tt.body, err, tt.want)
			}
		})
	}
}

// TestDecodeAccepts checks bodies that are odd but readable.
func TestDecodeAccepts(t *testing.T) {
	t.Parallel()
	for _, body := range []string{
		`{}`,
		` {"foo": 1} `,
		`{"data": null, "timestamp": null, "mobile": null}`,
		`{"timestamp": {"any": ["json"]}, "data": {"timestamp": [1], "metaData": "anything"}}`,
		`{"data": {"authenticationDetails": {"phone": {"channel": []}, "email": null}}}`,
		`{"status": "SENT", "data": {"reference_id": "r1"}}`,
	} {
		if _, err := normalize.Decode([]byte(body)); err != nil {
			t.Errorf("Decode(%s): %v", body, err)
		}
	}
}

// TestDecodeLoneSurrogates checks bodies whose strings escape half of a
// UTF-16 surrogate pair, as JavaScript's JSON.stringify writes a string cut
// in the middle of an emoji. They are JSON objects (RFC 8259 allows the
// escape), so they are read, each lone half as U+FFFD, as encoding/json
// reads them, rather than refused with the whole webhook.
func TestDecodeLoneSurrogates(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, body, wantMessage string
	}{
		{"in a field not read", `{"eventType": "DLR", "x": "\ud83d", "data": {"requestId": "r1", "status": "FAILED", "channel": "SMS"}}`, ""},
		{"in metaData", `{"eventType": "DLR", "data": {"requestId": "r1", "status": "FAILED", "channel": "SMS", "metaData": {"name": "Asha \ud83d"}}}`, ""},
		{"high half at the end", `{"eventType": "DLR", "data": {"requestId": "r1", "status": "FAILED", "errorMessage": "cut \ud83d"}}`, "cut \ufffd"},
		{"low half alone", `{"eventType": "DLR", "data": {"requestId": "r1", "status": "FAILED", "errorMessage": "\ude00x"}}`, "\ufffdx"},
		{"two high halves", `{"eventType": "DLR", "data": {"requestId": "r1", "status": "FAILED", "errorMessage": "\uD83D\uD83D\ude00"}}`, "\ufffd\U0001F600"},
		{"a pair and a half", `{"eventType": "DLR", "data": {"requestId": "r1", "status": "FAILED", "errorMessage": "\ud83d\ude00\ud83d"}}`, "\U0001F600\ufffd"},
		{"after an escaped backslash", `{"eventType": "DLR", "data": {"requestId": "r1", "status": "FAILED", "errorMessage": "\\\ud800"}}`, "\\\ufffd"},
		{"two low halves, the first the least", `{"eventType": "DLR", "data": {"requestId": "r1", "status": "FAILED", "errorMessage": "\udc00\ude00"}}`, "\ufffd\ufffd"},
		{"a pair with the least low half", `{"eventType": "DLR", "data": {"requestId": "r1", "status": "FAILED", "errorMessage": "\ud83d\udc00"}}`, "\U0001F400"},
		{"a high half, then another escape", `{"eventType": "DLR", "data": {"requestId": "r1", "status": "FAILED", "errorMessage": "\ud83d\ndc00"}}`, "\ufffd\ndc00"},
		{"a high half, then text like a low half", `{"eventType": "DLR", "data": {"requestId": "r1", "status": "FAILED", "errorMessage": "\ud83dxudc00"}}`, "\ufffdxudc00"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			body := []byte(tt.body)
			req, err := normalize.Decode(body)
			if err != nil {
				t.Fatalf("Decode(%s): %v", tt.body, err)
			}
			if got := req.GetData().GetErrorMessage(); got != tt.wantMessage {
				t.Errorf("errorMessage %q, want %q", got, tt.wantMessage)
			}
			if string(body) != tt.body {
				t.Errorf("Decode changed its body to %s", body)
			}
		})
	}
	// Not an escape: an escaped backslash followed by "ud800" is text, and
	// invalid JSON stays invalid.
	req, err := normalize.Decode([]byte(`{"status": "FAILED", "data": {"errorMessage": "\\ud800"}}`))
	if err != nil || req.GetData().GetErrorMessage() != `\ud800` {
		t.Errorf("escaped backslash: %v, %v", req.GetData().GetErrorMessage(), err)
	}
	for _, body := range []string{
		`{"status": "\ud800", }`,
		`{"status": "\ud83d`,      // cut after a high half
		`{"status": "\ud83d\udc0`, // cut in the low half
	} {
		b := []byte(body)
		if _, err := normalize.Decode(b[:len(b):len(b)]); !errors.Is(err, normalize.ErrInvalidBody) { // no capacity to read past the end
			t.Errorf("invalid JSON with a lone surrogate %s: %v, want ErrInvalidBody", body, err)
		}
	}
}
