package sqlitestore

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"time"

	"google.golang.org/protobuf/proto"

	eventsv1 "github.com/otpless-events/otpless-events/gen/otpless/events/v1"
	"github.com/otpless-events/otpless-events/server/store"
)

var _ store.Exporter = (*Store)(nil)

// Export implements store.Exporter in one read transaction (SQLite's
// snapshot), webhooks in id order, which is the order of their commits. A
// webhook's events are the entries with its id in the rows of the
// requests its request_ids names, and its rows of events (those that name
// no request).
func (s *Store) Export(ctx context.Context, size int, page func([]store.Webhook) error) error {
	const op = "export"
	if s.closed.Load() {
		return fmt.Errorf("sqlitestore: %s: %w", op, store.ErrClosed)
	}
	tx, err := s.r.BeginTx(ctx, nil)
	if err != nil {
		return s.fail(ctx, op, err)
	}
	defer tx.Rollback() // read only: nothing to commit
	return store.ExportPages(page, func(after int64) ([]store.Webhook, []int64, error) {
		whs, ids, err := exportPage(ctx, tx, after, max(size, 1))
		if err != nil {
			return nil, nil, s.fail(ctx, op, err)
		}
		return whs, ids, nil
	})
}

// exportPage reads the page of webhooks after the id after, and returns
// them and their ids.
func exportPage(ctx context.Context, tx *sql.Tx, after int64, size int) ([]store.Webhook, []int64, error) {
	rows, err := tx.QueryContext(ctx, `SELECT id, received_at, body, request_ids FROM webhooks
		WHERE id > ? ORDER BY id LIMIT ?`, after, size)
	if err != nil {
		return nil, nil, err
	}
	var (
		whs      []store.Webhook
		ids      []int64
		index    = map[int64]int{} // webhook id -> position in whs
		requests = map[string]bool{}
		bytes    int
	)
	for bytes < store.ExportPageBytes && rows.Next() {
		var (
			id, received int64
			wh           store.Webhook
			requestIDs   []byte
		)
		if err := rows.Scan(&id, &received, &wh.Body, &requestIDs); err != nil {
			rows.Close()
			return nil, nil, err
		}
		var rids []string
		if err := json.Unmarshal(requestIDs, &rids); err != nil {
			rows.Close()
			return nil, nil, fmt.Errorf("%w: request ids of webhook %d: %w", store.ErrDamaged, id, err)
		}
		for _, rid := range rids {
			requests[rid] = true
		}
		wh.Received = time.UnixMilli(received)
		index[id] = len(whs)
		whs, ids = append(whs, wh), append(ids, id)
		bytes += len(wh.Body)
	}
	rows.Close() // perhaps before the last row, for the page's bytes
	if err := rows.Err(); err != nil || len(whs) == 0 {
		return nil, nil, err
	}

	add := func(webhookID int64, data []byte, what string) error {
		e := new(eventsv1.Event)
		if err := proto.Unmarshal(data, e); err != nil {
			return fmt.Errorf("%w: decode an event of webhook %d (%s): %w", store.ErrDamaged, webhookID, what, err)
		}
		whs[index[webhookID]].Events = append(whs[index[webhookID]].Events, e)
		return nil
	}
	if len(requests) > 0 {
		rids := make([]string, 0, len(requests))
		for rid := range requests {
			rids = append(rids, rid)
		}
		columns, err := queryEntries(ctx, tx, `SELECT request_id, events FROM requests
			WHERE request_id IN (SELECT value FROM json_each(?)) ORDER BY request_id`, jsonArray(rids))
		if err != nil {
			return nil, nil, err
		}
		for _, c := range columns {
			for _, en := range c.entries {
				if _, ok := index[en.webhookID]; ok {
					if err := add(en.webhookID, en.data, c.requestID); err != nil {
						return nil, nil, err
					}
				}
			}
		}
	}
	rows, err = tx.QueryContext(ctx, `SELECT webhook_id, data FROM events
		WHERE request_id = '' AND webhook_id IN (SELECT value FROM json_each(?)) ORDER BY webhook_id, event_id`, jsonArray(ids))
	if err != nil {
		return nil, nil, err
	}
	type row struct {
		webhookID int64
		data      []byte
	}
	requestless, err := scanAll(rows, func(r *sql.Rows) (row, error) {
		var x row
		return x, r.Scan(&x.webhookID, &x.data)
	})
	if err != nil {
		return nil, nil, err
	}
	for _, x := range requestless {
		if err := add(x.webhookID, x.data, "no request"); err != nil {
			return nil, nil, err
		}
	}
	for i := range whs {
		store.WholeReceived(&whs[i], time.Millisecond) // received_at is Unix milliseconds
	}
	return whs, ids, nil
}
