package pgstore

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	eventsv1 "github.com/otpless-events/otpless-events/gen/otpless/events/v1"
	"github.com/otpless-events/otpless-events/server/state"
	"github.com/otpless-events/otpless-events/server/store"
)

// Commit implements store.Store. The batch is written in one transaction,
// three round trips of set-based statements (arrays through unnest, sent as
// one pgx.Batch each) and the commit:
//
//  1. Lock the batch's requests: insert a revision-0 row for each request
//     seen for the first time, then SELECT ... FOR UPDATE them, both in
//     request id order. Concurrent commits touching a request (from this
//     replica or another) queue up here, and taking the locks in one order
//     means they cannot deadlock. Then look up which events are stored
//     already (exact under the locks) and take ids for the bodies.
//  2. Insert the bodies that bring a new event, then the new events with
//     their request's next revision (in key order, so that concurrent
//     inserts of the same request-less event cannot deadlock either), and
//     read all events of the changed requests.
//  3. Write each changed request's snapshot, the fold of those events, at
//     its revision + 1, and NOTIFY the change (delivered on commit).
//
// Commit returns only after the transaction has committed.
func (s *Store) Commit(ctx context.Context, batch []store.Webhook) ([]store.Result, []store.Change, error) {
	const op = "commit"
	if err := s.usable(op); err != nil {
		return nil, nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, nil, fmt.Errorf("pgstore: %s: %w", op, err)
	}
	if err := store.CheckBatch(batch); err != nil {
		return nil, nil, fmt.Errorf("pgstore: %s: %w", op, err)
	}
	if len(batch) == 0 {
		return nil, nil, nil
	}
	c := newCommit(batch, s.channel)
	if err := s.inTx(ctx, c.run); err != nil {
		if full := diskFull(err); full != nil {
			s.full.Store(full)
		}
		return nil, nil, s.fail(ctx, op, err)
	}
	if s.full.Load() != nil {
		s.full.Store(nil)
	}
	return c.results, c.changes, nil
}

// inTx runs fn in a READ COMMITTED transaction (begin), within the store's
// timeout, and commits it unless ctx is done by then. The COMMIT itself is
// bounded by the store's timeout alone, not canceled with ctx (as
// database/sql's is not):
// pgx gives up on a statement canceled in flight by closing its
// connection, and a COMMIT the database had received by then is stored
// all the same, after the call failed with ctx's error. A COMMIT that
// fails without the database's answer that it rolled back (its connection
// lost or ended, its time run out) fails wrapping errOutcomeUnknown.
func (s *Store) inTx(ctx context.Context, fn func(context.Context, pgx.Tx) error) error {
	deadline := time.Now().Add(s.timeout)
	ctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	conn, tx, err := s.begin(ctx, pgx.TxOptions{IsoLevel: pgx.ReadCommitted})
	if err != nil {
		return err
	}
	defer conn.Release()
	defer s.rollback(ctx, tx) // nothing to do after the COMMIT
	if err := fn(ctx, tx); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	cctx, cancel := context.WithDeadline(context.WithoutCancel(ctx), deadline)
	defer cancel()
	if err := tx.Commit(cctx); err != nil {
		// An ERROR is the database's answer that it rolled back; a
		// FATAL one ends the session, maybe after the commit.
		var pgErr *pgconn.PgError
		if errors.Is(err, pgx.ErrTxCommitRollback) || errors.As(err, &pgErr) && pgErr.SeverityUnlocalized == "ERROR" {
			return err
		}
		return fmt.Errorf("%w: %w", errOutcomeUnknown, err)
	}
	return nil
}

// rollback rolls tx back, unless it has ended, also when ctx is done
// (its caller gave up): pgx does not send a ROLLBACK with a done context
// but closes the connection, and the pool would connect anew for the next
// call. Like every call, it is bounded by the store's timeout: on a
// database gone silent it would wait for good.
func (s *Store) rollback(ctx context.Context, tx pgx.Tx) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.timeout)
	defer cancel()
	return tx.Rollback(ctx)
}

// begin takes a pooled connection and begins a transaction on it
// (acquire: a BEGIN stores nothing, so it may be sent twice). Commits and
// purges begin READ COMMITTED whatever the session's default: one that
// waited for a request's lock reads what the holder committed, where a
// stricter level would fail with a serialization error instead of queuing
// up.
func (s *Store) begin(ctx context.Context, opts pgx.TxOptions) (conn *pgxpool.Conn, tx pgx.Tx, err error) {
	conn, err = s.acquire(ctx, func(c *pgxpool.Conn) (err error) {
		tx, err = c.BeginTx(ctx, opts)
		return err
	})
	return conn, tx, err
}

