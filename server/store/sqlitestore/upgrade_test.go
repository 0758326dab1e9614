package sqlitestore_test

import (
	"bytes"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	eventsv1 "github.com/otpless-events/otpless-events/gen/otpless/events/v1"
	"github.com/otpless-events/otpless-events/server/pii"
	"github.com/otpless-events/otpless-events/server/state"
	"github.com/otpless-events/otpless-events/server/store"
	"github.com/otpless-events/otpless-events/server/store/sqlitestore"
)

// oldDatabase writes, at path, a database as binaries before migration 0004
// left it: schema 0001-0003, every event in its own events row. It holds
// requests (more than one move transaction takes) of three events from two
// webhooks each, one webhook with events of two requests and of none, and
// one webhook already purged. It returns each request's events as
// ListEvents should return them (in ListEvents order, with bodies) and
// snapshots, and how many webhook bodies are not yet purged.
func oldDatabase(t *testing.T, path string, requests int) (map[string][]*eventsv1.Event, map[string]*eventsv1.AuthRequest, int) {
	t.Helper()
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	tx, err := db.Begin()
	if err != nil {
		t.Fatal(err)
	}
	exec := func(q string, args ...any) {
		t.Helper()
		if _, err := tx.Exec(q, args...); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	exec(`CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at INTEGER NOT NULL) STRICT`)
	files, err := filepath.Glob("migrations/000[123]_*.sql")
	if err != nil || len(files) != 3 {
		t.Fatalf("migrations 1-3: %v, %v", files, err)
	}
	for i, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		exec(string(b))
		exec(`INSERT INTO schema_migrations VALUES (?, ?, 0)`, i+1, filepath.Base(f))
	}

	t0 := time.Date(2026, 11, 1, 10, 0, 0, 0, time.UTC)
	var (
		webhookID int64
		listed    = map[string][]*eventsv1.Event{}
		snapshots = map[string]*eventsv1.AuthRequest{}
		unpurged  int
	)
	// webhook stores one body with its events, as the old Commit did.
	webhook := func(body string, received time.Time, events ...*eventsv1.Event) {
		webhookID++
		if body != "" {
			unpurged++
		}
		exec(`INSERT INTO webhooks (id, received_at, body) VALUES (?, ?, ?)`, webhookID, received.UnixMilli(), []byte(body))
		for _, e := range events {
			e.ReceiveTime = timestamppb.New(received)
			if body == "" { // purged: so were its events
				pii.StripEvent(e)
			}
			data, err := proto.Marshal(e)
			if err != nil {
				t.Fatal(err)
			}
			exec(`INSERT INTO events (request_id, event_id, webhook_id, event_time_ms, data) VALUES (?, ?, ?, ?, ?)`,
				e.GetRequestId(), e.GetEventId(), webhookID, store.EventTimeMillis(e), data)
			if rid := e.GetRequestId(); rid != "" {
				listed[rid] = append(listed[rid], withRawBody(e, body))
			}
		}
	}
	event := func(rid, eid, status string, at time.Time) *eventsv1.Event {
		return &eventsv1.Event{
			EventId: eid, RequestId: rid, Kind: eventsv1.EventKind_EVENT_KIND_DELIVERY, Status: status,
			Channel: "SMS", Identity: "91" + rid, EventTime: timestamppb.New(at),
		}
	}
	for r := range requests {
		rid := fmt.Sprintf("r%05d", r)
		at := t0.Add(time.Duration(r) * time.Second)
		// Event ids not in event time order: ListEvents sorts by time.
		webhook(`{"sent":"`+rid+`"}`, at, event(rid, "z-sent", "SENT", at))
		webhook(`{"delivered":"`+rid+`"}`, at.Add(time.Second),
			event(rid, "b-delivered", "DELIVERED", at.Add(500*time.Millisecond)),
			event(rid, "a-read", "READ", at.Add(900*time.Millisecond)))
	}
	webhook(`{"shared":1}`, t0, event("r00000", "shared", "FAILED", t0), event("r00001", "shared", "FAILED", t0),
		&eventsv1.Event{EventId: "no-request", Kind: eventsv1.EventKind_EVENT_KIND_SYSTEM, Status: "UNREACHABLE", Identity: "9100000"})
	webhook("", t0, event("r00002", "purged-before", "SENT", t0.Add(-time.Hour)))

	for rid, events := range listed {
		slices.SortFunc(events, func(a, b *eventsv1.Event) int {
			return store.CursorAfter(a).Compare(store.CursorAfter(b))
		})
		snap := state.Fold(rid, events)
		snap.Revision, snap.UpdateTime = 2, timestamppb.New(t0.Add(time.Hour))
		data, err := proto.Marshal(snap)
		if err != nil {
			t.Fatal(err)
		}
		exec(`INSERT INTO requests (request_id, revision, data, updated_at) VALUES (?, ?, ?, ?)`, rid, 2, data, snap.GetUpdateTime().AsTime().UnixMilli())
		snapshots[rid] = snap
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	return listed, snapshots, unpurged
}

func withRawBody(e *eventsv1.Event, body string) *eventsv1.Event {
	c := proto.CloneOf(e)
	c.RawBody = body
	return c
}

// A database from before migration 0004 opens with its events moved into
// their requests' rows, unchanged as the API shows them: snapshots, event
// lists and bodies, duplicates recognized, retention purging the old
// webhooks.
func TestUpgradeMovesEvents(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	path := filepath.Join(t.TempDir(), "events.db")
	listed, snapshots, unpurged := oldDatabase(t, path, 2500)

	var logs bytes.Buffer
	s, err := sqlitestore.Open(ctx, path, sqlitestore.WithLogger(slog.New(slog.NewTextHandler(&logs, nil))))
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	if !strings.Contains(logs.String(), "moved events into their requests' rows") || !strings.Contains(logs.String(), "requests=2500") {
		t.Errorf("Open logged:\n%s\nwant the move of 2500 requests", logs.String())
	}
	db := rawDB(t, path)
	if n := count(t, db, `SELECT COUNT(*) FROM events`); n != 1 {
		t.Errorf("%d rows left in events, want the one request-less event", n)
	}
	if n := count(t, db, `SELECT COUNT(*) FROM requests WHERE typeof(events) != 'blob' OR length(events) = 0`); n != 0 {
		t.Errorf("%d requests without an events blob", n)
	}

	check := func(when string) {
		t.Helper()
		for rid, want := range listed {
			got, _, err := s.ListEvents(ctx, rid, store.Page{Size: 100})
			if err != nil || len(got) != len(want) {
				t.Fatalf("%s: ListEvents(%s) = %d events, %v; want %d", when, rid, len(got), err, len(want))
			}
			for i := range got {
				if !proto.Equal(got[i], want[i]) {
					t.Fatalf("%s: %s event %d = %v, want %v", when, rid, i, got[i], want[i])
				}
			}
			snap, err := s.GetRequest(ctx, rid)
			if err != nil || !proto.Equal(snap, snapshots[rid]) {
				t.Fatalf("%s: GetRequest(%s) = %v, %v; want %v", when, rid, snap, err, snapshots[rid])
			}
		}
	}
	check("after the move")

	// Reopening moves nothing more.
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	logs.Reset()
	if s, err = sqlitestore.Open(ctx, path, sqlitestore.WithLogger(slog.New(slog.NewTextHandler(&logs, nil)))); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(logs.String(), "moved") {
		t.Errorf("second Open logged a move:\n%s", logs.String())
	}
	check("after reopening")

	// Old events are duplicates; a new one folds with them.
	old := listed["r00007"][0]
	e := proto.CloneOf(old)
	e.RawBody = ""
	late := &eventsv1.Event{EventId: "late", RequestId: "r00007", Kind: eventsv1.EventKind_EVENT_KIND_DELIVERY, Status: "CLICKED", Channel: "SMS",
		EventTime: timestamppb.New(time.Date(2026, 11, 2, 0, 0, 0, 0, time.UTC)), ReceiveTime: timestamppb.New(time.Date(2026, 11, 2, 0, 0, 0, 0, time.UTC))}
	res, changes, err := s.Commit(ctx, []store.Webhook{
		{Body: []byte(old.GetRawBody()), Received: old.GetReceiveTime().AsTime(), Events: []*eventsv1.Event{e}},
		{Body: []byte(`{"late":1}`), Received: late.GetReceiveTime().AsTime(), Events: []*eventsv1.Event{late}},
	})
	if err != nil || !res[0].Events[0].Duplicate || res[1].Events[0].Duplicate || len(changes) != 1 {
		t.Fatalf("Commit of a retry and a new event = %v, %v, %v", res, changes, err)
	}
	want := state.Fold("r00007", append(slices.Clone(listed["r00007"]), late))
	if got := changes[0].Request; got.GetRevision() != 3 || got.GetEventCount() != want.GetEventCount() || got.GetStatus() != want.GetStatus() {
		t.Errorf("snapshot after a new event = %v, want the fold of the old events and the new one at revision 3", got)
	}

	// Retention finds the moved events of every webhook not yet purged.
	cutoff := time.Date(2026, 11, 1, 23, 0, 0, 0, time.UTC)
	n, err := s.PurgePII(ctx, cutoff, nil)
	if err != nil || n != unpurged {
		t.Fatalf("PurgePII = %d, %v; want the %d webhooks not yet purged", n, err, unpurged)
	}
	for rid := range listed {
		events, _, err := s.ListEvents(ctx, rid, store.Page{Size: 100})
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range events {
			if e.GetReceiveTime().AsTime().Before(cutoff) && (e.GetRawBody() != "" || e.GetIdentity() != "") {
				t.Fatalf("%s/%s keeps personal data after the purge: %v", rid, e.GetEventId(), e)
			}
		}
	}
	if n := count(t, db, `SELECT COUNT(*) FROM events WHERE instr(data, CAST('9100000' AS BLOB)) > 0`); n != 0 {
		t.Errorf("the request-less event keeps its identity after the purge")
	}
}

// A database from before migration 0004 exports every webhook with its
// events, those of the webhook it had purged too (0004 named the requests
// of the webhooks not yet purged only).
func TestUpgradeExports(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "events.db")
	listed, _, _ := oldDatabase(t, path, 3)
	s, err := sqlitestore.Open(t.Context(), path)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	// A webhook a page: its requests are the ones its request_ids names.
	checkExport(t, s, 1, listed)
	if n := count(t, rawDB(t, path), `SELECT COUNT(*) FROM sqlite_schema WHERE name = 'fill_request_ids'`); n != 0 {
		t.Errorf("the list of webhooks to fill in is left after Open")
	}
}

