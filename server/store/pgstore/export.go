package pgstore

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"google.golang.org/protobuf/proto"

	eventsv1 "github.com/otpless-events/otpless-events/gen/otpless/events/v1"
	"github.com/otpless-events/otpless-events/server/store"
)

var _ store.Exporter = (*Store)(nil)

// exportIdle is how long an export's transaction may wait for its caller
// between pages (the caller commits each into another store): the session
// timeout the store sets, half its call timeout, could end it there, and a
// client gone silent would hold its snapshot for good without one.
const exportIdle = time.Minute

// Export implements store.Exporter in one REPEATABLE READ transaction, so
// that replicas may go on writing: what they commit after it begins is
// left out. (Paging by id outside one snapshot could skip a webhook whose
// id was taken before a page was read and committed after: ids are taken
// at insert, not at commit.) Each page's reads are bounded by the store's
// timeout.
func (s *Store) Export(ctx context.Context, size int, page func([]store.Webhook) error) error {
	const op = "export"
	if err := s.usable(op); err != nil {
		return err
	}
	qctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	// The transaction's longer idle timeout is set in the query that
	// begins it: set by a statement of its own, the session's (half the
	// store's timeout) would end a transaction whose next statement a
	// busy process sent that much later.
	conn, tx, err := s.begin(qctx, pgx.TxOptions{BeginQuery: fmt.Sprintf(
		"BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; SET LOCAL idle_in_transaction_session_timeout = %d", exportIdle.Milliseconds())})
	if err != nil {
		return s.fail(ctx, op, err)
	}
	// From here on the transaction holds a connection of the pool, which
	// its end gives back, whatever fails.
	defer conn.Release()
	defer s.rollback(ctx, tx) // read only: nothing to commit
	return store.ExportPages(page, func(after int64) ([]store.Webhook, []int64, error) {
		qctx, cancel := context.WithTimeout(ctx, s.timeout)
		defer cancel()
		whs, ids, err := exportPage(qctx, tx, after, max(size, 1))
		if err != nil {
			return nil, nil, s.fail(ctx, op, err)
		}
		return whs, ids, nil
	})
}

// exportPage reads the page of webhooks after the id after, and returns
// them and their ids.
func exportPage(ctx context.Context, tx pgx.Tx, after int64, size int) ([]store.Webhook, []int64, error) {
	rows, err := tx.Query(ctx, `SELECT id, received_at, body FROM webhooks WHERE id > $1 ORDER BY id LIMIT $2`, after, size)
	if err != nil {
		return nil, nil, err
	}
	var (
		whs   []store.Webhook
		ids   []int64
		index = map[int64]int{} // webhook id -> position in whs
		bytes int
	)
	for bytes < store.ExportPageBytes && rows.Next() {
		var (
			id int64
			wh store.Webhook
		)
		if err := rows.Scan(&id, &wh.Received, &wh.Body); err != nil {
			rows.Close()
			return nil, nil, err
		}
		index[id] = len(whs)
		whs, ids = append(whs, wh), append(ids, id)
		bytes += len(wh.Body)
	}
	rows.Close() // perhaps before the last row, for the page's bytes
	if err := rows.Err(); err != nil || len(whs) == 0 {
		return nil, nil, err
	}

	rows, _ = tx.Query(ctx, `SELECT webhook_id, data FROM events
		WHERE webhook_id = ANY($1) ORDER BY webhook_id, request_id, event_id`, ids)
	var (
		webhookID int64
		data      []byte
	)
	_, err = pgx.ForEachRow(rows, []any{&webhookID, &data}, func() error {
		e := new(eventsv1.Event)
		if err := proto.Unmarshal(data, e); err != nil {
			return fmt.Errorf("%w: decode an event of webhook %d: %w", store.ErrDamaged, webhookID, err)
		}
		whs[index[webhookID]].Events = append(whs[index[webhookID]].Events, e)
		return nil
	})
	if err != nil {
		return nil, nil, err
	}
	for i := range whs {
		store.WholeReceived(&whs[i], time.Microsecond) // a timestamptz's precision
	}
	return whs, ids, nil
}
