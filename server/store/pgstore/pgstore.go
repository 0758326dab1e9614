// Package pgstore is the store.Store for PostgreSQL, through pgx/v5 and a
// connection pool (pgxpool), so that several replicas can share one
// database. The schema is created and upgraded at Open by the embedded
// migrations/*.sql, under an advisory lock so that replicas starting together
// apply each migration once.
//
// Replicas write concurrently: Commit locks the rows of the requests it
// touches, in a stable order, before it reads their events and folds them, so
// no update is lost and a request's revision goes up by exactly one per
// commit that changes it. Every such commit also sends a NOTIFY (see
// Channel) that other replicas turn into live updates with ChangesSince.
//
// Every call is bounded by a timeout (WithTimeout), so that an unreachable
// database fails calls with store.ErrUnavailable instead of hanging them.
// Connect's migration is not: it runs as long as it needs while the
// database answers.
//
// It may import package store, the state fold, the generated API types,
// protobuf and pgx; nothing from the servers.
package pgstore

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"google.golang.org/protobuf/proto"

	eventsv1 "github.com/otpless-events/otpless-events/gen/otpless/events/v1"
	"github.com/otpless-events/otpless-events/server/store"
)

var (
	_ store.Store        = (*Store)(nil)
	_ store.ChangeReader = (*Store)(nil)
)

// Defaults of the options.
const (
	// DefaultTimeout bounds every call (WithTimeout).
	DefaultTimeout = 5 * time.Second
	// DefaultConnectTimeout bounds opening a connection when the DSN has no
	// connect_timeout.
	DefaultConnectTimeout = 5 * time.Second
)

// partitionTimeouts are the session settings (milliseconds) that end a
// session whose client the database no longer hears (a partition): one
// whose transaction waits for its next statement, and one blocked sending
// results nobody acknowledges (active, so the first does not end it).
// Either would hold its row locks, and with them every replica's commits
// of those requests, until the database found the connection dead: hours,
// by TCP's defaults. Each is half the store's timeout: a commit that began
// waiting for such a session's locks up to half its timeout before the
// session went silent gets them in time, rather than failing with its whole
// batch (with equal timeouts, one whose wait began before the session's
// last statement ran out first).
var partitionTimeouts = []string{"idle_in_transaction_session_timeout", "tcp_user_timeout"}

// setsParam reports whether the DSN sets the session setting name, as a
// parameter of its own or in options (-c name=…).
func setsParam(cfg *pgx.ConnConfig, name string) bool {
	_, ok := cfg.RuntimeParams[name]
	return ok || strings.Contains(cfg.RuntimeParams["options"], name)
}

// Option configures Open.
type Option func(*options)

type options struct {
	logger   *slog.Logger
	schema   string
	maxConns int32
	timeout  time.Duration
	existing bool
}

// WithLogger sets the logger (default: discard).
func WithLogger(l *slog.Logger) Option {
	return func(o *options) { o.logger = l }
}

// WithSchema keeps the tables in schema, creating it if need be: it sets
// every connection's search_path to it. Without it, the tables go to the
// first schema of the DSN's search_path (a search_path=… DSN parameter works
// too, but that schema must exist), by default public.
func WithSchema(schema string) Option {
	return func(o *options) { o.schema = schema }
}

// WithExisting makes Connect (and Open) refuse a schema that holds no
// store (none of its tables) instead of creating one in it: for a store
// only to be read, such as the source of a copy, where such a schema is a
// search_path that names the wrong one.
func WithExisting() Option {
	return func(o *options) { o.existing = true }
}

// WithMaxConns sets the size of the connection pool, overriding the DSN's
// pool_max_conns (pgxpool's default: the larger of 4 and the number of CPUs).
func WithMaxConns(n int32) Option {
	return func(o *options) { o.maxConns = n }
}

// WithTimeout bounds every call, from taking a connection to the commit
// (default DefaultTimeout). A call that runs out fails with
// store.ErrUnavailable. The database ends a transaction left waiting for
// its next statement half as long (idle_in_transaction_session_timeout,
// unless the DSN sets it), which only a client it no longer hears does.
// Connect's migration has no deadline: every half timeout it checks that
// the database answers a query within the timeout, and gives up when not.
func WithTimeout(d time.Duration) Option {
	return func(o *options) { o.timeout = d }
}

