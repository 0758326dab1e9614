package server_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	eventsv1 "github.com/otpless-events/otpless-events/gen/otpless/events/v1"
	"github.com/otpless-events/otpless-events/internal/testlog"
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
	awaitReadiness(t, healthpb.NewHealthClient(ts.conn), want)
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
	readsWatcherSnapshot(t, ctx, w, id, cut, other)
}

// readsWatcherSnapshot fails unless every server reads id as the watcher's
// last snapshot.
func readsWatcherSnapshot(t *testing.T, ctx context.Context, w *follower, id string, servers ...*testServer) {
	t.Helper()
	for _, ts := range servers {
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
// without echoing it (it may carry a password); a postgres:// DSN that
// does not parse, or names a database that does not exist, fails New
// without showing the password; one whose database cannot be reached does
// not (the server waits for it; TestPostgresWaitsAtStart), and its warning
// does not show the password either.
func TestStoreDSNErrors(t *testing.T) {
	t.Parallel()
	cfg := server.DefaultConfig()
	cfg.Security.Disabled = true
	cfg.Store = "mysql://user:s3cret@db/x"
	err := cfg.Validate()
	if err == nil || strings.Contains(err.Error(), "s3cret") || !strings.Contains(err.Error(), "mysql") {
		t.Errorf("Validate with a mysql:// store = %v; want an error naming the scheme only", err)
	}
	cfg.GRPCAddr, cfg.HTTPAddr = "127.0.0.1:0", "127.0.0.1:0"
	var logs testlog.Buffer
	cfg.Logger = slog.New(slog.NewTextHandler(&logs, nil))
	cfg.Store = "postgres://user:s3cret@127.0.0.1:1/x?connect_timeout=1"
	srv, err := server.New(context.Background(), cfg)
	if err != nil {
		t.Fatalf("New with an unreachable PostgreSQL: %v", err)
	}
	if err := srv.Run(canceled()); err != nil {
		t.Errorf("Run, canceled while waiting for PostgreSQL: %v", err)
	}
	if !strings.Contains(logs.String(), "not reachable") || strings.Contains(logs.String(), "s3cret") {
		t.Errorf("the log, with PostgreSQL unreachable, does not say so or shows the password:\n%s", logs.String())
	}

	for _, dsn := range []string{"postgres://user:s3cret@127.0.0.1:5432/x?connect_timeout=nope", noDatabase(t)} {
		cfg.Store = dsn
		srv, err := server.New(context.Background(), cfg)
		if err == nil {
			srv.Run(canceled())
			t.Errorf("New with %s succeeded", strings.ReplaceAll(dsn, "s3cret", "…"))
			continue
		}
		t.Logf("New: %v", err)
		if strings.Contains(err.Error(), "s3cret") {
			t.Errorf("New's error shows the password: %v", err)
		}
	}
}

// TestUnresolvedHostIsNamed: a store DSN whose host name does not resolve
// (a typo, or a Service not created yet) is waited for, and the warning
// names the host and the failed lookup, so that an operator sees a typo.
// It needs no network: the lookup fails either way, and "no such host" is
// wanted only where the resolver can say so.
func TestUnresolvedHostIsNamed(t *testing.T) {
	t.Parallel()
	const host = "otpless-events-test.invalid" // .invalid never resolves (RFC 6761)
	cfg := server.DefaultConfig()
	cfg.Security.Disabled = true
	cfg.GRPCAddr, cfg.HTTPAddr, cfg.MetricsAddr = "127.0.0.1:0", "127.0.0.1:0", ""
	cfg.DataDir = t.TempDir()
	var logs testlog.Buffer
	cfg.Logger = slog.New(slog.NewJSONHandler(io.MultiWriter(&logs, t.Output()), nil))
	cfg.Store = "postgres://events@" + host + "/otpless?connect_timeout=1"
	srv, err := server.New(t.Context(), cfg)
	if err != nil {
		t.Fatalf("New with a host name that does not resolve: %v, want it to wait", err)
	}
	if err := srv.Run(canceled()); err != nil {
		t.Errorf("Run, canceled while waiting: %v", err)
	}
	warned := logs.Matching(t, map[string]any{"level": "WARN"})
	if len(warned) == 0 {
		t.Fatalf("no warning with the database's host name not resolving:\n%s", logs.String())
	}
	text := fmt.Sprint(warned[0]["error"])
	if !strings.Contains(text, "lookup "+host) {
		t.Errorf("the warning does not name the failed lookup of %s: %s", host, text)
	}
	var dnsErr *net.DNSError
	if _, err := net.DefaultResolver.LookupHost(t.Context(), host); errors.As(err, &dnsErr) && dnsErr.IsNotFound && !strings.Contains(text, "no such host") {
		t.Errorf("the resolver says %s does not exist, and the warning does not: %s", host, text)
	}
}

// noDatabase is the test database's DSN naming a database that does not
// exist, with a password (which trust authentication does not check); it
// skips t without a test database.
func noDatabase(t *testing.T) string {
	t.Helper()
	u, err := url.Parse(pgtest.DSN(t))
	if err != nil {
		t.Fatal(err)
	}
	u.User = url.UserPassword(u.User.Username(), "s3cret")
	u.Path = "/otpless_no_such_database"
	return u.String()
}

// waitingConfig is the configuration of a server on store, a PostgreSQL
// DSN, for a test of its wait for the database: ephemeral loopback ports,
// no credentials, the store checked every 50 ms, its JSON log written to
// logs and the test's output.
func waitingConfig(t *testing.T, store string, logs io.Writer) server.Config {
	cfg := server.DefaultConfig()
	cfg.GRPCAddr, cfg.HTTPAddr, cfg.MetricsAddr = "127.0.0.1:0", "127.0.0.1:0", ""
	cfg.DataDir = t.TempDir()
	cfg.Security.Disabled = true
	cfg.Store = store
	cfg.HealthInterval = 50 * time.Millisecond
	cfg.Logger = slog.New(slog.NewJSONHandler(io.MultiWriter(logs, t.Output()), nil))
	return cfg
}

// TestPostgresWaitsAtStart: a server whose PostgreSQL cannot be reached at
// start (it starts at the same time) listens all the same, live but not
// ready, answers webhooks with 503 and Retry-After, says why in a warning,
// and becomes ready by itself once the database answers. One that meets a
// mistake waiting cannot mend once it reaches the database (here a role
// that does not exist) stops with it.
func TestPostgresWaitsAtStart(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		dsn  func(dsn string) string
		// wantErr: the error Run ends with, once the database answers;
		// "" to become ready.
		wantErr string
	}{
		{"reached", func(dsn string) string { return dsn }, ""},
		{"no such role", func(dsn string) string {
			u, _ := url.Parse(dsn)
			u.User = url.User("otpless_no_such_role")
			return u.String()
		}, "otpless_no_such_role"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dsn, _ := pgtest.Schema(t)
			proxy := pgtest.NewProxy(t, pgtest.Addr(t, dsn))
			proxy.Cut()
			var logs testlog.Buffer
			cfg := waitingConfig(t, pgtest.WithAddr(t, tc.dsn(dsn), proxy.Addr()), &logs)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			srv, err := server.New(ctx, cfg)
			if err != nil {
				t.Fatalf("New with the database not reachable yet: %v", err)
			}
			done := make(chan error, 1)
			go func() { done <- srv.Run(ctx) }()
			defer func() {
				cancel()
				<-done
			}()
			base := "http://" + srv.HTTPAddr().String()
			conn, err := grpc.NewClient(srv.GRPCAddr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			health := healthpb.NewHealthClient(conn)
			check := func(service string) healthpb.HealthCheckResponse_ServingStatus {
				t.Helper()
				resp, err := health.Check(ctx, &healthpb.HealthCheckRequest{Service: service})
				if err != nil {
					t.Fatalf("Health.Check(%q): %v", service, err)
				}
				return resp.GetStatus()
			}
			get := func(path string) int {
				t.Helper()
				resp, err := http.Get(base + path)
				if err != nil {
					t.Fatalf("GET %s: %v", path, err)
				}
				resp.Body.Close()
				return resp.StatusCode
			}

			if code := get("/healthz"); code != http.StatusOK {
				t.Errorf("/healthz while waiting for the database: %d, want 200", code)
			}
			if code := get("/readyz"); code != http.StatusServiceUnavailable {
				t.Errorf("/readyz while waiting for the database: %d, want 503", code)
			}
			if st := check(server.LivenessService); st != healthpb.HealthCheckResponse_SERVING {
				t.Errorf("liveness while waiting for the database: %v, want SERVING", st)
			}
			if st := check(server.ReadinessService); st != healthpb.HealthCheckResponse_NOT_SERVING {
				t.Errorf("readiness while waiting for the database: %v, want NOT_SERVING", st)
			}
			r, err := postWithin(ctx, base+"/v1/webhooks/otpless", dlr("wait-req", "SENT", 1764153000000), 10*time.Second)
			if err != nil || r.code != http.StatusServiceUnavailable || r.header.Get("Retry-After") == "" {
				t.Errorf("a webhook while waiting for the database: %d, Retry-After %q, %v; want 503 with Retry-After", r.code, r.header.Get("Retry-After"), err)
			}
			// One line for the refused webhook, its request's (with the
			// reason): the cause is in the warnings of the attempts, and a
			// second line per webhook is noise at OTPLESS's retry rate.
			if id := r.header.Get("X-Request-Id"); err == nil {
				for deadline := time.Now().Add(20 * time.Second); len(logs.Matching(t, map[string]any{"request_id": id, "msg": "http request"})) == 0; time.Sleep(20 * time.Millisecond) {
					if time.Now().After(deadline) {
						t.Fatalf("no request line for the refused webhook %s:\n%s", id, logs.String())
					}
				}
				if lines := logs.Matching(t, map[string]any{"request_id": id}); len(lines) != 1 || lines[0]["reason"] != "unavailable" {
					t.Errorf("the refused webhook %s has %d log lines, want its request's alone, with reason unavailable: %v", id, len(lines), lines)
				}
			}
			// New's attempt and at least one of Run's, each a warning.
			for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
				warned := logs.Matching(t, map[string]any{"level": "WARN"})
				n := 0
				for _, l := range warned {
					if strings.Contains(fmt.Sprint(l["msg"]), "not reachable") && strings.Contains(fmt.Sprint(l["error"]), "failed to connect") {
						n++
					}
				}
				if n >= 2 {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("%d warnings that the database is not reachable, with the reason, want 2 or more: %v", n, warned)
				}
			}

			proxy.Restore()
			if tc.wantErr != "" {
				select {
				case err := <-done:
					done <- err // for the deferred wait
					if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
						t.Errorf("Run = %v, want an error naming %s", err, tc.wantErr)
					}
				case <-time.After(30 * time.Second):
					t.Fatal("Run goes on waiting for a database that refuses its role")
				}
				return
			}
			awaitReadiness(t, health, healthpb.HealthCheckResponse_SERVING)
			if code := get("/readyz"); code != http.StatusOK {
				t.Errorf("/readyz once the database is reached: %d, want 200", code)
			}
			r, err = postWithin(ctx, base+"/v1/webhooks/otpless", dlr("wait-req", "SENT", 1764153000000), 10*time.Second)
			if err != nil || r.code != http.StatusOK {
				t.Errorf("a webhook once the database is reached: %d %s, %v; want 200", r.code, r.body, err)
			}
		})
	}
}

