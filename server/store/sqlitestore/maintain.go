package sqlitestore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"strings"

	sqlite3 "modernc.org/sqlite/lib"

	"github.com/otpless-events/otpless-events/server/store"
)

// offlineLocked, when tests replace it, runs once openOffline has the lock.
var offlineLocked = func() {}

// openOffline opens the existing database file at path for maintenance,
// holding the lock a Store opened WithProcessLock holds, so that neither
// runs while the other has the file. It neither creates the file nor
// migrates its schema. close releases the connection, then the lock.
func openOffline(ctx context.Context, path string) (db *sql.DB, abs string, close func() error, err error) {
	if abs, err = filepath.Abs(path); err != nil {
		return nil, "", nil, err
	}
	fi, err := os.Stat(abs)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, abs, nil, errors.New("no database there")
	}
	if pe := (*fs.PathError)(nil); errors.As(err, &pe) {
		// "not a directory", of a data directory that is a file: the
		// caller names the path.
		return nil, abs, nil, pe.Err
	}
	if err != nil {
		return nil, abs, nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, abs, nil, errors.New("not a file") // the caller names it
	}
	lock, err := lockFile(abs)
	if err != nil {
		return nil, abs, nil, fmt.Errorf("%w: stop the server first", err)
	}
	offlineLocked()
	if err := canWrite(abs); err != nil {
		lock.Close()
		return nil, abs, nil, err
	}
	// mode=rw: a file removed meanwhile is an error, not a new database.
	uri := "file:" + (&url.URL{Path: abs}).EscapedPath() + "?mode=rw&_pragma=busy_timeout(5000)"
	if db, err = sql.Open("sqlite", uri); err == nil {
		db.SetMaxOpenConns(1)
		err = db.PingContext(ctx)
	}
	var closed bool
	close = func() error {
		if closed {
			return nil
		}
		closed = true
		var errs []error
		if db != nil {
			errs = append(errs, db.Close())
		}
		// After SQLite's connection: closing the lock's descriptor drops
		// every fcntl lock the process holds on the file.
		if lock != nil {
			errs = append(errs, lock.Close())
		}
		return errors.Join(errs...)
	}
	if err != nil {
		close()
		return nil, abs, nil, explainOpen(err)
	}
	return db, abs, close, nil
}

// RefusedSchema opens the existing database file at path as Check does
// (holding the server's lock, creating and migrating nothing) and returns
// the error Open refuses it with for its schema: a store.NewerSchemaError
// or a store.OtherMigrationError, wrapped. Anything else is nil (a file
// that is not there, holds no store yet, or cannot be read now): what Open
// makes of it is Open's to say. serve asks before it makes credentials
// that a server refused would never use.
func RefusedSchema(ctx context.Context, path string) error {
	db, abs, closeDB, err := openOffline(ctx, path)
	if err != nil {
		return nil
	}
	defer closeDB()
	recorded, err := appliedMigrations(ctx, db)
	if err != nil {
		return nil
	}
	ms, err := loadMigrations()
	if err != nil {
		return nil
	}
	_, err = store.CheckApplied(recorded, ms)
	if errors.As(err, new(store.NewerSchemaError)) || errors.As(err, new(store.OtherMigrationError)) {
		return fmt.Errorf("sqlitestore: open %s: migrate: %w", abs, err)
	}
	return nil
}

// Check runs SQLite's integrity_check on the database file at path (with
// quick, the faster quick_check, which does not compare indexes with their
// tables) and returns what it reports: nil when the file is sound, else
// one line per problem found. A file that holds no store (empty, or
// another program's database) has that problem, and a store that lost
// tables the problem of its damage. Unless quick, a sound
// store's rows are then read too (rows, naming at most named of the
// damaged; see checkRows), in the same hold of the file. It takes the lock
// a server holds on the file, and fails while one has it open. It does not
// change the file, except to recover a write-ahead log a crash left.
func Check(ctx context.Context, path string, quick bool, named int) (problems []string, rows RowsReport, err error) {
	db, abs, closeDB, err := openOffline(ctx, path)
	if isCorrupt(err) {
		return []string{err.Error()}, rows, nil
	}
	if err != nil {
		return nil, rows, fmt.Errorf("sqlitestore: check %s: %w", abs, err)
	}
	defer closeDB()
	pragma := "PRAGMA integrity_check"
	if quick {
		pragma = "PRAGMA quick_check"
	}
	lines, err := db.QueryContext(ctx, pragma)
	if err == nil {
		defer lines.Close()
		for lines.Next() {
			var line string
			if err = lines.Scan(&line); err != nil {
				break
			}
			if line != "ok" {
				problems = append(problems, strings.Split(line, "\n")...)
			}
		}
		if err == nil {
			err = lines.Err()
		}
	}
	// Damage SQLite meets before it can say where (in the file's header
	// or its schema) fails the check itself: that is what it found.
	if isCorrupt(err) {
		return append(problems, err.Error()), rows, nil
	}
	if err != nil {
		return nil, rows, fmt.Errorf("sqlitestore: check %s: %w", abs, err)
	}
	lines.Close()
	// A sound file may hold no store: emptied (SQLite takes an empty file
	// for an empty database), or another program's.
	held, err := contents(ctx, db)
	if isCorrupt(err) {
		return append(problems, err.Error()), rows, nil
	}
	if err != nil {
		return nil, rows, fmt.Errorf("sqlitestore: check %s: %w", abs, err)
	}
	switch held {
	case noStore:
		problems = append(problems, NoStore)
	case otherMigrations:
		problems = append(problems, NoStoreOtherMigrations)
	case lostTables:
		err := lostTablesErr(ctx, db)
		if !errors.Is(err, store.ErrDamaged) {
			return nil, rows, fmt.Errorf("sqlitestore: check %s: %w", abs, err)
		}
		problems = append(problems, err.Error())
	}
	if len(problems) == 0 && !quick {
		if rows, err = checkRows(ctx, db, named); err != nil {
			return nil, rows, fmt.Errorf("sqlitestore: check rows of %s: %w", abs, corruptDamaged(err))
		}
	}
	return problems, rows, closeDB()
}

