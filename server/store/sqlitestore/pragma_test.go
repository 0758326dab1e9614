package sqlitestore

import (
	"path/filepath"
	"testing"
)

// TestPragmas checks the durability settings on the writer connection and
// that readers cannot write.
func TestPragmas(t *testing.T) {
	t.Parallel()
	s, err := Open(t.Context(), filepath.Join(t.TempDir(), "events.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for pragma, want := range map[string]string{
		"journal_mode":  "wal",
		"synchronous":   "2", // FULL
		"foreign_keys":  "1",
		"busy_timeout":  "5000",
		"secure_delete": "1",
	} {
		var got string
		if err := s.w.QueryRowContext(t.Context(), "PRAGMA "+pragma).Scan(&got); err != nil || got != want {
			t.Errorf("writer PRAGMA %s = %q, %v; want %q", pragma, got, err, want)
		}
	}
	if _, err := s.r.ExecContext(t.Context(), `DELETE FROM requests`); err == nil {
		t.Error("a reader connection could write")
	}
}
