package pgstore

import (
	"context"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Pool is the store's connection pool, for tests that look at sessions.
func (s *Store) Pool() *pgxpool.Pool { return s.pool }

// SelectUnpurged is the purge's query for the webhooks due.
const SelectUnpurged = selectUnpurged

// DiskFull reports whether a commit failed as the database's disk is full
// and neither a commit nor a ping's test write has succeeded since.
func (s *Store) DiskFull() bool { return s.full.Load() != nil }

// MigrationLock is the first key of the advisory lock migrations take; the
// second is hashtext(schema).
const MigrationLock = migrationLock

// WaitLockMsg is what a start logs while it waits for another session's
// migration lock.
const WaitLockMsg = waitLockMsg

// WaitMigrationMsg is what a start logs while a migration of its runs.
const WaitMigrationMsg = waitMigrationMsg

// ErrOutcomeUnknown marks a commit whose connection failed once its
// COMMIT was sent.
var ErrOutcomeUnknown = errOutcomeUnknown

// InTx runs fn in the transaction a commit runs in.
func (s *Store) InTx(ctx context.Context, fn func(context.Context, pgx.Tx) error) error {
	return s.inTx(ctx, fn)
}
