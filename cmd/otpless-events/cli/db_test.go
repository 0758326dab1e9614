package cli_test

import (
	"bytes"
	"database/sql"
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	eventsv1 "github.com/otpless-events/otpless-events/gen/otpless/events/v1"
	"github.com/otpless-events/otpless-events/server/store"
	"github.com/otpless-events/otpless-events/server/store/sqlitestore"
)

// dataDir returns a data directory holding a database as serve makes it,
// of one webhook, closed.
func dataDir(t *testing.T) (dir, path string) {
	t.Helper()
	dir = t.TempDir()
	path = filepath.Join(dir, "otpless-events.db")
	s, err := sqlitestore.Open(t.Context(), path)
	if err != nil {
		t.Fatal(err)
	}
	wh := store.Webhook{Body: []byte(`{"mobile":"+919800000001"}`), Events: []*eventsv1.Event{{EventId: "e1", RequestId: "r1", Status: "SENT"}}}
	if _, _, err := s.Commit(t.Context(), []store.Webhook{wh}); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	return dir, path
}

func TestDBCheck(t *testing.T) {
	t.Parallel()
	dir, path := dataDir(t)
	for _, args := range [][]string{{"db", "check", "--data-dir", dir}, {"db", "check", "--quick", "--store", "sqlite://" + path}} {
		if code, out, errOut := run(t, args...); code != 0 || !strings.Contains(out, "ok") {
			t.Fatalf("%q on a fresh database: exit %d, %q, %q", args, code, out, errOut)
		}
	}

	// Garbage over the second page, the root of a table.
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	pageSize := int(binary.BigEndian.Uint16(b[16:18]))
	copy(b[pageSize:2*pageSize], strings.Repeat("\xde\xad\xbe\xef", pageSize/4))
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	code, out, errOut := run(t, "db", "check", "--data-dir", dir)
	if code != 1 || !strings.Contains(out, "page 2") || !strings.Contains(errOut, "damaged") {
		t.Fatalf("a damaged page: exit %d, %q, %q; want 1, the page named and the file said damaged", code, out, errOut)
	}
}