// Store is a store.Store in a PostgreSQL schema. It is safe for concurrent
// use, also with Stores of other processes on the same schema.
type Store struct {
	pool    *pgxpool.Pool
	schema  string
	channel string
	timeout time.Duration
	log     *slog.Logger
	closed  atomic.Bool
	// create is the schema WithSchema named ("" for the search_path's);
	// where is user@host/database, for errors.
	create, where string
	// existing is WithExisting's.
	existing bool
	// sessionSQL sets the partitionTimeouts the DSN leaves alone, on every
	// connection ("": none).
	sessionSQL string
	// connected is set once Connect has brought the schema up to date
	// (and set schema and channel): until then every call fails.
	connected atomic.Bool
	// released is when a connection last came back to the pool alive, as
	// time since base (monotonic): the database answered then.
	base     time.Time
	released atomic.Int64
	// full is the error of the last commit that failed for want of disk
	// space on the server (diskFull), until a commit or a ping's test
	// write succeeds (checkSpace): Ping fails meanwhile.
	full atomic.Pointer[pgconn.PgError]
}

// Open connects to the database named by dsn (a postgres:// URL or a
// key=value connection string, as pgx parses it; pool_max_conns and
// connect_timeout work) and brings the schema up to date: New, then
// Connect.
func Open(ctx context.Context, dsn string, opts ...Option) (*Store, error) {
	s, err := New(dsn, opts...)
	if err != nil {
		return nil, err
	}
	if err := s.Connect(ctx); err != nil {
		s.pool.Close()
		return nil, err
	}
	return s, nil
}

// CheckDSN reports whether dsn parses as Open and New read it, without
// connecting or opening anything: the error New would fail with, or nil.
func CheckDSN(dsn string) error {
	if _, err := pgxpool.ParseConfig(dsn); err != nil {
		return fmt.Errorf("pgstore: %w", err)
	}
	return nil
}

// New returns a Store of the database named by dsn, as Open does, without
// connecting: it fails only for a DSN that does not parse. Every call
// fails with store.ErrUnavailable until Connect has succeeded.
func New(dsn string, opts ...Option) (*Store, error) {
	o := options{logger: slog.New(slog.DiscardHandler), timeout: DefaultTimeout}
	for _, opt := range opts {
		opt(&o)
	}
	if o.timeout <= 0 {
		o.timeout = DefaultTimeout
	}
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("pgstore: open: %w", err)
	}
	if o.schema != "" {
		cfg.ConnConfig.RuntimeParams["search_path"] = pgx.Identifier{o.schema}.Sanitize()
	}
	if _, ok := cfg.ConnConfig.RuntimeParams["application_name"]; !ok {
		cfg.ConnConfig.RuntimeParams["application_name"] = "otpless-events"
	}
	if cfg.ConnConfig.ConnectTimeout == 0 {
		cfg.ConnConfig.ConnectTimeout = DefaultConnectTimeout
	}
	// No call of this store waits for the database longer than its timeout,
	// so neither need a session. Each setting the DSN leaves alone is set
	// after connecting rather than in the startup packet, where PgBouncer
	// (1.18) refuses all but the few it tracks. The search_path stays in
	// the startup packet: set after connecting, behind a transaction-mode
	// pooler it would hold only on the server connection that ran the SET,
	// and the tables would spread over schemas. Behind PgBouncer, give the
	// role a default search_path instead (README).
	var set []string
	for _, name := range partitionTimeouts {
		if !setsParam(cfg.ConnConfig, name) {
			set = append(set, fmt.Sprintf("SET %s = %d", name, max(o.timeout.Milliseconds()/2, 1)))
		}
	}
	s := &Store{timeout: o.timeout, log: o.logger.With("component", "pgstore"), base: time.Now(), create: o.schema, existing: o.existing,
		where: fmt.Sprintf("%s@%s/%s", cfg.ConnConfig.User, cfg.ConnConfig.Host, cfg.ConnConfig.Database)}
	if len(set) > 0 {
		s.sessionSQL = strings.Join(set, "; ")
		cfg.AfterConnect = func(ctx context.Context, conn *pgx.Conn) error {
			_, err := conn.Exec(ctx, s.sessionSQL)
			return err
		}
	}
	if o.maxConns > 0 {
		cfg.MaxConns = o.maxConns
	}
	// pgxpool's default, and on demand (begin's second attempt).
	cfg.ShouldPing = func(ctx context.Context, p pgxpool.ShouldPingParams) bool {
		return p.IdleDuration > time.Second || ctx.Value(pingFirst{}) != nil
	}
	// A call that fails by its timeout closes its connection; one that comes
	// back alive ran its statements.
	cfg.AfterRelease = func(c *pgx.Conn) bool {
		if !c.IsClosed() {
			s.released.Store(int64(time.Since(s.base)))
		}
		return true
	}
	// The pool connects when a call first needs a connection (or in the
	// background, for pool_min_conns): not here.
	if s.pool, err = pgxpool.NewWithConfig(context.Background(), cfg); err != nil {
		return nil, fmt.Errorf("pgstore: open: %w", err)
	}
	return s, nil
}

