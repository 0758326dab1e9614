package server_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	eventsv1 "github.com/otpless-events/otpless-events/gen/otpless/events/v1"
	"github.com/otpless-events/otpless-events/internal/testserver"
	"github.com/otpless-events/otpless-events/server"
	"github.com/otpless-events/otpless-events/server/store/pgstore/pgtest"
)

// BenchmarkPostgresReplicas runs one and two replicas on one PostgreSQL
// schema, over loopback HTTP and gRPC, and reports:
//
//   - webhooks/s: ingest throughput, each op one webhook of a new request,
//     posted by 16 senders per CPU round robin over the replicas;
//   - p50-ms, p99-ms: then, on the quiet system, the time from posting a
//     webhook to a watcher of its request receiving the update, over 200
//     requests; with two replicas the watcher is on the other replica, so
//     the update comes through NOTIFY.
//
// Run it with a fixed count, e.g.
// go test -run '^$' -bench PostgresReplicas -benchtime 5000x ./server/
func BenchmarkPostgresReplicas(b *testing.B) {
	for _, n := range []int{1, 2} {
		b.Run(fmt.Sprintf("replicas=%d", n), func(b *testing.B) {
			dsn, _ := pgtest.Schema(b)
			replicas := make([]*testserver.Server, n)
			for i := range replicas {
				replicas[i] = testserver.Start(b, func(c *server.Config) {
					c.Store = dsn
					c.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
				})
			}
			client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 256}}
			post := func(s *testserver.Server, body []byte) error {
				resp, err := client.Post(s.HTTPURL+s.WebhookPath, "application/json", bytes.NewReader(body))
				if err != nil {
					return err
				}
				defer resp.Body.Close()
				io.Copy(io.Discard, resp.Body)
				if resp.StatusCode != http.StatusOK {
					return fmt.Errorf("POST webhook: %d", resp.StatusCode)
				}
				return nil
			}

			var next atomic.Int64
			b.SetParallelism(16)
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					i := next.Add(1)
					if err := post(replicas[i%int64(n)], dlr(fmt.Sprintf("tput-%d", i), "SENT", 1764153000000+i)); err != nil {
						b.Error(err)
						return
					}
				}
			})
			b.StopTimer()
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "webhooks/s")

			const samples = 200
			watchers := make([]eventsv1.RequestServiceClient, n)
			for i, s := range replicas {
				watchers[i] = eventsv1.NewRequestServiceClient(s.Dial(b))
			}
			var lat []time.Duration
			for k := range samples {
				id := fmt.Sprintf("latency-%d", k)
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				stream, err := watchers[(k+1)%n].WatchRequest(ctx, &eventsv1.WatchRequestRequest{RequestId: id})
				if err == nil {
					_, err = stream.Recv() // the SNAPSHOT: subscribed
				}
				if err != nil {
					cancel()
					b.Fatal(err)
				}
				start := time.Now()
				if err := post(replicas[k%n], dlr(id, "SENT", 1764153000000)); err != nil {
					cancel()
					b.Fatal(err)
				}
				for {
					m, err := stream.Recv()
					if err != nil {
						cancel()
						b.Fatalf("watch of %s: %v", id, err)
					}
					if m.GetType() == eventsv1.WatchMessageType_WATCH_MESSAGE_TYPE_UPDATE {
						break
					}
				}
				lat = append(lat, time.Since(start))
				cancel()
			}
			slices.Sort(lat)
			ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
			b.ReportMetric(ms(lat[len(lat)/2]), "p50-ms")
			b.ReportMetric(ms(lat[len(lat)*99/100]), "p99-ms")
		})
	}
}
