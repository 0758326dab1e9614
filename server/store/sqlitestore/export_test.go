package sqlitestore

import (
	"context"
	"database/sql"
	"fmt"
	"slices"
)

// SetBeforeTxCommit sets a function that runs before each Commit's
// transaction commits; an error from it fails the commit.
func SetBeforeTxCommit(s *Store, f func() error) { s.beforeTxCommit = f }

// SetAfterTxCommit sets a function that runs after each Commit's
// transaction has committed, before the event cache is updated.
func SetAfterTxCommit(s *Store, f func()) { s.afterTxCommit = f }

// CachedRequests is how many requests the event cache holds.
func CachedRequests(s *Store) int {
	s.writer <- struct{}{}
	defer func() { <-s.writer }()
	return s.cache.len()
}

// HoldWriter takes the writer lock, as a commit in progress holds it, until
// release is called.
func HoldWriter(s *Store) (release func()) {
	s.writer <- struct{}{}
	return func() { <-s.writer }
}

// WriterDB is the writer connection.
func WriterDB(s *Store) *sql.DB { return s.w }

// WithWriterMode opens the writer connection with the SQLite URI mode given
// ("ro": as SQLite opens a file the process may not write).
func WithWriterMode(mode string) Option { return func(o *options) { o.writerMode = mode } }

// SetFreeBytes replaces how the store reads the free space of the file
// system holding the database.
func SetFreeBytes(s *Store, f func(dir string) (uint64, error)) { s.freeBytes = f }

// MinFree is how much free space Ping wants after a commit failed for want
// of it.
const MinFree = minFree

// SetOfflineLocked makes f run whenever Check or Vacuum has taken the
// process lock, until the test ends. Not for parallel tests.
func SetOfflineLocked(t interface{ Cleanup(func()) }, f func()) {
	offlineLocked = f
	t.Cleanup(func() { offlineLocked = func() {} })
}

// DamageEvent overwrites the data of the event eventID in requestID's
// events column, through db, with bytes that do not decode; the column
// still parses.
func DamageEvent(ctx context.Context, db *sql.DB, requestID, eventID string) error {
	var column []byte
	if err := db.QueryRowContext(ctx, `SELECT events FROM requests WHERE request_id = ?`, requestID).Scan(&column); err != nil {
		return err
	}
	entries, err := parseEntries(column)
	if err != nil {
		return err
	}
	i := slices.IndexFunc(entries, func(e entry) bool { return e.eventID == eventID })
	if i < 0 {
		return fmt.Errorf("no event %q in %q's column", eventID, requestID)
	}
	for n := range entries[i].data { // in column's memory
		entries[i].data[n] = 0xFF
	}
	_, err = db.ExecContext(ctx, `UPDATE requests SET events = ? WHERE request_id = ?`, column, requestID)
	return err
}
