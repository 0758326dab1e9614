package sqlitestore_test

import (
	"bytes"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	eventsv1 "github.com/otpless-events/otpless-events/gen/otpless/events/v1"
	"github.com/otpless-events/otpless-events/server/store"
	"github.com/otpless-events/otpless-events/server/store/sqlitestore"
)

// stoppedDB makes a database of n webhooks at a new path and closes it.
func stoppedDB(t *testing.T, n int) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "events.db")
	s := open(t, path)
	for i := range n {
		wh := hookOf(event(fmt.Sprintf("r%d", i), "e1", eventsv1.EventKind_EVENT_KIND_DELIVERY, "SENT", "SMS", i))
		wh.Body = fmt.Appendf(nil, `{"n":%d,"pad":%q}`, i, strings.Repeat("x", 400))
		if _, _, err := s.Commit(t.Context(), []store.Webhook{wh}); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	return path
}

// damagePage writes garbage over the page of table's b-tree root, with
// the store closed.
func damagePage(t *testing.T, path, table string) {
	t.Helper()
	db := rawDB(t, path)
	pageSize := count(t, db, `PRAGMA page_size`)
	root := count(t, db, `SELECT rootpage FROM sqlite_schema WHERE name = '`+table+`'`)
	if root < 2 {
		t.Fatalf("%s: root page %d", table, root)
	}
	db.Close()
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	garbage := []byte(strings.Repeat("\xde\xad\xbe\xef", pageSize/4))
	if _, err := f.WriteAt(garbage, int64(root-1)*int64(pageSize)); err != nil {
		t.Fatal(err)
	}
}

func TestCheck(t *testing.T) {
	t.Parallel()
	for _, quick := range []bool{false, true} {
		t.Run(fmt.Sprintf("quick=%v", quick), func(t *testing.T) {
			t.Parallel()
			path := stoppedDB(t, 50)
			if problems, _, err := sqlitestore.Check(t.Context(), path, quick, 5); err != nil || len(problems) != 0 {
				t.Fatalf("a fresh database: %q, %v; want no problems", problems, err)
			}
			damagePage(t, path, "webhooks")
			problems, _, err := sqlitestore.Check(t.Context(), path, quick, 5)
			if err != nil || len(problems) == 0 {
				t.Fatalf("a damaged page: %q, %v; want problems reported", problems, err)
			}
			t.Logf("reported: %q", problems)
		})
	}
}

func TestCheckNotADatabase(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "events.db")
	if err := os.WriteFile(path, []byte(strings.Repeat("not a database ", 1000)), 0o600); err != nil {
		t.Fatal(err)
	}
	if problems, _, err := sqlitestore.Check(t.Context(), path, false, 5); err != nil || len(problems) == 0 {
		t.Fatalf("%q, %v; want a problem reported", problems, err)
	}
}

// TestCheckMissing: a path with no database is an error, and is not made
// a new, empty database.
func TestCheckMissing(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "events.db")
	if _, _, err := sqlitestore.Check(t.Context(), path, false, 5); err == nil || !strings.Contains(err.Error(), "no database there") {
		t.Fatalf("%v, want no database", err)
	}
	if _, err := os.Stat(path); err == nil {
		t.Fatal("Check created the file")
	}
}

