package normalize_test

import (
	"strings"
	"testing"
	"unicode/utf8"

	eventsv1 "github.com/otpless-events/otpless-events/gen/otpless/events/v1"
	"github.com/otpless-events/otpless-events/server/normalize"
	"google.golang.org/protobuf/proto"
)

func TestErrorInfo(t *testing.T) {
	t.Parallel()
	tests := []struct {
		code, message string
		want          *eventsv1.ErrorInfo
	}{
		{"00a", "x", &eventsv1.ErrorInfo{Code: "00a", Message: "x", Description: "Others - Unknown", Retriable: eventsv1.Retriable_RETRIABLE_YES}},
		{"00A", "", &eventsv1.ErrorInfo{Code: "00A", Description: "Others - Unknown", Retriable: eventsv1.Retriable_RETRIABLE_YES}},
		{"003", "Other Delivery Failure", &eventsv1.ErrorInfo{Code: "003", Message: "Other Delivery Failure", Description: "Unknown Subscriber / Other Delivery Failure", Retriable: eventsv1.Retriable_RETRIABLE_NO}},
		{"024", "", &eventsv1.ErrorInfo{Code: "024", Description: "Others - Undelivered", Retriable: eventsv1.Retriable_RETRIABLE_YES}},
		{" 033 ", "", &eventsv1.ErrorInfo{Code: " 033 ", Description: "Mobile Number not OPT-IN", Retriable: eventsv1.Retriable_RETRIABLE_AFTER_OPT_IN}},
		{"101", "", &eventsv1.ErrorInfo{Code: "101", Description: "24HR_TimeExceed", Retriable: eventsv1.Retriable_RETRIABLE_NO}},
		{"103", "", &eventsv1.ErrorInfo{Code: "103", Description: "WhatsApp_Failed", Retriable: eventsv1.Retriable_RETRIABLE_CASE_BY_CASE}},
		{"999", "new failure", &eventsv1.ErrorInfo{Code: "999", Message: "new failure"}},
		{"", "only a message", &eventsv1.ErrorInfo{Message: "only a message"}},
		{"", "", nil},
		{" ", "", nil},
	}
	for _, tt := range tests {
		if got := normalize.ErrorInfo(tt.code, tt.message); !proto.Equal(got, tt.want) {
			t.Errorf("ErrorInfo(%q, %q) = %v, want %v", tt.code, tt.message, got, tt.want)
		}
	}
}

// A long message is cut at MaxErrorMessage bytes, on a character boundary:
// five 900 KB messages made a snapshot no gRPC client could read.
func TestErrorInfoLongMessage(t *testing.T) {
	t.Parallel()
	long := strings.Repeat("ab", normalize.MaxErrorMessage)
	got := normalize.ErrorInfo("003", long).GetMessage()
	if want := long[:normalize.MaxErrorMessage] + "…"; got != want {
		t.Errorf("message of %d bytes kept as %d bytes %q…, want %d", len(long), len(got), got[:20], len(want))
	}
	odd := "x" + strings.Repeat("é", normalize.MaxErrorMessage) // the cut falls inside an "é"
	got = normalize.ErrorInfo("", odd).GetMessage()
	if !utf8.ValidString(got) || len(got) != normalize.MaxErrorMessage-1+len("…") {
		t.Errorf("cut inside a character: %d bytes, valid UTF-8 %t", len(got), utf8.ValidString(got))
	}
	if short := strings.Repeat("a", normalize.MaxErrorMessage); normalize.ErrorInfo("", short).GetMessage() != short {
		t.Error("a message of MaxErrorMessage bytes was cut")
	}
}