// Connect connects to the database and brings the schema up to date, once:
// after it has succeeded, it does nothing. A migration, or the wait for
// another replica's, lasts as long as it needs while the database answers,
// logged every 30 s. After a failure it may be called again; Unreachable
// tells a failure that may pass (the database is not up yet, or stopped
// answering) from one that will not.
func (s *Store) Connect(ctx context.Context) error {
	if s.closed.Load() {
		return fmt.Errorf("pgstore: connect: %w", store.ErrClosed)
	}
	if s.connected.Load() {
		return nil
	}
	if err := s.open(ctx, s.create); err != nil {
		if errors.Is(err, ErrReadOnly) {
			// As a ping does: the next attempt connects anew, and finds
			// the new primary behind the same address after a failover,
			// or a role's or database's setting changed since.
			s.pool.Reset()
		}
		return fmt.Errorf("pgstore: open %s: %w", s.where, err)
	}
	s.connected.Store(true)
	return nil
}

// usable is the error of a call (op) on a Store closed or not yet
// connected, else nil.
func (s *Store) usable(op string) error {
	switch {
	case s.closed.Load():
		return fmt.Errorf("pgstore: %s: %w", op, store.ErrClosed)
	case !s.connected.Load():
		return fmt.Errorf("pgstore: %s: %w: the database has not been reached yet", op, store.ErrUnavailable)
	}
	return nil
}

// Unreachable reports whether err, from Connect, says that the database
// could not be reached, or not written to, which waiting may mend: no
// answer in time (also one that stopped answering while a migration ran or
// was waited for), a connection that could not be opened (refused, no
// route, no socket file yet), or reset or closed before the server spoke, a
// host name that does not resolve (yet), the server's own word that it is
// starting, shutting down or has no connection slot free, or a migration
// refused as the server is read-only (ErrReadOnly: a standby before its
// promotion). Anything else the server answered (authentication, a
// database or schema that does not exist, a migration's error) and errors
// of TLS or of the configuration are not.
func Unreachable(err error) bool {
	if errors.Is(err, errNoAnswer) || errors.Is(err, ErrReadOnly) {
		return true
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch pgErr.Code {
		case "57P01", "57P02", "57P03", // admin_shutdown, crash_shutdown, cannot_connect_now
			"53300": // too_many_connections
			return true
		}
		return strings.HasPrefix(pgErr.Code, "08") // connection_exception
	}
	var (
		dnsErr *net.DNSError
		opErr  *net.OpError
	)
	switch {
	// A connection not opened at all, whatever the system's word for why
	// (Windows's WSAECONNREFUSED is no syscall.ECONNREFUSED).
	case errors.As(err, &dnsErr), errors.As(err, &opErr) && opErr.Op == "dial",
		errors.Is(err, syscall.ECONNREFUSED), errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.ECONNABORTED),
		errors.Is(err, syscall.EHOSTUNREACH), errors.Is(err, syscall.ENETUNREACH), errors.Is(err, syscall.EPIPE),
		errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return true
	}
	// A timeout while connecting (connect_timeout).
	var connErr *pgconn.ConnectError
	var netErr net.Error
	return errors.As(err, &connErr) && (pgconn.Timeout(err) || errors.As(err, &netErr) && netErr.Timeout())
}

