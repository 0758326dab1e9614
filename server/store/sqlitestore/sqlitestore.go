// Package sqlitestore is the default, embedded store.Store: one SQLite file
// through the pure-Go modernc.org/sqlite driver, in WAL mode with
// synchronous=FULL so that a committed webhook survives a crash or power
// loss. All writes go through one connection (no SQLITE_BUSY between our own
// writers); reads use a small pool of read-only connections. The schema is
// created and upgraded at Open by the embedded migrations/*.sql. Commit
// writes a batch with a few multi-row statements and folds recently
// committed requests from an in-memory cache of their events instead of
// reading them back (see eventCache).
//
// It may import package store, the state fold, the generated API types,
// protobuf and the SQLite driver; nothing from the servers.
package sqlitestore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"google.golang.org/protobuf/proto"
	"modernc.org/sqlite" // registers the "sqlite" driver
	sqlite3 "modernc.org/sqlite/lib"

	eventsv1 "github.com/otpless-events/otpless-events/gen/otpless/events/v1"
	"github.com/otpless-events/otpless-events/server/store"
)

var _ store.Store = (*Store)(nil)

// readers is the size of the read connection pool.
const readers = 4

// Option configures Open.
type Option func(*options)

type options struct {
	logger        *slog.Logger
	busyTimeout   time.Duration
	cacheRequests int
	processLock   bool
	existing      bool
	writerMode    string // a URI mode for the writer connection (tests)
}

// WithLogger sets the logger (default: discard).
func WithLogger(l *slog.Logger) Option {
	return func(o *options) { o.logger = l }
}

// WithBusyTimeout sets how long a connection waits for a lock held by
// another process before failing (default 5s).
func WithBusyTimeout(d time.Duration) Option {
	return func(o *options) { o.busyTimeout = d }
}

// WithProcessLock makes Open take a lock on the database file (flock(2),
// apart from SQLite's own locks), held until Close, and fail when another
// process (or Store) holds it, by whatever path or link: a server keeps
// the event cache and its watchers in its own memory, so a second server
// on the same file would neither see nor announce the other's commits.
func WithProcessLock() Option {
	return func(o *options) { o.processLock = true }
}

// WithExisting makes Open refuse a file that holds no store (empty, or
// another program's database), leaving it as it is, instead of creating
// the tables in it; and a file that is not there. For a store only to be
// read, such as the source of a copy.
func WithExisting() Option {
	return func(o *options) { o.existing = true }
}

// WithEventCache sets how many requests the event cache keeps (default
// 16384; 0 turns it off). Commit folds a cached request from its entry
// rather than reading all its events back from the file; an entry costs
// about 0.5 KiB of heap per event, 2 KiB for a typical request in
// progress.
func WithEventCache(requests int) Option {
	return func(o *options) { o.cacheRequests = requests }
}

// ErrLocked fails Open WithProcessLock, and the offline commands (Check,
// Vacuum), while another process (or Store) holds the lock on the file.
var ErrLocked = errors.New("another process has this database open (it holds its lock)")

// Store is a store.Store in one SQLite file. It is safe for concurrent use.
type Store struct {
	path string
	file os.FileInfo // the file opened, to notice it removed or replaced
	wal  os.FileInfo // and its write-ahead log
	// lock is the file, locked, with WithProcessLock. It is closed only
	// after SQLite's connections: closing any descriptor of a file drops
	// every fcntl lock the process holds on it, SQLite's included.
	lock   *os.File
	w      *sql.DB // the one writer connection
	r      *sql.DB // read-only pool
	closed atomic.Bool
	stmts  []*sql.Stmt

	// writer is the writer lock (a semaphore, so that waiting for it
	// heeds the context): every write transaction holds it, and so does
	// every use of cache and dataVersion.
	writer      chan struct{}
	cache       *eventCache
	dataVersion int64 // PRAGMA data_version when the cache was last known to match the file
	// beforeTxCommit, when set (by tests), runs before each Commit's
	// transaction commits; an error fails the commit. afterTxCommit, when
	// set, runs after it has committed, before the cache is updated.
	beforeTxCommit func() error
	afterTxCommit  func()
	log            *slog.Logger

	// diskFull is set when a commit fails for want of space (SQLITE_FULL)
	// and cleared by the next commit that succeeds, or by Ping once the
	// file system has minFree bytes free again (freeBytes; tests replace
	// it).
	diskFull  atomic.Bool
	freeBytes func(dir string) (uint64, error)

	// On w, used through tx.StmtContext.
	head, requestsOf, storedNoRequest            *sql.Stmt
	insertWebhooks, insertEvents, upsertRequests multiRow
	purge                                        purgeStmts
	// On r.
	getRequest, requestEvents, bodies *sql.Stmt
}

