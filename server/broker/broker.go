// Package broker fans committed changes out to the watchers of each request,
// in process. Publishing never blocks: every subscription holds a bounded
// buffer of pending changes, and a subscriber that falls behind has its
// oldest pending changes coalesced away, keeping the newest snapshot.
//
// It imports the store's value types and nothing from the servers.
package broker

import (
	"sync"

	"github.com/otpless-events/otpless-events/server/store"
)

// DefaultPending is how many changes a subscription buffers before the oldest
// are dropped (the newest snapshot is always kept).
const DefaultPending = 64

// Broker is an in-process fan-out keyed by request id. The zero value is not
// usable; call New.
type Broker struct {
	pending int

	mu sync.Mutex
	// subs are the open subscriptions of each request; a subscription's
	// index in its slice is its idx. A slice rather than a set: most
	// requests have one watcher, and an idle watcher should cost little.
	subs   map[string][]*Subscription
	closed bool
}

// New returns a broker whose subscriptions buffer at most pending changes
// (DefaultPending when pending <= 0).
func New(pending int) *Broker {
	if pending <= 0 {
		pending = DefaultPending
	}
	return &Broker{pending: pending, subs: make(map[string][]*Subscription)}
}

// Subscribe starts following requestID. Changes published from now on reach
// the subscription. Close it when done. After the broker is closed the
// subscription is born done.
func (b *Broker) Subscribe(requestID string) *Subscription {
	s := &Subscription{
		b:         b,
		requestID: requestID,
		max:       b.pending,
		ready:     make(chan struct{}, 1),
		done:      make(chan struct{}),
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		close(s.done)
		return s
	}
	s.idx = len(b.subs[requestID])
	b.subs[requestID] = append(b.subs[requestID], s)
	return s
}

// Publish hands each change to the subscribers of its request. It never
// blocks on a subscriber.
func (b *Broker) Publish(changes []store.Change) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, c := range changes {
		for _, s := range b.subs[c.Request.GetRequestId()] {
			s.push(c)
		}
	}
}

// Watchers returns how many subscriptions are open.
func (b *Broker) Watchers() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	n := 0
	for _, set := range b.subs {
		n += len(set)
	}
	return n
}

// HasSubscribers reports whether requestID has an open subscription. It is
// cheap: relays use it to skip work for requests nobody here watches.
func (b *Broker) HasSubscribers(requestID string) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.subs[requestID]) > 0
}

// Watched returns the ids of the requests with an open subscription, in no
// particular order (none after Close).
func (b *Broker) Watched() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	ids := make([]string, 0, len(b.subs))
	for id := range b.subs {
		ids = append(ids, id)
	}
	return ids
}

// Close ends every subscription (their Done channels close) and makes later
// subscriptions born done. It is idempotent.
func (b *Broker) Close() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return
	}
	b.closed = true
	for _, set := range b.subs {
		for _, s := range set {
			close(s.done)
		}
	}
	b.subs = nil
}

func (b *Broker) remove(s *Subscription) {
	b.mu.Lock()
	defer b.mu.Unlock()
	set := b.subs[s.requestID]
	if s.idx >= len(set) || set[s.idx] != s {
		return // the broker closed
	}
	last := len(set) - 1
	moved := set[last]
	set[s.idx], moved.idx = moved, s.idx
	set[last] = nil
	if last == 0 {
		delete(b.subs, s.requestID)
		return
	}
	b.subs[s.requestID] = set[:last]
}

// Subscription is one watcher's view of one request.
type Subscription struct {
	b         *Broker
	requestID string
	idx       int // in b.subs[requestID], guarded by b.mu
	max       int
	ready     chan struct{}
	done      chan struct{}
	closeOnce sync.Once

	mu      sync.Mutex
	pending []store.Change
	dropped int64 // the highest revision of the changes dropped since Next
}

// Ready receives a value when changes are pending.
func (s *Subscription) Ready() <-chan struct{} { return s.ready }

// Done is closed when the broker closes.
func (s *Subscription) Done() <-chan struct{} { return s.done }

// Next takes the pending changes in publish order. Dropped is the highest
// revision of the older changes dropped because the subscriber fell behind
// (0 when none was): a subscriber at that revision or later lost nothing by
// it. The last change still carries the newest snapshot.
func (s *Subscription) Next() (changes []store.Change, dropped int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	changes, dropped = s.pending, s.dropped
	s.pending, s.dropped = nil, 0
	return changes, dropped
}

// Close stops the subscription. It is idempotent.
func (s *Subscription) Close() {
	s.closeOnce.Do(func() { s.b.remove(s) })
}

func (s *Subscription) push(c store.Change) {
	s.mu.Lock()
	if len(s.pending) == s.max {
		s.dropped = max(s.dropped, s.pending[0].Request.GetRevision())
		copy(s.pending, s.pending[1:])
		s.pending = s.pending[:s.max-1]
	}
	s.pending = append(s.pending, c)
	s.mu.Unlock()
	select {
	case s.ready <- struct{}{}:
	default:
	}
}
