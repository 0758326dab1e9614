package server

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"

	"github.com/otpless-events/otpless-events/server/store"
	"github.com/otpless-events/otpless-events/server/store/pgstore"
	"github.com/otpless-events/otpless-events/server/store/sqlitestore"
)

// OpenCopy opens the two stores of a copy (db copy), for a run while no
// server uses the source: from, the store c names as serve finds it, which
// must exist (a SQLite file or a PostgreSQL schema, holding the tables),
// and to, the store of the DSN dst (as --store takes it; a
// SQLite file is created). A SQLite file is opened with the lock a server
// holds, so that the copy fails while a server has it open and a server
// cannot start meanwhile; PostgreSQL is connected, and either is migrated.
// It refuses to take one store for both. The caller closes both. created
// is the path of the destination's SQLite file when this call made it (it
// was not there before), else "": a copy that fails for good may remove
// it (sqlitestore.Remove, once to is closed).
func (c *Config) OpenCopy(ctx context.Context, dst string, log *slog.Logger) (from store.Exporter, to store.Store, created string, err error) {
	if dst == "" {
		return nil, nil, "", fmt.Errorf("%w: no store DSN", store.ErrDestination)
	}
	// Before the source is opened (and migrated): a DSN that cannot name a
	// store is refused at once.
	dstBackend, dstPath, err := parseStore(dst)
	if err == nil && dstBackend == "postgres" {
		err = pgstore.CheckDSN(dstPath) // its text hides the password
	}
	if err != nil {
		return nil, nil, "", fmt.Errorf("%w: %w", store.ErrDestination, err)
	}
	src, err := c.openOffline(ctx, c.Store, false, log)
	if err != nil {
		return nil, nil, "", fmt.Errorf("source: %w", err)
	}
	defer func() {
		if err != nil {
			src.Close()
		}
	}()
	if sq, ok := src.(*sqlitestore.Store); ok && dstBackend == "sqlite" && sameFile(sq.Path(), dstPath) {
		// Before opening it: a second lock on the source's file would fail
		// as if a server held it.
		return nil, nil, "", fmt.Errorf("the destination %s is the source", dstPath)
	}
	if dstBackend == "sqlite" {
		if _, err := os.Stat(dstPath); errors.Is(err, fs.ErrNotExist) {
			created = dstPath
		}
	}
	to, err = (&Config{}).openOffline(ctx, dst, true, log)
	if err != nil {
		return nil, nil, "", fmt.Errorf("%w: %w", store.ErrDestination, err)
	}
	if err := samePostgres(ctx, src, to); err != nil {
		to.Close()
		return nil, nil, "", err
	}
	if sq, ok := to.(*sqlitestore.Store); ok && created != "" {
		created = sq.Path()
	}
	return src.(store.Exporter), to, created, nil
}

// openOffline opens the store of dsn (or in c's DataDir) as OpenCopy
// does; create makes a SQLite file that is not there yet, or the tables
// of a file or PostgreSQL schema that holds none (without, such a store
// is refused).
func (c *Config) openOffline(ctx context.Context, dsn string, create bool, log *slog.Logger) (store.Store, error) {
	backend, location, err := parseStore(dsn)
	if err != nil {
		return nil, err
	}
	if backend == "postgres" {
		opts := []pgstore.Option{pgstore.WithLogger(log)}
		if !create {
			// As a SQLite source must hold one: a schema without the
			// tables is a search_path naming the wrong one, not a store
			// to make.
			opts = append(opts, pgstore.WithExisting())
		}
		return pgstore.Open(ctx, location, opts...)
	}
	path, err := c.sqliteFileAt(location)
	if err != nil {
		return nil, err
	}
	if _, err := os.Stat(path); !create && errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%s: no database there", path)
	}
	opts := []sqlitestore.Option{sqlitestore.WithLogger(log), sqlitestore.WithProcessLock()}
	if !create {
		opts = append(opts, sqlitestore.WithExisting())
	}
	st, err := sqlitestore.Open(ctx, path, opts...)
	if errors.Is(err, sqlitestore.ErrLocked) {
		return nil, fmt.Errorf("%w: stop the server first", err)
	}
	return st, err
}

// sameFile reports whether the files at a and b are one.
func sameFile(a, b string) bool {
	fa, err := os.Stat(a)
	if err != nil {
		return false
	}
	fb, err := os.Stat(b)
	return err == nil && os.SameFile(fa, fb)
}

// samePostgres refuses two PostgreSQL stores of the same tables.
func samePostgres(ctx context.Context, a, b store.Store) error {
	pa, ok := a.(*pgstore.Store)
	pb, ok2 := b.(*pgstore.Store)
	if !ok || !ok2 {
		return nil
	}
	ia, err := pa.Identity(ctx)
	if err != nil {
		return err
	}
	ib, err := pb.Identity(ctx)
	if err != nil {
		return err
	}
	if ia == ib {
		return fmt.Errorf("the destination is the source (%s)", ia)
	}
	return nil
}
