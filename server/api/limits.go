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

// streamLimiter bounds concurrent watch streams per credential, per watch
// token and per request id. A zero limit means unbounded.
type streamLimiter struct {
	perCredential, perToken, perRequest int
	byCredential, byToken, byRequest    *Slots
}

func newStreamLimiter(perCredential, perToken, perRequest int) *streamLimiter {
	return &streamLimiter{
		perCredential: perCredential,
		perToken:      perToken,
		perRequest:    perRequest,
		byCredential:  NewSlots(perCredential),
		byToken:       NewSlots(perToken),
		byRequest:     NewSlots(perRequest),
	}
}

// acquire takes a slot for one stream, or fails with RESOURCE_EXHAUSTED.
// token tells a watch token from the others of its request ("" for any
// other credential): without a bound of its own, one token could take all
// of its request's slots. Call release when the stream ends.
func (l *streamLimiter) acquire(credential, token, requestID string) (release func(), err error) {
	if !l.byCredential.Take(credential) {
		return nil, status.Error(codes.ResourceExhausted, fmt.Sprintf("too many watch streams for this credential (limit %d)", l.perCredential))
	}
	if token != "" && !l.byToken.Take(token) {
		l.byCredential.Give(credential)
		return nil, status.Error(codes.ResourceExhausted, fmt.Sprintf("too many watch streams for this watch token (limit %d)", l.perToken))
	}
	if !l.byRequest.Take(requestID) {
		if token != "" {
			l.byToken.Give(token)
		}
		l.byCredential.Give(credential)
		return nil, status.Error(codes.ResourceExhausted, fmt.Sprintf("too many watch streams for this request (limit %d)", l.perRequest))
	}
	return func() {
		l.byCredential.Give(credential)
		if token != "" {
			l.byToken.Give(token)
		}
		l.byRequest.Give(requestID)
	}, nil
}
