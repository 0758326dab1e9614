package server_test

import (
	"context"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	eventsv1 "github.com/otpless-events/otpless-events/gen/otpless/events/v1"
	"github.com/otpless-events/otpless-events/server"
	"github.com/otpless-events/otpless-events/server/store/pgstore/pgtest"
)

// follower streams a WatchRequest into a channel.
type follower struct {
	msgs chan *eventsv1.WatchRequestResponse
	seen map[string]int // event status -> times delivered (statuses are distinct here)
	last *eventsv1.WatchRequestResponse
}

func follow(t *testing.T, ctx context.Context, c eventsv1.RequestServiceClient, id string) *follower {
	t.Helper()
	stream, err := c.WatchRequest(ctx, &eventsv1.WatchRequestRequest{RequestId: id})
	if err != nil {
		t.Fatal(err)
	}
	first, err := stream.Recv() // the subscription is in place
	if err != nil {
		t.Fatal(err)
	}
	f := &follower{msgs: make(chan *eventsv1.WatchRequestResponse, 100), seen: map[string]int{}, last: first}
	go func() {
		defer close(f.msgs)
		for {
			m, err := stream.Recv()
			if err != nil {
				return
			}
			f.msgs <- m
		}
	}()
	return f
}

// until takes messages until one at revision rev or later, checking that
// revisions increase; it fails the test after 20s.
func (f *follower) until(t *testing.T, rev int64) {
	t.Helper()
	deadline := time.After(20 * time.Second)
	for f.last.GetRevision() < rev {
		select {
		case m, ok := <-f.msgs:
			if !ok {
				t.Fatalf("watch ended at revision %d, want %d", f.last.GetRevision(), rev)
			}
			if m.GetType() != eventsv1.WatchMessageType_WATCH_MESSAGE_TYPE_UPDATE {
				continue
			}
			if m.GetRevision() <= f.last.GetRevision() {
				t.Fatalf("UPDATE at revision %d after %d", m.GetRevision(), f.last.GetRevision())
			}
			for _, e := range m.GetEvents() {
				f.seen[e.GetStatus()]++
			}
			f.last = m
		case <-deadline:
			t.Fatalf("watch stuck at revision %d, want %d", f.last.GetRevision(), rev)
		}
	}
}

// awaitHealth waits until the readiness status is want, by watching it.
func awaitHealth(t *testing.T, ts *testServer, want healthpb.HealthCheckResponse_ServingStatus) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	w, err := healthpb.NewHealthClient(ts.conn).Watch(ctx, &healthpb.HealthCheckRequest{})
	if err != nil {
		t.Fatal(err)
	}
	for {
		resp, err := w.Recv()
		if err != nil {
			t.Fatalf("readiness never became %v: %v", want, err)
		}
		if resp.GetStatus() == want {
			return
		}
	}
}

