package sqlitestore

import (
	"context"
	"database/sql"
	"embed"
	"fmt"
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
// database whose schema is newer than this binary's is refused.
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
	var current int
	if err := tx.QueryRowContext(ctx, `SELECT COALESCE(MAX(version), 0) FROM schema_migrations`).Scan(&current); err != nil {
		return nil, err
	}
	if current > len(ms) {
		return nil, fmt.Errorf("schema version %d is newer than this binary knows (%d)", current, len(ms))
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
