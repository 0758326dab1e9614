package sqlitestore

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"

	"google.golang.org/protobuf/proto"

	eventsv1 "github.com/otpless-events/otpless-events/gen/otpless/events/v1"
	"github.com/otpless-events/otpless-events/server/pii"
	"github.com/otpless-events/otpless-events/server/store"
)

// A purge transaction takes the purgeChunk oldest webhooks due and, with
// them, up to purgeSiblings more webhooks due of the same requests, so that
// each request is refolded once rather than once for each of its webhooks
// (the refold was three quarters of a purge's cost). Both bound how long the
// single writer is held: ingest waits for the chunk in progress. Chunks of
// 500 webhooks held it for about 135 ms, and at 3,000 webhooks/s with
// retention purging at the same rate, ingest's p99 rose from tens of
// milliseconds to seconds.
const (
	purgeChunk    = 50
	purgeSiblings = 500
)

// purgeStmts are the purge's statements, prepared once on the writer
// connection.
type purgeStmts struct {
	webhooks, siblings, requests, updateRequest *sql.Stmt
	requestless, updateEvent, clearBodies       *sql.Stmt
}

func (s *Store) preparePurge(prepare func(db *sql.DB, dst **sql.Stmt, query string)) {
	p := &s.purge
	prepare(s.w, &p.webhooks, `SELECT id, request_ids FROM webhooks
		WHERE received_at < ?1 AND length(body) > 0 AND id NOT IN (SELECT value FROM json_each(?3))
		ORDER BY received_at LIMIT ?2`)
	prepare(s.w, &p.siblings, `SELECT id, request_ids FROM webhooks
		WHERE id IN (SELECT value FROM json_each(?1)) AND received_at < ?2 AND length(body) > 0
		AND id NOT IN (SELECT value FROM json_each(?4))
		LIMIT ?3`)
	prepare(s.w, &p.requests, `SELECT request_id, data, events FROM requests
		WHERE request_id IN (SELECT value FROM json_each(?))`)
	prepare(s.w, &p.updateRequest, `UPDATE requests SET data = ?, events = ?, revision = ?, updated_at = ? WHERE request_id = ?`)
	prepare(s.w, &p.requestless, `SELECT event_id, webhook_id, data FROM events
		WHERE webhook_id IN (SELECT value FROM json_each(?)) AND request_id = ''`)
	prepare(s.w, &p.updateEvent, `UPDATE events SET data = ? WHERE request_id = '' AND event_id = ?`)
	prepare(s.w, &p.clearBodies, `UPDATE webhooks SET body = X'' WHERE id IN (SELECT value FROM json_each(?))`)
}

var _ store.Purger = (*Store)(nil)

// PurgePII implements store.Purger. Stored data that does not decode (a
// request's row, an event of no request) cannot be stripped: the webhooks
// due that brought data to it are left as they are, for a later run to
// retry, and the others purged; the run then fails as store.ErrDamaged,
// naming what it found.
func (s *Store) PurgePII(ctx context.Context, cutoff time.Time, changed func([]store.Change)) (int, error) {
	const op = "purge"
	total, skips := 0, store.NewPurgeSkips()
	for {
		if s.closed.Load() {
			return total, fmt.Errorf("sqlitestore: %s: %w", op, store.ErrClosed)
		}
		n, more, changes, err := s.purgeChunk(ctx, cutoff.UnixMilli(), skips.Skip)
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
		if !more {
			if err := skips.Err(); err != nil {
				return total, fmt.Errorf("sqlitestore: %s: %w", op, err)
			}
			return total, nil
		}
	}
}

// purgeChunk purges one chunk of webhooks in one transaction, holding the
// writer lock, and drops the requests it refolds from the event cache. more
// reports whether webhooks due may remain; changes are the refolds that
// were changes.
func (s *Store) purgeChunk(ctx context.Context, cutoffMs int64, skip []int64) (n int, more bool, changes []store.Change, err error) {
	if err := s.lockWriter(ctx); err != nil {
		return 0, false, nil, err
	}
	defer s.unlockWriter()
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return 0, false, nil, err
	}
	defer rollbackOnPanic(s, tx)
	n, more, requests, changes, err := s.purgeChunkTx(ctx, tx, cutoffMs, jsonArray(skip))
	if err == nil {
		err = tx.Commit()
	}
	if err != nil {
		tx.Rollback()
		s.cache.clear()
		return 0, false, nil, err
	}
	for _, id := range requests {
		s.cache.remove(id)
	}
	return n, more, changes, nil
}

