package sqlitestore_test

import (
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
			if problems, err := sqlitestore.Check(t.Context(), path, quick); err != nil || len(problems) != 0 {
				t.Fatalf("a fresh database: %q, %v; want no problems", problems, err)
			}
			damagePage(t, path, "webhooks")
			problems, err := sqlitestore.Check(t.Context(), path, quick)
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
	if problems, err := sqlitestore.Check(t.Context(), path, false); err != nil || len(problems) == 0 {
		t.Fatalf("%q, %v; want a problem reported", problems, err)
	}
}

// TestCheckMissing: a path with no database is an error, and is not made
// a new, empty database.
func TestCheckMissing(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "events.db")
	if _, err := sqlitestore.Check(t.Context(), path, false); err == nil || !strings.Contains(err.Error(), "no database there") {
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
	if _, err := sqlitestore.Check(t.Context(), path, false); err == nil || !strings.Contains(err.Error(), "another process") {
		t.Errorf("Check while a store has the lock: %v, want it refused", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := sqlitestore.Check(t.Context(), path, false); err != nil {
		t.Fatalf("Check once the store closed: %v", err)
	}
}

// TestServerRefusedDuringCheck: a server started while Check runs is
// refused. Not parallel: it sets a hook of the package.
func TestServerRefusedDuringCheck(t *testing.T) {
	path := stoppedDB(t, 1)
	var openErr error
	sqlitestore.SetOfflineLocked(t, func() {
		s, err := sqlitestore.Open(t.Context(), path, sqlitestore.WithProcessLock())
		if err == nil {
			s.Close()
		}
		openErr = err
	})
	if _, err := sqlitestore.Check(t.Context(), path, false); err != nil {
		t.Fatal(err)
	}
	if openErr == nil || !strings.Contains(openErr.Error(), "another process") {
		t.Fatalf("Open with the lock during Check: %v, want it refused", openErr)
	}
}