// TestPostgresWaitsWhileReadOnly: a server whose PostgreSQL takes no
// writes at start (a standby before its promotion; here a role with
// default_transaction_read_only), so that its migration cannot run, waits
// as for a database not up yet: it listens, not ready, warns at each
// attempt that the database is read-only, and becomes ready once it takes
// writes (on new sessions: the role's setting applies to those alone).
func TestPostgresWaitsWhileReadOnly(t *testing.T) {
	t.Parallel()
	dsn, schema := pgtest.Schema(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	admin, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(context.Background())
	role := "otpless_ro_" + strings.TrimPrefix(schema, "otpless_test_")
	if _, err := admin.Exec(ctx, "CREATE ROLE "+role+" LOGIN"); err != nil {
		t.Skipf("cannot create a role to test with: %v", err)
	}
	defer func() {
		admin.Exec(context.Background(), "DROP OWNED BY "+role)
		admin.Exec(context.Background(), "DROP ROLE "+role)
	}()
	for _, stmt := range []string{
		"GRANT USAGE, CREATE ON SCHEMA " + pgx.Identifier{schema}.Sanitize() + " TO " + role,
		"ALTER ROLE " + role + " SET default_transaction_read_only = on",
	} {
		if _, err := admin.Exec(ctx, stmt); err != nil {
			t.Fatalf("%s: %v", stmt, err)
		}
	}
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatal(err)
	}
	u.User = url.User(role)

	var logs testlog.Buffer
	cfg := waitingConfig(t, u.String(), &logs)
	srv, err := server.New(ctx, cfg)
	if err != nil {
		t.Fatalf("New with the database read-only: %v", err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}()
	// New's attempt and one of Run's, each a warning saying why.
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		n := 0
		for _, l := range logs.Matching(t, map[string]any{"level": "WARN"}) {
			if strings.Contains(fmt.Sprint(l["msg"]), "read-only") && strings.Contains(fmt.Sprint(l["error"]), "read-only transaction") {
				n++
			}
		}
		if n >= 2 {
			break
		}
		select {
		case err := <-done:
			done <- err // for the deferred wait
			t.Fatalf("Run with the database read-only ended: %v", err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d warnings that the database is read-only, with the reason, want 2 or more:\n%s", n, logs.String())
		}
	}
	notReady(t, ctx, srv, "with the database read-only")
	if _, err := admin.Exec(ctx, "ALTER ROLE "+role+" SET default_transaction_read_only = off"); err != nil {
		t.Fatal(err)
	}
	becomesReady(t, ctx, srv, "once the database takes writes")
}

// notReady checks srv, waiting for its database (while says why): alive,
// not ready, and a webhook refused with 503 and Retry-After.
func notReady(t *testing.T, ctx context.Context, srv *server.Server, while string) {
	t.Helper()
	base := "http://" + srv.HTTPAddr().String()
	for path, want := range map[string]int{"/healthz": http.StatusOK, "/readyz": http.StatusServiceUnavailable} {
		resp, err := http.Get(base + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("%s %s: %d, want %d", path, while, resp.StatusCode, want)
		}
	}
	r, err := postWithin(ctx, base+"/v1/webhooks/otpless", dlr("waiting-req", "SENT", 1764153000000), 10*time.Second)
	if err != nil || r.code != http.StatusServiceUnavailable || r.header.Get("Retry-After") == "" {
		t.Errorf("a webhook %s: %d, Retry-After %q, %v; want 503 with Retry-After", while, r.code, r.header.Get("Retry-After"), err)
	}
}

// becomesReady waits for srv to be ready (once says why it should be),
// and then stores a webhook.
func becomesReady(t *testing.T, ctx context.Context, srv *server.Server, once string) {
	t.Helper()
	conn, err := grpc.NewClient(srv.GRPCAddr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	awaitReadiness(t, healthpb.NewHealthClient(conn), healthpb.HealthCheckResponse_SERVING)
	r, err := postWithin(ctx, "http://"+srv.HTTPAddr().String()+"/v1/webhooks/otpless", dlr("waiting-req", "SENT", 1764153000000), 10*time.Second)
	if err != nil || r.code != http.StatusOK {
		t.Errorf("a webhook %s: %d %s, %v; want 200", once, r.code, r.body, err)
	}
}

// awaitReadiness waits until readiness is want, by watching it.
func awaitReadiness(t *testing.T, health healthpb.HealthClient, want healthpb.HealthCheckResponse_ServingStatus) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	w, err := health.Watch(ctx, &healthpb.HealthCheckRequest{})
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

// TestPostgresPartition: as TestPostgresOutage, but the replica's database
// goes silent (a network partition: connections stay open, nothing sent is
// answered, new connections hang) instead of refusing. Ingest answers 503
// with Retry-After, reads fail with UNAVAILABLE, readiness goes
// NOT_SERVING, each within a bound rather than when the sender gives up.
// Once the partition heals, whether the connections open during it work
// again or stay silent for good (a failover behind the same address), the
// replica recovers by itself, and its watchers get what the other replica
// committed meanwhile, each event once: also after a partition too short
// for the relay to find its listening connection silent (the server's
// Resync), and for a request whose changes this replica had passed on
// nothing of.
func TestPostgresPartition(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		heal func(*pgtest.Proxy)
	}{
		{"healed", (*pgtest.Proxy).Restore},
		{"old connections silent", (*pgtest.Proxy).RestoreNew},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			testPartition(t, tc.heal)
		})
	}
}

