package server

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"google.golang.org/protobuf/proto"

	eventsv1 "github.com/otpless-events/otpless-events/gen/otpless/events/v1"
	"github.com/otpless-events/otpless-events/server/store"
	"github.com/otpless-events/otpless-events/server/store/pgstore/pgtest"
)

type panickingPurger struct{ runs atomic.Int32 }

func (p *panickingPurger) PurgePII(context.Context, time.Time, func([]store.Change)) (int, error) {
	p.runs.Add(1)
	panic("purge kaboom")
}

// A purge that panics is logged and costs that run only: the loop runs the
// next one, and the process goes on.
func TestRetentionSurvivesAPanic(t *testing.T) {
	t.Parallel()
	var logs bytes.Buffer
	p := &panickingPurger{}
	var failures atomic.Int32
	r := &retention{purger: p, keep: time.Hour, interval: time.Millisecond, log: slog.New(slog.NewTextHandler(&logs, nil)),
		observe: func(purged int, err error) {
			if err != nil && strings.Contains(err.Error(), "purge kaboom") {
				failures.Add(1)
			}
		}}
	r.start()
	for deadline := time.Now().Add(10 * time.Second); p.runs.Load() < 2; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the loop did not run again after a panic")
		}
	}
	r.stop()
	if !strings.Contains(logs.String(), "purge kaboom") {
		t.Errorf("the panic was not logged: %s", logs.String())
	}
	if failures.Load() < 2 {
		t.Errorf("%d failed runs observed, want every run's panic", failures.Load())
	}
}

type failingPurger struct{}

func (failingPurger) PurgePII(context.Context, time.Time, func([]store.Change)) (int, error) {
	return 700, errors.New("the database went away")
}

// A run that purged some webhooks and then failed says how many in its
// warning, as the purged metric counts them.
func TestRetentionFailureSaysWhatWasPurged(t *testing.T) {
	t.Parallel()
	var logs bytes.Buffer
	r := &retention{purger: failingPurger{}, keep: time.Hour, log: slog.New(slog.NewJSONHandler(&logs, nil))}
	r.purge(t.Context())
	var line struct {
		Level, Msg, Error string
		Webhooks          int
	}
	if err := json.Unmarshal(logs.Bytes(), &line); err != nil {
		t.Fatalf("%v: %s", err, logs.String())
	}
	if line.Level != "WARN" || line.Error != "the database went away" || line.Webhooks != 700 {
		t.Errorf("logged %+v; want a warning with the error and 700 webhooks", line)
	}
}

// flakyPurger fails its first runs, then succeeds.
type flakyPurger struct {
	fails int32
	runs  atomic.Int32
}

func (p *flakyPurger) PurgePII(context.Context, time.Time, func([]store.Change)) (int, error) {
	if p.runs.Add(1) <= p.fails {
		return 0, errors.New("the database is restarting")
	}
	return 0, nil
}

// A run that failed (the database restarting at purge time) is tried again
// soon, not an interval later: personal data is not kept past its time for
// a whole interval because of a moment's outage.
func TestRetentionRetriesAFailedRunSoon(t *testing.T) {
	t.Parallel()
	p := &flakyPurger{fails: 2}
	r := &retention{purger: p, keep: time.Hour, interval: time.Hour, retry: time.Millisecond,
		log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	r.start()
	defer r.stop()
	for deadline := time.Now().Add(10 * time.Second); p.runs.Load() < 3; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%d runs in 10 s with an interval of an hour: a failed run was not tried again until the next interval", p.runs.Load())
		}
	}
}

// A purge whose refold changes more than personal data (a snapshot an
// earlier build's fold made) is a change at the next revision: a watcher
// connected then gets it as an UPDATE, on either backend (on PostgreSQL
// through the notification every replica listens to).
func TestRetentionRefoldReachesWatchers(t *testing.T) {
	t.Parallel()
	t.Run("sqlite", func(t *testing.T) {
		t.Parallel()
		var path string
		testRefoldReachesWatchers(t, func(c *Config) { path = filepath.Join(c.DataDir, "otpless-events.db") },
			func(t *testing.T, data []byte, id string) {
				db, err := sql.Open("sqlite", path)
				if err != nil {
					t.Fatal(err)
				}
				defer db.Close()
				if _, err := db.Exec(`UPDATE requests SET data = ? WHERE request_id = ?`, data, id); err != nil {
					t.Fatal(err)
				}
			})
	})
	t.Run("postgres", func(t *testing.T) {
		t.Parallel()
		dsn, _ := pgtest.Schema(t)
		testRefoldReachesWatchers(t, func(c *Config) { c.Store = dsn },
			func(t *testing.T, data []byte, id string) {
				conn, err := pgx.Connect(t.Context(), dsn)
				if err != nil {
					t.Fatal(err)
				}
				defer conn.Close(context.Background())
				if _, err := conn.Exec(t.Context(), `UPDATE requests SET data = $1 WHERE request_id = $2`, data, []byte(id)); err != nil {
					t.Fatal(err)
				}
			})
	})
}

func testRefoldReachesWatchers(t *testing.T, mutate func(*Config), setSnapshot func(t *testing.T, data []byte, id string)) {
	// The test runs the purge, and only it: the loop's first run, at start,
	// would purge the webhook whenever it came after the POST.
	var purge *retention
	s := startOps(t, func(c *Config) {
		c.PIIRetention, c.RetentionInterval = time.Millisecond, time.Hour
		mutate(c)
	}, func(x *Server) { purge, x.purge = x.purge, nil })
	const id = "refold-watched"
	if code, _, body := do(t, http.MethodPost, s.httpURL+"/v1/webhooks/otpless", dlrBody(id, "SENT", time.Now().Add(-time.Minute).UnixMilli())); code != http.StatusOK {
		t.Fatalf("POST: %d %s", code, body)
	}
	client := eventsv1.NewRequestServiceClient(s.conn)
	got, err := client.GetRequest(t.Context(), &eventsv1.GetRequestRequest{RequestId: id})
	if err != nil {
		t.Fatal(err)
	}
	earlier := got.GetRequest()
	earlier.ActiveChannel = "SMS" // what another fold could have made of it (the webhook says WHATSAPP)
	data, err := proto.Marshal(earlier)
	if err != nil {
		t.Fatal(err)
	}
	setSnapshot(t, data, id)

	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	stream, err := client.WatchRequest(ctx, &eventsv1.WatchRequestRequest{RequestId: id})
	if err != nil {
		t.Fatal(err)
	}
	if first, err := stream.Recv(); err != nil || first.GetRevision() != earlier.GetRevision() {
		t.Fatalf("first message %v, %v; want the snapshot at revision %d", first, err, earlier.GetRevision())
	}
	time.Sleep(2 * time.Millisecond) // the webhook is past retention
	purge.purge(ctx)
	msg, err := stream.Recv()
	if err != nil {
		t.Fatalf("no message after the purge's refold: %v", err)
	}
	if msg.GetType() != eventsv1.WatchMessageType_WATCH_MESSAGE_TYPE_UPDATE || msg.GetRevision() != earlier.GetRevision()+1 ||
		msg.GetRequest().GetActiveChannel() != "WHATSAPP" || len(msg.GetEvents()) != 0 {
		t.Fatalf("after the purge's refold: %v; want an UPDATE at revision %d, active channel WHATSAPP, no events", msg, earlier.GetRevision()+1)
	}
}