// read runs fn, which only reads, on a pooled connection (acquire). fn
// starts from nothing and hands its caller nothing before it returns, so
// that it may run twice.
func (s *Store) read(ctx context.Context, fn func(*pgxpool.Conn) error) error {
	conn, err := s.acquire(ctx, fn)
	if err == nil {
		conn.Release()
	}
	return err
}

// acquire takes a pooled connection and runs first on it, and returns the
// connection, held, when first succeeded.
//
// pgxpool checks only a connection idle for more than a second before it
// hands it out, so one whose session the database ended just before
// (pg_terminate_backend, a restart or failover, idle_session_timeout, a
// proxy closing it) fails first's statement. Then acquire takes another
// connection, which the pool pings first (pingFirst), and runs first once
// more: the database may well answer, and a commit would otherwise fail its
// whole batch, a read its caller. So first must be something that may run
// twice: a BEGIN, before anything of its transaction was sent, or a read.
// A first that failed as ctx ran out, or with an ERROR the database
// answered (pgx closes the connection for anything else), is not run
// again.
func (s *Store) acquire(ctx context.Context, first func(*pgxpool.Conn) error) (*pgxpool.Conn, error) {
	for again := false; ; again = true {
		actx := ctx
		if again {
			actx = context.WithValue(ctx, pingFirst{}, true)
		}
		conn, err := s.pool.Acquire(actx)
		if err != nil {
			return nil, err
		}
		err = first(conn)
		if err == nil {
			return conn, nil
		}
		ended := conn.Conn().IsClosed() && ctx.Err() == nil
		conn.Release()
		if again || !ended {
			return nil, err
		}
	}
}

// pingFirst, a context key, makes the pool ping every connection it hands
// out for the call, whatever its idle time (see New's ShouldPing).
type pingFirst struct{}

// eventKey identifies an event.
type eventKey struct{ requestID, eventID string }

// plannedEvent is one event of the batch.
type plannedEvent struct {
	webhook int             // index in the batch
	event   *eventsv1.Event // without RawBody
	key     eventKey
	first   bool // the first of its key in the batch (later ones are duplicates)
	isNew   bool // inserted by this commit
}

// pending is what one commit does to one request.
type pending struct {
	requestID string
	revision  int64             // before the commit; after it once run returns
	events    []*eventsv1.Event // the new ones, in batch order
}

// commit is the work of one Commit call.
type commit struct {
	batch    []store.Webhook
	channel  string
	latest   time.Time
	events   []plannedEvent // every event of the batch, in batch order
	requests map[string]*pending
	order    []*pending // requests in order of first appearance
	ids      [][]byte   // their ids, sorted: the lock order

	results []store.Result
	changes []store.Change
}

func newCommit(batch []store.Webhook, channel string) *commit {
	c := &commit{batch: batch, channel: channel, requests: map[string]*pending{}}
	seen := map[eventKey]bool{}
	for i, wh := range batch {
		if wh.Received.After(c.latest) {
			c.latest = wh.Received
		}
		for _, e := range wh.Events {
			if e.GetRawBody() != "" { // not expected; the body is stored once
				e = proto.CloneOf(e)
				e.RawBody = ""
			}
			k := eventKey{e.GetRequestId(), e.GetEventId()}
			c.events = append(c.events, plannedEvent{webhook: i, event: e, key: k, first: !seen[k]})
			seen[k] = true
			if k.requestID != "" && c.requests[k.requestID] == nil {
				p := &pending{requestID: k.requestID}
				c.requests[k.requestID] = p
				c.order = append(c.order, p)
				c.ids = append(c.ids, []byte(k.requestID))
			}
		}
	}
	if c.latest.IsZero() {
		c.latest = time.Now()
	}
	slices.SortFunc(c.ids, bytes.Compare)
	return c
}

func (c *commit) run(ctx context.Context, tx pgx.Tx) error {
	stored, webhookIDs, err := c.lock(ctx, tx)
	if err != nil {
		return err
	}
	all, unused, err := c.insert(ctx, tx, stored, webhookIDs)
	if err != nil {
		return err
	}
	return c.fold(ctx, tx, all, unused)
}