func testPartition(t *testing.T, heal func(*pgtest.Proxy)) {
	dsn, _ := pgtest.Schema(t)
	proxy := pgtest.NewProxy(t, pgtest.Addr(t, dsn))
	other := startServer(t, func(c *server.Config) { c.Store = dsn })
	// quiet changes only on the other replica, from before the cut-off one
	// starts: only a notification, or a re-read, brings its changes there.
	const id, quiet = "partition-req", "partition-quiet"
	other.ingest(t, dlr(quiet, "SENT", 1764153000000))
	cut := startServer(t, func(c *server.Config) {
		c.Store = pgtest.WithAddr(t, dsn, proxy.Addr())
		c.HealthInterval = 50 * time.Millisecond
		// The relay's own ping would find a listening connection left
		// silent only after a minute of quiet, and a minute more: a
		// watcher that catches up before then was brought by the server's
		// Resync.
		server.SetRelayPing(c, time.Minute)
	})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	w := follow(t, ctx, cut.requests, id)
	cut.ingest(t, dlr(id, "SENT", 1764153000000))
	w.until(t, 1)
	q := follow(t, ctx, cut.requests, quiet)
	q.until(t, 1)

	// A short partition: over once readiness has noticed it.
	proxy.Freeze()
	awaitHealth(t, cut, healthpb.HealthCheckResponse_NOT_SERVING)
	other.ingest(t, dlr(quiet, "DELIVERED", 1764153001000))
	heal(proxy)
	healed := time.Now()
	awaitHealth(t, cut, healthpb.HealthCheckResponse_SERVING)
	// Within until's 20 s, long before the relay's own ping gives up a
	// listening connection left silent: the server asks it to re-read once
	// its store answers again.
	q.until(t, 2)
	t.Logf("after a short partition, the watcher of %s caught up %s after it healed", quiet, time.Since(healed).Round(time.Millisecond))

	// A long one: the replica's calls run out of time meanwhile.
	proxy.Freeze()
	frozen := time.Now()
	// Liveness bounds, not speed targets: the store's own timeout is 5 s.
	const bound = 20 * time.Second
	var wg sync.WaitGroup
	wg.Go(func() {
		start := time.Now()
		r, err := postWithin(ctx, cut.httpURL+cut.webhookPath, dlr(id, "DELIVERED", 1764153001000), 2*bound)
		took := time.Since(start)
		switch {
		case err != nil:
			t.Errorf("ingest with the database silent: %v after %s", err, took)
		case r.code != http.StatusServiceUnavailable || r.header.Get("Retry-After") == "":
			t.Errorf("ingest with the database silent: %d, Retry-After %q after %s; want 503 with Retry-After", r.code, r.header.Get("Retry-After"), took)
		case took > bound:
			t.Errorf("ingest with the database silent answered after %s, want within %s", took, bound)
		default:
			t.Logf("ingest answered 503 after %s", took.Round(time.Millisecond))
		}
	})
	read := func(name string, call func(context.Context) error) {
		start := time.Now()
		rctx, cancel := context.WithTimeout(ctx, 2*bound)
		defer cancel()
		err := call(rctx)
		took := time.Since(start)
		switch {
		case status.Code(err) != codes.Unavailable:
			t.Errorf("%s with the database silent: %v after %s, want UNAVAILABLE", name, err, took)
		case took > bound:
			t.Errorf("%s with the database silent failed after %s, want within %s", name, took, bound)
		default:
			t.Logf("%s failed with UNAVAILABLE after %s", name, took.Round(time.Millisecond))
		}
	}
	wg.Go(func() {
		read("GetRequest", func(ctx context.Context) error {
			_, err := cut.requests.GetRequest(ctx, &eventsv1.GetRequestRequest{RequestId: id})
			return err
		})
	})
	wg.Go(func() {
		read("ListRequestEvents", func(ctx context.Context) error {
			_, err := cut.requests.ListRequestEvents(ctx, &eventsv1.ListRequestEventsRequest{RequestId: id})
			return err
		})
	})
	awaitHealth(t, cut, healthpb.HealthCheckResponse_NOT_SERVING)
	t.Logf("NOT_SERVING %s after the partition began", time.Since(frozen).Round(time.Millisecond))
	wg.Wait()

	// The other replica is not affected.
	other.ingest(t, dlr(id, "DELIVERED", 1764153001000))
	other.ingest(t, dlr(id, "READ", 1764153002000))
	other.ingest(t, dlr(quiet, "READ", 1764153002000))

	heal(proxy)
	healed = time.Now()
	t.Logf("partition healed after %s", healed.Sub(frozen).Round(time.Millisecond))
	awaitHealth(t, cut, healthpb.HealthCheckResponse_SERVING)
	t.Logf("SERVING %s after the partition healed", time.Since(healed).Round(time.Millisecond))
	w.until(t, 3) // committed by the other replica during the partition
	t.Logf("the watcher of %s caught up %s after the partition healed", id, time.Since(healed).Round(time.Millisecond))
	q.until(t, 3)
	t.Logf("the watcher of %s caught up %s after the partition healed", quiet, time.Since(healed).Round(time.Millisecond))
	cut.ingest(t, dlr(id, "CLICKED", 1764153003000))
	w.until(t, 4)
	other.ingest(t, dlr(quiet, "CLICKED", 1764153003000))
	q.until(t, 4)
	for _, st := range []string{"SENT", "DELIVERED", "READ", "CLICKED"} {
		if w.seen[st] != 1 {
			t.Errorf("the watcher of %s saw %s %d times, want once", id, st, w.seen[st])
		}
	}
	for _, st := range []string{"DELIVERED", "READ", "CLICKED"} {
		if q.seen[st] != 1 {
			t.Errorf("the watcher of %s saw %s %d times, want once", quiet, st, q.seen[st])
		}
	}
	// Nothing half-stored: both replicas read the watcher's snapshot and
	// the four events.
	readsWatcherSnapshot(t, ctx, w, id, cut, other)
	for _, ts := range []*testServer{cut, other} {
		events, err := ts.requests.ListRequestEvents(ctx, &eventsv1.ListRequestEventsRequest{RequestId: id})
		if err != nil {
			t.Fatal(err)
		}
		if n := len(events.GetEvents()); n != 4 {
			t.Errorf("ListRequestEvents: %d events, want 4: %v", n, events.GetEvents())
		}
	}
	// pgx gives each connection given up on during the partition 15 s for
	// its cancel request and its goodbye, which the partition held, and
	// closing the store at shutdown would wait for them.
	proxy.Cut()
}

