package api

import (
	"fmt"
	"sync"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Slots counts what is open under each key, up to a limit per key (0: no
// limit). It is safe for concurrent use.
type Slots struct {
	limit int
	mu    sync.Mutex
	open  map[string]int
}

// NewSlots returns Slots of limit per key.
func NewSlots(limit int) *Slots { return &Slots{limit: limit, open: map[string]int{}} }

// Take takes a slot under key, or reports false when key holds the limit.
func (s *Slots) Take(key string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.limit > 0 && s.open[key] >= s.limit {
		return false
	}
	s.open[key]++
	return true
}

// Give gives back a slot that Take took under key.
func (s *Slots) Give(key string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.open[key]--; s.open[key] <= 0 {
		delete(s.open, key)
	}
}

// streamLimiter bounds concurrent watch streams per credential and per
// request id. A zero limit means unbounded.
type streamLimiter struct {
	perCredential, perRequest int
	byCredential, byRequest   *Slots
}

func newStreamLimiter(perCredential, perRequest int) *streamLimiter {
	return &streamLimiter{
		perCredential: perCredential,
		perRequest:    perRequest,
		byCredential:  NewSlots(perCredential),
		byRequest:     NewSlots(perRequest),
	}
}

// acquire takes a slot for one stream, or fails with RESOURCE_EXHAUSTED.
// Call release when the stream ends.
func (l *streamLimiter) acquire(credential, requestID string) (release func(), err error) {
	if !l.byCredential.Take(credential) {
		return nil, status.Error(codes.ResourceExhausted, fmt.Sprintf("too many watch streams for this credential (limit %d)", l.perCredential))
	}
	if !l.byRequest.Take(requestID) {
		l.byCredential.Give(credential)
		return nil, status.Error(codes.ResourceExhausted, fmt.Sprintf("too many watch streams for this request (limit %d)", l.perRequest))
	}
	return func() {
		l.byCredential.Give(credential)
		l.byRequest.Give(requestID)
	}, nil
}
