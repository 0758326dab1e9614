package api

import (
	"context"
	"fmt"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
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