// Open opens (creating if need be) the database file at path and brings its
// schema up to date. In-memory databases are not supported: the writer and
// the readers must share the file.
func Open(ctx context.Context, path string, opts ...Option) (*Store, error) {
	o := options{logger: slog.New(slog.DiscardHandler), busyTimeout: 5 * time.Second, cacheRequests: defaultCacheRequests}
	for _, opt := range opts {
		opt(&o)
	}
	log := o.logger.With("component", "sqlitestore")

	if path == "" || path == ":memory:" {
		return nil, fmt.Errorf("sqlitestore: open: need a file path, got %q", path)
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("sqlitestore: open %s: %w", path, err)
	}
	if _, err := os.Stat(filepath.Dir(abs)); errors.Is(err, fs.ErrNotExist) {
		// Not left to the lock's or SQLite's "no such file".
		return nil, fmt.Errorf("sqlitestore: open %s: %s: no such directory", abs, filepath.Dir(abs))
	}
	// A new database is readable by its owner only, as are the -wal and
	// -shm files SQLite makes beside it with its mode: it holds personal
	// data. An existing one keeps the mode it has.
	if !o.existing {
		if f, err := os.OpenFile(abs, os.O_RDONLY|os.O_CREATE, 0o600); err == nil {
			f.Close()
		}
	}
	s := &Store{path: abs, writer: make(chan struct{}, 1), cache: newEventCache(o.cacheRequests), log: log, freeBytes: freeBytes}
	if o.processLock {
		if s.lock, err = lockFile(abs); err != nil {
			return nil, fmt.Errorf("sqlitestore: open %s: %w", abs, err)
		}
	}
	if s.file, err = os.Stat(abs); err != nil {
		s.closeAll()
		return nil, fmt.Errorf("sqlitestore: open %s: %w", abs, err)
	}
	if s.file.IsDir() {
		// SQLite cannot open it, which explainOpen would put down to its
		// mode or owner.
		s.closeAll()
		return nil, fmt.Errorf("sqlitestore: open %s: is a directory, not a database file", abs)
	}
	if err := canWrite(abs); err != nil {
		s.closeAll()
		return nil, fmt.Errorf("sqlitestore: open %s: %w", abs, err)
	}
	if err := s.open(ctx, o, log); err != nil {
		s.closeAll()
		return nil, fmt.Errorf("sqlitestore: open %s: %w", abs, explainOpen(err))
	}
	// SQLite keeps the log while a connection is open, and the store keeps
	// its connections; the log exists by now (checkWritable wrote).
	if s.wal, err = os.Stat(abs + "-wal"); err != nil {
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

	// Before the writer, whose journal_mode(WAL) would change the file.
	if err := holdsStore(ctx, uri+"?"+pragmas(), o.existing); err != nil {
		return err
	}
	var err error
	// BEGIN IMMEDIATE: a write transaction takes the write lock up front
	// rather than failing to upgrade a read lock later. temp_store(MEMORY)
	// keeps the statement journals of Commit's multi-row statements in
	// memory (they are for undoing a failed statement within its
	// transaction, not for recovery) instead of temporary files.
	// secure_delete(1) zeroes what a write removes, so the personal data a
	// retention purge strips does not stay in the file's free space (within
	// the noise of the commit benchmark).
	writerURI := uri + "?_txlock=immediate&"
	if o.writerMode != "" {
		writerURI += "mode=" + o.writerMode + "&"
	}
	if s.w, err = sql.Open("sqlite", writerURI+pragmas("journal_mode(WAL)", "synchronous(FULL)", "temp_store(MEMORY)", "secure_delete(1)")); err != nil {
		return err
	}
	// Neither pool closes its connections by age or idleness: SQLite
	// removes the write-ahead log when the last one closes, and checkFile
	// would take that for the log removed by someone else.
	s.w.SetMaxOpenConns(1)
	s.w.SetMaxIdleConns(1)
	s.w.SetConnMaxLifetime(0)
	s.w.SetConnMaxIdleTime(0)

	var mode string
	if err := s.w.QueryRowContext(ctx, "PRAGMA journal_mode").Scan(&mode); err != nil {
		return openErr(ctx, err)
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
		return fmt.Errorf("migrate: %w", openErr(ctx, err))
	}
	for _, name := range applied {
		log.Info("applied migration", "path", s.path, "migration", name)
	}
	if err := moveEvents(ctx, s.w, log.With("path", s.path)); err != nil {
		return openErr(ctx, err)
	}
	if err := fillRequestIDs(ctx, s.w, log.With("path", s.path)); err != nil {
		return openErr(ctx, err)
	}
	// A file SQLite can open only for reading (by its mode or owner, or on
	// a read-only mount) would serve reads, and fail every commit: the
	// server would be ready and answer every webhook 503.
	if err := checkWritable(ctx, s.w); err != nil {
		return err
	}

	// The schema exists now, so the readers never create or convert it.
	if s.r, err = sql.Open("sqlite", uri+"?"+pragmas("query_only(1)")); err != nil {
		return err
	}
	s.r.SetMaxOpenConns(readers)
	s.r.SetMaxIdleConns(readers)

	prepare := func(db *sql.DB, dst **sql.Stmt, query string) {
		if err != nil {
			return
		}
		*dst, err = db.PrepareContext(ctx, query)
		if err == nil {
			s.stmts = append(s.stmts, *dst)
		}
	}
	prepare(s.w, &s.head, `SELECT COALESCE(MAX(id), 0), (SELECT data_version FROM pragma_data_version) FROM webhooks`)
	prepare(s.w, &s.requestsOf, `SELECT request_id, revision, events FROM requests
		WHERE request_id IN (SELECT value FROM json_each(?))`)
	prepare(s.w, &s.storedNoRequest, `SELECT event_id FROM events
		WHERE request_id = '' AND event_id IN (SELECT value FROM json_each(?))`)
	if err == nil {
		err = s.prepareMultiRow(ctx, &s.insertWebhooks, 4, `INSERT INTO webhooks (id, received_at, body, request_ids)`, ``)
	}
	if err == nil {
		err = s.prepareMultiRow(ctx, &s.insertEvents, 5, `INSERT INTO events (request_id, event_id, webhook_id, event_time_ms, data)`, ``)
	}
	if err == nil {
		err = s.prepareMultiRow(ctx, &s.upsertRequests, 5, `INSERT INTO requests (request_id, revision, data, updated_at, events)`,
			`ON CONFLICT (request_id) DO UPDATE SET
			revision = excluded.revision, data = excluded.data, updated_at = excluded.updated_at,
			events = CAST(events || excluded.events AS BLOB)`)
	}
	s.preparePurge(prepare)
	prepare(s.r, &s.getRequest, `SELECT data FROM requests WHERE request_id = ?`)
	prepare(s.r, &s.requestEvents, `SELECT events FROM requests WHERE request_id = ?`)
	prepare(s.r, &s.bodies, `SELECT id, body FROM webhooks WHERE id IN (SELECT value FROM json_each(?))`)
	if err != nil {
		return fmt.Errorf("prepare: %w", openErr(ctx, err))
	}
	return nil
}

// holdsStore fails when the database at uri holds another program's
// schema_migrations, or a store that lost tables (as store.ErrDamaged),
// or, with existing (WithExisting), when it holds no store. It only
// reads.
func holdsStore(ctx context.Context, uri string, existing bool) error {
	db, err := sql.Open("sqlite", uri)
	if err != nil {
		return err
	}
	defer db.Close()
	held, err := contents(ctx, db)
	if err != nil {
		return openErr(ctx, err)
	}
	switch {
	case held == lostTables:
		return lostTablesErr(ctx, db)
	case held == otherMigrations:
		// Another program's bookkeeping would be taken for the store's by
		// migrate: a version "newer than this binary", or migrations
		// applied from the wrong one.
		return errors.New("no store there: the file holds a schema_migrations table that is not the store's (another program's database); left as it is")
	case held == noStore && existing:
		return errors.New("no store there: the file holds none of its tables")
	}
	return nil
}

// held is what a database holds, as a store goes.
type held int

const (
	// aStore: the migrations' bookkeeping as every build made it, with the
	// tables its first migration made.
	aStore held = iota
	// noStore: none of the store's tables; empty (SQLite takes an empty
	// file for an empty database), or another program's database.
	noStore
	// otherMigrations: no store, but a schema_migrations table all the
	// same, another program's (Rails and golang-migrate keep one, without
	// applied_at; one with the store's columns may sit beside none of its
	// tables), which migrate would take for the store's.
	otherMigrations
	// lostTables: the store's own bookkeeping, and some but not all of
	// the tables its first migration made (one dropped): a damaged store,
	// which migrate would not make whole again (it applies only migrations
	// not applied). With none of them, bookkeeping of the same columns is
	// another program's (otherMigrations).
	lostTables
)

// storeTables are the tables the first migration made, which no later one
// drops.
var storeTables = []string{"webhooks", "events", "requests"}

// contents reports what db holds. It only reads.
func contents(ctx context.Context, db *sql.DB) (held, error) {
	var h held
	err := db.QueryRowContext(ctx, `SELECT CASE
		WHEN (SELECT COUNT(*) FROM pragma_table_info('schema_migrations') WHERE name IN ('version', 'name', 'applied_at')) = 3 THEN
			CASE (SELECT COUNT(*) FROM sqlite_schema WHERE type = 'table' AND name IN (SELECT value FROM json_each(?1)))
				WHEN ?2 THEN ?3 WHEN 0 THEN ?5 ELSE ?4 END
		WHEN EXISTS (SELECT 1 FROM sqlite_schema WHERE name = 'schema_migrations') THEN ?5
		ELSE ?6 END`, jsonArray(storeTables), len(storeTables), aStore, lostTables, otherMigrations, noStore).Scan(&h)
	return h, err
}

// lostTablesErr is a store that lost tables (lostTables) as
// store.ErrDamaged, naming them; db check reports its text, a server and
// the other db commands refuse the file with it.
func lostTablesErr(ctx context.Context, db *sql.DB) error {
	rows, err := db.QueryContext(ctx, `SELECT value FROM json_each(?)
		WHERE value NOT IN (SELECT name FROM sqlite_schema WHERE type = 'table') ORDER BY key`, jsonArray(storeTables))
	if err != nil {
		return openErr(ctx, err)
	}
	names, err := scanAll(rows, func(r *sql.Rows) (name string, err error) { return name, r.Scan(&name) })
	if err != nil {
		return openErr(ctx, err)
	}
	missing := "table " + names[0] + " is"
	if len(names) > 1 {
		missing = "tables " + strings.Join(names, ", ") + " are"
	}
	return fmt.Errorf("%w: the store's %s missing (its schema_migrations is there); a server refuses it and leaves it as it is", store.ErrDamaged, missing)
}

// checkWritable runs a write that changes nothing, and rolls it back:
// SQLite refuses it on a database it opened only for reading (BEGIN
// IMMEDIATE it allows).
func checkWritable(ctx context.Context, db *sql.DB) error {
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("begin a write: %w", openErr(ctx, err))
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, `DELETE FROM webhooks WHERE 0`); err != nil {
		return fmt.Errorf("write: %w", openErr(ctx, err))
	}
	return nil
}

