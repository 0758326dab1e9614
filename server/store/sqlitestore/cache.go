package sqlitestore

import (
	eventsv1 "github.com/otpless-events/otpless-events/gen/otpless/events/v1"
)

// Defaults of the event cache.
const (
	// defaultCacheRequests is how many requests the event cache holds by
	// default: enough for 16,384 auth requests in progress at once, beyond
	// which each commit reads requests back from the file (at 10,000 in
	// progress and 4,096 entries, that cost 7% of the server's CPU). A
	// cached event costs about 0.5 KiB of heap, a typical request in
	// progress 2 KiB: 32 MiB when full.
	defaultCacheRequests = 16384
	// maxCachedEvents and maxCachedBytes: a request with more events than
	// this, or whose events take more bytes as stored, is not cached (such
	// requests are not expected; they are folded from the file). Both
	// bound the cache whatever senders do: an event's texts may take 4 KiB
	// each, and its channels 64 of them, so that 32 events could take
	// 10 MiB; as it is, a request takes at most about 32 KiB of heap (32
	// events of 0.5 KiB, and up to 16 KiB of texts), the cache when full
	// about 0.5 GiB.
	maxCachedEvents = 32
	maxCachedBytes  = 16 << 10
)

// eventCache keeps, for requests in progress that changed recently,
// everything Commit would otherwise read back from the file to fold them:
// every stored event of the request, decoded, and its revision. It is
// least recently used first out, bounded by a number of requests; a
// request leaves it when it is done (terminal).
//
// An entry is exact: its events are all and only the events stored for the
// request, each equal to the decode of its stored data, and its revision is
// the stored one. To keep it so, the cache is used and changed only with
// the writer lock held (Store.lockWriter); Commit changes it only after its
// transaction has committed and empties it when a commit fails (whatever
// the failure, a commit may have reached the file); PurgePII drops the
// requests it rewrites; and Commit empties it when another connection has
// written to the file (PRAGMA data_version). Its messages are the cache's
// own: no caller ever holds one.
type eventCache struct {
	max  int
	m    map[string]*cachedRequest
	root cachedRequest // sentinel of the recency ring: root.next is the most recent
}

type cachedRequest struct {
	requestID  string
	revision   int64
	events     []*eventsv1.Event
	bytes      int // of events as stored
	prev, next *cachedRequest
}

func newEventCache(max int) *eventCache {
	c := &eventCache{max: max, m: make(map[string]*cachedRequest)}
	c.root.prev, c.root.next = &c.root, &c.root
	return c
}

// get returns the entry of requestID, or nil. The entry must not be
// changed.
func (c *eventCache) get(requestID string) *cachedRequest {
	if c.max <= 0 {
		return nil
	}
	return c.m[requestID]
}

// put makes events and revision the entry of requestID, the most recent
// one, evicting the least recent entries beyond the bound; bytes is the
// size of events as stored. It takes ownership of events.
func (c *eventCache) put(requestID string, revision int64, events []*eventsv1.Event, bytes int) {
	if c.max <= 0 {
		return
	}
	if len(events) > maxCachedEvents || bytes > maxCachedBytes {
		c.remove(requestID)
		return
	}
	e := c.m[requestID]
	if e == nil {
		e = &cachedRequest{requestID: requestID}
		c.m[requestID] = e
	} else {
		c.unlink(e)
	}
	e.revision, e.events, e.bytes = revision, events, bytes
	e.prev, e.next = &c.root, c.root.next
	e.prev.next, e.next.prev = e, e
	for len(c.m) > c.max {
		c.remove(c.root.prev.requestID)
	}
}

// remove drops the entry of requestID, if any.
func (c *eventCache) remove(requestID string) {
	if e := c.m[requestID]; e != nil {
		c.unlink(e)
		delete(c.m, requestID)
	}
}

// clear drops every entry.
func (c *eventCache) clear() {
	if len(c.m) == 0 {
		return
	}
	clear(c.m)
	c.root.prev, c.root.next = &c.root, &c.root
}

func (c *eventCache) len() int { return len(c.m) }

func (c *eventCache) unlink(e *cachedRequest) {
	e.prev.next, e.next.prev = e.next, e.prev
	e.prev, e.next = nil, nil
}
