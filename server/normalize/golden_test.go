package normalize_test

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	eventsv1 "github.com/otpless-events/otpless-events/gen/otpless/events/v1"
	"github.com/otpless-events/otpless-events/internal/fixtures"
	"github.com/otpless-events/otpless-events/server/normalize"
	"google.golang.org/protobuf/encoding/protojson"
)

var update = flag.Bool("update", false, "rewrite testdata/golden from the current output")

// received is the receive time used by the golden tests.
var received = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

const goldenDir = "testdata/golden"

// TestGolden normalizes every documented body and compares the events with
// testdata/golden/<fixture>.json. Run with -update to rewrite the files, then
// review the diff.
func TestGolden(t *testing.T) {
	t.Parallel()
	docs := fixtures.Docs(t)
	for _, f := range docs {
		t.Run(f.Name, func(t *testing.T) {
			t.Parallel()
			got := renderEvents(t, normalizeBody(t, f.Body))
			path := filepath.Join(goldenDir, f.Name+".json")
			if *update {
				if err := os.WriteFile(path, got, 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("no golden file for fixture %s (run go test ./server/normalize -update and review it): %v", f.Name, err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("%s differs from the output (run with -update and review the diff)\ngot:\n%s\nwant:\n%s", path, got, want)
			}
		})
	}
	t.Run("no stale golden files", func(t *testing.T) {
		t.Parallel()
		names := make(map[string]bool, len(docs))
		for _, f := range docs {
			names[f.Name] = true
		}
		paths, err := filepath.Glob(filepath.Join(goldenDir, "*.json"))
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range paths {
			if name := strings.TrimSuffix(filepath.Base(p), ".json"); !names[name] {
				t.Errorf("%s has no fixture; delete it", p)
			}
		}
	})
}

// normalizeBody runs Decode and Events, failing the test on an error.
func normalizeBody(t testing.TB, body []byte) []*eventsv1.Event {
	t.Helper()
	req, err := normalize.Decode(body)
	if err != nil {
		t.Fatalf("Decode: %v\nbody: %s", err, body)
	}
	events, err := normalize.Events(req, received)
	if err != nil {
		t.Fatalf("Events: %v\nbody: %s", err, body)
	}
	return events
}

// renderEvents renders events as a JSON array of protojson objects with
// stable formatting: protojson's whitespace is deliberately unstable, so its
// output is compacted and re-indented.
func renderEvents(t *testing.T, events []*eventsv1.Event) []byte {
	t.Helper()
	var raw bytes.Buffer
	raw.WriteByte('[')
	for i, e := range events {
		if i > 0 {
			raw.WriteByte(',')
		}
		b, err := protojson.Marshal(e)
		if err != nil {
			t.Fatal(err)
		}
		raw.Write(b)
	}
	raw.WriteByte(']')
	var compact, out bytes.Buffer
	if err := json.Compact(&compact, raw.Bytes()); err != nil {
		t.Fatal(err)
	}
	if err := json.Indent(&out, compact.Bytes(), "", "  "); err != nil {
		t.Fatal(err)
	}
	out.WriteByte('\n')
	return out.Bytes()
}