// lock is round trip 1. It sets every request's current revision and returns
// the events of the batch stored already and ids for the bodies, ascending.
func (c *commit) lock(ctx context.Context, tx pgx.Tx) (map[eventKey]bool, []int64, error) {
	b := &pgx.Batch{}
	if len(c.ids) > 0 {
		b.Queue(`INSERT INTO requests (request_id, revision, data, updated_at)
			SELECT id, 0, '', $2 FROM unnest($1::bytea[]) AS id ORDER BY id
			ON CONFLICT (request_id) DO NOTHING`, c.ids, c.latest)
		b.Queue(`SELECT request_id, revision FROM requests
			WHERE request_id = ANY($1) ORDER BY request_id FOR UPDATE`, c.ids).Query(func(rows pgx.Rows) error {
			var (
				id  []byte
				rev int64
			)
			_, err := pgx.ForEachRow(rows, []any{&id, &rev}, func() error {
				p := c.requests[string(id)]
				if p == nil {
					return fmt.Errorf("lock: unexpected request %q", id)
				}
				p.revision = rev
				return nil
			})
			return err
		})
	}

	var (
		rids [][]byte
		eids []string
	)
	for _, pe := range c.events {
		if pe.first {
			rids = append(rids, []byte(pe.key.requestID))
			eids = append(eids, pe.key.eventID)
		}
	}
	stored := map[eventKey]bool{}
	b.Queue(`SELECT e.request_id, e.event_id FROM events e
		JOIN unnest($1::bytea[], $2::text[]) AS c (request_id, event_id) USING (request_id, event_id)`,
		rids, eids).Query(func(rows pgx.Rows) error {
		var (
			rid []byte
			eid string
		)
		_, err := pgx.ForEachRow(rows, []any{&rid, &eid}, func() error {
			stored[eventKey{string(rid), eid}] = true
			return nil
		})
		return err
	})

	webhookIDs := make([]int64, 0, len(c.batch))
	b.Queue(`SELECT nextval(pg_get_serial_sequence('webhooks', 'id')) FROM generate_series(1, $1)`,
		len(c.batch)).Query(func(rows pgx.Rows) error {
		var id int64
		_, err := pgx.ForEachRow(rows, []any{&id}, func() error {
			webhookIDs = append(webhookIDs, id)
			return nil
		})
		return err
	})
	if err := tx.SendBatch(ctx, b).Close(); err != nil {
		return nil, nil, fmt.Errorf("lock requests: %w", err)
	}
	if len(webhookIDs) != len(c.batch) {
		return nil, nil, fmt.Errorf("lock requests: got %d webhook ids for %d webhooks", len(webhookIDs), len(c.batch))
	}
	slices.Sort(webhookIDs) // batch order is id order
	return stored, webhookIDs, nil
}

// insert is round trip 2. It marks the events it inserted and returns all
// events of the changed requests and the ids of bodies stored in vain (a
// concurrent commit stored all their events first; only possible for
// events without a request, which no lock covers).
func (c *commit) insert(ctx context.Context, tx pgx.Tx, stored map[eventKey]bool, webhookIDs []int64) (map[string][]*eventsv1.Event, []int64, error) {
	type row struct {
		key      eventKey
		webhook  int64
		timeMs   int64
		revision int64
		data     []byte
	}
	var (
		rows     []row
		withBody = make([]bool, len(c.batch))
		changing = map[string]bool{}
	)
	for _, pe := range c.events {
		if !pe.first || stored[pe.key] {
			continue
		}
		data, err := proto.Marshal(pe.event)
		if err != nil {
			return nil, nil, fmt.Errorf("encode event %s: %w", pe.key.eventID, err)
		}
		var rev int64
		if p := c.requests[pe.key.requestID]; p != nil {
			rev = p.revision + 1
			changing[p.requestID] = true
		}
		withBody[pe.webhook] = true
		rows = append(rows, row{pe.key, webhookIDs[pe.webhook], store.EventTimeMillis(pe.event), rev, data})
	}
	if len(rows) == 0 {
		return nil, nil, nil // all duplicates: nothing to write
	}

	b := &pgx.Batch{}
	var (
		ids      []int64
		received []time.Time
		bodies   [][]byte
	)
	for i, wh := range c.batch {
		if withBody[i] {
			ids = append(ids, webhookIDs[i])
			received = append(received, wh.Received)
			body := wh.Body
			if body == nil {
				body = []byte{} // NOT NULL
			}
			bodies = append(bodies, body)
		}
	}
	b.Queue(`INSERT INTO webhooks (id, received_at, body)
		SELECT * FROM unnest($1::bigint[], $2::timestamptz[], $3::bytea[])`, ids, received, bodies)

	slices.SortFunc(rows, func(a, b row) int {
		return cmp.Or(cmp.Compare(a.key.requestID, b.key.requestID), cmp.Compare(a.key.eventID, b.key.eventID))
	})
	cols := struct {
		rids                  [][]byte
		eids                  []string
		webhooks, times, revs []int64
		datas                 [][]byte
	}{}
	for _, r := range rows {
		cols.rids = append(cols.rids, []byte(r.key.requestID))
		cols.eids = append(cols.eids, r.key.eventID)
		cols.webhooks = append(cols.webhooks, r.webhook)
		cols.times = append(cols.times, r.timeMs)
		cols.revs = append(cols.revs, r.revision)
		cols.datas = append(cols.datas, r.data)
	}
	inserted := map[eventKey]bool{}
	b.Queue(`INSERT INTO events (request_id, event_id, webhook_id, event_time_ms, revision, data)
		SELECT * FROM unnest($1::bytea[], $2::text[], $3::bigint[], $4::bigint[], $5::bigint[], $6::bytea[])
		ON CONFLICT DO NOTHING
		RETURNING request_id, event_id`,
		cols.rids, cols.eids, cols.webhooks, cols.times, cols.revs, cols.datas).Query(func(rows pgx.Rows) error {
		var (
			rid []byte
			eid string
		)
		_, err := pgx.ForEachRow(rows, []any{&rid, &eid}, func() error {
			inserted[eventKey{string(rid), eid}] = true
			return nil
		})
		return err
	})

	all := map[string][]*eventsv1.Event{}
	if len(changing) > 0 {
		changed := make([][]byte, 0, len(changing))
		for id := range changing {
			changed = append(changed, []byte(id))
		}
		b.Queue(`SELECT request_id, data FROM events WHERE request_id = ANY($1)`, changed).Query(func(rows pgx.Rows) error {
			var rid, data []byte
			_, err := pgx.ForEachRow(rows, []any{&rid, &data}, func() error {
				e := new(eventsv1.Event)
				if err := proto.Unmarshal(data, e); err != nil {
					return fmt.Errorf("%w: decode event of %q: %w", store.ErrDamaged, rid, err)
				}
				all[string(rid)] = append(all[string(rid)], e)
				return nil
			})
			return err
		})
	}
	if err := tx.SendBatch(ctx, b).Close(); err != nil {
		return nil, nil, fmt.Errorf("insert events: %w", err)
	}

	used := make([]bool, len(c.batch))
	for i := range c.events {
		pe := &c.events[i]
		if pe.first && inserted[pe.key] {
			pe.isNew = true
			used[pe.webhook] = true
			if p := c.requests[pe.key.requestID]; p != nil {
				p.events = append(p.events, pe.event)
			}
		}
	}
	var unused []int64
	for i, stored := range withBody {
		if stored && !used[i] {
			unused = append(unused, webhookIDs[i])
		}
	}
	return all, unused, nil
}

