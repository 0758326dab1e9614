package normalize

import (
	"strings"

	eventsv1 "github.com/otpless-events/otpless-events/gen/otpless/events/v1"
)

// MaxErrorMessage bounds the error message an event keeps, in bytes; the
// raw body keeps all of it. A request's snapshot holds each failure's
// message, and OTPLESS's are a line: a body could otherwise make a snapshot
// larger than a gRPC client reads (4 MiB by default).
const MaxErrorMessage = 1024

// ErrorInfo describes a delivery failure: the code and message as sent, and,
// when the code is in OTPLESS's legacy failure-code table (matched without
// regard to case or surrounding space), what it means and whether it is
// worth retrying. It returns nil when code and message are both empty. A
// message longer than MaxErrorMessage is cut, and ends in "…".
func ErrorInfo(code, message string) *eventsv1.ErrorInfo {
	if strings.TrimSpace(code) == "" && strings.TrimSpace(message) == "" {
		return nil
	}
	description, retriable := lookupCode(strings.ToLower(strings.TrimSpace(code)))
	if len(message) > MaxErrorMessage {
		message = strings.ToValidUTF8(message[:MaxErrorMessage], "") + "…"
	}
	return &eventsv1.ErrorInfo{
		Code:        strings.Clone(code),
		Message:     strings.Clone(message),
		Description: description,
		Retriable:   retriable,
	}
}

// lookupCode is the legacy guide's failure-code table; code is lower case.
func lookupCode(code string) (string, eventsv1.Retriable) {
	switch code {
	case "00a":
		return "Others - Unknown", eventsv1.Retriable_RETRIABLE_YES
	case "003":
		return "Unknown Subscriber / Other Delivery Failure", eventsv1.Retriable_RETRIABLE_NO
	case "024":
		return "Others - Undelivered", eventsv1.Retriable_RETRIABLE_YES
	case "033":
		return "Mobile Number not OPT-IN", eventsv1.Retriable_RETRIABLE_AFTER_OPT_IN
	case "101":
		return "24HR_TimeExceed", eventsv1.Retriable_RETRIABLE_NO
	case "103":
		return "WhatsApp_Failed", eventsv1.Retriable_RETRIABLE_CASE_BY_CASE
	}
	return "", eventsv1.Retriable_RETRIABLE_UNSPECIFIED
}