// postWithin posts body to url as a webhook, giving up after limit.
func postWithin(ctx context.Context, url string, body []byte, limit time.Duration) (httpResult, error) {
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return httpResult{}, err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return httpResult{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return httpResult{code: resp.StatusCode, header: resp.Header, body: b}, err
}

// TestPostgresMigratesWhileServing: a start whose migration lasts (here it
// waits for the migration lock another replica holds, as it would for that
// replica's index over a large table) listens meanwhile, live but not
// ready, and becomes ready once the migration is done, rather than answer
// nothing until then and be killed by its liveness probe.
func TestPostgresMigratesWhileServing(t *testing.T) {
	t.Parallel()
	dsn, schema := pgtest.Schema(t)
	holder, err := pgx.Connect(t.Context(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer holder.Close(context.Background())
	const migrationLock = 0x6f74706c // pgstore's, with hashtext(schema)
	if _, err := holder.Exec(t.Context(), `SELECT pg_advisory_lock($1, hashtext($2))`, migrationLock, schema); err != nil {
		t.Fatal(err)
	}
	unlocked := false
	unlock := func() {
		if !unlocked {
			unlocked = true
			if _, err := holder.Exec(context.Background(), `SELECT pg_advisory_unlock($1, hashtext($2))`, migrationLock, schema); err != nil {
				t.Error(err)
			}
		}
	}
	defer unlock()

	cfg := waitingConfig(t, dsn, io.Discard)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	type made struct {
		srv *server.Server
		err error
	}
	newDone := make(chan made, 1)
	go func() {
		srv, err := server.New(ctx, cfg)
		newDone <- made{srv, err}
	}()
	var srv *server.Server
	select {
	case m := <-newDone:
		if m.err != nil {
			t.Fatalf("New while another replica migrates: %v", m.err)
		}
		srv = m.srv
	case <-time.After(30 * time.Second):
		unlock()
		t.Fatal("New still waits for the migration after 30 s: the ports answer nothing meanwhile")
	}
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}()
	notReady(t, ctx, srv, "while migrating")
	unlock()
	becomesReady(t, ctx, srv, "once migrated")
}

// TestNewEndsItsConnectAttempt: New's attempt to connect PostgreSQL, which
// runs under a context of its own derived from New's, ends that context
// once it has returned. One that returned within New's wait was left
// uncanceled: registered with New's context until that ended (for the
// server's life), and, for a context whose cancellation the context
// package cannot follow directly, a goroutine waiting on it as long.
func TestNewEndsItsConnectAttempt(t *testing.T) {
	t.Parallel()
	dsn, _ := pgtest.Schema(t)
	ctx := &followedContext{Context: context.Background(), done: make(chan struct{}), stops: map[int]bool{}}
	cfg := waitingConfig(t, dsn, io.Discard)
	srv, err := server.New(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	runCtx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := srv.Run(runCtx); err != nil {
		t.Errorf("Run: %v", err)
	}
	if n := ctx.following(); n != 0 {
		t.Errorf("%d contexts derived from New's still follow it once New has returned, want 0", n)
	}
}

// followedContext is a context that is never done, whose derived contexts
// follow it through its AfterFunc (as the context package does for a
// parent that is not its own) and stop following it when they end: the
// contexts derived from it and not ended yet can be counted.
type followedContext struct {
	context.Context // values only
	done            chan struct{}
	mu              sync.Mutex
	stops           map[int]bool // the followers not stopped
	next            int
}

func (c *followedContext) Done() <-chan struct{} { return c.done }
func (c *followedContext) Err() error            { return nil }

func (c *followedContext) AfterFunc(func()) (stop func() bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	id := c.next
	c.next++
	c.stops[id] = true
	return func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		following := c.stops[id]
		delete(c.stops, id)
		return following
	}
}

func (c *followedContext) following() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.stops)
}
