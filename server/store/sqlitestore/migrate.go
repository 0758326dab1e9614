package sqlitestore

import (
	"context"
	"database/sql"
	"embed"
	"fmt"
	"log/slog"
	"time"

	"github.com/otpless-events/otpless-events/server/store"
)

//go:embed migrations/*.sql
var migrationFiles embed.FS

// loadMigrations returns the embedded migrations in version order.
func loadMigrations() ([]store.Migration, error) {
	return store.LoadMigrations(migrationFiles, "migrations/*.sql")
}

// migrate applies the migrations db has not seen, all in one transaction
// with the schema_migrations bookkeeping, and returns the names applied. A
// database whose schema is newer than this binary's is refused, and so is
// one that records a migration of this binary's under another name
// (store.CheckApplied).
func migrate(ctx context.Context, db *sql.DB, ms []store.Migration, now time.Time) (applied []string, err error) {
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			tx.Rollback()
		}
	}()
	if _, err := tx.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
		version    INTEGER PRIMARY KEY,
		name       TEXT    NOT NULL,
		applied_at INTEGER NOT NULL
	) STRICT`); err != nil {
		return nil, err
	}
	recorded, err := appliedMigrations(ctx, tx)
	if err != nil {
		return nil, err
	}
	current, err := store.CheckApplied(recorded, ms)
	if err != nil {
		return nil, err
	}
	for _, m := range ms[current:] {
		if _, err := tx.ExecContext(ctx, m.SQL); err != nil {
			return nil, fmt.Errorf("%s: %w", m.Name, err)
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)`,
			m.Version, m.Name, now.UnixMilli()); err != nil {
			return nil, fmt.Errorf("%s: %w", m.Name, err)
		}
		applied = append(applied, m.Name)
	}
	return applied, tx.Commit()
}

// appliedMigrations returns the names of the migrations q's database
// records as applied, by version.
func appliedMigrations(ctx context.Context, q interface {
	QueryContext(context.Context, string, ...any) (*sql.Rows, error)
}) (map[int]string, error) {
	rows, err := q.QueryContext(ctx, `SELECT version, name FROM schema_migrations`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	applied := map[int]string{}
	for rows.Next() {
		var (
			v    int
			name string
		)
		if err := rows.Scan(&v, &name); err != nil {
			return nil, err
		}
		applied[v] = name
	}
	return applied, rows.Err()
}

// moveBatch is how many requests a transaction of moveEvents moves.
const moveBatch = 1000

// moveEvents moves the events that databases from before migration 0004
// keep in the events table into their requests' rows, moveBatch requests
// per transaction: an interrupted move goes on at the next Open, and a
// database with nothing to move costs one index lookup.
func moveEvents(ctx context.Context, db *sql.DB, log *slog.Logger) error {
	start, moved := time.Now(), 0
	for {
		n, err := moveEventsBatch(ctx, db)
		if err != nil {
			return fmt.Errorf("move events into their requests: %w", err)
		}
		if n == 0 {
			break
		}
		if moved == 0 {
			log.Info("moving events into their requests' rows (once, after an upgrade)")
		}
		moved += n
	}
	if moved > 0 {
		log.Info("moved events into their requests' rows", "requests", moved, "duration", time.Since(start))
	}
	return nil
}

func moveEventsBatch(ctx context.Context, db *sql.DB) (n int, err error) {
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return 0, err
	}
	defer func() {
		if err != nil {
			tx.Rollback()
		}
	}()
	rows, err := tx.QueryContext(ctx, `SELECT request_id, event_id, webhook_id, event_time_ms, data FROM events
		WHERE request_id IN (SELECT DISTINCT request_id FROM events WHERE request_id > '' ORDER BY request_id LIMIT ?)
		ORDER BY request_id, event_id`, moveBatch)
	if err != nil {
		return 0, err
	}
	var (
		ids   []string
		blobs [][]byte
	)
	for rows.Next() {
		var (
			rid string
			e   entry
		)
		if err := rows.Scan(&rid, &e.eventID, &e.webhookID, &e.timeMs, &e.data); err != nil {
			rows.Close()
			return 0, err
		}
		if len(ids) == 0 || ids[len(ids)-1] != rid {
			ids, blobs = append(ids, rid), append(blobs, nil)
		}
		blobs[len(blobs)-1] = appendEntry(blobs[len(blobs)-1], e)
	}
	if err := rows.Err(); err != nil {
		return 0, err
	}
	update, err := tx.PrepareContext(ctx, `UPDATE requests SET events = CAST(events || ? AS BLOB) WHERE request_id = ?`)
	if err != nil {
		return 0, err
	}
	defer update.Close()
	for i, rid := range ids {
		res, err := update.ExecContext(ctx, blobs[i], rid)
		if err != nil {
			return 0, err
		}
		if n, err := res.RowsAffected(); err != nil || n != 1 {
			return 0, fmt.Errorf("request %q has events but no row (%d rows, %v)", rid, n, err)
		}
	}
	if len(ids) > 0 {
		if _, err := tx.ExecContext(ctx, `DELETE FROM events WHERE request_id IN (SELECT value FROM json_each(?))`, jsonArray(ids)); err != nil {
			return 0, err
		}
	}
	return len(ids), tx.Commit()
}

