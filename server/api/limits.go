package api

import (
	"fmt"
	"sync"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// streamLimiter bounds concurrent watch streams per credential and per
// request id. A zero limit means unbounded.
type streamLimiter struct {
	perCredential, perRequest int

	mu           sync.Mutex
	byCredential map[string]int
	byRequest    map[string]int
}

func newStreamLimiter(perCredential, perRequest int) *streamLimiter {
	return &streamLimiter{
		perCredential: perCredential,
		perRequest:    perRequest,
		byCredential:  map[string]int{},
		byRequest:     map[string]int{},
	}
}

// acquire takes a slot for one stream, or fails with RESOURCE_EXHAUSTED.
// Call release when the stream ends.
func (l *streamLimiter) acquire(credential, requestID string) (release func(), err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.perCredential > 0 && l.byCredential[credential] >= l.perCredential {
		return nil, status.Error(codes.ResourceExhausted, fmt.Sprintf("too many watch streams for this credential (limit %d)", l.perCredential))
	}
	if l.perRequest > 0 && l.byRequest[requestID] >= l.perRequest {
		return nil, status.Error(codes.ResourceExhausted, fmt.Sprintf("too many watch streams for this request (limit %d)", l.perRequest))
	}
	l.byCredential[credential]++
	l.byRequest[requestID]++
	return func() {
		l.mu.Lock()
		defer l.mu.Unlock()
		decrement(l.byCredential, credential)
		decrement(l.byRequest, requestID)
	}, nil
}

func decrement(m map[string]int, k string) {
	if m[k]--; m[k] <= 0 {
		delete(m, k)
	}
}
