// Package sqlitestore is the default, embedded store.Store: one SQLite file
// through the pure-Go modernc.org/sqlite driver, in WAL mode with
// synchronous=FULL so that a committed webhook survives a crash or power
// loss. All writes go through one connection (no SQLITE_BUSY between our own
// writers); reads use a small pool of read-only connections. The schema is
// created and upgraded at Open by the embedded migrations/*.sql.
//
// It may import package store, the state fold, the generated API types,
// protobuf and the SQLite driver; nothing from the servers.
package sqlitestore

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
	_ "modernc.org/sqlite" // registers the "sqlite" driver

	eventsv1 "github.com/otpless-events/otpless-events/gen/otpless/events/v1"
	"github.com/otpless-events/otpless-events/server/state"
	"github.com/otpless-events/otpless-events/server/store"
)

var _ store.Store = (*Store)(nil)

// Option configures Open.
type Option func(*options)

type options struct {
	logger      *slog.Logger
	readers     int
	busyTimeout time.Duration
}

// WithLogger sets the logger (default: discard).
func WithLogger(l *slog.Logger) Option {
	return func(o *options) { o.logger = l }
}

// WithReaders sets the size of the read connection pool (default 4).
func WithReaders(n int) Option {
	return func(o *options) { o.readers = n }
}

// WithBusyTimeout sets how long a connection waits for a lock held by
// another process before failing (default 5s).
func WithBusyTimeout(d time.Duration) Option {
	return func(o *options) { o.busyTimeout = d }
}

// Store is a store.Store in one SQLite file. It is safe for concurrent use.
type Store struct {
	path   string
	w      *sql.DB // the one writer connection
	r      *sql.DB // read-only pool
	closed atomic.Bool
	stmts  []*sql.Stmt

	// On w, used through tx.StmtContext.
	eventExists, insertWebhook, insertEvent, revisions, eventsOf, upsertRequest *sql.Stmt
	// On r.
	getRequest, listFirst, listAfter, requestExists *sql.Stmt
}

// Open opens (creating if need be) the database file at path and brings its
// schema up to date. In-memory databases are not supported: the writer and
// the readers must share the file.
func Open(ctx context.Context, path string, opts ...Option) (*Store, error) {
	o := options{logger: slog.New(slog.DiscardHandler), readers: 4, busyTimeout: 5 * time.Second}
	for _, opt := range opts {
		opt(&o)
	}
	if o.readers < 1 {
		o.readers = 1
	}
	log := o.logger.With("component", "sqlitestore")

	if path == "" || path == ":memory:" {
		return nil, fmt.Errorf("sqlitestore: open: need a file path, got %q", path)
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("sqlitestore: open %s: %w", path, err)
	}
	s := &Store{path: abs}
	if err := s.open(ctx, o, log); err != nil {
		s.closeAll()
		return nil, fmt.Errorf("sqlitestore: open %s: %w", abs, err)
	}
	return s, nil
}