func (s *Store) open(ctx context.Context, schema string) error {
	create := schema != ""
	if !create {
		qctx, cancel := context.WithTimeout(ctx, s.timeout)
		defer cancel()
		var current, unusable *string
		var role string
		if err := s.pool.QueryRow(qctx, `SELECT current_schema(), current_user, (`+unusableSchemasQuery+`)`).Scan(&current, &role, &unusable); err != nil {
			if qctx.Err() != nil && ctx.Err() == nil {
				return fmt.Errorf("current schema: %w (%s): %w", errNoAnswer, s.timeout, err)
			}
			return store.MapErr(ctx, err)
		}
		switch {
		case current == nil && unusable != nil:
			return fmt.Errorf("the search_path names no schema the role %s may use: it lacks USAGE on the schema %s (GRANT it)", role, *unusable)
		case current == nil:
			return errors.New("the search_path names no existing schema: create it (CREATE SCHEMA), or name one that exists with search_path= in the DSN")
		}
		schema = *current
	}
	if s.existing {
		if err := s.holdsStore(ctx, schema); err != nil {
			return err
		}
	}
	ms, err := loadMigrations()
	if err != nil {
		return err
	}
	applied, err := s.migrateWatched(ctx, schema, create, ms)
	if err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	for _, name := range applied {
		s.log.Info("applied migration", "schema", schema, "migration", name)
	}
	s.schema = schema
	s.channel = channelFor(schema)
	return nil
}

// holdsStore fails unless schema holds a store (WithExisting): its
// migrations' bookkeeping, which the first migration makes with the
// tables.
func (s *Store) holdsStore(ctx context.Context, schema string) error {
	qctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	var exists bool
	if err := s.pool.QueryRow(qctx, `SELECT to_regclass($1) IS NOT NULL`,
		pgx.Identifier{schema, "otpless_schema_migrations"}.Sanitize()).Scan(&exists); err != nil {
		if qctx.Err() != nil && ctx.Err() == nil {
			return fmt.Errorf("look for the store: %w (%s): %w", errNoAnswer, s.timeout, err)
		}
		return store.MapErr(ctx, err)
	}
	if !exists {
		return fmt.Errorf("no store there: the schema %q holds none of its tables (is search_path= in the DSN the schema the server uses?)", schema)
	}
	return nil
}

// errNoAnswer is the error of a start whose database stopped answering:
// Unreachable.
var errNoAnswer = errors.New("the database did not answer in time")

// ErrReadOnly marks a Connect, or a Ping, that found the server refusing
// writes: a standby (in a failover, before its promotion), or a role or
// database that sets default_transaction_read_only. A start waits for it
// to take writes (Unreachable), as for a database not up yet.
var ErrReadOnly = errors.New("the database is read-only (a standby, or default_transaction_read_only)")

// readOnlyRefusal reports whether err is the server's refusal of a write
// in a read-only transaction (SQLSTATE 25006, read_only_sql_transaction,
// also a standby's "during recovery").
func readOnlyRefusal(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == "25006"
}

// waitLogEvery is how often a start still waiting for the schema's
// migration logs so.
const waitLogEvery = 30 * time.Second

// What a start logs while it waits for the schema's migration.
const (
	waitLockMsg      = "waiting for the schema's migration lock, held by another session (another replica migrating)"
	waitMigrationMsg = "waiting for a migration to finish"
)

