// Package testlog is for tests that read what code logs from several
// goroutines.
package testlog

import (
	"bytes"
	"encoding/json"
	"sync"
	"testing"
)

// Buffer is a log sink safe for concurrent writers, which a test reads while
// the code under test may still log.
type Buffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *Buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// String returns what was written so far.
func (b *Buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// Lines returns the JSON log lines written so far, decoded; a line that is
// not JSON fails the test.
func (b *Buffer) Lines(t testing.TB) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, l := range bytes.Split(bytes.TrimSpace([]byte(b.String())), []byte("\n")) {
		if len(l) == 0 {
			continue
		}
		m := map[string]any{}
		if err := json.Unmarshal(l, &m); err != nil {
			t.Fatalf("log line %s: %v", l, err)
		}
		out = append(out, m)
	}
	return out
}

// Matching returns the JSON log lines whose attributes include every one of
// want.
func (b *Buffer) Matching(t testing.TB, want map[string]any) []map[string]any {
	t.Helper()
	var out []map[string]any
next:
	for _, l := range b.Lines(t) {
		for k, v := range want {
			if l[k] != v {
				continue next
			}
		}
		out = append(out, l)
	}
	return out
}