func (s *Store) open(ctx context.Context, o options, log *slog.Logger) error {
	uri := "file:" + (&url.URL{Path: s.path}).EscapedPath()
	pragmas := func(ps ...string) string {
		q := url.Values{"_pragma": append([]string{
			"busy_timeout(" + strconv.FormatInt(o.busyTimeout.Milliseconds(), 10) + ")",
			"foreign_keys(1)",
		}, ps...)}
		return q.Encode()
	}

	var err error
	// BEGIN IMMEDIATE: a write transaction takes the write lock up front
	// rather than failing to upgrade a read lock later.
	if s.w, err = sql.Open("sqlite", uri+"?_txlock=immediate&"+pragmas("journal_mode(WAL)", "synchronous(FULL)")); err != nil {
		return err
	}
	s.w.SetMaxOpenConns(1)
	s.w.SetMaxIdleConns(1)
	s.w.SetConnMaxLifetime(0)
	s.w.SetConnMaxIdleTime(0)

	var mode string
	if err := s.w.QueryRowContext(ctx, "PRAGMA journal_mode").Scan(&mode); err != nil {
		return mapErr(ctx, err)
	}
	if mode != "wal" {
		return fmt.Errorf("journal_mode is %q, want wal", mode)
	}

	ms, err := loadMigrations()
	if err != nil {
		return err
	}
	applied, err := migrate(ctx, s.w, ms, time.Now())
	if err != nil {
		return fmt.Errorf("migrate: %w", mapErr(ctx, err))
	}
	for _, name := range applied {
		log.Info("applied migration", "path", s.path, "migration", name)
	}

	// The schema exists now, so the readers never create or convert it.
	if s.r, err = sql.Open("sqlite", uri+"?"+pragmas("query_only(1)")); err != nil {
		return err
	}
	s.r.SetMaxOpenConns(o.readers)
	s.r.SetMaxIdleConns(o.readers)

	prepare := func(db *sql.DB, dst **sql.Stmt, query string) {
		if err != nil {
			return
		}
		*dst, err = db.PrepareContext(ctx, query)
		if err == nil {
			s.stmts = append(s.stmts, *dst)
		}
	}
	prepare(s.w, &s.eventExists, `SELECT 1 FROM events WHERE request_id = ? AND event_id = ?`)
	prepare(s.w, &s.insertWebhook, `INSERT INTO webhooks (received_at, body) VALUES (?, ?)`)
	prepare(s.w, &s.insertEvent, `INSERT INTO events (request_id, event_id, webhook_id, event_time_ms, data)
		VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING`)
	prepare(s.w, &s.revisions, `SELECT request_id, revision FROM requests
		WHERE request_id IN (SELECT value FROM json_each(?))`)
	prepare(s.w, &s.eventsOf, `SELECT request_id, data FROM events
		WHERE request_id IN (SELECT value FROM json_each(?))`)
	prepare(s.w, &s.upsertRequest, `INSERT INTO requests (request_id, revision, data, updated_at) VALUES (?, ?, ?, ?)
		ON CONFLICT (request_id) DO UPDATE SET
			revision = excluded.revision, data = excluded.data, updated_at = excluded.updated_at`)
	prepare(s.r, &s.getRequest, `SELECT data FROM requests WHERE request_id = ?`)
	prepare(s.r, &s.listFirst, `SELECT e.data, w.body FROM events e JOIN webhooks w ON w.id = e.webhook_id
		WHERE e.request_id = ?1
		ORDER BY e.event_time_ms, e.event_id LIMIT ?2`)
	prepare(s.r, &s.listAfter, `SELECT e.data, w.body FROM events e JOIN webhooks w ON w.id = e.webhook_id
		WHERE e.request_id = ?1 AND (e.event_time_ms, e.event_id) > (?2, ?3)
		ORDER BY e.event_time_ms, e.event_id LIMIT ?4`)
	prepare(s.r, &s.requestExists, `SELECT 1 FROM requests WHERE request_id = ?`)
	if err != nil {
		return fmt.Errorf("prepare: %w", mapErr(ctx, err))
	}
	return nil
}

// Path returns the absolute path of the database file.
func (s *Store) Path() string { return s.path }

// Commit implements store.Store.
func (s *Store) Commit(ctx context.Context, batch []store.Webhook) ([]store.Result, []store.Change, error) {
	const op = "commit"
	if s.closed.Load() {
		return nil, nil, fmt.Errorf("sqlitestore: %s: %w", op, store.ErrClosed)
	}
	if err := ctx.Err(); err != nil {
		return nil, nil, fmt.Errorf("sqlitestore: %s: %w", op, err)
	}
	for i, wh := range batch {
		for j, e := range wh.Events {
			if e.GetEventId() == "" {
				return nil, nil, fmt.Errorf("sqlitestore: %s: webhook %d event %d has no event id", op, i, j)
			}
		}
	}
	if len(batch) == 0 {
		return nil, nil, nil
	}
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return nil, nil, s.fail(ctx, op, err)
	}
	results, changes, err := s.commit(ctx, tx, batch)
	if err == nil {
		err = tx.Commit()
	}
	if err != nil {
		tx.Rollback()
		return nil, nil, s.fail(ctx, op, err)
	}
	return results, changes, nil
}

