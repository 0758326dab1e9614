package sqlitestore_test

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	eventsv1 "github.com/otpless-events/otpless-events/gen/otpless/events/v1"
	"github.com/otpless-events/otpless-events/internal/testlog"
	"github.com/otpless-events/otpless-events/server/observe"
	"github.com/otpless-events/otpless-events/server/store"
	"github.com/otpless-events/otpless-events/server/store/sqlitestore"
	"github.com/otpless-events/otpless-events/server/store/storetest"
)

func open(t *testing.T, path string) *sqlitestore.Store {
	t.Helper()
	s, err := sqlitestore.Open(t.Context(), path, sqlitestore.WithLogger(slog.New(slog.NewTextHandler(t.Output(), nil))))
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	return s
}

func TestConformance(t *testing.T) {
	storetest.RunWithOptions(t, func(t *testing.T) store.Store {
		return open(t, filepath.Join(t.TempDir(), "events.db"))
	}, storetest.Options{
		Reopen: func(t *testing.T, s store.Store) store.Store {
			path := s.(*sqlitestore.Store).Path()
			if err := s.Close(); err != nil {
				t.Fatalf("Close: %v", err)
			}
			return open(t, path)
		},
		SetSnapshot: func(t *testing.T, s store.Store, r *eventsv1.AuthRequest) {
			data, err := proto.Marshal(r)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := sqlitestore.WriterDB(s.(*sqlitestore.Store)).ExecContext(t.Context(), `UPDATE requests SET data = ? WHERE request_id = ?`, data, r.GetRequestId()); err != nil {
				t.Fatal(err)
			}
		},
		Damage: func(t *testing.T, s store.Store, requestID, eventID string) {
			// Through a connection of its own, as damage comes: the
			// store's event cache is dropped when another writes.
			db, err := sql.Open("sqlite", s.(*sqlitestore.Store).Path())
			if err != nil {
				t.Fatal(err)
			}
			defer db.Close()
			if requestID != "" && eventID != "" {
				if err := sqlitestore.DamageEvent(t.Context(), db, requestID, eventID); err != nil {
					t.Fatal(err)
				}
				return
			}
			query, args := `UPDATE requests SET data = X'FF' WHERE request_id = ?`, []any{requestID}
			if requestID == "" {
				query, args = `UPDATE events SET data = X'FF' WHERE request_id = '' AND event_id = ?`, []any{eventID}
			}
			if res, err := db.ExecContext(t.Context(), query, args...); err != nil {
				t.Fatal(err)
			} else if n, _ := res.RowsAffected(); n != 1 {
				t.Fatalf("damage %q %q: %d rows", requestID, eventID, n)
			}
		},
	})
}

func webhook(body string, events ...*eventsv1.Event) store.Webhook {
	now := time.Date(2026, 11, 26, 10, 0, 0, 0, time.UTC)
	for _, e := range events {
		e.EventTime = timestamppb.New(now)
		e.ReceiveTime = timestamppb.New(now)
	}
	return store.Webhook{Body: []byte(body), Received: now, Events: events}
}

