package observe

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"testing"
)

// A line logged with a call's context carries its request_id, unless it
// names one itself; a line without a call's context has none.
func TestRequestIDHandler(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	log := slog.New(MaskingHandler(RequestIDHandler(slog.NewJSONHandler(&buf, nil)))).With("component", "ingest")
	ctx := withCall(context.Background(), &call{requestID: "req-7"})
	log.LogAttrs(ctx, slog.LevelWarn, "webhook not stored")
	log.LogAttrs(ctx, slog.LevelInfo, "own", slog.String("request_id", "mine"))
	log.LogAttrs(context.Background(), slog.LevelInfo, "no call")
	var lines []map[string]any
	for _, b := range bytes.Split(bytes.TrimSpace(buf.Bytes()), []byte("\n")) {
		var m map[string]any
		if err := json.Unmarshal(b, &m); err != nil {
			t.Fatal(err)
		}
		lines = append(lines, m)
	}
	if len(lines) != 3 {
		t.Fatalf("%d lines: %s", len(lines), buf.Bytes())
	}
	for i, want := range []any{"req-7", "mine", nil} {
		if got := lines[i]["request_id"]; got != want || lines[i]["component"] != "ingest" {
			t.Errorf("line %d: request_id %v, component %v; want %v, ingest", i, got, lines[i]["component"], want)
		}
	}
	if c := bytes.Count(buf.Bytes(), []byte(`"request_id"`)); c != 2 {
		t.Errorf("request_id written %d times in all, want 2: %s", c, buf.Bytes())
	}
}