// fillRequestIDs fills in the request_ids of the webhooks that migration
// 0005 listed in fill_request_ids (purged before 0004), from the entries of
// every request's row, moveBatch requests per transaction, then drops the
// list. Each addition is made once, so an interrupted fill starts over at
// the next Open and stores nothing twice; a database with nothing to fill
// costs a lookup.
func fillRequestIDs(ctx context.Context, db *sql.DB, log *slog.Logger) error {
	var listed, pending bool
	if err := db.QueryRowContext(ctx, `SELECT EXISTS (SELECT 1 FROM sqlite_schema WHERE name = 'fill_request_ids')`).Scan(&listed); err != nil || !listed {
		return err
	}
	if err := db.QueryRowContext(ctx, `SELECT EXISTS (SELECT 1 FROM fill_request_ids)`).Scan(&pending); err != nil {
		return err
	}
	if pending {
		log.Info("naming the requests of webhooks purged before an upgrade (once)")
		for after := ""; ; {
			last, err := fillRequestIDsBatch(ctx, db, after)
			if err != nil {
				return fmt.Errorf("name the requests of purged webhooks: %w", err)
			}
			if last == "" {
				break
			}
			after = last
		}
	}
	_, err := db.ExecContext(ctx, `DROP TABLE fill_request_ids`)
	return err
}

// fillRequestIDsBatch fills in the request_ids of the listed webhooks from
// the moveBatch requests after the request id after, and returns the last
// request id read ("" when there was none).
func fillRequestIDsBatch(ctx context.Context, db *sql.DB, after string) (last string, err error) {
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return "", err
	}
	defer tx.Rollback()
	requests, err := queryEntries(ctx, tx, `SELECT request_id, events FROM requests WHERE request_id > ? ORDER BY request_id LIMIT ?`, after, moveBatch)
	if err != nil || len(requests) == 0 {
		return "", err
	}
	type pair struct {
		webhookID int64
		rid       string
	}
	var (
		pairs []pair
		ids   []int64
		seen  = map[pair]bool{}
	)
	for _, r := range requests {
		for _, en := range r.entries {
			if p := (pair{en.webhookID, r.requestID}); !seen[p] {
				seen[p] = true
				pairs, ids = append(pairs, p), append(ids, en.webhookID)
			}
		}
	}
	rows, err := tx.QueryContext(ctx, `SELECT webhook_id FROM fill_request_ids WHERE webhook_id IN (SELECT value FROM json_each(?))`, jsonArray(ids))
	if err != nil {
		return "", err
	}
	listed, err := scanAll(rows, func(r *sql.Rows) (id int64, err error) { return id, r.Scan(&id) })
	if err != nil {
		return "", err
	}
	if len(listed) > 0 {
		fill := map[int64]bool{}
		for _, id := range listed {
			fill[id] = true
		}
		update, err := tx.PrepareContext(ctx, `UPDATE webhooks SET request_ids = json_insert(request_ids, '$[#]', ?1)
			WHERE id = ?2 AND NOT EXISTS (SELECT 1 FROM json_each(request_ids) WHERE value = ?1)`)
		if err != nil {
			return "", err
		}
		defer update.Close()
		for _, p := range pairs {
			if !fill[p.webhookID] {
				continue
			}
			if _, err := update.ExecContext(ctx, p.rid, p.webhookID); err != nil {
				return "", err
			}
		}
	}
	return requests[len(requests)-1].requestID, tx.Commit()
}
