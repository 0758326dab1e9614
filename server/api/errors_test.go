package api

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/otpless-events/otpless-events/server/normalize"
	"github.com/otpless-events/otpless-events/server/store"
)

// A call that ran out of time or was canceled is told so, not what the
// error wrapping the context's passed through (a backend's name, a query).
func TestStatusOfContextErrorsNamesNoInternals(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		err  error
		code codes.Code
		msg  string
	}{
		{fmt.Errorf("sqlitestore: get request: %w", context.DeadlineExceeded), codes.DeadlineExceeded, "context deadline exceeded"},
		{fmt.Errorf("pgstore: list events: %w", context.Canceled), codes.Canceled, "context canceled"},
	} {
		if st := status.Convert(Status(tc.err)); st.Code() != tc.code || st.Message() != tc.msg {
			t.Errorf("Status(%q) = %v %q, want %v %q", tc.err, st.Code(), st.Message(), tc.code, tc.msg)
		}
	}
}

// Status maps each domain error to its code, passes an error that is
// already a status through unchanged, and hides anything else behind
// INTERNAL while keeping it as the cause for the log.
func TestStatusCodes(t *testing.T) {
	t.Parallel()
	if err := Status(nil); err != nil {
		t.Errorf("Status(nil) = %v", err)
	}
	given := status.Error(codes.PermissionDenied, "a watch token may only watch or get its request")
	if err := Status(given); err != given {
		t.Errorf("Status of a status error = %v, want it unchanged", err)
	}
	secret := errors.New("pgstore: dial 10.0.0.7: password authentication failed")
	for _, tc := range []struct {
		err   error
		code  codes.Code
		cause bool // the error is kept for the log
	}{
		{fmt.Errorf("decode: %w", normalize.ErrInvalidBody), codes.InvalidArgument, false},
		{fmt.Errorf("decode: %w", normalize.ErrUnrecognized), codes.InvalidArgument, false},
		{store.ErrInvalidPageToken, codes.InvalidArgument, false},
		{store.ErrNotFound, codes.NotFound, false},
		{store.ErrOverloaded, codes.Unavailable, false},
		{store.ErrClosed, codes.Unavailable, false},
		{fmt.Errorf("%w: %w", store.ErrUnavailable, secret), codes.Unavailable, true},
		{secret, codes.Internal, true},
	} {
		err := Status(tc.err)
		st := status.Convert(err)
		if st.Code() != tc.code || strings.Contains(st.Message(), "10.0.0.7") {
			t.Errorf("Status(%q) = %v %q, want %v naming no internals", tc.err, st.Code(), st.Message(), tc.code)
		}
		if tc.cause && !errors.Is(err, secret) {
			t.Errorf("Status(%q) lost its cause", tc.err)
		}
	}
}