// canWrite opens the database file at path for writing, and closes it,
// before SQLite opens it (closing a descriptor of the file drops the fcntl
// locks SQLite holds on it). SQLite opens a file the process may only read
// for reading, making the -wal and -shm files beside it, owned by this
// process's user, before a write fails, or for good when none is tried (an
// integrity check): the server, run as the file's owner, cannot open them
// then. Errors other than a refusal are left to SQLite.
func canWrite(path string) error {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if errors.Is(err, fs.ErrPermission) || errors.Is(err, syscall.EROFS) {
		var pe *fs.PathError
		if errors.As(err, &pe) {
			err = pe.Err // the caller names the file
		}
		return fmt.Errorf("this process cannot write the database (the mode or owner of the file, or a read-only mount; run as the server's user): %w", err)
	}
	if err == nil {
		f.Close()
	}
	return nil
}

// explainOpen says what an error of SQLite's that fails Open means for the
// operator: the file or its directory cannot be written (SQLite can open a
// file it may only read, and then fails the first write), or cannot be
// opened at all.
func explainOpen(err error) error {
	var cannot string
	switch resultCode(err) {
	case sqlite3.SQLITE_READONLY:
		cannot = "write"
	case sqlite3.SQLITE_CANTOPEN:
		cannot = "open"
	default:
		return err
	}
	return fmt.Errorf("this process cannot %s the database (the mode or owner of the file or of its directory, or a read-only mount): %w", cannot, err)
}

