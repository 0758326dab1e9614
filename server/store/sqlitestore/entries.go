package sqlitestore

import (
	"context"
	"database/sql"
	"encoding/binary"
	"fmt"

	"google.golang.org/protobuf/proto"

	eventsv1 "github.com/otpless-events/otpless-events/gen/otpless/events/v1"
	"github.com/otpless-events/otpless-events/server/store"
)

// A request's events are kept in its own row, in requests.events, which
// every commit that changes the request rewrites anyway: storing an event
// then costs no page of its own. The column is a sequence of entries, one
// per event, in the order they were stored:
//
//	uvarint webhook id | varint event time (Unix ms) | uvarint n | event id (n bytes) | uvarint m | data (m bytes)
//
// where data is the proto.Marshal of the event without raw_body (the body
// is in webhooks). Commit appends entries (SQL's || concatenates two such
// sequences into one); ListEvents reads the ids and times without decoding
// the events; retention rewrites the entries of purged webhooks.
type entry struct {
	webhookID int64
	timeMs    int64 // store.EventTimeMillis
	eventID   string
	data      []byte // shares the parsed column's memory
}

// cursor is the entry's position in ListEvents order.
func (e entry) cursor() store.Cursor {
	return store.Cursor{EventTimeMillis: e.timeMs, EventID: e.eventID}
}

func appendEntry(b []byte, e entry) []byte {
	b = binary.AppendUvarint(b, uint64(e.webhookID))
	b = binary.AppendVarint(b, e.timeMs)
	b = binary.AppendUvarint(b, uint64(len(e.eventID)))
	b = append(b, e.eventID...)
	b = binary.AppendUvarint(b, uint64(len(e.data)))
	return append(b, e.data...)
}

var errBadEntries = fmt.Errorf("%w: malformed events column", store.ErrDamaged)

// parseEntries splits a requests.events column into its entries.
// event decodes the event en holds; data that does not decode is
// store.ErrDamaged, naming the event.
func (en entry) event() (*eventsv1.Event, error) {
	e := new(eventsv1.Event)
	if err := proto.Unmarshal(en.data, e); err != nil {
		return nil, fmt.Errorf("%w: decode event %s: %w", store.ErrDamaged, en.eventID, err)
	}
	return e, nil
}

func parseEntries(b []byte) ([]entry, error) {
	var out []entry
	for len(b) > 0 {
		var e entry
		id, n := binary.Uvarint(b)
		if n <= 0 {
			return nil, errBadEntries
		}
		e.webhookID, b = int64(id), b[n:]
		if e.timeMs, n = binary.Varint(b); n <= 0 {
			return nil, errBadEntries
		}
		b = b[n:]
		var field []byte
		if field, b = lengthPrefixed(b); field == nil {
			return nil, errBadEntries
		}
		e.eventID = string(field)
		if e.data, b = lengthPrefixed(b); e.data == nil {
			return nil, errBadEntries
		}
		out = append(out, e)
	}
	return out, nil
}

// lengthPrefixed splits a uvarint length and that many bytes off b; nil
// when b is too short.
func lengthPrefixed(b []byte) (field, rest []byte) {
	l, n := binary.Uvarint(b)
	if n <= 0 || l > uint64(len(b)-n) {
		return nil, b
	}
	return b[n : n+int(l) : n+int(l)], b[n+int(l):]
}

// requestEntries are the entries of one request's events column.
type requestEntries struct {
	requestID string
	entries   []entry
}

// queryEntries runs query on tx, which selects rows of (request_id,
// events), and returns each row's request id and parsed entries.
func queryEntries(ctx context.Context, tx *sql.Tx, query string, args ...any) ([]requestEntries, error) {
	rows, err := tx.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	return scanAll(rows, func(r *sql.Rows) (requestEntries, error) {
		var (
			x      requestEntries
			column []byte
		)
		if err := r.Scan(&x.requestID, &column); err != nil {
			return x, err
		}
		entries, err := parseEntries(column)
		if err != nil {
			return x, fmt.Errorf("events of %s: %w", x.requestID, err)
		}
		x.entries = entries
		return x, nil
	})
}