// migrateWatched runs migrate with no deadline, for a migration takes as
// long as it takes (an index built over a large table), and so does
// waiting for another replica's. Instead, every half timeout, it checks on
// a connection of its own (the migration may hold the pool's only one)
// that the database still answers, and when it does not, ends the
// migration with errNoAnswer; every waitLogEvery it logs that it waits.
func (s *Store) migrateWatched(ctx context.Context, schema string, create bool, ms []store.Migration) ([]string, error) {
	mctx, stop := context.WithCancelCause(ctx)
	defer stop(nil)
	type result struct {
		applied []string
		err     error
	}
	var step atomic.Pointer[string]
	done := make(chan result, 1)
	go func() {
		applied, err := migrate(mctx, s.pool, schema, create, ms, &step)
		done <- result{applied, err}
	}()

	var watch *pgx.Conn // opened at the first check: most migrations are over by then
	defer func() {
		if watch != nil {
			cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.timeout)
			defer cancel()
			watch.Close(cctx)
		}
	}()
	start := time.Now()
	checkEvery := time.NewTicker(max(s.timeout/2, time.Millisecond))
	defer checkEvery.Stop()
	logEvery := time.NewTicker(waitLogEvery)
	defer logEvery.Stop()
	check := checkEvery.C
	for {
		select {
		case r := <-done:
			if r.err == nil {
				return r.applied, nil
			}
			if cause := context.Cause(mctx); errors.Is(cause, errNoAnswer) {
				return nil, cause
			}
			if readOnlyRefusal(r.err) {
				return nil, store.MapErr(ctx, fmt.Errorf("%w: %w", ErrReadOnly, r.err))
			}
			return nil, store.MapErr(ctx, r.err)
		case <-check:
			if err := s.answers(ctx, &watch); err != nil && ctx.Err() == nil {
				check = nil
				during := "the wait for the migration lock"
				if name := step.Load(); name != nil {
					during = strings.TrimSpace("the migration " + *name)
				}
				stop(fmt.Errorf("%w (%s), %s into %s: %w", errNoAnswer, s.timeout, time.Since(start).Round(time.Second), during, err))
			}
		case <-logEvery.C:
			waited := time.Since(start).Round(time.Second)
			if name := step.Load(); name == nil {
				s.log.Info(waitLockMsg, "schema", schema, "waited", waited)
			} else {
				s.log.Info(waitMigrationMsg, "schema", schema, "migration", *name, "waited", waited)
			}
		}
	}
}

// answers reports whether the database answers a query on *conn within the
// store's timeout, connecting it first if nil (from the pool's
// configuration, not the pool). A server that refuses the connection with
// an error of its own (no connection slot free) answers too.
func (s *Store) answers(ctx context.Context, conn **pgx.Conn) error {
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	if *conn == nil {
		c, err := pgx.ConnectConfig(ctx, s.pool.Config().ConnConfig)
		var pgErr *pgconn.PgError
		if errors.As(err, &pgErr) {
			return nil
		}
		if err != nil {
			return err
		}
		*conn = c
	}
	_, err := (*conn).Exec(ctx, `SELECT 1`)
	return err
}

// Schema returns the schema holding the tables.
func (s *Store) Schema() string { return s.schema }

// Identity names the tables this store uses, whatever the DSN that reached
// them: the server (by its start time and port), the database and the
// schema. Two stores of one Identity are one store.
func (s *Store) Identity(ctx context.Context) (string, error) {
	const op = "identity"
	if err := s.usable(op); err != nil {
		return "", err
	}
	qctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	var started, port, database string
	err := s.read(qctx, func(c *pgxpool.Conn) error {
		return c.QueryRow(qctx, `SELECT pg_postmaster_start_time()::text, current_setting('port'), current_database()`).Scan(&started, &port, &database)
	})
	if err != nil {
		return "", s.fail(ctx, op, err)
	}
	return fmt.Sprintf("started %s, port %s, database %q, schema %q", started, port, database, s.schema), nil
}