// Path returns the absolute path of the database file.
func (s *Store) Path() string { return s.path }

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
		return nil, fmt.Errorf("sqlitestore: %s %q: %w: decode snapshot: %w", op, requestID, store.ErrDamaged, err)
	}
	return r, nil
}

// ListEvents implements store.Store. It reads the request's events column,
// sorts its entries, and decodes only the page's events and reads only
// their bodies, in one read transaction.
func (s *Store) ListEvents(ctx context.Context, requestID string, page store.Page) ([]*eventsv1.Event, string, error) {
	const op = "list events"
	if s.closed.Load() {
		return nil, "", fmt.Errorf("sqlitestore: %s: %w", op, store.ErrClosed)
	}
	if requestID == "" {
		return nil, "", fmt.Errorf("sqlitestore: %s: empty request id: %w", op, store.ErrNotFound)
	}
	var after *store.Cursor
	if page.Token != "" {
		c, err := store.ParseToken(requestID, page.Token)
		if err != nil {
			return nil, "", fmt.Errorf("sqlitestore: %s: %w", op, err)
		}
		after = &c
	}
	tx, err := s.r.BeginTx(ctx, nil)
	if err != nil {
		return nil, "", s.fail(ctx, op, err)
	}
	defer tx.Rollback() // read only: nothing to commit
	var column []byte
	err = tx.StmtContext(ctx, s.requestEvents).QueryRowContext(ctx, requestID).Scan(&column)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, "", fmt.Errorf("sqlitestore: %s %q: %w", op, requestID, store.ErrNotFound)
	}
	if err != nil {
		return nil, "", s.fail(ctx, op, err)
	}
	entries, err := parseEntries(column)
	if err != nil { // not a failure a retry could fix
		return nil, "", fmt.Errorf("sqlitestore: %s %q: %w", op, requestID, err)
	}
	slices.SortFunc(entries, func(a, b entry) int { return a.cursor().Compare(b.cursor()) })
	if after != nil {
		entries = entries[sort.Search(len(entries), func(i int) bool { return entries[i].cursor().Compare(*after) > 0 }):]
	}
	limit := page.Limit()
	more := len(entries) > limit
	if more {
		entries = entries[:limit]
	}

	events := make([]*eventsv1.Event, len(entries))
	webhookIDs := make([]int64, len(entries))
	for i, en := range entries {
		e, err := en.event()
		if err != nil {
			return nil, "", fmt.Errorf("sqlitestore: %s %q: %w", op, requestID, err)
		}
		events[i], webhookIDs[i] = e, en.webhookID
	}
	if len(events) == 0 {
		return nil, "", nil // past the last page
	}
	rows, err := tx.StmtContext(ctx, s.bodies).QueryContext(ctx, jsonArray(webhookIDs))
	if err != nil {
		return nil, "", s.fail(ctx, op, err)
	}
	bodies := make(map[int64]string, len(entries))
	for rows.Next() {
		var (
			id   int64
			body []byte
		)
		if err := rows.Scan(&id, &body); err != nil {
			rows.Close()
			return nil, "", s.fail(ctx, op, err)
		}
		bodies[id] = store.RawBody(ctx, s.log, requestID, id, body)
	}
	if err := rows.Err(); err != nil {
		return nil, "", s.fail(ctx, op, err)
	}
	for i, e := range events {
		e.RawBody = bodies[webhookIDs[i]]
	}
	if !more {
		return events, "", nil
	}
	return events, store.CursorAfter(events[len(events)-1]).Token(), nil
}

