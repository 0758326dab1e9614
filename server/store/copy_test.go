package store_test

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"github.com/otpless-events/otpless-events/server/store"
	"github.com/otpless-events/otpless-events/server/store/sqlitestore"
)

// interruptedExporter ends its caller's context (a Ctrl-C) while it reads,
// and fails as a store's read does then.
type interruptedExporter struct{ cancel context.CancelFunc }

func (e interruptedExporter) Export(ctx context.Context, _ int, _ func([]store.Webhook) error) error {
	e.cancel()
	return ctx.Err()
}

// TestCopyInterrupted: a copy whose context ends (db copy's Ctrl-C) says it
// was interrupted, not that its source or destination failed.
func TestCopyInterrupted(t *testing.T) {
	t.Parallel()
	to, err := sqlitestore.Open(t.Context(), filepath.Join(t.TempDir(), "to.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer to.Close()
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	_, err = store.Copy(ctx, interruptedExporter{cancel}, to, nil)
	if !errors.Is(err, context.Canceled) || errors.Is(err, store.ErrDestination) || !strings.Contains(err.Error(), "interrupted") || strings.Contains(err.Error(), "source") {
		t.Errorf("Copy interrupted: %v; want it said interrupted, of neither store", err)
	}
}