// GetRequest implements store.Store.
func (s *Store) GetRequest(ctx context.Context, requestID string) (*eventsv1.AuthRequest, error) {
	const op = "get request"
	if err := s.usable(op); err != nil {
		return nil, err
	}
	if requestID == "" {
		return nil, fmt.Errorf("pgstore: %s: empty request id: %w", op, store.ErrNotFound)
	}
	qctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	var data []byte
	err := s.read(qctx, func(c *pgxpool.Conn) error {
		return c.QueryRow(qctx, `SELECT data FROM requests WHERE request_id = $1 AND revision > 0`, []byte(requestID)).Scan(&data)
	})
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, fmt.Errorf("pgstore: %s %q: %w", op, requestID, store.ErrNotFound)
	}
	if err != nil {
		return nil, s.fail(ctx, op, err)
	}
	r := new(eventsv1.AuthRequest)
	if err := proto.Unmarshal(data, r); err != nil {
		return nil, fmt.Errorf("pgstore: %s %q: %w: decode snapshot: %w", op, requestID, store.ErrDamaged, err)
	}
	return r, nil
}

// ListEvents implements store.Store.
func (s *Store) ListEvents(ctx context.Context, requestID string, page store.Page) ([]*eventsv1.Event, string, error) {
	const op = "list events"
	if err := s.usable(op); err != nil {
		return nil, "", err
	}
	if requestID == "" {
		return nil, "", fmt.Errorf("pgstore: %s: empty request id: %w", op, store.ErrNotFound)
	}
	limit := page.Limit()
	query, args := `SELECT e.data, w.id, w.body FROM events e JOIN webhooks w ON w.id = e.webhook_id
		WHERE e.request_id = $1
		ORDER BY e.event_time_ms, e.event_id LIMIT $2`, []any{[]byte(requestID), limit + 1}
	if page.Token != "" {
		c, err := store.ParseToken(requestID, page.Token)
		if err != nil {
			return nil, "", fmt.Errorf("pgstore: %s: %w", op, err)
		}
		query = `SELECT e.data, w.id, w.body FROM events e JOIN webhooks w ON w.id = e.webhook_id
			WHERE e.request_id = $1 AND (e.event_time_ms, e.event_id) > ($3, $4)
			ORDER BY e.event_time_ms, e.event_id LIMIT $2`
		args = append(args, c.EventTimeMillis, c.EventID)
	}
	qctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	var (
		events []*eventsv1.Event
		exists bool
	)
	err := s.read(qctx, func(c *pgxpool.Conn) error {
		events, exists = make([]*eventsv1.Event, 0, min(limit+1, 64)), true
		rows, err := c.Query(qctx, query, args...)
		if err != nil {
			return err
		}
		var (
			data, body []byte
			webhookID  int64
		)
		_, err = pgx.ForEachRow(rows, []any{&data, &webhookID, &body}, func() error {
			e := new(eventsv1.Event)
			if err := proto.Unmarshal(data, e); err != nil {
				return fmt.Errorf("%w: decode an event of webhook %d: %w", store.ErrDamaged, webhookID, err)
			}
			e.RawBody = store.RawBody(ctx, s.log, requestID, webhookID, body)
			events = append(events, e)
			return nil
		})
		if err != nil || len(events) > 0 {
			return err
		}
		return c.QueryRow(qctx, `SELECT EXISTS (SELECT 1 FROM requests WHERE request_id = $1 AND revision > 0)`, []byte(requestID)).Scan(&exists)
	})
	switch {
	case err != nil:
		return nil, "", s.fail(ctx, op, err)
	case !exists:
		return nil, "", fmt.Errorf("pgstore: %s %q: %w", op, requestID, store.ErrNotFound)
	case len(events) == 0:
		return nil, "", nil
	}
	if len(events) <= limit {
		return events, "", nil
	}
	events = events[:limit]
	return events, store.CursorAfter(events[limit-1]).Token(), nil
}

