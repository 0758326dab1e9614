package store

import (
	"cmp"
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"hash/fnv"
	"strings"
	"unicode"
	"unicode/utf8"

	eventsv1 "github.com/otpless-events/otpless-events/gen/otpless/events/v1"
)

// Page sizes of ListEvents.
const (
	// DefaultPageSize is used when Page.Size is not positive.
	DefaultPageSize = 100
	// MaxPageSize bounds Page.Size.
	MaxPageSize = 1000
)

// Limit returns p.Size bounded to [1, MaxPageSize], DefaultPageSize when
// p.Size is not positive. Backends page by Limit, not by Size.
func (p Page) Limit() int {
	switch {
	case p.Size <= 0:
		return DefaultPageSize
	case p.Size > MaxPageSize:
		return MaxPageSize
	default:
		return p.Size
	}
}

// EventTimeMillis is the event time ListEvents orders by: event_time in
// Unix milliseconds (rounded down), 0 when unset.
func EventTimeMillis(e *eventsv1.Event) int64 {
	t := e.GetEventTime()
	if t == nil {
		return 0
	}
	return t.AsTime().UnixMilli()
}

// Cursor is a position in a request's events in ListEvents order: the page
// after it starts at the first event past (EventTimeMillis, EventID). Every
// backend pages by this key, so page tokens mean the same thing whichever
// backend made them.
type Cursor struct {
	RequestID       string
	EventTimeMillis int64
	EventID         string
}

// CursorAfter returns the cursor just past e.
func CursorAfter(e *eventsv1.Event) Cursor {
	return Cursor{RequestID: e.GetRequestId(), EventTimeMillis: EventTimeMillis(e), EventID: e.GetEventId()}
}

// Compare orders cursors as ListEvents orders events: by EventTimeMillis,
// then by EventID (byte-wise). It returns -1, 0 or +1; RequestID is not
// compared.
func (c Cursor) Compare(d Cursor) int {
	return cmp.Or(cmp.Compare(c.EventTimeMillis, d.EventTimeMillis), strings.Compare(c.EventID, d.EventID))
}

// cursorVersion is the first byte of every token; bump it to change the
// format.
const cursorVersion = 1

// Token encodes c as an opaque page token: URL-safe base64 of a version byte,
// a hash of the request id (a token is only good for the request it was
// made for), the event time and the event id.
func (c Cursor) Token() string {
	b := make([]byte, 0, 1+8+binary.MaxVarintLen64+len(c.EventID))
	b = append(b, cursorVersion)
	b = binary.BigEndian.AppendUint64(b, requestHash(c.RequestID))
	b = binary.AppendVarint(b, c.EventTimeMillis)
	b = append(b, c.EventID...)
	return base64.RawURLEncoding.EncodeToString(b)
}

// ParseToken decodes a token made by Cursor.Token for requestID. Anything
// else is ErrInvalidPageToken.
func ParseToken(requestID, token string) (Cursor, error) {
	b, err := base64.RawURLEncoding.Strict().DecodeString(token)
	if err != nil || len(b) < 1+8+1 || b[0] != cursorVersion {
		return Cursor{}, fmt.Errorf("parse page token: %w", ErrInvalidPageToken)
	}
	if binary.BigEndian.Uint64(b[1:9]) != requestHash(requestID) {
		return Cursor{}, fmt.Errorf("parse page token: %w: made for another request", ErrInvalidPageToken)
	}
	ms, n := binary.Varint(b[9:])
	if n <= 0 || len(b[9+n:]) == 0 {
		return Cursor{}, fmt.Errorf("parse page token: %w", ErrInvalidPageToken)
	}
	// The token is not signed: an event id no event can have (invalid
	// UTF-8, control characters) is a forged token, not a store failure.
	id := string(b[9+n:])
	if !utf8.ValidString(id) || strings.ContainsFunc(id, unicode.IsControl) {
		return Cursor{}, fmt.Errorf("parse page token: %w", ErrInvalidPageToken)
	}
	return Cursor{RequestID: requestID, EventTimeMillis: ms, EventID: id}, nil
}

func requestHash(requestID string) uint64 {
	h := fnv.New64a()
	h.Write([]byte(requestID))
	return h.Sum64()
}