// A move that fails part way keeps what it moved, stores nothing twice, and
// goes on at the next Open.
func TestUpgradeMoveResumes(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	path := filepath.Join(t.TempDir(), "events.db")
	listed, snapshots, _ := oldDatabase(t, path, 2500)

	// The last request loses its row: its transaction, the third, fails.
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	const last = "r02499"
	var (
		revision, updated int64
		data              []byte
	)
	if err := db.QueryRow(`SELECT revision, data, updated_at FROM requests WHERE request_id = ?`, last).Scan(&revision, &data, &updated); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(`DELETE FROM requests WHERE request_id = ?`, last); err != nil {
		t.Fatal(err)
	}
	if s, err := sqlitestore.Open(ctx, path); err == nil || !strings.Contains(err.Error(), last) {
		if s != nil {
			s.Close()
		}
		t.Fatalf("Open with a request's row missing = %v; want an error naming %s", err, last)
	}
	left := count(t, db, `SELECT COUNT(DISTINCT request_id) FROM events WHERE request_id != ''`)
	if left != 500 {
		t.Errorf("%d requests' events left in events after two of three transactions, want 500", left)
	}

	if _, err := db.Exec(`INSERT INTO requests (request_id, revision, data, updated_at) VALUES (?, ?, ?, ?)`, last, revision, data, updated); err != nil {
		t.Fatal(err)
	}
	s, err := sqlitestore.Open(ctx, path)
	if err != nil {
		t.Fatalf("Open after the fix: %v", err)
	}
	defer s.Close()
	if n := count(t, db, `SELECT COUNT(*) FROM events WHERE request_id != ''`); n != 0 {
		t.Errorf("%d events not moved", n)
	}
	for _, rid := range []string{"r00000", "r01500", last} {
		got, _, err := s.ListEvents(ctx, rid, store.Page{})
		if err != nil || len(got) != len(listed[rid]) {
			t.Fatalf("ListEvents(%s) = %d events, %v; want %d, each once", rid, len(got), err, len(listed[rid]))
		}
		if snap, err := s.GetRequest(ctx, rid); err != nil || !proto.Equal(snap, snapshots[rid]) {
			t.Errorf("GetRequest(%s) = %v, %v", rid, snap, err)
		}
	}
}