// purgeChunkTx returns how many webhooks it purged, whether webhooks due may
// remain, the requests whose events it changed, and the changes of those
// whose refold was one. It leaves out the webhooks of skip (a JSON array),
// and fails with a *store.PurgeDamage when it meets stored data that does not decode.
func (s *Store) purgeChunkTx(ctx context.Context, tx *sql.Tx, cutoffMs int64, skip string) (int, bool, []string, []store.Change, error) {
	pc := purgeTx{ctx: ctx, tx: tx, s: s, due: map[int64]bool{}, requests: map[string]*purgedRequest{}, named: map[string][]int64{}}
	rows, err := pc.stmt(s.purge.webhooks).QueryContext(ctx, cutoffMs, purgeChunk, skip)
	if err != nil {
		return 0, false, nil, nil, err
	}
	chunk, err := pc.addWebhooks(rows)
	if err != nil || chunk == 0 {
		return 0, false, nil, nil, err
	}
	more := chunk == purgeChunk
	if err := pc.loadRequests(); err != nil {
		return 0, false, nil, nil, err
	}

	// The other webhooks due of those requests, and their requests.
	candidates := map[int64]bool{}
	for _, r := range pc.requests {
		for _, e := range r.entries {
			if !pc.due[e.webhookID] {
				candidates[e.webhookID] = true
			}
		}
	}
	if len(candidates) > 0 {
		rows, err := pc.stmt(s.purge.siblings).QueryContext(ctx, jsonArray(slices.Collect(maps.Keys(candidates))), cutoffMs, purgeSiblings, skip)
		if err != nil {
			return 0, false, nil, nil, err
		}
		n, err := pc.addWebhooks(rows)
		if err != nil {
			return 0, false, nil, nil, err
		}
		more = more || n == purgeSiblings
		if err := pc.loadRequests(); err != nil {
			return 0, false, nil, nil, err
		}
	}

	for id, r := range pc.requests {
		if err := pc.stripRequest(id, r); err != nil {
			return 0, false, nil, nil, err
		}
	}
	ids := jsonArray(slices.Collect(maps.Keys(pc.due)))
	if err := pc.stripRequestless(ids); err != nil {
		return 0, false, nil, nil, err
	}
	if _, err := pc.stmt(s.purge.clearBodies).ExecContext(ctx, ids); err != nil {
		return 0, false, nil, nil, err
	}
	return len(pc.due), more, slices.Collect(maps.Keys(pc.requests)), pc.changes, nil
}

// purgeTx is one purge transaction: the webhooks due it purges and the rows
// of their requests.
type purgeTx struct {
	ctx      context.Context
	tx       *sql.Tx
	s        *Store
	due      map[int64]bool
	requests map[string]*purgedRequest // nil until loaded
	named    map[string][]int64        // request id -> the webhooks due naming it
	changes  []store.Change            // the refolds that were changes
}

// damaged is the damage of request id's stored data: err, which it wraps
// in store.ErrDamaged.
func (pc *purgeTx) damaged(id string, err error) *store.PurgeDamage {
	if errors.Is(err, store.ErrDamaged) {
		err = fmt.Errorf("request %s: %w", id, err)
	} else {
		err = fmt.Errorf("%w: request %s: %w", store.ErrDamaged, id, err)
	}
	d := new(store.PurgeDamage)
	d.Add(err, pc.named[id]...)
	return d
}

type purgedRequest struct {
	snapshot []byte
	entries  []entry
}

func (pc *purgeTx) stmt(st *sql.Stmt) *sql.Stmt { return pc.tx.StmtContext(pc.ctx, st) }

// addWebhooks adds rows of (id, request_ids) to the webhooks due and notes
// their requests, and returns how many rows there were.
func (pc *purgeTx) addWebhooks(rows *sql.Rows) (int, error) {
	type row struct {
		id         int64
		requestIDs []byte
	}
	whs, err := scanAll(rows, func(r *sql.Rows) (row, error) {
		var x row
		return x, r.Scan(&x.id, &x.requestIDs)
	})
	if err != nil {
		return 0, err
	}
	for _, wh := range whs {
		var ids []string
		if err := json.Unmarshal(wh.requestIDs, &ids); err != nil {
			return 0, fmt.Errorf("request ids of webhook %d: %w", wh.id, err)
		}
		pc.due[wh.id] = true
		for _, id := range ids {
			pc.named[id] = append(pc.named[id], wh.id)
			if _, ok := pc.requests[id]; !ok {
				pc.requests[id] = nil
			}
		}
	}
	return len(whs), nil
}