// rawDB opens the file with plain database/sql to look inside.
func rawDB(t *testing.T, path string) *sql.DB {
	t.Helper()
	db, err := sql.Open("sqlite", "file:"+(&url.URL{Path: path}).EscapedPath()+"?mode=ro")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

func count(t *testing.T, db *sql.DB, query string) int {
	t.Helper()
	var n int
	if err := db.QueryRow(query).Scan(&n); err != nil {
		t.Fatalf("%s: %v", query, err)
	}
	return n
}

func TestReopen(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	path := filepath.Join(t.TempDir(), "events.db")
	s := open(t, path)
	e1 := &eventsv1.Event{EventId: "e1", RequestId: "r1", Kind: eventsv1.EventKind_EVENT_KIND_DELIVERY, Status: "SENT", Channel: "SMS"}
	u := &eventsv1.Event{EventId: "u1", Kind: eventsv1.EventKind_EVENT_KIND_SYSTEM, Status: "UNREACHABLE"}
	if _, _, err := s.Commit(ctx, []store.Webhook{webhook(`{"a":1}`, e1), webhook(`{"u":1}`, u)}); err != nil {
		t.Fatal(err)
	}
	want, err := s.GetRequest(ctx, "r1")
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s = open(t, path)
	defer s.Close()
	got, err := s.GetRequest(ctx, "r1")
	if err != nil || !proto.Equal(got, want) {
		t.Errorf("GetRequest after reopen = %v, %v; want %v", got, err, want)
	}
	events, _, err := s.ListEvents(ctx, "r1", store.Page{Size: 10})
	if err != nil || len(events) != 1 || events[0].GetRawBody() != `{"a":1}` {
		t.Errorf("ListEvents after reopen = %v, %v", events, err)
	}
	// The body of the event without a request id was kept too.
	db := rawDB(t, path)
	if n := count(t, db, `SELECT COUNT(*) FROM webhooks WHERE body = CAST('{"u":1}' AS BLOB)`); n != 1 {
		t.Errorf("webhook of the request-less event stored %d times, want once", n)
	}
	res, _, err := s.Commit(ctx, []store.Webhook{webhook(`{"a":1}`, proto.CloneOf(e1)), webhook(`{"u":1}`, proto.CloneOf(u))})
	if err != nil || !res[0].Events[0].Duplicate || !res[1].Events[0].Duplicate {
		t.Errorf("retry after reopen = %v, %v; want duplicates", res, err)
	}
	if n := count(t, db, `SELECT COUNT(*) FROM webhooks`); n != 2 {
		t.Errorf("%d webhooks after a retried batch, want 2 (bodies of duplicates are not kept)", n)
	}
}

func TestMigrationsIdempotent(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "events.db")
	for range 3 {
		s := open(t, path)
		if err := s.Ping(t.Context()); err != nil {
			t.Fatal(err)
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
	}
	db := rawDB(t, path)
	ms, err := filepath.Glob("migrations/*.sql")
	if err != nil || len(ms) == 0 {
		t.Fatalf("migration files: %v, %v", ms, err)
	}
	if n := count(t, db, `SELECT COUNT(*) FROM schema_migrations`); n != len(ms) {
		t.Errorf("schema_migrations has %d rows, want %d (one per migration file)", n, len(ms))
	}
	var mode string
	if err := db.QueryRow(`PRAGMA journal_mode`).Scan(&mode); err != nil || mode != "wal" {
		t.Errorf("journal_mode = %q, %v; want wal", mode, err)
	}
}

// markNewer records in the store at path a migration of a later build,
// numbered version.
func markNewer(t *testing.T, path string, version int) {
	t.Helper()
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Exec(`INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, 0)`, version, fmt.Sprintf("%04d_later.sql", version)); err != nil {
		t.Fatal(err)
	}
}

// markOtherBuild records the store at path's migration 5 under the name a
// development build of 2026-11-30 gave its own migration 5
// (0005_purge_error_messages.sql, reverted), as that build left it: this
// build's 0005_purged_request_ids.sql never ran there.
func markOtherBuild(t *testing.T, path string) {
	t.Helper()
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Exec(`UPDATE schema_migrations SET name = '0005_purge_error_messages.sql' WHERE version = 5`); err != nil {
		t.Fatal(err)
	}
}

// A store whose migration 5 another build applied under another name is
// refused, naming both, not taken as up to date (which skipped this
// build's migration 5 for good), and left as it is.
func TestOtherBuildsMigrationRefused(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "events.db")
	open(t, path).Close()
	markOtherBuild(t, path)
	s, err := sqlitestore.Open(t.Context(), path)
	if err == nil {
		s.Close()
		t.Fatal("Open of a store whose migration 5 another build applied succeeded")
	}
	var other store.OtherMigrationError
	if !errors.As(err, &other) || errors.Is(err, store.ErrUnavailable) ||
		!strings.Contains(err.Error(), "0005_purge_error_messages.sql") || !strings.Contains(err.Error(), "0005_purged_request_ids.sql") {
		t.Errorf("Open: %v; want both names of migration 5, not unavailable", err)
	}
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var name string
	if err := db.QueryRow(`SELECT name FROM schema_migrations WHERE version = 5`).Scan(&name); err != nil || name != "0005_purge_error_messages.sql" {
		t.Errorf("migration 5 recorded as %q (%v) after the refusal; want it left as it was", name, err)
	}
}

