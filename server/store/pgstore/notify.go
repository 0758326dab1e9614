package pgstore

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"hash/fnv"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"google.golang.org/protobuf/proto"

	eventsv1 "github.com/otpless-events/otpless-events/gen/otpless/events/v1"
	"github.com/otpless-events/otpless-events/server/store"
)

// Notification is the payload of the NOTIFY that Commit sends on Channel for
// every request it changes, delivered to listeners when the transaction
// commits and in commit order. It is a wake-up hint, not the data: a
// listener reads the change with ChangesSince.
type Notification struct {
	RequestID string `json:"request_id"`
	Revision  int64  `json:"revision"`
}

// maxNotifiedID bounds the request ids that are notified: a NOTIFY payload
// must stay under 8000 bytes, and nobody can watch a longer id (WatchRequest
// accepts 256 bytes).
const maxNotifiedID = 1024

func (n Notification) notifiable() bool { return len(n.RequestID) <= maxNotifiedID }

// payload is n as JSON: readable in psql's LISTEN, and any request id
// (even one holding NUL) fits in the text payload.
func (n Notification) payload() string {
	b, _ := json.Marshal(n) // a string and an integer always encode
	return string(b)
}

// notifyAll sends each payload of $2 (text[]) on channel $1, as a
// transaction's statement: its listeners get them once it commits.
const notifyAll = `SELECT pg_notify($1, payload) FROM unnest($2::text[]) AS payload`

// ParseNotification decodes the payload of a notification on Channel.
func ParseNotification(payload string) (Notification, error) {
	var n Notification
	if err := json.Unmarshal([]byte(payload), &n); err != nil {
		return Notification{}, fmt.Errorf("pgstore: notification %q: %w", payload, err)
	}
	if n.RequestID == "" || n.Revision <= 0 {
		return Notification{}, fmt.Errorf("pgstore: notification %q: no request id or revision", payload)
	}
	return n, nil
}

// channelPrefix starts every channel name.
const channelPrefix = "otpless_events:"

// channelFor names the channel of schema: notifications are per database,
// so each schema has its own. Channel names are identifiers (at most 63
// bytes); a schema name too long for that is hashed.
func channelFor(schema string) string {
	if len(channelPrefix)+len(schema) <= 63 {
		return channelPrefix + schema
	}
	h := fnv.New64a()
	h.Write([]byte(schema))
	return channelPrefix + hex.EncodeToString(h.Sum(nil))
}

// Channel is the channel Commit notifies on; LISTEN to it (quoted, with
// pgx.Identifier) to follow the commits of every replica. It is known once
// Connect has succeeded.
func (s *Store) Channel() string { return s.channel }

// Notify sends payload on Channel from a connection of the pool, as
// commits do: a listener that hears it hears the commits of every replica.
// It prepares no statement, so that behind a pooler in transaction mode it
// reaches the question whether LISTEN works.
func (s *Store) Notify(ctx context.Context, payload string) error {
	if err := s.usable("notify"); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	if _, err := s.pool.Exec(ctx, "SELECT pg_notify($1, $2)", pgx.QueryExecModeSimpleProtocol, s.channel, payload); err != nil {
		return s.fail(ctx, "notify", err)
	}
	return nil
}

// ListenConfig returns a copy of the pool's connection configuration, for a
// dedicated listening connection outside the pool, which sets the pool's
// partitionTimeouts as its connections do. It also lifts the session's
// idle_session_timeout (PostgreSQL 14 and later; the role's or the DSN's),
// which would end the listening connection, idle while it waits for
// notifications, again and again.
func (s *Store) ListenConfig() *pgx.ConnConfig {
	cfg := s.pool.Config().ConnConfig
	sql := noIdleSessionTimeout
	if s.sessionSQL != "" {
		sql = s.sessionSQL + "; " + sql
	}
	cfg.AfterConnect = func(ctx context.Context, conn *pgconn.PgConn) error {
		return conn.Exec(ctx, sql).Close()
	}
	return cfg
}

// noIdleSessionTimeout turns idle_session_timeout off for the session,
// where the server has it.
const noIdleSessionTimeout = `SELECT set_config(name, '0', false) FROM pg_settings WHERE name = 'idle_session_timeout'`

// ChangesSince implements store.ChangeReader. Each Change's events are in
// commit order (by revision, then by webhook in batch order, then by event
// id), and come from the same statement as the snapshot, so they are exactly
// the events between the two revisions.
func (s *Store) ChangesSince(ctx context.Context, since map[string]int64) ([]store.Change, error) {
	const op = "changes since"
	if err := s.usable(op); err != nil {
		return nil, err
	}
	if len(since) == 0 {
		return nil, nil
	}
	ids := make([][]byte, 0, len(since))
	afters := make([]int64, 0, len(since))
	for id, after := range since {
		ids = append(ids, []byte(id))
		afters = append(afters, after)
	}
	qctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	var changes []store.Change
	err := s.read(qctx, func(conn *pgxpool.Conn) error {
		changes = nil
		rows, err := conn.Query(qctx, `SELECT r.request_id, r.data, e.data, e.revision
			FROM unnest($1::bytea[], $2::bigint[]) AS q (request_id, after)
			JOIN requests r ON r.request_id = q.request_id AND r.revision > q.after
			LEFT JOIN events e ON e.request_id = q.request_id AND e.revision > q.after
			ORDER BY r.request_id, e.revision, e.webhook_id, e.event_id`, ids, afters)
		if err != nil {
			return err
		}
		var (
			rid, snapData, evData []byte
			evRevision            *int64
			damaged               string // the request whose rows are being left out
		)
		// A request whose stored data does not decode is left out, said
		// as an error, rather than fail the call: the others' watchers get
		// theirs.
		leaveOut := func(what string, err error) {
			damaged = string(rid)
			s.log.Error("a request's stored data does not decode; its watchers get no update", "otpless_request_id", damaged, "what", what, "error", err)
		}
		_, err = pgx.ForEachRow(rows, []any{&rid, &snapData, &evData, &evRevision}, func() error {
			if damaged != "" && damaged == string(rid) {
				return nil
			}
			if n := len(changes); n == 0 || changes[n-1].Request.GetRequestId() != string(rid) {
				r := new(eventsv1.AuthRequest)
				if err := proto.Unmarshal(snapData, r); err != nil {
					leaveOut("snapshot", err)
					return nil
				}
				changes = append(changes, store.Change{Request: r})
			}
			if evData == nil { // no event newer (LEFT JOIN)
				return nil
			}
			e := new(eventsv1.Event)
			if err := proto.Unmarshal(evData, e); err != nil {
				changes = changes[:len(changes)-1]
				leaveOut("event", err)
				return nil
			}
			c := &changes[len(changes)-1]
			c.Events = append(c.Events, e)
			c.EventRevisions = append(c.EventRevisions, *evRevision)
			return nil
		})
		return err
	})
	if err != nil {
		return nil, s.fail(ctx, op, err)
	}
	return changes, nil
}
