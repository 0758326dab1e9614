package server

import (
	"bytes"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"github.com/otpless-events/otpless-events/internal/loadgen"
)

// BenchmarkGatewayIngest measures webhooks/s through the whole HTTP stack
// in process, without the network: middleware (request log at info, to a
// discarding handler), gateway, decoding, normalization and the durable
// group commit to SQLite. Each op is one webhook of realistic traffic; 32
// senders per CPU keep the group commit busy. cpu-µs/webhook (the process's
// user and system time per webhook) is the figure that holds on a busy
// machine.
func BenchmarkGatewayIngest(b *testing.B) {
	s := startOps(b, func(c *Config) {
		c.Logger = slog.New(slog.NewJSONHandler(io.Discard, nil))
		c.MetricsAddr = ""
	}, nil)
	handler := s.http.Handler
	var slots atomic.Int64
	b.SetParallelism(32)
	b.ReportAllocs()
	cpu0 := cpuTime(b)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		slot := int(slots.Add(1))
		rng := rand.New(rand.NewPCG(uint64(slot), 1))
		var script []loadgen.Webhook
		for gen := 0; pb.Next(); {
			if len(script) == 0 {
				script = loadgen.NewRequest(rng, loadgen.RequestID(7, slot, gen), time.Now(), loadgen.DefaultMix)
				gen++
			}
			req := httptest.NewRequest(http.MethodPost, "/v1/webhooks/otpless", bytes.NewReader(script[0].Body))
			script = script[1:]
			rec := httptest.NewRecorder()
			handler.ServeHTTP(rec, req)
			if rec.Code != http.StatusOK {
				b.Errorf("POST: %d %s", rec.Code, rec.Body)
				return
			}
		}
	})
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "webhooks/s")
	b.ReportMetric(float64((cpuTime(b)-cpu0).Microseconds())/float64(b.N), "cpu-µs/webhook")
}

// cpuTime is the user and system CPU time of this process so far, as the
// load tool reads it (from /proc: Linux only).
func cpuTime(tb testing.TB) time.Duration {
	p, err := loadgen.ReadProc(os.Getpid())
	if err != nil {
		tb.Fatal(err)
	}
	return p.CPU
}