func TestNewerSchemaRefused(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "events.db")
	open(t, path).Close()
	markNewer(t, path, 999)
	s, err := sqlitestore.Open(t.Context(), path)
	if err == nil {
		s.Close()
		t.Fatal("Open of a database from a newer binary succeeded")
	}
	// Not a store that may come back: waiting will not mend it.
	if errors.Is(err, store.ErrUnavailable) || !strings.Contains(err.Error(), "schema version 999 is newer") {
		t.Errorf("Open of a database from a newer binary: %v, want the version named, not unavailable", err)
	}
}

func TestOpenErrors(t *testing.T) {
	t.Parallel()
	for _, path := range []string{"", ":memory:", filepath.Join(t.TempDir(), "missing", "dir", "events.db")} {
		if s, err := sqlitestore.Open(t.Context(), path); err == nil {
			s.Close()
			t.Errorf("Open(%q) succeeded", path)
		}
	}
}

// A database SQLite can open only for reading (mode=ro stands for a file
// the process may not write, which root, running the tests, always may) is
// refused at Open, saying so: it served reads and failed every commit.
func TestReadOnlyFileRefused(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "events.db")
	open(t, path).Close()
	s, err := sqlitestore.Open(t.Context(), path, sqlitestore.WithWriterMode("ro"))
	if err == nil {
		s.Close()
		t.Fatal("Open of a database it cannot write succeeded")
	}
	if !strings.Contains(err.Error(), "cannot write the database") || !strings.Contains(err.Error(), path) {
		t.Errorf("Open: %v; want it to say the file %s cannot be written", err, path)
	}
	open(t, path).Close() // and read-write it opens
}

func TestPathWithURICharacters(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "a dir?x=1#frag%20", "events.db")
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	s := open(t, path)
	defer s.Close()
	if _, _, err := s.Commit(t.Context(), []store.Webhook{webhook("{}", &eventsv1.Event{EventId: "e", RequestId: "r"})}); err != nil {
		t.Fatal(err)
	}
	if n := count(t, rawDB(t, path), `SELECT COUNT(*) FROM requests`); n != 1 {
		t.Errorf("requests in %s: %d, want 1", path, n)
	}
}

func TestUnavailable(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "events.db")
	s := open(t, path)
	defer s.Close()
	// Another process holds the write lock for longer than the busy timeout.
	other, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	conn, err := other.Conn(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.ExecContext(t.Context(), `BEGIN IMMEDIATE`); err != nil {
		t.Fatal(err)
	}
	defer conn.ExecContext(context.Background(), `ROLLBACK`)

	s2, err := sqlitestore.Open(t.Context(), path, sqlitestore.WithBusyTimeout(time.Millisecond))
	if err == nil {
		defer s2.Close()
		_, _, err = s2.Commit(t.Context(), []store.Webhook{webhook("{}", &eventsv1.Event{EventId: "e", RequestId: "r"})})
	}
	if !errors.Is(err, store.ErrUnavailable) {
		t.Errorf("with the database locked: %v, want ErrUnavailable", err)
	}
}

// TestPurgeLeavesNoTraceInTheFile: the personal data a purge removes is
// gone from the file too, not left in the free space of its pages or in
// free pages (secure_delete), whatever the size of the bodies.
func TestPurgeLeavesNoTraceInTheFile(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "events.db")
	storePurged(t, path, 9000) // the first body on overflow pages
	b := readFile(t, path)
	for _, marker := range []string{"BODY-9198", "IDENTITY-9198"} {
		if n := bytes.Count(b, []byte(marker)); n > 0 {
			t.Errorf("the file holds %q %d times after the purge", marker, n)
		}
	}
}