// TestDBVacuum: db vacuum prints the file's size before and after, and
// leaves a database that checks clean.
func TestDBVacuum(t *testing.T) {
	t.Parallel()
	dir, path := dataDir(t)
	code, out, errOut := run(t, "db", "vacuum", "--data-dir", dir)
	var before, after int64
	if _, err := fmt.Sscanf(strings.TrimPrefix(out, path+": "), "%d bytes before, %d after", &before, &after); code != 0 || err != nil {
		t.Fatalf("exit %d, %q, %q (%v)", code, out, errOut, err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if after != fi.Size() || after > before {
		t.Errorf("%q; the file has %d bytes", out, fi.Size())
	}
	if code, out, errOut := run(t, "db", "check", "--data-dir", dir); code != 0 {
		t.Errorf("check after vacuum: exit %d, %q, %q", code, out, errOut)
	}
}

// TestRefusedWhileServing: db, and a second serve, refuse a database a
// server (a store with the process lock) has open, saying so and naming
// the file once; db copy refuses it as its source and as its destination.
func TestRefusedWhileServing(t *testing.T) {
	t.Parallel()
	dir, path := dataDir(t)
	s, err := sqlitestore.Open(t.Context(), path, sqlitestore.WithProcessLock())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for _, args := range [][]string{
		{"db", "check"},
		{"db", "vacuum"},
		{"db", "copy", "--to", filepath.Join(t.TempDir(), "copy.db")},
		{"serve", "--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0", "--metrics-addr", ""},
	} {
		code, _, errOut := run(t, append(args, "--data-dir", dir)...)
		if code != 1 || !strings.Contains(errOut, "another process has this database open") ||
			args[0] == "db" && !strings.Contains(errOut, "stop the server first") {
			t.Errorf("%s while serving: exit %d, %q", strings.Join(args[:2], " "), code, errOut)
		}
		if n := strings.Count(errOut, path); n != 1 {
			t.Errorf("%s while serving names the file %d times: %q", strings.Join(args[:2], " "), n, errOut)
		}
	}
	// Nor is a database a server has open a destination.
	other, _ := dataDir(t)
	code, _, errOut := run(t, "db", "copy", "--data-dir", other, "--to", path)
	if code != 1 || !strings.Contains(errOut, "destination: ") || !strings.Contains(errOut, "stop the server first") {
		t.Errorf("db copy to a database a server has open: exit %d, %q", code, errOut)
	}
}

// TestDBNotSQLite: a PostgreSQL store, or a data directory without a
// database, is refused.
func TestDBNotSQLite(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--store", "postgres://localhost/otpless"}, "embedded SQLite database only"},
		{[]string{"--data-dir", t.TempDir()}, "no database there"},
	} {
		code, _, errOut := run(t, append([]string{"db", "check"}, tc.args...)...)
		if code != 1 || !strings.Contains(errOut, tc.want) {
			t.Errorf("%q: exit %d, %q; want %q", tc.args, code, errOut, tc.want)
		}
	}
}

// TestDBDataDirIsAFile: db check and db vacuum with a --data-dir that is a
// file, not a directory, fail, exit 1, naming the database's path once
// (it was named twice, "check PATH: stat PATH: not a directory").
func TestDBDataDirIsAFile(t *testing.T) {
	t.Parallel()
	_, file := dataDir(t)
	path := filepath.Join(file, "otpless-events.db")
	for _, cmd := range []string{"check", "vacuum"} {
		code, _, errOut := run(t, "db", cmd, "--data-dir", file)
		if code != 1 || strings.Count(errOut, path) != 1 || !strings.Contains(errOut, "not a directory") {
			t.Errorf("db %s --data-dir FILE: exit %d, %q; want 1, %s named once, not a directory", cmd, code, errOut, path)
		}
	}
}

// TestDBDataDirFromEnvironment: like serve, db reads --data-dir from
// $OTPLESS_EVENTS_DATA_DIR.
func TestDBDataDirFromEnvironment(t *testing.T) {
	dir, _ := dataDir(t)
	t.Setenv("OTPLESS_EVENTS_DATA_DIR", dir)
	if code, out, errOut := run(t, "db", "check"); code != 0 || !strings.Contains(out, dir) {
		t.Fatalf("exit %d, %q, %q", code, out, errOut)
	}
}

// TestDBUnknownSubcommand: a mistyped db subcommand is refused, exit 1,
// as the root command refuses one, rather than answered with the help and
// exit 0, as though it had run (db chek && … would go on); db alone still
// shows the help.
func TestDBUnknownSubcommand(t *testing.T) {
	t.Parallel()
	code, out, errOut := run(t, "db", "chek")
	if code != 1 || !strings.Contains(errOut, `unknown command "chek"`) {
		t.Errorf("db chek: exit %d, %q, %q; want 1, the command named", code, out, errOut)
	}
	if code, out, errOut := run(t, "db"); code != 0 || !strings.Contains(out, "vacuum") {
		t.Errorf("db: exit %d, %q, %q; want 0 and the help", code, out, errOut)
	}
}

// TestDBCheckNoStore: a database file left empty (truncated, or a restore
// that wrote nothing), or that is another program's database, holds none
// of the store's tables: db check says so and exits 1, rather than ok (a
// server would start on it as a new, empty store).
func TestDBCheckNoStore(t *testing.T) {
	t.Parallel()
	dir, path := dataDir(t)
	if err := os.Truncate(path, 0); err != nil {
		t.Fatal(err)
	}
	other := sqliteFile(t, "other.db", `CREATE TABLE notes (v TEXT)`)
	cases := [][]string{{"--data-dir", dir}, {"--quick", "--store", other}}
	for _, path := range otherPrograms(t) {
		cases = append(cases, []string{"--store", path})
	}
	for i, args := range cases {
		code, out, errOut := run(t, append([]string{"db", "check"}, args...)...)
		if code != 1 || !strings.Contains(out, "holds no store") || !strings.Contains(errOut, "failed the check") || strings.Contains(errOut, "damaged") {
			t.Errorf("db check %q: exit %d, %q, %q; want 1, the file said to hold no store (not to be damaged)", args, code, out, errOut)
		}
		// What it says a server would do is what serve does: start on
		// the file as a new store, or, with another program's
		// schema_migrations, refuse it.
		if foreign := i >= 2; foreign != strings.Contains(out, "a server refuses it") || foreign == strings.Contains(out, "a server would start on it") {
			t.Errorf("db check %q: %q; want it to say a server %s", args, out, map[bool]string{false: "would start on it", true: "refuses it"}[foreign])
		}
	}
}

// TestDBVacuumNoStore: db vacuum refuses a file that holds no store
// (emptied, or another program's database), exit 1, and leaves it as it
// is, as check and copy do, rather than rewriting it and printing its
// sizes as though it had vacuumed the store.
func TestDBVacuumNoStore(t *testing.T) {
	t.Parallel()
	dir, path := dataDir(t)
	if err := os.Truncate(path, 0); err != nil {
		t.Fatal(err)
	}
	other := sqliteFile(t, "other.db", `CREATE TABLE notes (v TEXT); INSERT INTO notes VALUES ('x'); DELETE FROM notes`)
	cases := []struct {
		args []string
		path string
	}{{[]string{"--data-dir", dir}, path}, {[]string{"--store", other}, other}}
	for _, path := range otherPrograms(t) {
		cases = append(cases, struct {
			args []string
			path string
		}{[]string{"--store", path}, path})
	}
	for _, tc := range cases {
		before, err := os.ReadFile(tc.path)
		if err != nil {
			t.Fatal(err)
		}
		code, out, errOut := run(t, append([]string{"db", "vacuum"}, tc.args...)...)
		if code != 1 || out != "" || !strings.Contains(errOut, "holds no store") {
			t.Errorf("db vacuum %q: exit %d, %q, %q; want 1, nothing on stdout, the file said to hold no store", tc.args, code, out, errOut)
		}
		if after, err := os.ReadFile(tc.path); err != nil || string(after) != string(before) {
			t.Errorf("db vacuum %q changed the file: %d bytes before, %d after (%v)", tc.args, len(before), len(after), err)
		}
	}
}

// TestDBNotWritable: a database file this process may read but not write
// (another user's, say the server's) is refused by check, vacuum and copy,
// exit 1, saying so, and SQLite makes no -wal or -shm beside it: owned by
// this user, they kept the server, run as the file's owner, from starting.
// Root may write any file, so as root it runs again as nobody.
func TestDBNotWritable(t *testing.T) {
	t.Parallel()
	if os.Geteuid() == 0 {
		runAsNobody(t, "TestDBNotWritable")
		return
	}
	dir, path := dataDir(t)
	if err := os.Chmod(path, 0o444); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{
		{"db", "check"},
		{"db", "vacuum"},
		{"db", "copy", "--to", filepath.Join(t.TempDir(), "copy.db")},
	} {
		code, out, errOut := run(t, append(args, "--data-dir", dir)...)
		if code != 1 || out != "" || !strings.Contains(errOut, "cannot write the database") {
			t.Errorf("%s of a file it may not write: exit %d, %q, %q; want 1, the file said not writable", strings.Join(args[:2], " "), code, out, errOut)
		}
		for _, suffix := range []string{"-wal", "-shm"} {
			if _, err := os.Stat(path + suffix); err == nil {
				t.Errorf("%s of a file it may not write left %s beside it", strings.Join(args[:2], " "), filepath.Base(path+suffix))
				os.Remove(path + suffix)
			}
		}
	}
}

// otherPrograms returns the database files of other programs that keep a
// schema_migrations table of their own, as Rails and golang-migrate do,
// or one with the store's columns, as a program's own bookkeeping may have.
func otherPrograms(t *testing.T) []string {
	t.Helper()
	var paths []string
	for name, schema := range map[string]string{
		"rails.db":   `CREATE TABLE schema_migrations (version varchar NOT NULL PRIMARY KEY); INSERT INTO schema_migrations VALUES ('20240101000000'); CREATE TABLE users (id INTEGER PRIMARY KEY, email TEXT)`,
		"migrate.db": `CREATE TABLE schema_migrations (version bigint NOT NULL PRIMARY KEY, dirty boolean NOT NULL); INSERT INTO schema_migrations VALUES (3, 0); CREATE TABLE users (id INTEGER PRIMARY KEY)`,
		"own.db":     `CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL); INSERT INTO schema_migrations VALUES (1, 'users', '2024-01-01'); CREATE TABLE users (id INTEGER PRIMARY KEY)`,
	} {
		paths = append(paths, sqliteFile(t, name, schema))
	}
	return paths
}

// sqliteFile makes a SQLite database named name in a directory of its own,
// holding what statements make, and returns its path.
func sqliteFile(t *testing.T, name, statements string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	execSQLite(t, path, statements)
	return path
}

// execSQLite runs statements on the SQLite database at path (made if not
// there), and closes it.
func execSQLite(t *testing.T, path, statements string) {
	t.Helper()
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(statements); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestDBCheckDamagedRows: stored data that does not decode, in cells
// SQLite's integrity_check finds sound (a request's events column or
// snapshot, a webhook's body or request ids, an event that names no
// request), fails db check, exit 1, counting the damaged rows and naming
// the first few, as db copy would fail on them; --quick runs SQLite's
// check only.
func TestDBCheckDamagedRows(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	path := filepath.Join(dir, "otpless-events.db")
	s, err := sqlitestore.Open(t.Context(), path)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 8 {
		wh := store.Webhook{
			Body:   []byte(fmt.Sprintf(`{"mobile":"+91980000000%d"}`, i)),
			Events: []*eventsv1.Event{{EventId: fmt.Sprintf("e%d", i), RequestId: fmt.Sprintf("r%d", i), Status: "SENT"}},
		}
		if i == 7 {
			wh.Events[0].RequestId = ""
		}
		if _, _, err := s.Commit(t.Context(), []store.Webhook{wh}); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if code, out, errOut := run(t, "db", "check", "--data-dir", dir); code != 0 || !strings.Contains(out, "ok") {
		t.Fatalf("db check of a sound store: exit %d, %q, %q", code, out, errOut)
	}

	execSQLite(t, path, `
		UPDATE requests SET events = X'01' WHERE request_id = 'r0';
		UPDATE requests SET data = X'ffffffff' WHERE request_id = 'r1';
		UPDATE requests SET events = CAST(substr(events, 1, length(events) - 1) || X'ff' AS BLOB) WHERE request_id = 'r2';
		UPDATE webhooks SET request_ids = '["r3"' WHERE id = (SELECT MIN(id) FROM webhooks) + 3;
		UPDATE events SET data = X'ffff' WHERE event_id = 'e7';`)
	// A byte of a webhook's body flipped in the file itself: no longer
	// UTF-8, and nothing SQLite checks.
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	at := strings.Index(string(b), "+919800000004")
	if at < 0 || strings.Count(string(b), "+919800000004") != 1 {
		t.Fatal("the body of webhook 5 is not in the file once")
	}
	b[at] = 0xff
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}

	if code, out, errOut := run(t, "db", "check", "--quick", "--data-dir", dir); code != 0 || !strings.Contains(out, "ok") {
		t.Errorf("db check --quick: exit %d, %q, %q; want 0: SQLite finds the file sound", code, out, errOut)
	}
	code, out, errOut := run(t, "db", "check", "--data-dir", dir)
	if code != 1 || !strings.Contains(errOut, "6 stored rows") || !strings.Contains(errOut, "damaged") {
		t.Errorf("db check: exit %d, stderr %q; want 1 and 6 stored rows said damaged", code, errOut)
	}
	for _, named := range []string{`request "r0"`, `request "r1"`, `request "r2"`, "webhook 4", "webhook 5", "and 1 more"} {
		if !strings.Contains(out, named) {
			t.Errorf("db check: stdout %q does not name %s", out, named)
		}
	}
	t.Logf("stdout:\n%s", out)
}

// TestDBCheckRowsDisagree: rows that each decode but do not agree (a
// webhook's request ids naming a request that holds none of its events)
// fail db check as they fail db copy.
func TestDBCheckRowsDisagree(t *testing.T) {
	t.Parallel()
	dir, path := dataDir(t)
	execSQLite(t, path, `UPDATE webhooks SET request_ids = '["r9"]'`)
	code, out, errOut := run(t, "db", "check", "--data-dir", dir)
	if code != 1 || !strings.Contains(out, "none of its events found") || !strings.Contains(errOut, "1 stored row is damaged") {
		t.Errorf("db check: exit %d, %q, %q; want 1 and the webhook named", code, out, errOut)
	}
}

// TestDBLostTable: a store that lost one of its tables, its own
// schema_migrations still there, is a damaged store, not another
// program's database: db check says so, exit 1 as for damage; db vacuum,
// db copy (from it or into it) and serve refuse it as damaged, and leave
// it as it is.
func TestDBLostTable(t *testing.T) {
	t.Parallel()
	for _, table := range []string{"webhooks", "requests", "events"} {
		dir, path := dataDir(t)
		execSQLite(t, path, `DROP TABLE `+table)
		before, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		code, out, errOut := run(t, "db", "check", "--data-dir", dir)
		if code != 1 || !strings.Contains(out, table) || !strings.Contains(errOut, "it is damaged") || strings.Contains(out+errOut, "another program") {
			t.Errorf("db check of a store without %s: exit %d, %q, %q; want 1, the table named and the store said damaged", table, code, out, errOut)
		}
		other, _ := dataDir(t)
		for _, args := range [][]string{
			{"db", "vacuum", "--data-dir", dir},
			{"db", "copy", "--data-dir", dir, "--to", filepath.Join(t.TempDir(), "copy.db")},
			{"db", "copy", "--data-dir", other, "--to", path},
			{"serve", "--data-dir", dir, "--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0", "--metrics-addr", ""},
		} {
			code, _, errOut := run(t, args...)
			if code != 1 || !strings.Contains(errOut, "damaged") || !strings.Contains(errOut, table) || strings.Contains(errOut, "another program") {
				t.Errorf("%s of a store without %s: exit %d, %q; want 1, the store said damaged, the table named", strings.Join(args[:2], " "), table, code, errOut)
			}
		}
		if after, err := os.ReadFile(path); err != nil || !bytes.Equal(after, before) {
			t.Errorf("a store without %s was changed (%v)", table, err)
		}
	}
}
