package store

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"path"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"
)

// Helpers for backends: what every Store implementation needs the same way.

// Migration is one file of a backend's embedded migrations: NNNN_name.sql,
// applied in version order, each version once.
type Migration struct {
	Version int
	Name    string
	SQL     string
}

// LoadMigrations returns the migrations matching pattern in fsys, in version
// order. Versions must run 1, 2, 3, ... without gaps.
func LoadMigrations(fsys fs.FS, pattern string) ([]Migration, error) {
	names, err := fs.Glob(fsys, pattern)
	if err != nil {
		return nil, err
	}
	var ms []Migration
	for _, name := range names {
		base := path.Base(name)
		prefix, _, ok := strings.Cut(base, "_")
		v, err := strconv.Atoi(prefix)
		if !ok || err != nil || v <= 0 {
			return nil, fmt.Errorf("migration %s: name must be NNNN_name.sql", base)
		}
		b, err := fs.ReadFile(fsys, name)
		if err != nil {
			return nil, err
		}
		ms = append(ms, Migration{Version: v, Name: base, SQL: string(b)})
	}
	slices.SortFunc(ms, func(a, b Migration) int { return a.Version - b.Version })
	for i, m := range ms {
		if m.Version != i+1 {
			return nil, fmt.Errorf("migration %s: version %d, want %d", m.Name, m.Version, i+1)
		}
	}
	return ms, nil
}

// CheckApplied compares the migrations a store records as applied, their
// names by version, with this build's ms, and returns the version the store
// is at (the highest recorded). It fails with NewerSchemaError when that is
// past ms, else with OtherMigrationError when a version up to it is
// recorded under another name than this build's, or not at all: then this
// build's migration of that version never ran there, and would not.
func CheckApplied(applied map[int]string, ms []Migration) (current int, err error) {
	for v := range applied {
		current = max(current, v)
	}
	if current > len(ms) {
		return current, NewerSchemaError{Version: current, Known: len(ms)}
	}
	for _, m := range ms[:current] {
		if name := applied[m.Version]; name != m.Name {
			return current, OtherMigrationError{Version: m.Version, Applied: name, Known: m.Name}
		}
	}
	return current, nil
}

// CheckBatch reports a batch Commit cannot take: an event without an id.
func CheckBatch(batch []Webhook) error {
	for i, wh := range batch {
		for j, e := range wh.Events {
			if e.GetEventId() == "" {
				return fmt.Errorf("webhook %d event %d has no event id", i, j)
			}
		}
	}
	return nil
}

// MapErr classifies a driver error against the caller's ctx: ctx's error
// when it is done (drivers report an interrupted statement), err itself
// when it says stored data is damaged, the schema newer or migrated by
// another build (ErrDamaged, NewerSchemaError, OtherMigrationError: no
// retry mends them) or is ErrUnavailable already,
// ErrDenied with the cause when the database refused it for want of a
// privilege (SQLSTATE 42501), ErrDamaged with the cause when it found its
// data or an index corrupted (XX001, XX002), else ErrUnavailable with the
// cause.
func MapErr(ctx context.Context, err error) error {
	if errors.Is(err, ErrDamaged) || errors.As(err, new(NewerSchemaError)) || errors.As(err, new(OtherMigrationError)) {
		return err
	}
	if cerr := ctx.Err(); cerr != nil {
		if errors.Is(err, cerr) {
			return err
		}
		return fmt.Errorf("%w (%v)", cerr, err)
	}
	if errors.Is(err, ErrUnavailable) {
		return err
	}
	var coded interface{ SQLState() string } // pgconn.PgError has it
	if errors.As(err, &coded) {
		switch coded.SQLState() {
		case "42501": // insufficient_privilege
			return fmt.Errorf("%w: %w", ErrDenied, err)
		case "XX001", "XX002": // data_corrupted, index_corrupted
			return fmt.Errorf("%w: %w", ErrDamaged, err)
		}
	}
	return fmt.Errorf("%w: %w", ErrUnavailable, err)
}

// RawBody is a stored webhook body as an event's raw_body. Ingest stores
// only UTF-8, so a body that is not comes from a damaged file or row: it is
// logged, and its invalid bytes are replaced, so that its events can still
// be listed (a protobuf string must be UTF-8, and the page would not encode).
func RawBody(ctx context.Context, log *slog.Logger, requestID string, webhookID int64, body []byte) string {
	if utf8.Valid(body) {
		return string(body)
	}
	log.LogAttrs(ctx, slog.LevelError, "a stored webhook body is not UTF-8: the store is damaged",
		slog.String("otpless_request_id", requestID), slog.Int64("webhook", webhookID))
	return strings.ToValidUTF8(string(body), "\uFFFD")
}