// A fill of request_ids that fails part way (on a database already past
// migration 0004: its events moved, its purged webhook naming no request)
// starts over at the next Open, and names each request once.
func TestUpgradeFillResumes(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	path := filepath.Join(t.TempDir(), "events.db")
	listed, _, _ := oldDatabase(t, path, 2500)
	s, err := sqlitestore.Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	s.Close()

	// As a build with migration 0004 and not 0005 left it, and the last
	// request's row unreadable: the fill's third transaction fails.
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	const last = "r02499"
	var events []byte
	if err := db.QueryRow(`SELECT events FROM requests WHERE request_id = ?`, last).Scan(&events); err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{
		`UPDATE webhooks SET request_ids = '[]' WHERE length(body) = 0`,
		`DELETE FROM schema_migrations WHERE version = 5`,
		`UPDATE requests SET events = X'FF' WHERE request_id = '` + last + `'`,
	} {
		if _, err := db.Exec(q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	if s, err := sqlitestore.Open(ctx, path); err == nil || !strings.Contains(err.Error(), last) {
		if s != nil {
			s.Close()
		}
		t.Fatalf("Open with a request's events unreadable = %v; want an error naming %s", err, last)
	}
	if _, err := db.Exec(`UPDATE requests SET events = ? WHERE request_id = ?`, events, last); err != nil {
		t.Fatal(err)
	}
	if s, err = sqlitestore.Open(ctx, path); err != nil {
		t.Fatalf("Open after the fix: %v", err)
	}
	defer s.Close()
	var ids string
	if err := db.QueryRow(`SELECT request_ids FROM webhooks WHERE length(body) = 0`).Scan(&ids); err != nil || ids != `["r00002"]` {
		t.Errorf("the purged webhook's request_ids after a resumed fill = %s, %v; want [\"r00002\"]", ids, err)
	}
	checkExport(t, s, store.ExportPageSize, listed)
}

// checkExport exports s, size webhooks a page, and fails the test unless
// each request of listed has its events exported, the webhook purged
// before the upgrade without personal data.
func checkExport(t *testing.T, s *sqlitestore.Store, size int, listed map[string][]*eventsv1.Event) {
	t.Helper()
	exported := map[string]int{}
	err := s.Export(t.Context(), size, func(page []store.Webhook) error {
		for _, wh := range page {
			for _, e := range wh.Events {
				if e.GetRequestId() != "" {
					exported[e.GetRequestId()]++
				}
				if e.GetEventId() == "purged-before" && (len(wh.Body) != 0 || e.GetIdentity() != "") {
					t.Errorf("the webhook purged before the upgrade exported with personal data: %q, %v", wh.Body, e)
				}
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("Export: %v", err)
	}
	for rid, events := range listed {
		if exported[rid] != len(events) {
			t.Errorf("%s: %d events exported, want its %d", rid, exported[rid], len(events))
		}
	}
}

// A webhook whose events cannot be found (its request_ids names none that
// holds one) fails the export, naming it: copied, it would store nothing,
// and its events would be lost without a word.
func TestExportRefusesAWebhookWithoutEvents(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "events.db")
	oldDatabase(t, path, 3)
	s, err := sqlitestore.Open(t.Context(), path)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var id int64
	if err := db.QueryRow(`UPDATE webhooks SET request_ids = '[]' WHERE id = (SELECT min(id) FROM webhooks
		WHERE request_ids != '[]' AND id NOT IN (SELECT webhook_id FROM events)) RETURNING id`).Scan(&id); err != nil {
		t.Fatal(err)
	}
	// A page of one: with another webhook of its request in its page, its
	// events would be found through that one's request_ids.
	err = s.Export(t.Context(), 1, func([]store.Webhook) error { return nil })
	if want := fmt.Sprintf("webhook %d: none of its events found", id); !errors.Is(err, store.ErrDamaged) || !strings.Contains(err.Error(), want) || errors.Is(err, store.ErrUnavailable) {
		t.Errorf("Export with the events of webhook %d not found = %v; want an error saying %q, not ErrUnavailable", id, err, want)
	}
}