// storePurged stores 20 webhooks at path whose bodies ("BODY-9198…",
// the first padded to firstPad bytes, the others to 500) and events
// ("IDENTITY-9198…") hold personal data, purges them all, and closes the
// store.
func storePurged(t *testing.T, path string, firstPad int) {
	t.Helper()
	s := open(t, path)
	ctx := t.Context()
	for i := range 20 {
		e := event(fmt.Sprintf("r%d", i), "e1", eventsv1.EventKind_EVENT_KIND_DELIVERY, "SENT", "SMS", i)
		e.Identity = fmt.Sprintf("IDENTITY-919800000%03d", i)
		wh := hookOf(e)
		pad := 500
		if i == 0 {
			pad = firstPad
		}
		wh.Body = fmt.Appendf(nil, `{"mobile":"BODY-919800000%03d","pad":"%s"}`, i, strings.Repeat("x", pad))
		if _, _, err := s.Commit(ctx, []store.Webhook{wh}); err != nil {
			t.Fatal(err)
		}
	}
	if n, err := s.PurgePII(ctx, time.Now().Add(time.Hour), nil); err != nil || n != 20 {
		t.Fatalf("PurgePII = %d, %v; want 20", n, err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
}

// A new database holds personal data: it and the files SQLite keeps beside
// it are readable by their owner only, whatever the umask.
func TestNewDatabaseIsPrivate(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "events.db")
	s := open(t, path)
	if _, _, err := s.Commit(t.Context(), []store.Webhook{hookOf(event("r1", "e1", eventsv1.EventKind_EVENT_KIND_DELIVERY, "SENT", "SMS", 0))}); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{path, path + "-wal", path + "-shm"} {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if mode := fi.Mode().Perm(); mode != 0o600 {
			t.Errorf("%s: mode %v, want 0600", filepath.Base(p), mode)
		}
	}
}

// A write-ahead log removed while open is noticed: commits went on into
// the removed log, and a crash then lost the whole database. So did
// retention's purges, which said they had removed what the file kept.
func TestWALRemoved(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "events.db")
	s := open(t, path)
	defer s.Close()
	if _, _, err := s.Commit(t.Context(), []store.Webhook{hookOf(event("r1", "e1", eventsv1.EventKind_EVENT_KIND_DELIVERY, "SENT", "SMS", 0))}); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(path + "-wal"); err != nil {
		t.Fatal(err)
	}
	if err := s.Ping(t.Context()); !errors.Is(err, store.ErrUnavailable) || !strings.Contains(err.Error(), "write-ahead log") {
		t.Errorf("Ping %v, want ErrUnavailable naming the write-ahead log", err)
	}
	if _, _, err := s.Commit(t.Context(), []store.Webhook{webhook("{}", &eventsv1.Event{EventId: "e", RequestId: "r"})}); !errors.Is(err, store.ErrUnavailable) {
		t.Errorf("Commit %v, want ErrUnavailable", err)
	}
	if n, err := s.PurgePII(t.Context(), time.Now().Add(time.Hour), nil); !errors.Is(err, store.ErrUnavailable) {
		t.Errorf("PurgePII %d, %v; want ErrUnavailable", n, err)
	}
}

// TestFileRemovedOrReplaced: a database file removed or replaced while
// open is noticed: what the store would write then would reach no one,
// and a purge would remove personal data only from the file gone.
func TestFileRemovedOrReplaced(t *testing.T) {
	t.Parallel()
	for _, replace := range []bool{false, true} {
		dir := t.TempDir()
		path := filepath.Join(dir, "events.db")
		s := open(t, path)
		defer s.Close()
		if _, _, err := s.Commit(t.Context(), []store.Webhook{hookOf(event("r1", "e1", eventsv1.EventKind_EVENT_KIND_DELIVERY, "SENT", "SMS", 0))}); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(path, filepath.Join(dir, "moved.db")); err != nil {
			t.Fatal(err)
		}
		if replace {
			if err := os.WriteFile(path, nil, 0o600); err != nil {
				t.Fatal(err)
			}
		}
		if err := s.Ping(t.Context()); !errors.Is(err, store.ErrUnavailable) {
			t.Errorf("replaced %v: Ping %v, want ErrUnavailable", replace, err)
		}
		if _, _, err := s.Commit(t.Context(), []store.Webhook{webhook("{}", &eventsv1.Event{EventId: "e", RequestId: "r"})}); !errors.Is(err, store.ErrUnavailable) {
			t.Errorf("replaced %v: Commit %v, want ErrUnavailable", replace, err)
		}
		if n, err := s.PurgePII(t.Context(), time.Now().Add(time.Hour), nil); !errors.Is(err, store.ErrUnavailable) {
			t.Errorf("replaced %v: PurgePII %d, %v; want ErrUnavailable", replace, n, err)
		}
	}
}