// Ping implements store.Store: the file must still be the one opened, and
// readable, and the last commit must not have failed for want of space
// unless minFree bytes have been freed since. (A write lock held by another
// process fails writes only: that shows in Commit.)
func (s *Store) Ping(ctx context.Context) error {
	const op = "ping"
	if s.closed.Load() {
		return fmt.Errorf("sqlitestore: %s: %w", op, store.ErrClosed)
	}
	if err := s.checkFile(); err != nil {
		return fmt.Errorf("sqlitestore: %s: %w", op, err)
	}
	if err := s.checkSpace(); err != nil {
		return fmt.Errorf("sqlitestore: %s: %w", op, err)
	}
	var v int
	if err := s.r.QueryRowContext(ctx, `SELECT COALESCE(MAX(version), 0) FROM schema_migrations`).Scan(&v); err != nil {
		return s.fail(ctx, op, err)
	}
	return nil
}

// checkFile reports ErrUnavailable when the file at the store's path, or
// its write-ahead log, is no longer the one it opened (removed, or
// replaced): what it would write then would be lost.
func (s *Store) checkFile() error {
	fi, err := os.Stat(s.path)
	if err != nil || !os.SameFile(fi, s.file) {
		return fmt.Errorf("%w: the database file %s was removed or replaced since it was opened; restart to open it again", store.ErrUnavailable, s.path)
	}
	// Commits go to the log until a checkpoint: one written to a removed
	// log is lost when the process stops without closing the store.
	if fi, err := os.Stat(s.path + "-wal"); err != nil || !os.SameFile(fi, s.wal) {
		return fmt.Errorf("%w: the write-ahead log %s-wal was removed or replaced since it was opened; restart to open the database again", store.ErrUnavailable, s.path)
	}
	return nil
}