// TestCheckRefusedWhileOpen: Check takes the lock a server holds, so it
// fails while one has the file, and a server cannot open it meanwhile.
func TestCheckRefusedWhileOpen(t *testing.T) {
	t.Parallel()
	path := stoppedDB(t, 1)
	s, err := sqlitestore.Open(t.Context(), path, sqlitestore.WithProcessLock())
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := sqlitestore.Check(t.Context(), path, false, 5); err == nil || !strings.Contains(err.Error(), "another process") {
		t.Errorf("Check while a store has the lock: %v, want it refused", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, _, err := sqlitestore.Check(t.Context(), path, false, 5); err != nil {
		t.Fatalf("Check once the store closed: %v", err)
	}
}

// TestServerRefusedDuringCheck: a server started while Check runs is
// refused. Not parallel: it sets a hook of the package.
func TestServerRefusedDuringCheck(t *testing.T) {
	path := stoppedDB(t, 1)
	openErr := openMeanwhile(t, path)
	if _, _, err := sqlitestore.Check(t.Context(), path, false, 5); err != nil {
		t.Fatal(err)
	}
	if *openErr == nil || !strings.Contains((*openErr).Error(), "another process") {
		t.Fatalf("Open with the lock during Check: %v, want it refused", *openErr)
	}
}

// openMeanwhile makes the next Check or Vacuum open path as a server does
// once it holds the lock, and returns where that open's error will be.
func openMeanwhile(t *testing.T, path string) *error {
	var openErr error
	sqlitestore.SetOfflineLocked(t, func() {
		s, err := sqlitestore.Open(t.Context(), path, sqlitestore.WithProcessLock())
		if err == nil {
			s.Close()
		}
		openErr = err
	})
	return &openErr
}

// TestVacuumRemovesResidue: after a purge, Vacuum leaves no copy of a
// personal value in the file's unused space (planted there by a write
// without secure_delete, as the copies a purge cannot reach are) nor in
// its write-ahead log, keeps what is stored, and makes the file no larger.
func TestVacuumRemovesResidue(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "events.db")
	storePurged(t, path, 500)
	ctx := t.Context()

	const planted = "PLANTED-919812345678"
	db, err := sql.Open("sqlite", "file:"+path+"?_pragma=secure_delete(0)")
	if err != nil {
		t.Fatal(err)
	}
	db.SetMaxOpenConns(1)
	for _, q := range []string{
		`CREATE TABLE residue (v TEXT)`,
		`WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 40)
			INSERT INTO residue SELECT '` + planted + `' || i || printf('%.500c', 'x') FROM n`,
		`DROP TABLE residue`,
	} {
		if _, err := db.ExecContext(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	if n := bytes.Count(readFile(t, path), []byte(planted)); n == 0 {
		t.Fatal("the planted value is not in the file: the test plants nothing")
	}

	before, after, err := sqlitestore.Vacuum(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%d bytes before, %d after", before, after)
	if size := int64(len(readFile(t, path))); after != size || after > before {
		t.Errorf("Vacuum: %d bytes before, %d after; the file has %d", before, after, size)
	}
	for _, p := range []string{path, path + "-wal"} {
		if n := bytes.Count(readFile(t, p), []byte(planted)); n > 0 {
			t.Errorf("%s holds the planted value %d times after Vacuum", filepath.Base(p), n)
		}
	}
	if problems, _, err := sqlitestore.Check(ctx, path, false, 5); err != nil || len(problems) > 0 {
		t.Errorf("Check after Vacuum: %q, %v", problems, err)
	}
	s := open(t, path)
	defer s.Close()
	if r, err := s.GetRequest(ctx, "r7"); err != nil || r.GetRequestId() != "r7" {
		t.Errorf("GetRequest after Vacuum: %v, %v", r, err)
	}
}

// readFile returns the file at path, or nothing when there is none.
func readFile(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	return b
}

// TestVacuumRefusedWhileOpen: Vacuum fails while a server has the file,
// and a server started while it runs is refused. Not parallel: it sets a
// hook of the package.
func TestVacuumRefusedWhileOpen(t *testing.T) {
	path := stoppedDB(t, 1)
	s, err := sqlitestore.Open(t.Context(), path, sqlitestore.WithProcessLock())
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := sqlitestore.Vacuum(t.Context(), path); err == nil || !strings.Contains(err.Error(), "another process") {
		t.Errorf("Vacuum while a store has the lock: %v, want it refused", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	openErr := openMeanwhile(t, path)
	if _, _, err := sqlitestore.Vacuum(t.Context(), path); err != nil {
		t.Fatal(err)
	}
	if *openErr == nil || !strings.Contains((*openErr).Error(), "another process") {
		t.Fatalf("Open with the lock during Vacuum: %v, want it refused", *openErr)
	}
}

// TestServeDamagedPage: a page SQLite finds malformed while the store
// serves fails a read, or a commit that meets it, as store.ErrDamaged (the
// server answers INTERNAL, 500, and the writer commits the others of the
// batch one at a time), not as store.ErrUnavailable (503, retried for a
// fault no retry mends); and Ping, which reads none of the damage, still
// answers: the server stays ready.
func TestServeDamagedPage(t *testing.T) {
	t.Parallel()
	path := stoppedDB(t, 50)
	damagePage(t, path, "requests")
	s := open(t, path)
	defer s.Close()
	ctx := t.Context()
	damaged := func(what string, err error) {
		t.Helper()
		if !errors.Is(err, store.ErrDamaged) || errors.Is(err, store.ErrUnavailable) {
			t.Errorf("%s over a damaged page: %v; want ErrDamaged, not ErrUnavailable", what, err)
		}
	}
	_, err := s.GetRequest(ctx, "r1")
	damaged("GetRequest", err)
	_, _, err = s.ListEvents(ctx, "r1", store.Page{})
	damaged("ListEvents", err)
	_, _, err = s.Commit(ctx, []store.Webhook{hookOf(event("r1", "e2", eventsv1.EventKind_EVENT_KIND_DELIVERY, "DELIVERED", "SMS", 1))})
	damaged("Commit", err)
	if err := s.Ping(ctx); err != nil {
		t.Errorf("Ping of a store with a damaged page of requests: %v; want nil", err)
	}
}

// A store a later build migrated is not read by this build's check, which
// says so; it must not send the user to serve or db copy of this build,
// which refuse such a store, but to the build that migrated it.
func TestCheckNewerStore(t *testing.T) {
	t.Parallel()
	path := stoppedDB(t, 5)
	markNewer(t, path, 99)
	problems, r, err := sqlitestore.Check(t.Context(), path, false, 5)
	if err != nil || len(problems) != 0 {
		t.Fatalf("Check: %q, %v", problems, err)
	}
	if !strings.Contains(r.Skipped, "newer") || strings.Contains(r.Skipped, "serve") || strings.Contains(r.Skipped, "db copy") {
		t.Fatalf("rows not read because %q; want it to say the schema is newer, not to run serve or db copy", r.Skipped)
	}
}

// A store whose migration 5 another build applied under another name is
// not read by check, which names both and the README's section on it,
// rather than reading its rows as this build's schema.
func TestCheckOtherBuildsStore(t *testing.T) {
	t.Parallel()
	path := stoppedDB(t, 5)
	markOtherBuild(t, path)
	problems, r, err := sqlitestore.Check(t.Context(), path, false, 5)
	if err != nil || len(problems) != 0 {
		t.Fatalf("Check: %q, %v", problems, err)
	}
	if !strings.Contains(r.Skipped, "0005_purge_error_messages.sql") || !strings.Contains(r.Skipped, "0005_purged_request_ids.sql") || !strings.Contains(r.Skipped, "Upgrading") {
		t.Fatalf("rows not read because %q; want both names of migration 5 and where to read what to do", r.Skipped)
	}
}
