package cli_test

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"google.golang.org/protobuf/proto"

	eventsv1 "github.com/otpless-events/otpless-events/gen/otpless/events/v1"
	"github.com/otpless-events/otpless-events/internal/fixtures"
	"github.com/otpless-events/otpless-events/server/normalize"
	"github.com/otpless-events/otpless-events/server/store"
	"github.com/otpless-events/otpless-events/server/store/pgstore"
	"github.com/otpless-events/otpless-events/server/store/pgstore/pgtest"
	"github.com/otpless-events/otpless-events/server/store/sqlitestore"
	"github.com/otpless-events/otpless-events/server/store/storetest"
)

// copySource is a data directory whose database holds every shared
// scenario, each body committed as it arrived (some in batches of two, as
// serve's writer takes them), the first scenario's webhooks purged by
// retention. It returns the directory, the request ids, those purged, and
// how many webhooks and distinct events the database holds.
func copySource(t *testing.T) (dir string, requests, purged []string, webhooks, events int) {
	t.Helper()
	dir = t.TempDir()
	s, err := sqlitestore.Open(t.Context(), filepath.Join(dir, "otpless-events.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	received := time.Date(2025, 11, 26, 12, 0, 0, 0, time.UTC)
	var cutoff time.Time
	for k, sc := range fixtures.Scenarios(t) {
		var batch []store.Webhook
		for i, body := range sc.Bodies {
			received = received.Add(time.Second)
			req, err := normalize.Decode(body)
			if err != nil {
				t.Fatal(err)
			}
			evs, err := normalize.Events(req, received)
			if err != nil {
				t.Fatal(err)
			}
			for _, e := range evs {
				if id := e.GetRequestId(); id != "" && !slices.Contains(requests, id) {
					requests = append(requests, id)
					if k == 0 {
						purged = append(purged, id)
					}
				}
			}
			batch = append(batch, store.Webhook{Body: body, Received: received, Events: evs})
			if len(batch) == 2 || i%3 == 0 || i == len(sc.Bodies)-1 {
				results, _, err := s.Commit(t.Context(), batch)
				if err != nil {
					t.Fatal(err)
				}
				for _, r := range results {
					if n := newEvents(r); n > 0 {
						webhooks, events = webhooks+1, events+n
					}
				}
				batch = nil
			}
		}
		if k == 0 {
			cutoff = received.Add(time.Millisecond)
		}
	}
	if n, err := s.PurgePII(t.Context(), cutoff, nil); err != nil || n == 0 {
		t.Fatalf("PurgePII = %d, %v; want the first scenario's webhooks", n, err)
	}
	return dir, requests, purged, webhooks, events
}

func newEvents(r store.Result) (n int) {
	for _, e := range r.Events {
		if !e.Duplicate {
			n++
		}
	}
	return n
}

// openCopied opens a SQLite store db copy left, closed when the test ends.
func openCopied(t *testing.T, path string) store.Store {
	t.Helper()
	s, err := sqlitestore.Open(t.Context(), path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// checkCopy runs db copy with args, twice, and checks what it did, with
// the source and the destination opened after each run (a store of this
// process open while db copy takes and drops the lock on its file would
// lose SQLite's locks): every request alike, the purged ones still purged,
// and nothing changed by the second run.
func checkCopy(t *testing.T, args []string, openFrom, open func() store.Store, requests, purged []string, webhooks, events int) {
	t.Helper()
	args = append([]string{"db", "copy"}, args...)
	want := fmt.Sprintf("%d webhooks read: %d events stored, 0 duplicates, %d new requests\n", webhooks, events, len(requests))
	if code, out, errOut := run(t, args...); code != 0 || out != want {
		t.Fatalf("%q: exit %d, %q, %q; want 0, %q", args, code, out, errOut, want)
	}
	from, to := openFrom(), open()
	storetest.CheckCopied(t, from, to, requests)
	from.Close()
	snapshots := map[string]*eventsv1.AuthRequest{}
	for _, rid := range requests {
		if snapshots[rid], _ = to.GetRequest(t.Context(), rid); snapshots[rid] == nil {
			t.Fatalf("%s not copied", rid)
		}
	}
	for _, rid := range purged {
		evs, _, err := to.ListEvents(t.Context(), rid, store.Page{Size: store.MaxPageSize})
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range evs {
			if e.GetRawBody() != "" || e.GetPhone() != nil || e.GetIdentity() != "" || e.GetToken() != "" || e.GetError().GetMessage() != "" {
				t.Errorf("%s/%s was purged, and its copy holds personal data: %v", rid, e.GetEventId(), e)
			}
		}
	}
	to.Close()

	want = fmt.Sprintf("%d webhooks read: 0 events stored, %d duplicates, 0 new requests\n", webhooks, events)
	if code, out, errOut := run(t, args...); code != 0 || out != want {
		t.Fatalf("%q again: exit %d, %q, %q; want 0, %q", args, code, out, errOut, want)
	}
	to = open()
	defer to.Close()
	for _, rid := range requests {
		if got, err := to.GetRequest(t.Context(), rid); err != nil || !proto.Equal(got, snapshots[rid]) {
			t.Errorf("%s after a second copy: %v, %v; want it unchanged, %v", rid, got, err, snapshots[rid])
		}
	}
}

// openIn returns a function opening the database of the data directory
// dir.
func openIn(t *testing.T, dir string) func() store.Store {
	return func() store.Store { return openCopied(t, filepath.Join(dir, "otpless-events.db")) }
}

// TestDBCopy: db copy from the embedded database into another SQLite file
// gives every request of the scenarios the same events and state, leaves
// what retention purged purged, and adds nothing when run again.
func TestDBCopy(t *testing.T) {
	t.Parallel()
	dir, requests, purged, webhooks, events := copySource(t)
	dst := filepath.Join(t.TempDir(), "copy.db")
	checkCopy(t, []string{"--data-dir", dir, "--to", dst}, openIn(t, dir), func() store.Store { return openCopied(t, dst) },
		requests, purged, webhooks, events)
}

// TestDBCopyPostgres: db copy from the embedded database into PostgreSQL,
// and from there into a new SQLite file.
func TestDBCopyPostgres(t *testing.T) {
	t.Parallel()
	dsn, _ := pgtest.Schema(t)
	dir, requests, purged, webhooks, events := copySource(t)
	openPG := func() store.Store {
		s, err := pgstore.Open(t.Context(), dsn)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	}
	checkCopy(t, []string{"--data-dir", dir, "--to", dsn}, openIn(t, dir), openPG, requests, purged, webhooks, events)

	dst := filepath.Join(t.TempDir(), "back.db")
	checkCopy(t, []string{"--store", dsn, "--to", "sqlite://" + dst}, openPG, func() store.Store { return openCopied(t, dst) },
		requests, purged, webhooks, events)

	if code, _, errOut := run(t, "db", "copy", "--store", dsn, "--to", pgtest.WithParam(t, dsn, "application_name", "other")); code != 1 || !strings.Contains(errOut, "the destination is the source") {
		t.Errorf("db copy of a schema onto itself: exit %d, %q", code, errOut)
	}
}

// TestDBCopyRefused: db copy refuses a source that is not there, no
// destination, the source's file as the destination, by whatever path,
// a directory as the destination, and one in a directory not there.
func TestDBCopyRefused(t *testing.T) {
	t.Parallel()
	dir, path := dataDir(t)
	link := filepath.Join(t.TempDir(), "link.db")
	if err := os.Symlink(path, link); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--data-dir", t.TempDir(), "--to", filepath.Join(t.TempDir(), "x.db")}, "no database there"},
		// Refused before the source is looked for.
		{[]string{"--data-dir", t.TempDir(), "--to", "mysql://db.internal/x"}, `destination: store scheme "mysql" is not supported`},
		{[]string{"--data-dir", t.TempDir(), "--to", "postgres://u@127.0.0.1:1/db?pool_max_conns=many"}, "destination: pgstore: cannot parse"},
		{[]string{"--data-dir", dir}, "--to is required"},
		{[]string{"--data-dir", dir, "--to", path}, "is the source"},
		{[]string{"--store", path, "--to", "sqlite://" + link}, "is the source"},
		// A directory (a data directory, say) is no database file, whatever
		// its mode.
		{[]string{"--data-dir", dir, "--to", t.TempDir()}, "is a directory, not a database file"},
		// Said as such, not as the lock's "no such file or directory".
		{[]string{"--data-dir", dir, "--to", filepath.Join(t.TempDir(), "nodir", "x.db")}, "nodir: no such directory"},
	} {
		code, _, errOut := run(t, append([]string{"db", "copy"}, tc.args...)...)
		if code != 1 || !strings.Contains(errOut, tc.want) {
			t.Errorf("%q: exit %d, %q; want %q", tc.args, code, errOut, tc.want)
		}
	}
}

// TestDBCopyPostgresSourceWithoutStore: a PostgreSQL source whose schema
// holds no store (a search_path left at public, or naming another schema)
// is refused, as a data directory without a database is, rather than
// given the tables and copied as an empty store with exit 0; the schema
// is left as it was, and no destination is made.
func TestDBCopyPostgresSourceWithoutStore(t *testing.T) {
	t.Parallel()
	dsn, schema := pgtest.Schema(t)
	dst := filepath.Join(t.TempDir(), "copy.db")
	code, out, errOut := run(t, "db", "copy", "--store", dsn, "--to", dst)
	if code != 1 || !strings.Contains(errOut, "source: ") || !strings.Contains(errOut, "no store there") {
		t.Errorf("db copy from an empty schema: exit %d, %q, %q; want 1, the source said to hold no store", code, out, errOut)
	}
	conn, err := pgx.Connect(t.Context(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(t.Context())
	var tables int
	if err := conn.QueryRow(t.Context(), `SELECT count(*) FROM pg_tables WHERE schemaname = $1`, schema).Scan(&tables); err != nil {
		t.Fatal(err)
	}
	if tables != 0 {
		t.Errorf("db copy from an empty schema left %d tables in it; want none", tables)
	}
	if _, err := os.Stat(dst); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("db copy from an empty schema made its destination: %v", err)
	}
}

// TestDBCopySQLiteSourceWithoutStore: a SQLite source file that holds no
// store (empty, or another program's database) is refused, as a missing
// one is, rather than given the tables and copied as an empty store with
// exit 0; the file is left as it was.
func TestDBCopySQLiteSourceWithoutStore(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	empty := filepath.Join(dir, "empty.db")
	if err := os.WriteFile(empty, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	other := sqliteFile(t, "other.db", `CREATE TABLE notes (v TEXT); INSERT INTO notes VALUES ('x')`)
	for _, src := range append([]string{empty, other}, otherPrograms(t)...) {
		before, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		dst := filepath.Join(t.TempDir(), "copy.db")
		code, out, errOut := run(t, "db", "copy", "--store", src, "--to", dst)
		if code != 1 || !strings.Contains(errOut, "source: ") || !strings.Contains(errOut, "no store there") {
			t.Errorf("db copy from %s: exit %d, %q, %q; want 1, the source said to hold no store", filepath.Base(src), code, out, errOut)
		}
		if after, err := os.ReadFile(src); err != nil || !bytes.Equal(after, before) {
			t.Errorf("db copy from %s changed it: %d bytes before, %d after (%v)", filepath.Base(src), len(before), len(after), err)
		}
		if _, err := os.Stat(dst); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("db copy from %s made its destination: %v", filepath.Base(src), err)
		}
	}
}

// A copy stopped by damaged data in the destination says so: the advice
// for damaged data is about the store that holds it, and a user told the
// source was damaged would check the wrong one. The source's damage is
// named as the source's.
func TestDBCopyNamesTheDamagedStore(t *testing.T) {
	t.Parallel()
	src, _ := dataDir(t)
	_, dst := dataDir(t)
	_, damaged := dataDir(t)
	// r1's events column does not decode: the copy reads the damaged
	// source's to export it, and the destination's to commit r1's webhook.
	for _, path := range []string{dst, damaged} {
		execSQLite(t, path, `UPDATE requests SET events = X'01' WHERE request_id = 'r1'`)
	}
	// A store that lost a table is found damaged as it is opened.
	_, lost := dataDir(t)
	execSQLite(t, lost, `DROP TABLE requests`)
	for _, tc := range []struct {
		name, from, to, want string
		destination          bool // the destination holds the damage
	}{
		{"a damaged destination", src, dst, "copy: destination: ", true},
		{"a destination that lost a table", src, lost, "destination: ", true},
		{"a damaged source", filepath.Dir(damaged), filepath.Join(t.TempDir(), "copy.db"), "copy: source: ", false},
	} {
		code, _, errOut := run(t, "db", "copy", "--data-dir", tc.from, "--to", tc.to)
		if code != 1 || !strings.Contains(errOut, tc.want) || !strings.Contains(errOut, "damaged") ||
			strings.Contains(errOut, "the destination holds damaged data") != tc.destination {
			t.Errorf("db copy with %s: exit %d, %q; want 1, %q, and the damaged store named", tc.name, code, errOut, tc.want)
		}
	}
}

// TestDBCopyDamagedSource: a copy that meets source data that does not
// decode, or a page of the file SQLite finds malformed, fails, exit 1,
// saying the data is damaged and not to run it again to go on: a run
// again stops at the same data.
func TestDBCopyDamagedSource(t *testing.T) {
	t.Parallel()
	for _, damage := range []func(t *testing.T, db *sql.DB, path string){
		func(t *testing.T, db *sql.DB, _ string) {
			if _, err := db.Exec(`UPDATE requests SET events = X'01' WHERE request_id = 'r1'`); err != nil {
				t.Fatal(err)
			}
		},
		// Garbage over the root page of the webhooks table.
		func(t *testing.T, db *sql.DB, path string) {
			var root, pageSize int
			if err := db.QueryRow(`SELECT rootpage, (SELECT page_size FROM pragma_page_size) FROM sqlite_schema WHERE name = 'webhooks'`).Scan(&root, &pageSize); err != nil {
				t.Fatal(err)
			}
			if err := db.Close(); err != nil {
				t.Fatal(err)
			}
			b, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			copy(b[(root-1)*pageSize:root*pageSize], strings.Repeat("\xde\xad\xbe\xef", pageSize/4))
			if err := os.WriteFile(path, b, 0o600); err != nil {
				t.Fatal(err)
			}
		},
	} {
		dir, path := dataDir(t)
		db, err := sql.Open("sqlite", path)
		if err != nil {
			t.Fatal(err)
		}
		damage(t, db, path)
		if err := db.Close(); err != nil {
			t.Fatal(err)
		}
		dst := filepath.Join(t.TempDir(), "copy.db")
		for range 2 {
			code, out, errOut := run(t, "db", "copy", "--data-dir", dir, "--to", dst)
			if code != 1 || out != "" || !strings.Contains(errOut, "damaged") || strings.Contains(errOut, "again to go on") {
				t.Errorf("db copy of damaged data: exit %d, %q, %q; want 1, the data said damaged, and no run again advised", code, out, errOut)
			}
			// The destination it created is gone again, with its -wal and
			// -shm: neither a run again nor serve meets a half store.
			if !strings.Contains(errOut, "removed") {
				t.Errorf("db copy of damaged data: %q; want the destination it created said removed", errOut)
			}
			for _, f := range []string{dst, dst + "-wal", dst + "-shm"} {
				if _, err := os.Stat(f); !errors.Is(err, fs.ErrNotExist) {
					t.Errorf("db copy of damaged data left %s (%v)", filepath.Base(f), err)
				}
			}
		}
		// A destination that was there before the copy stays, and keeps
		// what it held.
		_, existing := dataDir(t)
		code, _, errOut := run(t, "db", "copy", "--data-dir", dir, "--to", existing)
		if code != 1 || strings.Contains(errOut, "removed") {
			t.Errorf("db copy of damaged data to an existing store: exit %d, %q; want 1, nothing removed", code, errOut)
		}
		s, err := sqlitestore.Open(t.Context(), existing, sqlitestore.WithExisting())
		if err != nil {
			t.Fatalf("the existing destination after the copy failed: %v", err)
		}
		if _, err := s.GetRequest(t.Context(), "r1"); err != nil {
			t.Errorf("the existing destination after the copy failed: %v", err)
		}
		s.Close()
	}
}

// TestDBCopyToOtherProgram: a destination file of another program that
// keeps a schema_migrations table of its own is refused as such, exit 1,
// and left as it was, rather than switched to WAL and refused as a store
// of a newer build, or failed on its migrations.
func TestDBCopyToOtherProgram(t *testing.T) {
	t.Parallel()
	dir, _ := dataDir(t)
	for _, dst := range otherPrograms(t) {
		before, err := os.ReadFile(dst)
		if err != nil {
			t.Fatal(err)
		}
		code, out, errOut := run(t, "db", "copy", "--data-dir", dir, "--to", dst)
		if code != 1 || out != "" || !strings.Contains(errOut, "destination: ") || !strings.Contains(errOut, "another program's database") {
			t.Errorf("db copy to %s: exit %d, %q, %q; want 1, the destination said to be another program's database", filepath.Base(dst), code, out, errOut)
		}
		if after, err := os.ReadFile(dst); err != nil || !bytes.Equal(after, before) {
			t.Errorf("db copy to %s changed it (%v)", filepath.Base(dst), err)
		}
	}
}

// TestDBCopyPostgresNoInsert: a copy into a schema whose role may read its
// tables but not insert into them fails, exit 1, saying the role lacks a
// privilege to grant, not that the store is unavailable and to run db
// copy again (a run again meets the same grant).
func TestDBCopyPostgresNoInsert(t *testing.T) {
	t.Parallel()
	dsn, schema := pgtest.Schema(t)
	s, err := pgstore.Open(t.Context(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	role := schema + "_reader"
	admin, err := pgx.Connect(t.Context(), pgtest.DSN(t))
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(t.Context())
	sq, rq := pgx.Identifier{schema}.Sanitize(), pgx.Identifier{role}.Sanitize()
	if _, err := admin.Exec(t.Context(), "CREATE ROLE "+rq+" LOGIN"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		// Before the schema is dropped (cleanups run last first).
		conn, err := pgx.Connect(context.Background(), pgtest.DSN(t))
		if err != nil {
			t.Error(err)
			return
		}
		defer conn.Close(context.Background())
		for _, q := range []string{"DROP OWNED BY " + rq, "DROP ROLE " + rq} {
			if _, err := conn.Exec(context.Background(), q); err != nil {
				t.Errorf("%s: %v", q, err)
			}
		}
	})
	for _, q := range []string{"GRANT USAGE ON SCHEMA " + sq + " TO " + rq, "GRANT SELECT ON ALL TABLES IN SCHEMA " + sq + " TO " + rq} {
		if _, err := admin.Exec(t.Context(), q); err != nil {
			t.Fatal(err)
		}
	}
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatal(err)
	}
	u.User = url.User(role)
	dir, _ := dataDir(t)
	code, out, errOut := run(t, "db", "copy", "--data-dir", dir, "--to", u.String())
	if code != 1 || out != "" || !strings.Contains(errOut, "permission denied") || strings.Contains(errOut, "unavailable") ||
		strings.Contains(errOut, "again to go on") || !strings.Contains(errOut, "grant") {
		t.Errorf("db copy to a role without INSERT: exit %d, %q, %q; want 1, a privilege to grant, not unavailable", code, out, errOut)
	}
}

// TestDBCopyMalformedSchema: a source whose schema SQLite finds malformed
// fails at open, exit 1, said damaged, not unavailable.
func TestDBCopyMalformedSchema(t *testing.T) {
	t.Parallel()
	dir, path := dataDir(t)
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	// The schema table's text, its first page after the file's header:
	// the statement that made requests no longer parses.
	at := strings.Index(string(b), "CREATE TABLE requests")
	if at < 0 {
		t.Fatal("no schema text in the file")
	}
	copy(b[at:], "CREATE TABLE (equests")
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	code, out, errOut := run(t, "db", "copy", "--data-dir", dir, "--to", filepath.Join(t.TempDir(), "copy.db"))
	if code != 1 || out != "" || !strings.Contains(errOut, "damaged") || strings.Contains(errOut, "unavailable") {
		t.Errorf("db copy of a source with a malformed schema: exit %d, %q, %q; want 1, said damaged", code, out, errOut)
	}
}
