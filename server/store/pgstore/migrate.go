package pgstore

import (
	"context"
	"embed"
	"fmt"
	"sync/atomic"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/otpless-events/otpless-events/server/store"
)

//go:embed migrations/*.sql
var migrationFiles embed.FS

// loadMigrations returns the embedded migrations in version order.
func loadMigrations() ([]store.Migration, error) {
	return store.LoadMigrations(migrationFiles, "migrations/*.sql")
}

// migrationLock is the first key of the advisory lock that serializes
// migrations; the second is hashtext(schema), so that schemas do not wait for
// each other.
const migrationLock = 0x6f74706c // "otpl"

// migrate applies the migrations schema has not seen, all in one transaction
// with their bookkeeping (table otpless_schema_migrations, a name no other
// tool is likely to use in a shared schema), and returns the names applied. The
// transaction first takes an advisory lock on the schema, so replicas that
// start together apply each migration once; the others wait, then find
// nothing to do. With create, a missing schema is created first. A schema
// that is up to date needs no privilege beyond reading the bookkeeping;
// one newer than this binary's is refused, and so is one that records a
// migration of this binary's under another name (store.CheckApplied). No lock_timeout or
// statement_timeout of the session cuts it short, and the transaction is
// READ COMMITTED whatever the session's default: under a stricter level
// its snapshot, taken as it began to wait for the lock, would not see what
// the replica it waited for applied, which it would apply again and fail.
// It keeps step at nil until it holds the lock, then at the name of the
// migration it runs ("" between).
func migrate(ctx context.Context, pool *pgxpool.Pool, schema string, create bool, ms []store.Migration, step *atomic.Pointer[string]) (applied []string, err error) {
	err = pgx.BeginTxFunc(ctx, pool, pgx.TxOptions{IsoLevel: pgx.ReadCommitted}, func(tx pgx.Tx) error {
		// The session's lock_timeout and statement_timeout (the role's or
		// the DSN's) are for the store's calls, which its own timeout
		// bounds too; the migration and the wait for its lock are watched
		// instead (migrateWatched). Cut short by them, the start would
		// fail as for a mistake that waiting cannot mend.
		if _, err := tx.Exec(ctx, `SET LOCAL lock_timeout = 0; SET LOCAL statement_timeout = 0`); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1, hashtext($2))`, migrationLock, schema); err != nil {
			return fmt.Errorf("lock: %w", err)
		}
		step.Store(new(string))
		if create {
			var exists bool
			if err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)`, schema).Scan(&exists); err != nil {
				return err
			}
			if !exists {
				if _, err := tx.Exec(ctx, `CREATE SCHEMA `+pgx.Identifier{schema}.Sanitize()); err != nil {
					return fmt.Errorf("create schema: %w", err)
				}
			}
		}
		bookkeeping := pgx.Identifier{schema, "otpless_schema_migrations"}.Sanitize()
		current := 0
		var exists bool
		if err := tx.QueryRow(ctx, `SELECT to_regclass($1) IS NOT NULL`, bookkeeping).Scan(&exists); err != nil {
			return err
		}
		if exists {
			rows, err := tx.Query(ctx, `SELECT version, name FROM `+bookkeeping)
			if err != nil {
				return err
			}
			recorded := map[int]string{}
			var (
				v    int
				name string
			)
			if _, err := pgx.ForEachRow(rows, []any{&v, &name}, func() error {
				recorded[v] = name
				return nil
			}); err != nil {
				return err
			}
			if current, err = store.CheckApplied(recorded, ms); err != nil {
				return err
			}
		} else if _, err := tx.Exec(ctx, `CREATE TABLE `+bookkeeping+` (
			version    integer     PRIMARY KEY,
			name       text        NOT NULL,
			applied_at timestamptz NOT NULL DEFAULT now()
		)`); err != nil {
			return err
		}
		for _, m := range ms[current:] {
			step.Store(&m.Name)
			if _, err := tx.Exec(ctx, m.SQL); err != nil {
				return fmt.Errorf("%s: %w", m.Name, err)
			}
			if _, err := tx.Exec(ctx, `INSERT INTO `+bookkeeping+` (version, name) VALUES ($1, $2)`, m.Version, m.Name); err != nil {
				return fmt.Errorf("%s: %w", m.Name, err)
			}
			applied = append(applied, m.Name)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return applied, nil
}