// NoStore is Check's problem with a file that holds none of the store's
// tables.
const NoStore = "the file holds no store (none of its tables): empty, or another program's database; a server would start on it as a new, empty store"

// NoStoreOtherMigrations is Check's problem with a file that holds no
// store but a schema_migrations table of another program's, which a
// server refuses (holdsStore).
const NoStoreOtherMigrations = "the file holds no store: its schema_migrations table is not the store's (another program's database); a server refuses it and leaves it as it is"

// isCorrupt reports whether err is SQLite's finding the file damaged, or
// not a database at all.
func isCorrupt(err error) bool {
	code := resultCode(err)
	return code == sqlite3.SQLITE_CORRUPT || code == sqlite3.SQLITE_NOTADB
}

// corruptDamaged is err, as store.ErrDamaged when it is SQLite's finding
// the file damaged (isCorrupt): a page or schema it finds malformed, which
// every read again meets.
func corruptDamaged(err error) error {
	if isCorrupt(err) {
		return fmt.Errorf("%w: %w", store.ErrDamaged, err)
	}
	return err
}

// Vacuum rewrites the database file at path with SQLite's VACUUM, which
// leaves no free pages and nothing of deleted rows in the space pages do
// not use (copies of personal data a retention purge removed can stay
// there otherwise), and empties the write-ahead log, before and after. It
// returns the size of the file before and after. It takes the lock a
// server holds on the file, and fails while one has it open, or when the
// file holds no store (empty, or another program's database) or a store
// that lost tables (store.ErrDamaged). It may need
// free disk space of twice the file's size (a copy built in the temporary
// directory, and the write-ahead log it is copied back through).
func Vacuum(ctx context.Context, path string) (before, after int64, err error) {
	db, abs, closeDB, err := openOffline(ctx, path)
	defer func() {
		if err != nil {
			err = fmt.Errorf("sqlitestore: vacuum %s: %w", abs, err)
		}
	}()
	if err != nil {
		return 0, 0, err
	}
	defer closeDB()
	// Before anything writes: a file that holds no store (empty, or
	// another program's database) is no store to vacuum, and is left as it
	// is.
	held, err := contents(ctx, db)
	if err != nil {
		return 0, 0, err
	}
	switch held {
	case lostTables:
		return 0, 0, lostTablesErr(ctx, db)
	case noStore, otherMigrations:
		return 0, 0, errors.New("the file holds no store: empty, or another program's database; left as it is")
	}
	size := func() (int64, error) {
		// TRUNCATE: the log's pages are written into the file and the
		// log is cut to nothing, with the older copies of pages it held.
		var busy, logged, done int
		if err := db.QueryRowContext(ctx, "PRAGMA wal_checkpoint(TRUNCATE)").Scan(&busy, &logged, &done); err != nil {
			return 0, err
		}
		if busy != 0 {
			return 0, errors.New("the write-ahead log could not be checkpointed: another connection is using the database")
		}
		fi, err := os.Stat(abs)
		if err != nil {
			return 0, err
		}
		return fi.Size(), nil
	}
	if before, err = size(); err != nil {
		return 0, 0, err
	}
	if _, err = db.ExecContext(ctx, "VACUUM"); err != nil {
		return before, 0, err
	}
	if after, err = size(); err != nil {
		return before, 0, err
	}
	return before, after, closeDB()
}

// Remove removes the database file at path, and the -wal and -shm files
// SQLite keeps beside it, for a file given up by the one that made it (a
// copy's destination that the copy could not fill). No store may have it
// open.
func Remove(path string) error {
	var errs []error
	for _, f := range []string{path, path + "-wal", path + "-shm"} {
		if err := os.Remove(f); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
