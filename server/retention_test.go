package server

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

type panickingPurger struct{ runs atomic.Int32 }

func (p *panickingPurger) PurgePII(context.Context, time.Time) (int, error) {
	p.runs.Add(1)
	panic("purge kaboom")
}

// A purge that panics is logged and costs that run only: the loop runs the
// next one, and the process goes on.
func TestRetentionSurvivesAPanic(t *testing.T) {
	t.Parallel()
	var logs bytes.Buffer
	p := &panickingPurger{}
	var failures atomic.Int32
	r := &retention{purger: p, keep: time.Hour, interval: time.Millisecond, log: slog.New(slog.NewTextHandler(&logs, nil)),
		observe: func(purged int, err error) {
			if err != nil && strings.Contains(err.Error(), "purge kaboom") {
				failures.Add(1)
			}
		}}
	r.start()
	for deadline := time.Now().Add(10 * time.Second); p.runs.Load() < 2; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the loop did not run again after a panic")
		}
	}
	r.stop()
	if !strings.Contains(logs.String(), "purge kaboom") {
		t.Errorf("the panic was not logged: %s", logs.String())
	}
	if failures.Load() < 2 {
		t.Errorf("%d failed runs observed, want every run's panic", failures.Load())
	}
}