// loadRequests reads the rows of the requests not loaded yet.
func (pc *purgeTx) loadRequests() error {
	var ids []string
	for id, r := range pc.requests {
		if r == nil {
			ids = append(ids, id)
		}
	}
	if len(ids) == 0 {
		return nil
	}
	type row struct {
		id               string
		snapshot, column []byte
	}
	rows, err := pc.stmt(pc.s.purge.requests).QueryContext(pc.ctx, jsonArray(ids))
	if err != nil {
		return err
	}
	loaded, err := scanAll(rows, func(r *sql.Rows) (row, error) {
		var x row
		return x, r.Scan(&x.id, &x.snapshot, &x.column)
	})
	if err != nil {
		return err
	}
	for _, x := range loaded {
		entries, err := parseEntries(x.column)
		if err != nil {
			return pc.damaged(x.id, fmt.Errorf("events: %w", err))
		}
		pc.requests[x.id] = &purgedRequest{snapshot: x.snapshot, entries: entries}
	}
	for id, r := range pc.requests {
		if r == nil {
			return pc.damaged(id, errors.New("named by a webhook, it has no row"))
		}
	}
	return nil
}

// stripRequest removes the personal data of the request's events that the
// webhooks due brought, and refolds its snapshot from all its events (see
// store.Refold).
func (pc *purgeTx) stripRequest(id string, r *purgedRequest) error {
	old := new(eventsv1.AuthRequest)
	if err := proto.Unmarshal(r.snapshot, old); err != nil {
		return pc.damaged(id, fmt.Errorf("decode snapshot: %w", err))
	}
	var (
		column []byte
		events = make([]*eventsv1.Event, len(r.entries))
	)
	for i, en := range r.entries {
		e, err := en.event()
		if err != nil {
			return pc.damaged(id, err)
		}
		if pc.due[en.webhookID] {
			pii.StripEvent(e)
			data, err := proto.Marshal(e)
			if err != nil {
				return err
			}
			en.data = data
		}
		events[i] = e
		column = appendEntry(column, en)
	}
	snap := store.Refold(id, old, events, time.Now())
	data, err := proto.Marshal(snap)
	if err != nil {
		return err
	}
	if _, err = pc.stmt(pc.s.purge.updateRequest).ExecContext(pc.ctx, data, column, snap.GetRevision(), snap.GetUpdateTime().AsTime().UnixMilli(), id); err != nil {
		return err
	}
	if snap.GetRevision() != old.GetRevision() {
		pc.changes = append(pc.changes, store.Change{Request: snap, Refold: true})
	}
	return nil
}

// stripRequestless removes the personal data of the request-less events of
// the webhooks due (ids, a JSON array).
func (pc *purgeTx) stripRequestless(ids string) error {
	type row struct {
		eventID   string
		webhookID int64
		data      []byte
	}
	rows, err := pc.stmt(pc.s.purge.requestless).QueryContext(pc.ctx, ids)
	if err != nil {
		return err
	}
	evs, err := scanAll(rows, func(r *sql.Rows) (row, error) {
		var x row
		return x, r.Scan(&x.eventID, &x.webhookID, &x.data)
	})
	if err != nil {
		return err
	}
	for _, x := range evs {
		e := new(eventsv1.Event)
		if err := proto.Unmarshal(x.data, e); err != nil {
			d := new(store.PurgeDamage)
			d.Add(fmt.Errorf("%w: decode event %s of no request: %w", store.ErrDamaged, x.eventID, err), x.webhookID)
			return d
		}
		pii.StripEvent(e)
		data, err := proto.Marshal(e)
		if err != nil {
			return err
		}
		if _, err := pc.stmt(pc.s.purge.updateEvent).ExecContext(pc.ctx, data, x.eventID); err != nil {
			return err
		}
	}
	return nil
}

func scanAll[T any](rows *sql.Rows, scan func(*sql.Rows) (T, error)) ([]T, error) {
	defer rows.Close()
	var out []T
	for rows.Next() {
		v, err := scan(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, rows.Err()
}
