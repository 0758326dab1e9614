package api

import (
	"fmt"
	"sync"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
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

// Place is a slot under Key in Slots; What names its bound in a refusal.
type Place struct {
	Slots     *Slots
	Key, What string
}

// TakeAll takes every place, or none: at the first place at its limit it
// gives back those it took and returns that place's index. It returns -1
// when it took them all.
func TakeAll(places []Place) int {
	for i, p := range places {
		if !p.Slots.Take(p.Key) {
			GiveAll(places[:i])
			return i
		}
	}
	return -1
}

// GiveAll gives back the places TakeAll took.
func GiveAll(places []Place) {
	for _, p := range places {
		p.Slots.Give(p.Key)
	}
}

// streamLimiter bounds concurrent watch streams per credential, per watch
// token, per request id and in all. A zero limit means unbounded.
type streamLimiter struct {
	byCredential, byToken, byRequest, all *Slots
}

func newStreamLimiter(opts WatchOptions) *streamLimiter {
	return &streamLimiter{
		byCredential: NewSlots(opts.MaxPerCredential),
		byToken:      NewSlots(opts.MaxPerToken),
		byRequest:    NewSlots(opts.MaxPerRequest),
		all:          NewSlots(opts.MaxInAll),
	}
}

// acquire takes a slot for one stream, or fails with RESOURCE_EXHAUSTED.
// token tells a watch token from the others of its request ("" for any
// other credential): without a bound of its own, one token could take all
// of its request's slots. The bound in all comes last, so that a client at
// a bound of its own is told so, and only a stream every other bound
// admits takes a place in it. A refusal gives back what it took. Call
// release when the stream ends.
func (l *streamLimiter) acquire(credential, token, requestID string) (release func(), err error) {
	places := make([]Place, 0, 4)
	places = append(places, Place{l.byCredential, credential, "for this credential"})
	if token != "" {
		places = append(places, Place{l.byToken, token, "for this watch token"})
	}
	places = append(places, Place{l.byRequest, requestID, "for this request"}, Place{l.all, "", "on this server"})
	if i := TakeAll(places); i >= 0 {
		return nil, Exhausted(fmt.Sprintf("too many watch streams %s (limit %d)", places[i].What, places[i].Slots.limit))
	}
	return func() { GiveAll(places) }, nil
}

// RetryStreamAfter is how long a client refused a stream for a limit on
// open streams is told to wait before trying again. A place frees only
// when another stream ends, which nothing here can foresee; 5 s is what
// the status page waits after a 429 and where watch's backoff stops
// growing, so a refused client neither hammers the server nor waits much
// longer than ours do.
const RetryStreamAfter = 5 * time.Second

// Exhausted is RESOURCE_EXHAUSTED for a stream refused for a limit on open
// streams, with a google.rpc.RetryInfo of RetryStreamAfter for generated
// clients to back off by (the gateway turns it into Retry-After).
func Exhausted(msg string) error {
	st, err := status.New(codes.ResourceExhausted, msg).WithDetails(&errdetails.RetryInfo{RetryDelay: durationpb.New(RetryStreamAfter)})
	if err != nil { // a RetryInfo always encodes
		return status.Error(codes.ResourceExhausted, msg)
	}
	return st.Err()
}

// RetryDelay is the delay of err's google.rpc.RetryInfo, as Exhausted
// gives it, if err carries a valid one.
func RetryDelay(err error) (time.Duration, bool) {
	st, _ := status.FromError(err) // an error that is no status has no details
	for _, d := range st.Details() {
		if ri, ok := d.(*errdetails.RetryInfo); ok && ri.GetRetryDelay().IsValid() && ri.GetRetryDelay().AsDuration() >= 0 {
			return ri.GetRetryDelay().AsDuration(), true
		}
	}
	return 0, false
}
