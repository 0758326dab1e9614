package sqlitestore

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"unicode/utf8"

	"google.golang.org/protobuf/proto"

	eventsv1 "github.com/otpless-events/otpless-events/gen/otpless/events/v1"
	"github.com/otpless-events/otpless-events/server/store"
)

// RowsReport is what Check found reading the rows of a store.
type RowsReport struct {
	// Damaged is how many stored rows do not decode, and First the first
	// of them (at most the named Check was given), each naming its
	// row (a request's id, a webhook's id, an event's id) and what is
	// wrong with it.
	Damaged int
	First   []string
	// Skipped, when not empty, says why no row was read: a store of
	// another schema version than this build's, or of this version but
	// migrated by another build (store.OtherMigrationError), whose rows
	// this build does not read as they are.
	Skipped string
}

// checkRows reads every row of the store in db, one at a time, and
// decodes what it holds as the server and Export read it (the snapshot and
// the events column of each request, the body and request ids of each
// webhook, each event that names no request), counting the rows that do
// not decode: SQLite's integrity_check finds them sound. When none is
// damaged, it runs Export over the whole store, reading nothing out, which
// finds a webhook whose events are not where its request ids say (db copy
// stops there). It changes nothing.
func checkRows(ctx context.Context, db *sql.DB, named int) (RowsReport, error) {
	var r RowsReport
	ms, err := loadMigrations()
	if err != nil {
		return r, err
	}
	recorded, err := appliedMigrations(ctx, db)
	if err != nil {
		return r, err
	}
	version, err := store.CheckApplied(recorded, ms)
	var other store.OtherMigrationError
	switch {
	case errors.As(err, new(store.NewerSchemaError)):
		// serve and db copy of this build refuse such a store.
		r.Skipped = fmt.Sprintf("the store's schema is version %d, newer than this build's %d; check it with the build that migrated it", version, len(ms))
		return r, nil
	case errors.As(err, &other):
		// serve and db copy refuse this one too.
		r.Skipped = other.Error()
		return r, nil
	case err != nil:
		return r, err
	case version < len(ms):
		r.Skipped = fmt.Sprintf("the store's schema is version %d, this build's %d; serve or db copy brings it up to date", version, len(ms))
		return r, nil
	}
	damaged := func(row string, err error) {
		r.Damaged++
		if len(r.First) < named {
			r.First = append(r.First, fmt.Sprintf("%s: %v", row, err))
		}
	}
	// Each query's rows are read one at a time: the store may be large.
	each := func(query string, row func(*sql.Rows) error) error {
		rows, err := db.QueryContext(ctx, query)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			if err := row(rows); err != nil {
				return err
			}
		}
		return rows.Err()
	}
	err = each(`SELECT request_id, data, events FROM requests ORDER BY request_id`, func(rows *sql.Rows) error {
		var (
			id             string
			data, column   []byte
			snapshot, what error
		)
		if err := rows.Scan(&id, &data, &column); err != nil {
			return err
		}
		if err := proto.Unmarshal(data, new(eventsv1.AuthRequest)); err != nil {
			snapshot = fmt.Errorf("%w: decode snapshot: %w", store.ErrDamaged, err)
		}
		entries, err := parseEntries(column)
		what = err
		for _, en := range entries {
			if _, err := en.event(); err != nil && what == nil {
				what = err
			}
		}
		if err := errors.Join(snapshot, what); err != nil {
			damaged(fmt.Sprintf("request %q", id), err)
		}
		return nil
	})
	if err == nil {
		err = each(`SELECT id, body, request_ids FROM webhooks ORDER BY id`, func(rows *sql.Rows) error {
			var (
				id               int64
				body, requestIDs []byte
			)
			if err := rows.Scan(&id, &body, &requestIDs); err != nil {
				return err
			}
			var errs []error
			if !utf8.Valid(body) { // store.RawBody's test: ingest stores only UTF-8
				errs = append(errs, fmt.Errorf("%w: body is not UTF-8", store.ErrDamaged))
			}
			if err := json.Unmarshal(requestIDs, new([]string)); err != nil {
				errs = append(errs, fmt.Errorf("%w: request ids: %w", store.ErrDamaged, err))
			}
			if err := errors.Join(errs...); err != nil {
				damaged(fmt.Sprintf("webhook %d", id), err)
			}
			return nil
		})
	}
	if err == nil {
		err = each(`SELECT event_id, data FROM events ORDER BY request_id, event_id`, func(rows *sql.Rows) error {
			var (
				id   string
				data []byte
			)
			if err := rows.Scan(&id, &data); err != nil {
				return err
			}
			if err := proto.Unmarshal(data, new(eventsv1.Event)); err != nil {
				damaged(fmt.Sprintf("event %q", id), fmt.Errorf("%w: decode: %w", store.ErrDamaged, err))
			}
			return nil
		})
	}
	if err != nil || r.Damaged > 0 {
		return r, err
	}
	// Every row decodes: what is left is whether they agree, as Export
	// reads them (a page at a time, so in bounded memory).
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return r, err
	}
	defer tx.Rollback() // read only: nothing to commit
	err = store.ExportPages(func([]store.Webhook) error { return nil }, func(after int64) ([]store.Webhook, []int64, error) {
		return exportPage(ctx, tx, after, store.ExportPageSize)
	})
	if errors.Is(err, store.ErrDamaged) {
		damaged("export", err)
		err = nil
	}
	return r, err
}