// Ping implements store.Store: it runs a query on a pooled connection. When
// that fails, every pooled connection is dropped, so that after an outage
// calls get fresh connections rather than dead ones: also when it fails by
// the caller's deadline (a health check's is shorter than the store's
// timeout, and a database that went silent fails the ping no other way),
// but not when the caller canceled it. A ping whose pooled session the
// database had ended (pg_terminate_backend, a restart) drops them too,
// and runs again once on a new one: the database may answer all the same.
// A ping that gets no connection because every one is in use succeeds if
// one came back alive while it waited (to a caller ahead of it): the
// database is busy, not gone, and readiness does not drop a replica for
// being under load. It fails, but
// drops nothing, if none did. After a commit failed as the database's disk
// is full, it also tries a write (checkSpace).
func (s *Store) Ping(ctx context.Context) error {
	const op = "ping"
	if err := s.usable(op); err != nil {
		return err
	}
	qctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	start := int64(time.Since(s.base))
	conn, err := s.pool.Acquire(qctx)
	if err == nil {
		err = s.check(qctx, conn)
		if errors.Is(err, errEnded) {
			// The database ended the session while it sat in the pool
			// (pg_terminate_backend, or a restart), and likely the other
			// pooled ones with it: they are dropped, and a new session
			// says whether the database answers.
			s.pool.Reset()
			if conn, err = s.pool.Acquire(qctx); err == nil {
				err = s.check(qctx, conn)
			}
		}
		if errors.Is(err, errUnusable) {
			return s.fail(ctx, op, err) // the connection is fine
		}
	} else if st := s.pool.Stat(); st.AcquiredConns() >= st.MaxConns() {
		if s.released.Load() > start {
			return nil
		}
		return s.fail(ctx, op, err)
	}
	if err != nil {
		if !errors.Is(ctx.Err(), context.Canceled) {
			s.pool.Reset()
		}
		return s.fail(ctx, op, err)
	}
	return nil
}

// check runs the ping's checks on conn and releases it. When they fail as
// conn's session has ended, before the ping's deadline, the error wraps
// errEnded.
func (s *Store) check(ctx context.Context, conn *pgxpool.Conn) error {
	err := checkWritable(ctx, conn.Conn())
	if err == nil {
		err = s.checkSpace(ctx, conn.Conn())
	}
	ended := err != nil && conn.Conn().IsClosed() && ctx.Err() == nil
	conn.Release()
	if ended {
		return fmt.Errorf("%w: %w", errEnded, err)
	}
	return err
}

// errEnded marks a ping whose pooled session had ended.
var errEnded = errors.New("the session had ended")

// errUnusable marks a ping that the database answered, on a connection
// that works, with a reason the store cannot serve: the pool is kept.
var errUnusable = errors.New("the store cannot serve")

// privilegesQuery lists, comma-separated (NULL for none), the privileges
// this store's statements need that the current role lacks: on the tables
// and the sequence of the ids of webhooks, those the search_path finds.
// has_table_privilege with several privileges at once is true when any is
// held, hence one row per privilege.
const privilegesQuery = `SELECT string_agg(p.priv || ' on ' || p.rel, ', ' ORDER BY p.n)
	FROM (VALUES (1, 'webhooks', 'SELECT'), (2, 'webhooks', 'INSERT'), (3, 'webhooks', 'UPDATE'), (4, 'webhooks', 'DELETE'),
		(5, 'events', 'SELECT'), (6, 'events', 'INSERT'), (7, 'events', 'UPDATE'),
		(8, 'requests', 'SELECT'), (9, 'requests', 'INSERT'), (10, 'requests', 'UPDATE'),
		(11, 'webhooks_id_seq', 'USAGE')) AS p (n, rel, priv)
	WHERE to_regclass(p.rel) IS NOT NULL AND NOT CASE
		WHEN p.rel LIKE '%_seq' THEN has_sequence_privilege(to_regclass(p.rel)::oid, p.priv)
		ELSE has_table_privilege(to_regclass(p.rel)::oid, p.priv) END`

// unusableSchemasQuery lists, comma-separated (NULL for none), the schemas
// the search_path names that exist but that the current role lacks USAGE
// on: PostgreSQL leaves them out of the search_path, so the tables in them
// are not found, as if the schema had been dropped.
// Each ping asks it only when the tables are not found.
const unusableSchemasQuery = `SELECT string_agg(n.nspname, ', ' ORDER BY n.nspname) FROM pg_namespace n
	WHERE n.nspname = ANY (SELECT btrim(p, ' "') FROM unnest(string_to_array(current_setting('search_path'), ',')) AS p)
		AND NOT has_schema_privilege(n.oid, 'USAGE')`