// TestPostgresOutage: a replica cut off from PostgreSQL answers ingest with
// 503 and Retry-After, fails reads fast with UNAVAILABLE and reports
// NOT_SERVING, while another replica goes on; when the database is back, the
// first recovers by itself, and its watchers get what the other committed
// meanwhile.
func TestPostgresOutage(t *testing.T) {
	t.Parallel()
	dsn, _ := pgtest.Schema(t)
	proxy := pgtest.NewProxy(t, pgtest.Addr(t, dsn))
	cut := startServer(t, func(c *server.Config) {
		c.Store = pgtest.WithAddr(t, dsn, proxy.Addr())
		c.HealthInterval = 50 * time.Millisecond
	})
	other := startServer(t, func(c *server.Config) { c.Store = dsn })
	const id = "outage-req"
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	w := follow(t, ctx, cut.requests, id)
	cut.ingest(t, dlr(id, "SENT", 1764153000000))
	w.until(t, 1)

	proxy.Cut()
	r := cut.post(t, cut.webhookPath, dlr(id, "DELIVERED", 1764153001000))
	if r.code != http.StatusServiceUnavailable || r.header.Get("Retry-After") == "" {
		t.Errorf("ingest with the database cut: %d, Retry-After %q; want 503 with Retry-After", r.code, r.header.Get("Retry-After"))
	}
	start := time.Now()
	if _, err := cut.requests.GetRequest(ctx, &eventsv1.GetRequestRequest{RequestId: id}); status.Code(err) != codes.Unavailable {
		t.Errorf("GetRequest with the database cut: %v, want UNAVAILABLE", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("GetRequest took %s to fail, want it fast", d)
	}
	awaitHealth(t, cut, healthpb.HealthCheckResponse_NOT_SERVING)

	// The other replica is not affected.
	other.ingest(t, dlr(id, "DELIVERED", 1764153001000))
	other.ingest(t, dlr(id, "READ", 1764153002000))

	proxy.Restore()
	awaitHealth(t, cut, healthpb.HealthCheckResponse_SERVING)
	w.until(t, 3) // committed by the other replica while this one was cut
	cut.ingest(t, dlr(id, "CLICKED", 1764153003000))
	w.until(t, 4)
	for _, st := range []string{"SENT", "DELIVERED", "READ", "CLICKED"} {
		if w.seen[st] != 1 {
			t.Errorf("watcher saw %s %d times, want once", st, w.seen[st])
		}
	}
	for _, ts := range []*testServer{cut, other} {
		got, err := ts.requests.GetRequest(ctx, &eventsv1.GetRequestRequest{RequestId: id})
		if err != nil {
			t.Fatal(err)
		}
		if !proto.Equal(got.GetRequest(), w.last.GetRequest()) {
			t.Errorf("GetRequest = %v, want the watcher's last snapshot %v", got.GetRequest(), w.last.GetRequest())
		}
	}
}

// TestStoreDSNErrors: a store DSN with an unknown scheme is refused
// without echoing it (it may carry a password), and a postgres:// DSN that
// cannot be reached fails New.
func TestStoreDSNErrors(t *testing.T) {
	t.Parallel()
	cfg := server.DefaultConfig()
	cfg.Security.Disabled = true
	cfg.Store = "mysql://user:s3cret@db/x"
	err := cfg.Validate()
	if err == nil || strings.Contains(err.Error(), "s3cret") || !strings.Contains(err.Error(), "mysql") {
		t.Errorf("Validate with a mysql:// store = %v; want an error naming the scheme only", err)
	}
	cfg.Store = "postgres://user:s3cret@127.0.0.1:1/x?connect_timeout=1"
	if err := cfg.Validate(); err != nil {
		t.Errorf("Validate with a postgres:// store: %v", err)
	}
	cfg.GRPCAddr, cfg.HTTPAddr = "127.0.0.1:0", "127.0.0.1:0"
	srv, err := server.New(context.Background(), cfg)
	if err == nil {
		srv.Run(canceled())
		t.Fatal("New with an unreachable PostgreSQL succeeded")
	}
	if strings.Contains(err.Error(), "s3cret") {
		t.Errorf("New's error shows the password: %v", err)
	}
}

func canceled() context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	return ctx
}

// TestShutdownWithDatabaseSilent: when PostgreSQL stops answering (a
// network partition: nothing refused, nothing answered), shutdown still
// ends, within its grace periods and a little more, instead of waiting on
// the database's connections.
func TestShutdownWithDatabaseSilent(t *testing.T) {
	t.Parallel()
	dsn, _ := pgtest.Schema(t)
	proxy := pgtest.NewProxy(t, pgtest.Addr(t, dsn))
	cfg := server.DefaultConfig()
	cfg.GRPCAddr, cfg.HTTPAddr, cfg.MetricsAddr = "127.0.0.1:0", "127.0.0.1:0", ""
	cfg.DataDir = t.TempDir()
	cfg.Security.Disabled = true
	cfg.Store = pgtest.WithAddr(t, dsn, proxy.Addr())
	cfg.ShutdownGrace = time.Second
	cfg.Logger = slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn}))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	srv, err := server.New(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	// A webhook, so that the pool holds connections.
	hook := "http://" + srv.HTTPAddr().String() + "/v1/webhooks/otpless"
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		resp, err := http.Post(hook, "application/json", strings.NewReader(string(dlr("silent-req", "SENT", 1764153000000))))
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("the webhook was never stored: %v", err)
		}
	}

	proxy.Freeze()
	// A webhook and a read in flight, waiting on the database.
	go func() {
		if resp, err := http.Post(hook, "application/json", strings.NewReader(string(dlr("silent-req", "DELIVERED", 1764153001000)))); err == nil {
			resp.Body.Close()
		}
	}()
	go func() {
		if resp, err := http.Get("http://" + srv.HTTPAddr().String() + "/v1/requests/silent-req"); err == nil {
			resp.Body.Close()
		}
	}()
	time.Sleep(200 * time.Millisecond)
	start := time.Now()
	cancel()
	// Three grace periods (calls, the writer, closing), and time to spare.
	bound := 3*cfg.ShutdownGrace + 6*time.Second
	select {
	case err := <-done:
		t.Logf("shutdown took %s: %v", time.Since(start).Round(time.Millisecond), err)
	case <-time.After(bound):
		proxy.Cut() // let Run end, and the test with it
		<-done
		t.Fatalf("shutdown with the database silent took over %s, with a grace of %s", bound, cfg.ShutdownGrace)
	}
}