// pending is what one commit does to one request.
type pending struct {
	requestID string
	touched   bool              // has new events in this batch
	events    []*eventsv1.Event // the new ones, in batch order
	revision  int64             // after the commit
}

func (s *Store) commit(ctx context.Context, tx *sql.Tx, batch []store.Webhook) ([]store.Result, []store.Change, error) {
	var (
		ins = inserter{
			eventExists:   tx.StmtContext(ctx, s.eventExists),
			insertWebhook: tx.StmtContext(ctx, s.insertWebhook),
			insertEvent:   tx.StmtContext(ctx, s.insertEvent),
		}
		requests = map[string]*pending{}
		order    []*pending // requests in order of first appearance
		results  = make([]store.Result, len(batch))
		latest   time.Time
	)
	for i, wh := range batch {
		if wh.Received.After(latest) {
			latest = wh.Received
		}
		res := make([]store.EventResult, len(wh.Events))
		var webhookID int64 // 0 until the body is stored
		for j, e := range wh.Events {
			if e.GetRawBody() != "" { // not expected; the body is stored once
				e = proto.CloneOf(e)
				e.RawBody = ""
			}
			isNew, err := ins.insert(ctx, wh, &webhookID, e)
			if err != nil {
				return nil, nil, err
			}
			res[j].Duplicate = !isNew

			rid := e.GetRequestId()
			if rid == "" {
				continue
			}
			p := requests[rid]
			if p == nil {
				p = &pending{requestID: rid}
				requests[rid] = p
				order = append(order, p)
			}
			if isNew {
				p.touched = true
				p.events = append(p.events, e)
			}
		}
		results[i].Events = res
	}
	if len(order) == 0 {
		return results, nil, nil
	}
	if latest.IsZero() {
		latest = time.Now()
	}

	if err := s.loadRevisions(ctx, tx, requests, order); err != nil {
		return nil, nil, err
	}
	changes, err := s.fold(ctx, tx, requests, order, latest)
	if err != nil {
		return nil, nil, err
	}

	for i, wh := range batch {
		for j, e := range wh.Events {
			if p := requests[e.GetRequestId()]; p != nil {
				results[i].Events[j].Revision = p.revision
			}
		}
	}
	return results, changes, nil
}

// inserter holds the insert statements of one transaction.
type inserter struct {
	eventExists, insertWebhook, insertEvent *sql.Stmt
}

// insert stores e of wh unless it is stored already, and reports whether it
// was new. The body is stored with the first new event of the webhook (its
// id is kept in *webhookID), so that a retried body is not stored again.
func (ins inserter) insert(ctx context.Context, wh store.Webhook, webhookID *int64, e *eventsv1.Event) (bool, error) {
	if *webhookID == 0 {
		var one int
		err := ins.eventExists.QueryRowContext(ctx, e.GetRequestId(), e.GetEventId()).Scan(&one)
		if err == nil {
			return false, nil
		}
		if !errors.Is(err, sql.ErrNoRows) {
			return false, fmt.Errorf("look up event %s: %w", e.GetEventId(), err)
		}
		body := wh.Body
		if body == nil {
			body = []byte{}
		}
		r, err := ins.insertWebhook.ExecContext(ctx, wh.Received.UnixMilli(), body)
		if err != nil {
			return false, fmt.Errorf("insert webhook: %w", err)
		}
		if *webhookID, err = r.LastInsertId(); err != nil {
			return false, fmt.Errorf("insert webhook: %w", err)
		}
	}
	data, err := proto.Marshal(e)
	if err != nil {
		return false, fmt.Errorf("encode event %s: %w", e.GetEventId(), err)
	}
	r, err := ins.insertEvent.ExecContext(ctx, e.GetRequestId(), e.GetEventId(), *webhookID, store.EventTimeMillis(e), data)
	if err != nil {
		return false, fmt.Errorf("insert event %s: %w", e.GetEventId(), err)
	}
	n, err := r.RowsAffected()
	if err != nil {
		return false, fmt.Errorf("insert event %s: %w", e.GetEventId(), err)
	}
	return n > 0, nil
}

