package store_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"testing/fstest"

	eventsv1 "github.com/otpless-events/otpless-events/gen/otpless/events/v1"
	"github.com/otpless-events/otpless-events/server/store"
)

func TestLoadMigrations(t *testing.T) {
	t.Parallel()
	file := func(s string) *fstest.MapFile { return &fstest.MapFile{Data: []byte(s)} }
	ms, err := store.LoadMigrations(fstest.MapFS{
		"m/0002_b.sql": file("B"), "m/0001_a.sql": file("A"), "m/README": file("x"),
	}, "m/*.sql")
	if err != nil || len(ms) != 2 || ms[0].Name != "0001_a.sql" || ms[1].SQL != "B" || ms[1].Version != 2 {
		t.Fatalf("LoadMigrations = %+v, %v", ms, err)
	}
	for name, fsys := range map[string]fstest.MapFS{
		"gap":      {"m/0001_a.sql": file("A"), "m/0003_c.sql": file("C")},
		"bad name": {"m/first.sql": file("A")},
		"zero":     {"m/0000_a.sql": file("A")},
	} {
		if _, err := store.LoadMigrations(fsys, "m/*.sql"); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestCheckBatch(t *testing.T) {
	t.Parallel()
	ok := []store.Webhook{{Events: []*eventsv1.Event{{EventId: "e"}}}}
	if err := store.CheckBatch(ok); err != nil {
		t.Fatal(err)
	}
	bad := append(ok, store.Webhook{Events: []*eventsv1.Event{{EventId: "e"}, {}}})
	if err := store.CheckBatch(bad); err == nil {
		t.Fatal("an event without an id was accepted")
	}
}

// TestMapErr: a driver's error is unavailability, but damaged data stays
// damaged (a retry cannot mend it) and a done context says so.
func TestMapErr(t *testing.T) {
	t.Parallel()
	driver := errors.New("connection reset")
	if err := store.MapErr(t.Context(), driver); !errors.Is(err, store.ErrUnavailable) || !errors.Is(err, driver) {
		t.Errorf("MapErr(driver error) = %v, want ErrUnavailable wrapping it", err)
	}
	damaged := fmt.Errorf("%w: decode an event", store.ErrDamaged)
	if err := store.MapErr(t.Context(), damaged); !errors.Is(err, store.ErrDamaged) || errors.Is(err, store.ErrUnavailable) {
		t.Errorf("MapErr(damaged data) = %v, want ErrDamaged, not ErrUnavailable", err)
	}
	// A privilege refused says so, and is still unavailability to a
	// server (503, retried): a grant mends it.
	denied := fmt.Errorf("lock requests: %w", sqlStateError("42501"))
	if err := store.MapErr(t.Context(), denied); !errors.Is(err, store.ErrDenied) || !errors.Is(err, store.ErrUnavailable) ||
		!errors.Is(err, denied) || strings.Contains(err.Error(), "unavailable") {
		t.Errorf("MapErr(insufficient privilege) = %v, want ErrDenied (also ErrUnavailable) wrapping it, said denied", err)
	}
	if err := store.MapErr(t.Context(), sqlStateError("57P01")); errors.Is(err, store.ErrDenied) || !errors.Is(err, store.ErrUnavailable) {
		t.Errorf("MapErr(admin shutdown) = %v, want ErrUnavailable only", err)
	}
	// PostgreSQL's data_corrupted and index_corrupted: every read of the
	// block meets them again.
	for _, code := range []string{"XX001", "XX002"} {
		if err := store.MapErr(t.Context(), sqlStateError(code)); !errors.Is(err, store.ErrDamaged) || errors.Is(err, store.ErrUnavailable) {
			t.Errorf("MapErr(SQLSTATE %s) = %v, want ErrDamaged, not ErrUnavailable", code, err)
		}
	}
	if said := fmt.Errorf("%w: the file was replaced", store.ErrUnavailable); store.MapErr(t.Context(), said) != said {
		t.Errorf("MapErr(an ErrUnavailable) = %v, want it as it is", store.MapErr(t.Context(), said))
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if err := store.MapErr(ctx, driver); !errors.Is(err, context.Canceled) || errors.Is(err, store.ErrUnavailable) {
		t.Errorf("MapErr(driver error, canceled) = %v, want context.Canceled", err)
	}
}

// sqlStateError is a driver's error with a SQLSTATE, as pgconn.PgError.
type sqlStateError string

func (e sqlStateError) Error() string    { return "ERROR (SQLSTATE " + string(e) + ")" }
func (e sqlStateError) SQLState() string { return string(e) }