// TestFileReplacedWhileWaiting: a commit that waits for the writer lock
// (a purge's chunk holds it) while the file is replaced is refused when it
// gets the lock, rather than stored into the file no one reads: the check
// is made with the lock held.
func TestFileReplacedWhileWaiting(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	path := filepath.Join(dir, "events.db")
	s := open(t, path)
	defer s.Close()
	release := sqlitestore.HoldWriter(s)
	waiting := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		close(waiting)
		_, _, err := s.Commit(t.Context(), []store.Webhook{hookOf(event("r1", "e1", eventsv1.EventKind_EVENT_KIND_DELIVERY, "SENT", "SMS", 0))})
		done <- err
	}()
	<-waiting
	if err := os.Rename(path, filepath.Join(dir, "moved.db")); err != nil {
		t.Fatal(err)
	}
	release()
	if err := <-done; !errors.Is(err, store.ErrUnavailable) {
		t.Errorf("Commit that waited while the file was replaced: %v, want ErrUnavailable", err)
	}
}

// TestProcessLock: with WithProcessLock, a second Store on the file (a
// second server process) is refused until the first closes.
func TestProcessLock(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "events.db")
	first, err := sqlitestore.Open(t.Context(), path, sqlitestore.WithProcessLock())
	if err != nil {
		t.Fatal(err)
	}
	if second, err := sqlitestore.Open(t.Context(), path, sqlitestore.WithProcessLock()); err == nil || !strings.Contains(err.Error(), "another process") {
		if second != nil {
			second.Close()
		}
		t.Fatalf("a second Open with the lock: %v, want it refused", err)
	} else if n := strings.Count(err.Error(), path); n != 1 {
		t.Errorf("the refusal names the file %d times: %v", n, err)
	}
	// By another path to the same file too.
	link := filepath.Join(t.TempDir(), "link.db")
	if err := os.Symlink(path, link); err != nil {
		t.Fatal(err)
	}
	if second, err := sqlitestore.Open(t.Context(), link, sqlitestore.WithProcessLock()); err == nil || !strings.Contains(err.Error(), "another process") {
		if second != nil {
			second.Close()
		}
		t.Fatalf("a second Open through a symlink: %v, want it refused", err)
	}
	if err := first.Close(); err != nil {
		t.Fatal(err)
	}
	second, err := sqlitestore.Open(t.Context(), path, sqlitestore.WithProcessLock())
	if err != nil {
		t.Fatalf("Open once the first closed: %v", err)
	}
	second.Close()
}

// TestDamagedBody: a stored body that is not UTF-8 (ingest stores only
// UTF-8, so the file is damaged) is listed with its invalid bytes replaced:
// handed on as it was, gRPC refused to encode the page and told the client
// why in its own words; failing the page lost it for every caller.
func TestDamagedBody(t *testing.T) {
	t.Parallel()
	var logs testlog.Buffer
	s, err := sqlitestore.Open(t.Context(), filepath.Join(t.TempDir(), "events.db"), sqlitestore.WithLogger(slog.New(slog.NewJSONHandler(&logs, nil))))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := t.Context()
	if _, _, err := s.Commit(ctx, []store.Webhook{hookOf(event("r1", "e1", eventsv1.EventKind_EVENT_KIND_DELIVERY, "SENT", "SMS", 0))}); err != nil {
		t.Fatal(err)
	}
	if _, err := sqlitestore.WriterDB(s).ExecContext(ctx, `UPDATE webhooks SET body = X'7B22FF7D'`); err != nil {
		t.Fatal(err)
	}
	events, _, err := s.ListEvents(ctx, "r1", store.Page{})
	if err != nil || len(events) != 1 || events[0].GetRawBody() != "{\"\uFFFD}" {
		t.Fatalf("ListEvents of a damaged body: %v, %v; want its event, the body's invalid byte replaced", events, err)
	}
	if damaged := logs.Matching(t, map[string]any{"level": "ERROR", "otpless_request_id": "r1"}); len(damaged) != 1 {
		t.Errorf("log lines %v, want one error naming the request", logs.String())
	}
}