// minFree is how much free space Ping wants to see after a commit failed
// for want of it: a few large commits' worth of write-ahead log.
const minFree = 16 << 20

// checkSpace reports ErrUnavailable while the last commit failed for want
// of space and the file system holding the database has less than minFree
// bytes free. A small write can still succeed then (into space the log
// holds already) while commits fail, so it is the failure that counts, and
// free space that ends it; a commit that succeeds ends it too.
func (s *Store) checkSpace() error {
	if !s.diskFull.Load() {
		return nil
	}
	dir := filepath.Dir(s.path)
	free, err := s.freeBytes(dir)
	if errors.Is(err, errors.ErrUnsupported) || err == nil && free >= minFree {
		// Where free space cannot be read, readiness cannot wait for it:
		// taken out of service, the store would get no commit to end it.
		s.diskFull.Store(false)
		return nil
	}
	if err != nil {
		return fmt.Errorf("%w: a commit failed as the disk is full, and the free space of %s cannot be read: %v", store.ErrUnavailable, dir, err)
	}
	// In KiB and MiB: the log's masking takes a run of seven digits or
	// more for a phone number (under minFree, the KiB have five at most).
	return fmt.Errorf("%w: a commit failed as the disk is full, and %s has %d KiB free (ready again at %d MiB, or once a commit succeeds)", store.ErrUnavailable, dir, free>>10, minFree>>20)
}

// isFull reports whether err is SQLite's "database or disk is full".
func isFull(err error) bool { return resultCode(err) == sqlite3.SQLITE_FULL }

// resultCode is the primary result code of err's SQLite error (the low
// byte of its extended code), or SQLITE_OK when err is none of SQLite's.
func resultCode(err error) int {
	var se *sqlite.Error
	if !errors.As(err, &se) {
		return sqlite3.SQLITE_OK
	}
	return se.Code() & 0xff
}

// Close implements store.Store. It does not wait for calls in flight: a
// commit part way through its statements fails (ErrClosed) and stores
// nothing. The server closes the store after its writer has stopped.
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
	if s.lock != nil {
		errs = append(errs, s.lock.Close())
	}
	return errors.Join(errs...)
}

// fail wraps err from the driver once, with the operation: ErrClosed
// after Close, else as openErr: a page SQLite finds malformed while the
// store serves is ErrDamaged (INTERNAL, 500: every read of it meets it
// again), not ErrUnavailable.
func (s *Store) fail(ctx context.Context, op string, err error) error {
	if s.closed.Load() {
		return fmt.Errorf("sqlitestore: %s: %w (%v)", op, store.ErrClosed, err)
	}
	return fmt.Errorf("sqlitestore: %s: %w", op, openErr(ctx, err))
}

// openErr is store.MapErr with a file SQLite finds damaged (a malformed
// schema or page, or no database at all) as ErrDamaged: every open or
// read of it meets the same damage.
func openErr(ctx context.Context, err error) error {
	return store.MapErr(ctx, corruptDamaged(err))
}