// loadRevisions sets every request's current revision.
func (s *Store) loadRevisions(ctx context.Context, tx *sql.Tx, requests map[string]*pending, order []*pending) error {
	ids := make([]string, len(order))
	for i, p := range order {
		ids[i] = p.requestID
	}
	rows, err := tx.StmtContext(ctx, s.revisions).QueryContext(ctx, jsonArray(ids))
	if err != nil {
		return fmt.Errorf("load revisions: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var (
			rid string
			rev int64
		)
		if err := rows.Scan(&rid, &rev); err != nil {
			return fmt.Errorf("load revisions: %w", err)
		}
		requests[rid].revision = rev
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("load revisions: %w", err)
	}
	return nil
}

// fold writes the new snapshot of every touched request and returns the
// changes, in order.
func (s *Store) fold(ctx context.Context, tx *sql.Tx, requests map[string]*pending, order []*pending, updated time.Time) ([]store.Change, error) {
	var ids []string
	for _, p := range order {
		if p.touched {
			ids = append(ids, p.requestID)
		}
	}
	if len(ids) == 0 {
		return nil, nil
	}

	all := make(map[string][]*eventsv1.Event, len(ids))
	rows, err := tx.StmtContext(ctx, s.eventsOf).QueryContext(ctx, jsonArray(ids))
	if err != nil {
		return nil, fmt.Errorf("load events: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var (
			rid  string
			data []byte
		)
		if err := rows.Scan(&rid, &data); err != nil {
			return nil, fmt.Errorf("load events: %w", err)
		}
		e := new(eventsv1.Event)
		if err := proto.Unmarshal(data, e); err != nil {
			return nil, fmt.Errorf("decode event of %s: %w", rid, err)
		}
		all[rid] = append(all[rid], e)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("load events: %w", err)
	}

	upsert := tx.StmtContext(ctx, s.upsertRequest)
	changes := make([]store.Change, 0, len(ids))
	for _, p := range order {
		if !p.touched {
			continue
		}
		snap := state.Fold(p.requestID, all[p.requestID])
		p.revision++
		snap.Revision = p.revision
		snap.UpdateTime = timestamppb.New(updated)
		data, err := proto.Marshal(snap)
		if err != nil {
			return nil, fmt.Errorf("encode snapshot of %s: %w", p.requestID, err)
		}
		if _, err := upsert.ExecContext(ctx, p.requestID, p.revision, data, updated.UnixMilli()); err != nil {
			return nil, fmt.Errorf("write snapshot of %s: %w", p.requestID, err)
		}
		changes = append(changes, store.Change{Request: snap, Events: p.events})
	}
	return changes, nil
}

// jsonArray encodes ids for json_each: one bound parameter for any number
// of ids.
func jsonArray(ids []string) string {
	b, _ := json.Marshal(ids) // []string always encodes
	return string(b)
}

// GetRequest implements store.Store.
func (s *Store) GetRequest(ctx context.Context, requestID string) (*eventsv1.AuthRequest, error) {
	const op = "get request"
	if s.closed.Load() {
		return nil, fmt.Errorf("sqlitestore: %s: %w", op, store.ErrClosed)
	}
	if requestID == "" {
		return nil, fmt.Errorf("sqlitestore: %s: empty request id: %w", op, store.ErrNotFound)
	}
	var data []byte
	err := s.getRequest.QueryRowContext(ctx, requestID).Scan(&data)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("sqlitestore: %s %q: %w", op, requestID, store.ErrNotFound)
	}
	if err != nil {
		return nil, s.fail(ctx, op, err)
	}
	r := new(eventsv1.AuthRequest)
	if err := proto.Unmarshal(data, r); err != nil {
		return nil, fmt.Errorf("sqlitestore: %s %q: decode snapshot: %w", op, requestID, err)
	}
	return r, nil
}