// TestFullDiskIsNotReady: once a commit fails for want of space, Ping
// fails, saying so, until the file system has room again or a commit
// succeeds. (max_page_count stands in for the disk: SQLite answers both
// with SQLITE_FULL.)
func TestFullDiskIsNotReady(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	s := open(t, filepath.Join(t.TempDir(), "events.db"))
	defer s.Close()
	var free atomic.Uint64
	sqlitestore.SetFreeBytes(s, func(string) (uint64, error) { return free.Load(), nil })
	big := func(id string) []store.Webhook {
		return []store.Webhook{webhook(`{"pad":"`+strings.Repeat("x", 64<<10)+`"}`, &eventsv1.Event{EventId: id, RequestId: "r-" + id})}
	}
	if _, _, err := s.Commit(ctx, big("e1")); err != nil {
		t.Fatal(err)
	}
	// With the disk nearly full and no commit failed, readiness holds: a
	// disk that still takes the commits is not full.
	if err := s.Ping(ctx); err != nil {
		t.Fatalf("Ping before any failed commit: %v", err)
	}
	db := sqlitestore.WriterDB(s)
	var pages int64
	if err := db.QueryRowContext(ctx, `PRAGMA page_count`).Scan(&pages); err != nil {
		t.Fatal(err)
	}
	if _, err := db.ExecContext(ctx, fmt.Sprintf(`PRAGMA max_page_count = %d`, pages)); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.Commit(ctx, big("e2")); !errors.Is(err, store.ErrUnavailable) {
		t.Fatalf("Commit past max_page_count: %v, want ErrUnavailable", err)
	}
	err := s.Ping(ctx)
	if !errors.Is(err, store.ErrUnavailable) || !strings.Contains(err.Error(), "disk is full") {
		t.Fatalf("Ping after a commit failed for want of space: %v, want ErrUnavailable saying the disk is full", err)
	}
	// Space freed: ready again.
	free.Store(sqlitestore.MinFree)
	if err := s.Ping(ctx); err != nil {
		t.Fatalf("Ping with %d bytes free: %v", free.Load(), err)
	}
	// Full again; then a commit that succeeds ends it whatever statfs says.
	free.Store(0)
	if _, _, err := s.Commit(ctx, big("e3")); !errors.Is(err, store.ErrUnavailable) {
		t.Fatalf("Commit past max_page_count: %v, want ErrUnavailable", err)
	}
	if err := s.Ping(ctx); err == nil {
		t.Fatal("Ping after a second failed commit: nil, want an error")
	}
	if _, err := db.ExecContext(ctx, `PRAGMA max_page_count = 1073741823`); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.Commit(ctx, big("e4")); err != nil {
		t.Fatal(err)
	}
	if err := s.Ping(ctx); err != nil {
		t.Fatalf("Ping after a commit succeeded: %v", err)
	}
}

// TestFullDiskReadinessKeepsItsFigures: the readiness warning after a
// commit failed for want of space says how much is free and how much it
// waits for in figures the log's masking leaves alone (it takes a run of
// seven digits for a phone number, and wrote "ready again at ******16").
func TestFullDiskReadinessKeepsItsFigures(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	s := open(t, filepath.Join(t.TempDir(), "events.db"))
	defer s.Close()
	sqlitestore.SetFreeBytes(s, func(string) (uint64, error) { return 5<<20 + 123456, nil })
	big := func(id string) []store.Webhook {
		return []store.Webhook{webhook(`{"pad":"`+strings.Repeat("x", 64<<10)+`"}`, &eventsv1.Event{EventId: id, RequestId: "r-" + id})}
	}
	if _, _, err := s.Commit(ctx, big("e1")); err != nil {
		t.Fatal(err)
	}
	db := sqlitestore.WriterDB(s)
	var pages int64
	if err := db.QueryRowContext(ctx, `PRAGMA page_count`).Scan(&pages); err != nil {
		t.Fatal(err)
	}
	if _, err := db.ExecContext(ctx, fmt.Sprintf(`PRAGMA max_page_count = %d`, pages)); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.Commit(ctx, big("e2")); !errors.Is(err, store.ErrUnavailable) {
		t.Fatalf("Commit past max_page_count: %v, want ErrUnavailable", err)
	}
	err := s.Ping(ctx)
	if err == nil {
		t.Fatal("Ping after a commit failed for want of space: nil, want an error")
	}
	logged := observe.Scrub(err.Error())
	for _, want := range []string{"5240 KiB free", "16 MiB"} {
		if !strings.Contains(logged, want) {
			t.Errorf("Ping's error as the log writes it: %q; want it to say %q", logged, want)
		}
	}
}