// fold is round trip 3: the new snapshots, their notifications, and the
// removal of bodies stored in vain. It also fills in results and changes.
func (c *commit) fold(ctx context.Context, tx pgx.Tx, all map[string][]*eventsv1.Event, unused []int64) error {
	var (
		ids      [][]byte
		revs     []int64
		datas    [][]byte
		payloads []string
	)
	for _, p := range c.order {
		if len(p.events) == 0 {
			continue
		}
		snap := state.Fold(p.requestID, all[p.requestID])
		p.revision++
		snap.Revision = p.revision
		snap.UpdateTime = timestamppb.New(c.latest)
		data, err := proto.Marshal(snap)
		if err != nil {
			return fmt.Errorf("encode snapshot of %q: %w", p.requestID, err)
		}
		ids = append(ids, []byte(p.requestID))
		revs = append(revs, p.revision)
		datas = append(datas, data)
		if n := (Notification{RequestID: p.requestID, Revision: p.revision}); n.notifiable() {
			payloads = append(payloads, n.payload())
		}
		c.changes = append(c.changes, store.Change{Request: snap, Events: p.events})
	}

	b := &pgx.Batch{}
	if len(ids) > 0 {
		b.Queue(`UPDATE requests AS r SET revision = u.revision, data = u.data, updated_at = $4
			FROM unnest($1::bytea[], $2::bigint[], $3::bytea[]) AS u (request_id, revision, data)
			WHERE r.request_id = u.request_id`, ids, revs, datas, c.latest).Exec(func(ct pgconn.CommandTag) error {
			if n := ct.RowsAffected(); n != int64(len(ids)) {
				return fmt.Errorf("updated %d snapshots, want %d", n, len(ids))
			}
			return nil
		})
	}
	if len(payloads) > 0 {
		b.Queue(notifyAll, c.channel, payloads)
	}
	if len(unused) > 0 {
		b.Queue(`DELETE FROM webhooks WHERE id = ANY($1)`, unused)
	}
	if b.Len() > 0 {
		if err := tx.SendBatch(ctx, b).Close(); err != nil {
			return fmt.Errorf("write snapshots: %w", err)
		}
	}

	c.results = make([]store.Result, len(c.batch))
	k := 0
	for i, wh := range c.batch {
		res := make([]store.EventResult, len(wh.Events))
		for j := range wh.Events {
			pe := c.events[k]
			k++
			res[j].Duplicate = !pe.isNew
			if p := c.requests[pe.key.requestID]; p != nil {
				res[j].Revision = p.revision
			}
		}
		c.results[i].Events = res
	}
	return nil
}

// errOutcomeUnknown marks a transaction whose connection failed once its
// COMMIT was sent: the database may have committed it.
var errOutcomeUnknown = errors.New("the connection failed once COMMIT was sent: the transaction may have committed all the same (what it stored, a retry finds stored)")
