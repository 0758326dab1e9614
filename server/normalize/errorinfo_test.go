package normalize_test

import (
	"testing"

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
