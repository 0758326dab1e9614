package pgstore

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"
	"google.golang.org/protobuf/proto"

	eventsv1 "github.com/otpless-events/otpless-events/gen/otpless/events/v1"
	"github.com/otpless-events/otpless-events/server/pii"
	"github.com/otpless-events/otpless-events/server/store"
)

// purgeChunk bounds the webhooks purged per transaction, so that row locks
// are never held for long.
const purgeChunk = 500

var _ store.Purger = (*Store)(nil)

// PurgePII implements store.Purger. Replicas may purge at the same time:
// each transaction takes the webhooks no other holds (SKIP LOCKED), and locks
// their requests in the order Commit does before rewriting events and
// snapshots, so a concurrent commit never folds events half purged.
//
// A refold that is a change is notified on Channel as a commit's change
// is, in the same transaction, so that every replica's watchers get it.
//
// Stored data that does not decode (a request's snapshot or event, an
// event of no request) cannot be stripped: the webhooks due that brought
// data to it are left as they are, for a later run to retry, and the
// others purged; the run then fails as store.ErrDamaged, naming what it
// found.
func (s *Store) PurgePII(ctx context.Context, cutoff time.Time, changed func([]store.Change)) (int, error) {
	const op = "purge"
	total, skips := 0, store.NewPurgeSkips()
	for {
		if err := s.usable(op); err != nil {
			return total, err
		}
		var (
			n       int
			changes []store.Change
		)
		err := s.inTx(ctx, func(qctx context.Context, tx pgx.Tx) (err error) {
			n, changes, err = purgeChunkTx(qctx, tx, cutoff, skips.Skip, s.channel)
			return err
		})
		if skips.Retry(err) {
			continue // the chunk again, without the webhooks of the damage
		}
		if err != nil {
			return total, s.fail(ctx, op, err)
		}
		if len(changes) > 0 && changed != nil {
			changed(changes)
		}
		total += n
		if n < purgeChunk {
			if err := skips.Err(); err != nil {
				return total, fmt.Errorf("pgstore: %s: %w", op, err)
			}
			return total, nil
		}
	}
}

// selectUnpurged takes the oldest webhooks whose bodies are due, but those
// of $3 (left unpurged for damaged data); the index webhooks_unpurged
// serves it.
const selectUnpurged = `SELECT id FROM webhooks
	WHERE received_at < $1 AND length(body) > 0 AND NOT (id = ANY($3))
	ORDER BY received_at LIMIT $2 FOR UPDATE SKIP LOCKED`

// purgeChunkTx purges a chunk of webhooks, but those of skip, and returns
// how many, and the changes of the requests whose refold was one (notified
// on channel). It fails with a *store.PurgeDamage, naming all it found in the chunk,
// when it meets stored data that does not decode.
func purgeChunkTx(ctx context.Context, tx pgx.Tx, cutoff time.Time, skip []int64, channel string) (int, []store.Change, error) {
	rows, _ := tx.Query(ctx, selectUnpurged, cutoff, purgeChunk, skip)
	ids, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	if err != nil || len(ids) == 0 {
		return 0, nil, err
	}

	rows, _ = tx.Query(ctx, `SELECT request_id FROM requests WHERE request_id IN
		(SELECT request_id FROM events WHERE webhook_id = ANY($1))
		ORDER BY request_id FOR UPDATE`, ids)
	requests, err := pgx.CollectRows(rows, pgx.RowTo[[]byte])
	if err != nil {
		return 0, nil, fmt.Errorf("lock requests: %w", err)
	}

	// Strip the events of those webhooks.
	var (
		rids  [][]byte
		eids  []string
		datas [][]byte
		e     = new(eventsv1.Event)
		named = map[string][]int64{} // request id -> the webhooks of the chunk that brought events to it
		bad   = map[string]error{}   // request id -> its event that does not decode
		d     store.PurgeDamage
	)
	rows, _ = tx.Query(ctx, `SELECT request_id, event_id, webhook_id, data FROM events WHERE webhook_id = ANY($1)`, ids)
	var (
		rid, data []byte
		eid       string
		wid       int64
	)
	_, err = pgx.ForEachRow(rows, []any{&rid, &eid, &wid, &data}, func() error {
		if len(rid) > 0 && !slices.Contains(named[string(rid)], wid) {
			named[string(rid)] = append(named[string(rid)], wid)
		}
		if err := proto.Unmarshal(data, e); err != nil {
			if len(rid) == 0 {
				d.Add(fmt.Errorf("%w: decode event %s of no request: %w", store.ErrDamaged, eid, err), wid)
			} else if _, ok := bad[string(rid)]; !ok {
				bad[string(rid)] = fmt.Errorf("%w: request %q: decode event %s: %w", store.ErrDamaged, rid, eid, err)
			}
			return nil
		}
		pii.StripEvent(e)
		stripped, err := proto.Marshal(e)
		if err != nil {
			return fmt.Errorf("encode event %s: %w", eid, err)
		}
		rids, eids, datas = append(rids, rid), append(eids, eid), append(datas, stripped)
		return nil
	})
	if err != nil {
		return 0, nil, fmt.Errorf("strip events: %w", err)
	}
	for id, err := range bad {
		d.Add(err, named[id]...)
	}
	if err := d.Found(); err != nil {
		return 0, nil, err
	}
	b := &pgx.Batch{}
	b.Queue(`UPDATE events AS e SET data = u.data
		FROM unnest($1::bytea[], $2::text[], $3::bytea[]) AS u (request_id, event_id, data)
		WHERE e.request_id = u.request_id AND e.event_id = u.event_id`, rids, eids, datas)
	b.Queue(`UPDATE webhooks SET body = '' WHERE id = ANY($1)`, ids)
	if err := tx.SendBatch(ctx, b).Close(); err != nil {
		return 0, nil, fmt.Errorf("strip events: %w", err)
	}
	changes, err := refold(ctx, tx, requests, named, channel)
	if err != nil {
		return 0, nil, err
	}
	return len(ids), changes, nil
}

