package api

import (
	"context"
	"errors"
	"strconv"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/otpless-events/otpless-events/server/normalize"
	"github.com/otpless-events/otpless-events/server/store"
)

// Status maps a domain error to a gRPC status error. Errors that already
// carry a status pass through. Anything unknown becomes INTERNAL with a
// generic message, so internals never leak to clients; the server's log
// has them (see fault).
func Status(err error) error {
	if err == nil {
		return nil
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	switch {
	case errors.Is(err, normalize.ErrInvalidBody), errors.Is(err, normalize.ErrUnrecognized):
		return status.Error(codes.InvalidArgument, err.Error())
	case errors.Is(err, store.ErrInvalidPageToken):
		return status.Error(codes.InvalidArgument, "page_token is not one this server returned for this request")
	case errors.Is(err, store.ErrNotFound):
		return status.Error(codes.NotFound, "no event of this request has been stored")
	case errors.Is(err, store.ErrOverloaded):
		return status.Error(codes.Unavailable, "write queue full, retry later")
	case errors.Is(err, store.ErrClosed):
		return status.Error(codes.Unavailable, "server is shutting down, retry later")
	case errors.Is(err, store.ErrUnavailable):
		return &fault{status.New(codes.Unavailable, "store unavailable, retry later"), err}
	case errors.Is(err, context.Canceled): // the text alone: what wraps it names internals
		return status.Error(codes.Canceled, context.Canceled.Error())
	case errors.Is(err, context.DeadlineExceeded):
		return status.Error(codes.DeadlineExceeded, context.DeadlineExceeded.Error())
	}
	return &fault{status.New(codes.Internal, "internal error"), err}
}

// fault is a status error caused by a fault of the server: the client gets
// the status, the server's log also the cause (what errors.Unwrap gives).
type fault struct {
	st    *status.Status
	cause error
}

func (f *fault) Error() string              { return f.st.Err().Error() }
func (f *fault) GRPCStatus() *status.Status { return f.st }
func (f *fault) Unwrap() error              { return f.cause }

// Size names a byte count for an error message: in MiB or KiB when it is a
// whole number of them ("1 MiB"), else in bytes. The log's masking takes a
// run of seven digits or more for a phone number, as 1048576 would be.
func Size(n int64) string {
	switch {
	case n >= 1<<20 && n%(1<<20) == 0:
		return strconv.FormatInt(n>>20, 10) + " MiB"
	case n >= 1<<10 && n%(1<<10) == 0:
		return strconv.FormatInt(n>>10, 10) + " KiB"
	}
	return strconv.FormatInt(n, 10) + " bytes"
}