// TestCommitToDamagedRequest: a commit that meets a request's damaged row
// fails as store.ErrDamaged, which the writer takes as the mark of one
// webhook to commit apart from the others of its batch.
func TestCommitToDamagedRequest(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "events.db")
	s := open(t, path)
	defer s.Close()
	ctx := t.Context()
	if _, _, err := s.Commit(ctx, []store.Webhook{hookOf(event("r1", "e1", eventsv1.EventKind_EVENT_KIND_DELIVERY, "SENT", "SMS", 0))}); err != nil {
		t.Fatal(err)
	}
	// Through a connection of its own, as damage comes: the store's event
	// cache, which kept r1's events, is dropped when another writes.
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.ExecContext(ctx, `UPDATE requests SET events = X'01' WHERE request_id = 'r1'`); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.Commit(ctx, []store.Webhook{hookOf(event("r1", "e2", eventsv1.EventKind_EVENT_KIND_DELIVERY, "DELIVERED", "SMS", 1))}); !errors.Is(err, store.ErrDamaged) {
		t.Errorf("Commit to a request whose events column is damaged: %v, want ErrDamaged", err)
	}
	if _, _, err := s.Commit(ctx, []store.Webhook{hookOf(event("r2", "e3", eventsv1.EventKind_EVENT_KIND_DELIVERY, "SENT", "SMS", 0))}); err != nil {
		t.Errorf("Commit to another request: %v", err)
	}
}

// TestExportOfDamagedData: stored data that cannot be read back (an
// event that does not decode, a request's events column out of shape)
// fails the export as what it is, not as store.ErrUnavailable, which told
// the operator to run db copy again for a fault no retry mends.
func TestExportOfDamagedData(t *testing.T) {
	t.Parallel()
	for name, damage := range map[string]string{
		"event":  `UPDATE events SET data = X'FF' WHERE request_id = ''`,
		"column": `UPDATE requests SET events = X'01' WHERE request_id = 'r1'`,
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			s := open(t, filepath.Join(t.TempDir(), "events.db"))
			defer s.Close()
			ctx := t.Context()
			if _, _, err := s.Commit(ctx, []store.Webhook{hookOf(
				event("r1", "e1", eventsv1.EventKind_EVENT_KIND_DELIVERY, "SENT", "SMS", 0),
				event("", "u1", eventsv1.EventKind_EVENT_KIND_SYSTEM, "UNREACHABLE", "", 0))}); err != nil {
				t.Fatal(err)
			}
			if _, err := sqlitestore.WriterDB(s).ExecContext(ctx, damage); err != nil {
				t.Fatal(err)
			}
			err := s.Export(ctx, 10, func([]store.Webhook) error { return nil })
			if !errors.Is(err, store.ErrDamaged) || errors.Is(err, store.ErrUnavailable) {
				t.Errorf("Export of a damaged %s = %v; want ErrDamaged, not ErrUnavailable", name, err)
			}
			if name == "column" {
				if _, _, err := s.ListEvents(ctx, "r1", store.Page{}); !errors.Is(err, store.ErrDamaged) || errors.Is(err, store.ErrUnavailable) {
					t.Errorf("ListEvents of a damaged %s = %v; want ErrDamaged, not ErrUnavailable", name, err)
				}
			}
		})
	}
}

// TestUpdatedAtColumn: a request's updated_at column repeats its
// snapshot's update_time, in Unix milliseconds, for queries of the file.
func TestUpdatedAtColumn(t *testing.T) {
	t.Parallel()
	s := open(t, filepath.Join(t.TempDir(), "events.db"))
	defer s.Close()
	ctx := t.Context()
	for i, status := range []string{"SENT", "DELIVERED"} {
		if _, _, err := s.Commit(ctx, []store.Webhook{hookOf(event("r1", status, eventsv1.EventKind_EVENT_KIND_DELIVERY, status, "SMS", 1000*i+1))}); err != nil {
			t.Fatal(err)
		}
		r, err := s.GetRequest(ctx, "r1")
		if err != nil {
			t.Fatal(err)
		}
		var updated int64
		if err := sqlitestore.WriterDB(s).QueryRowContext(ctx, `SELECT updated_at FROM requests WHERE request_id = 'r1'`).Scan(&updated); err != nil {
			t.Fatal(err)
		}
		if want := r.GetUpdateTime().AsTime().UnixMilli(); updated != want {
			t.Errorf("after commit %d: updated_at = %d, want the snapshot's update_time %d", i+1, updated, want)
		}
	}
}