// refold rewrites the snapshots of requests (locked) from their events
// (see store.Refold), and returns the changes of those whose refold was one,
// each notified on channel. It fails with a *store.PurgeDamage, naming all it found,
// when a request's snapshot or event does not decode: named maps each
// request to the webhooks due that brought events to it.
func refold(ctx context.Context, tx pgx.Tx, requests [][]byte, named map[string][]int64, channel string) ([]store.Change, error) {
	if len(requests) == 0 {
		return nil, nil
	}
	var (
		events = map[string][]*eventsv1.Event{}
		bad    = map[string]error{} // request id -> why it cannot be refolded
		eid    string
	)
	rows, _ := tx.Query(ctx, `SELECT request_id, event_id, data FROM events WHERE request_id = ANY($1)`, requests)
	var rid, data []byte
	if _, err := pgx.ForEachRow(rows, []any{&rid, &eid, &data}, func() error {
		e := new(eventsv1.Event)
		if err := proto.Unmarshal(data, e); err != nil {
			if _, ok := bad[string(rid)]; !ok {
				bad[string(rid)] = fmt.Errorf("%w: request %q: decode event %s: %w", store.ErrDamaged, rid, eid, err)
			}
			return nil
		}
		events[string(rid)] = append(events[string(rid)], e)
		return nil
	}); err != nil {
		return nil, fmt.Errorf("refold: %w", err)
	}
	var (
		datas     [][]byte
		revisions []int64
		updated   []time.Time
		now       = time.Now()
		changes   []store.Change
		payloads  []string
	)
	rows, _ = tx.Query(ctx, `SELECT request_id, data FROM requests WHERE request_id = ANY($1)`, requests)
	var ids [][]byte
	if _, err := pgx.ForEachRow(rows, []any{&rid, &data}, func() error {
		if _, ok := bad[string(rid)]; ok {
			return nil
		}
		old := new(eventsv1.AuthRequest)
		if err := proto.Unmarshal(data, old); err != nil {
			bad[string(rid)] = fmt.Errorf("%w: request %q: decode snapshot: %w", store.ErrDamaged, rid, err)
			return nil
		}
		snap := store.Refold(string(rid), old, events[string(rid)], now)
		b, err := proto.Marshal(snap)
		if err != nil {
			return fmt.Errorf("encode snapshot of %q: %w", rid, err)
		}
		ids, datas = append(ids, rid), append(datas, b)
		revisions, updated = append(revisions, snap.GetRevision()), append(updated, snap.GetUpdateTime().AsTime())
		if snap.GetRevision() != old.GetRevision() {
			changes = append(changes, store.Change{Request: snap, Refold: true})
			if n := (Notification{RequestID: snap.GetRequestId(), Revision: snap.GetRevision()}); n.notifiable() {
				payloads = append(payloads, n.payload())
			}
		}
		return nil
	}); err != nil {
		return nil, fmt.Errorf("refold: %w", err)
	}
	var d store.PurgeDamage
	for id, err := range bad {
		d.Add(err, named[id]...)
	}
	if err := d.Found(); err != nil {
		return nil, err
	}
	if _, err := tx.Exec(ctx, `UPDATE requests AS r SET data = u.data, revision = u.revision, updated_at = u.updated_at
		FROM unnest($1::bytea[], $2::bytea[], $3::bigint[], $4::timestamptz[]) AS u (request_id, data, revision, updated_at)
		WHERE r.request_id = u.request_id`, ids, datas, revisions, updated); err != nil {
		return nil, fmt.Errorf("refold: %w", err)
	}
	if len(payloads) > 0 {
		if _, err := tx.Exec(ctx, notifyAll, channel, payloads); err != nil {
			return nil, fmt.Errorf("refold: notify: %w", err)
		}
	}
	return changes, nil
}
