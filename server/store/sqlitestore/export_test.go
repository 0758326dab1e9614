package sqlitestore

import "database/sql"

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