// checkWritable asks conn whether a commit could succeed: the server takes
// writes (not a standby, nor read-only by default_transaction_read_only),
// the tables are where the search_path says, and the role holds every
// privilege the store's statements need on them (else an error wrapping
// errUnusable, naming what is missing). A read-only server fails the ping
// as a connection would: the pool is dropped, so that after a failover new
// connections find the new primary behind the same address, rather than
// old ones the demoted one (pgx keeps a connection for an hour).
func checkWritable(ctx context.Context, conn *pgx.Conn) error {
	var readOnly, role string
	var tables bool
	var missing, unusable *string
	if err := conn.QueryRow(ctx, `SELECT current_setting('transaction_read_only'), to_regclass('requests') IS NOT NULL,
		current_user, (`+privilegesQuery+`),
		CASE WHEN to_regclass('requests') IS NULL THEN (`+unusableSchemasQuery+`) END`).Scan(&readOnly, &tables, &role, &missing, &unusable); err != nil {
		return err
	}
	switch {
	case readOnly != "off":
		return ErrReadOnly
	case !tables && unusable != nil:
		return fmt.Errorf("%w: the table requests is not in the search_path: the role %s lacks USAGE on the schema %s (GRANT it)", errUnusable, role, *unusable)
	case !tables:
		return fmt.Errorf("%w: the table requests is not in the search_path (was the schema dropped or renamed?)", errUnusable)
	case missing != nil:
		return fmt.Errorf("%w: the role %s lacks privileges: %s (GRANT them)", errUnusable, role, *missing)
	}
	return nil
}

// diskFull returns err's PostgreSQL error when it is disk_full (SQLSTATE
// 53100: the server could not extend a file for want of space), else nil.
func diskFull(err error) *pgconn.PgError {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "53100" {
		return pgErr
	}
	return nil
}

// probeBody is the body of checkSpace's row, the size of a webhook's.
var probeBody = make([]byte, 1024)

// checkSpace is nil unless the last commit failed as the database's disk is
// full (s.full). Then it inserts a row into webhooks on conn, as a commit
// does, and rolls it back: if that succeeds there is space again, and it
// ends the state, as a commit that succeeds would (a replica that is not
// ready gets no webhooks to commit). If the server refuses it, the error
// wraps errUnusable: the connection is fine.
func (s *Store) checkSpace(ctx context.Context, conn *pgx.Conn) error {
	full := s.full.Load()
	if full == nil {
		return nil
	}
	tx, err := conn.Begin(ctx)
	if err != nil {
		return err
	}
	_, err = tx.Exec(ctx, `INSERT INTO webhooks (received_at, body) VALUES (now(), $1)`, probeBody)
	if rerr := s.rollback(ctx, tx); err == nil {
		err = rerr
	}
	var pgErr *pgconn.PgError
	switch {
	case err == nil:
		s.full.CompareAndSwap(full, nil) // unless a commit failed meanwhile
		return nil
	case errors.As(err, &pgErr):
		return fmt.Errorf("%w: the database's disk is full: a commit failed for want of space, and a test write fails too (%v)", errUnusable, err)
	}
	return err
}

// Close implements store.Store. It waits for the calls in flight.
func (s *Store) Close() error {
	if !s.closed.CompareAndSwap(false, true) {
		return nil
	}
	s.pool.Close()
	return nil
}

// fail wraps err from pgx once, with the operation: ErrClosed after Close,
// the caller's context error when ctx is done, else ErrUnavailable (which
// includes running out of the call's own timeout).
func (s *Store) fail(ctx context.Context, op string, err error) error {
	if s.closed.Load() {
		return fmt.Errorf("pgstore: %s: %w (%v)", op, store.ErrClosed, err)
	}
	return fmt.Errorf("pgstore: %s: %w", op, store.MapErr(ctx, err))
}