// ListEvents implements store.Store.
func (s *Store) ListEvents(ctx context.Context, requestID string, page store.Page) ([]*eventsv1.Event, string, error) {
	const op = "list events"
	if s.closed.Load() {
		return nil, "", fmt.Errorf("sqlitestore: %s: %w", op, store.ErrClosed)
	}
	if requestID == "" {
		return nil, "", fmt.Errorf("sqlitestore: %s: empty request id: %w", op, store.ErrNotFound)
	}
	limit := page.Limit()
	var (
		rows *sql.Rows
		err  error
	)
	if page.Token == "" {
		rows, err = s.listFirst.QueryContext(ctx, requestID, limit+1)
	} else {
		c, perr := store.ParseToken(requestID, page.Token)
		if perr != nil {
			return nil, "", fmt.Errorf("sqlitestore: %s: %w", op, perr)
		}
		rows, err = s.listAfter.QueryContext(ctx, requestID, c.EventTimeMillis, c.EventID, limit+1)
	}
	if err != nil {
		return nil, "", s.fail(ctx, op, err)
	}
	events, err := scanEvents(rows, limit+1)
	if err != nil {
		return nil, "", s.fail(ctx, op, err)
	}

	if len(events) == 0 {
		var one int
		err := s.requestExists.QueryRowContext(ctx, requestID).Scan(&one)
		if errors.Is(err, sql.ErrNoRows) {
			return nil, "", fmt.Errorf("sqlitestore: %s %q: %w", op, requestID, store.ErrNotFound)
		}
		if err != nil {
			return nil, "", s.fail(ctx, op, err)
		}
		return nil, "", nil
	}
	if len(events) <= limit {
		return events, "", nil
	}
	events = events[:limit]
	return events, store.CursorAfter(events[limit-1]).Token(), nil
}

func scanEvents(rows *sql.Rows, capacity int) ([]*eventsv1.Event, error) {
	defer rows.Close()
	events := make([]*eventsv1.Event, 0, capacity)
	for rows.Next() {
		var data, body []byte
		if err := rows.Scan(&data, &body); err != nil {
			return nil, err
		}
		e := new(eventsv1.Event)
		if err := proto.Unmarshal(data, e); err != nil {
			return nil, fmt.Errorf("decode event: %w", err)
		}
		e.RawBody = string(body)
		events = append(events, e)
	}
	return events, rows.Err()
}

// Ping implements store.Store: it reads from the file.
func (s *Store) Ping(ctx context.Context) error {
	const op = "ping"
	if s.closed.Load() {
		return fmt.Errorf("sqlitestore: %s: %w", op, store.ErrClosed)
	}
	var v int
	if err := s.r.QueryRowContext(ctx, `SELECT COALESCE(MAX(version), 0) FROM schema_migrations`).Scan(&v); err != nil {
		return s.fail(ctx, op, err)
	}
	return nil
}

// Close implements store.Store. Commits in flight finish first.
func (s *Store) Close() error {
	if !s.closed.CompareAndSwap(false, true) {
		return nil
	}
	if err := s.closeAll(); err != nil {
		return fmt.Errorf("sqlitestore: close: %w", err)
	}
	return nil
}

func (s *Store) closeAll() error {
	var errs []error
	for _, st := range s.stmts {
		errs = append(errs, st.Close())
	}
	if s.r != nil {
		errs = append(errs, s.r.Close())
	}
	if s.w != nil {
		errs = append(errs, s.w.Close())
	}
	return errors.Join(errs...)
}

// fail wraps err from the driver once, with the operation: the context's
// error when ctx is done, ErrClosed after Close, else ErrUnavailable.
func (s *Store) fail(ctx context.Context, op string, err error) error {
	if s.closed.Load() {
		return fmt.Errorf("sqlitestore: %s: %w (%v)", op, store.ErrClosed, err)
	}
	return fmt.Errorf("sqlitestore: %s: %w", op, mapErr(ctx, err))
}

// mapErr classifies a driver error: the context's error when ctx is done
// (the driver reports an interrupted statement), else ErrUnavailable with
// the cause.
func mapErr(ctx context.Context, err error) error {
	if cerr := ctx.Err(); cerr != nil {
		if errors.Is(err, cerr) {
			return err
		}
		return fmt.Errorf("%w (%v)", cerr, err)
	}
	return fmt.Errorf("%w: %w", store.ErrUnavailable, err)
}
