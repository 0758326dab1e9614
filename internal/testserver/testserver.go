// Package testserver runs the real service (server.New on loopback ports)
// for the tests of what sits in front of it: the gateway's event stream, the
// status page in a browser, the command line. It is for tests only.
package testserver

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/protobuf/encoding/protojson"

	eventsv1 "github.com/otpless-events/otpless-events/gen/otpless/events/v1"
	"github.com/otpless-events/otpless-events/internal/selfsigned"
	"github.com/otpless-events/otpless-events/server"
	"github.com/otpless-events/otpless-events/server/auth"
	"github.com/otpless-events/otpless-events/server/gateway"
)

// AdminKey is the admin API key of a server started with Secure.
const AdminKey = "testserver-admin-key"

// Secure turns authentication on, as serve has it: AdminKey is the one API
// key, watch tokens can be minted, and webhooks need a key in the URL
// (Ingest uses it). Pass it to Start.
func Secure(c *server.Config) {
	keys, err := auth.ParseAPIKeys(auth.FormatAPIKey("admin", AdminKey, []auth.Scope{auth.ScopeAdmin}))
	if err != nil {
		panic(err)
	}
	c.Security = server.Security{
		APIKeys:        keys,
		WatchTokenKeys: [][]byte{[]byte("testserver-watch-token-key-0123456789abcdef")},
		Webhook:        auth.WebhookConfig{Keys: []string{"testserver-webhook-key-0123456789"}},
	}
}

// Server is a running server.
type Server struct {
	// HTTPURL is the gateway's base URL, e.g. http://127.0.0.1:41234.
	HTTPURL string
	// GRPCAddr is the gRPC address.
	GRPCAddr string
	// WebhookPath is where webhooks are posted (with the key, when the
	// configuration has webhook keys).
	WebhookPath string

	cfg      server.Config
	stop     func() error
	shutdown func() error
	client   *http.Client
	tlsCA    string // the server's certificate, when it serves TLS
}

// Start runs a server with authentication disabled (unless mutate is
// Secure), on ephemeral loopback ports and a fresh data directory, after
// mutate has adjusted the configuration. It is stopped when the test ends.
// With TLS configured, the certificate must be self-signed: the clients
// trust it as their CA.
func Start(t testing.TB, mutate func(*server.Config)) *Server {
	t.Helper()
	cfg := server.DefaultConfig()
	cfg.GRPCAddr, cfg.HTTPAddr = "127.0.0.1:0", "127.0.0.1:0"
	cfg.DataDir = t.TempDir()
	cfg.Logger = slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn}))
	cfg.Security.Disabled = true
	if mutate != nil {
		mutate(&cfg)
	}
	return start(t, cfg, 0)
}

// Run runs server.New(cfg) until the test ends, without waiting for it to
// serve, and fails the test if Run fails: for a configuration whose
// clients Start cannot make (one requiring client certificates, say).
func Run(t testing.TB, cfg server.Config) *server.Server {
	t.Helper()
	srv, stop := launch(t, cfg, 0)
	t.Cleanup(func() {
		if err := stop(); err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	return srv
}

// launch runs server.New(cfg); stop stops it and returns Run's error, the
// same on every call. A port of cfg's in use is waited for up to
// rebind, then fails the test.
func launch(t testing.TB, cfg server.Config, rebind time.Duration) (srv *server.Server, stop func() error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	srv, err := server.New(ctx, cfg)
	for deadline := time.Now().Add(rebind); errors.Is(err, syscall.EADDRINUSE) && time.Now().Before(deadline); {
		time.Sleep(50 * time.Millisecond)
		srv, err = server.New(ctx, cfg)
	}
	if err != nil {
		cancel()
		t.Fatalf("server.New: %v", err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	var once sync.Once
	var runErr error
	return srv, func() error {
		once.Do(func() {
			cancel()
			runErr = <-done
		})
		return runErr
	}
}

func start(t testing.TB, cfg server.Config, rebind time.Duration) *Server {
	t.Helper()
	srv, stop := launch(t, cfg, rebind)
	var errSeen bool // Shutdown returned runErr: the cleanup leaves it
	scheme, client := "http://", http.DefaultClient
	if cert := cfg.Security.TLSCertFile; cert != "" {
		pool := x509.NewCertPool()
		if pem, err := os.ReadFile(cert); err != nil || !pool.AppendCertsFromPEM(pem) {
			t.Fatalf("TLS certificate %s: %v", cert, err)
		}
		scheme = "https://"
		// HTTP/2, as browsers speak it over TLS.
		client = &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}, ForceAttemptHTTP2: true}}
	}
	s := &Server{
		HTTPURL:     scheme + srv.HTTPAddr().String(),
		GRPCAddr:    srv.GRPCAddr().String(),
		WebhookPath: gateway.WebhookPath,
		cfg:         cfg,
		client:      client,
		tlsCA:       cfg.Security.TLSCertFile,
		stop:        stop,
	}
	if len(cfg.Security.Webhook.Keys) > 0 {
		s.WebhookPath += "/" + cfg.Security.Webhook.Keys[0]
	}
	s.shutdown = func() error { err := s.stop(); errSeen = true; return err }
	t.Cleanup(func() {
		if err := s.stop(); err != nil && !errSeen {
			t.Errorf("Run: %v", err)
		}
	})
	s.waitServing(t)
	return s
}

// Stop shuts the server down gracefully and waits until it has.
func (s *Server) Stop(t testing.TB) {
	t.Helper()
	if err := s.stop(); err != nil {
		t.Fatalf("Run: %v", err)
	}
}

// Shutdown shuts the server down as Stop does and returns Run's error, for a
// test that expects one.
func (s *Server) Shutdown() error { return s.shutdown() }

// Restart stops the server and starts it again on the same ports and data,
// as a deploy or a crash-and-restart would.
//
// Between the two, the ports are free, and a listener elsewhere on the
// machine binding port 0 (another package's test server, under go test
// ./...) can be given one: Restart then waits for it to go, up to
// rebindWait, as a test server lives for seconds.
func (s *Server) Restart(t testing.TB) {
	t.Helper()
	s.Stop(t)
	cfg := s.cfg
	_, cfg.HTTPAddr, _ = strings.Cut(s.HTTPURL, "://")
	cfg.GRPCAddr = s.GRPCAddr
	*s = *start(t, cfg, rebindWait)
}

// rebindWait is how long Restart waits for its ports to be free again.
const rebindWait = time.Minute

// Dial returns a client connection to the gRPC port (over TLS when the
// server serves it), with extra options (per-call credentials, say).
func (s *Server) Dial(t testing.TB, opts ...grpc.DialOption) *grpc.ClientConn {
	t.Helper()
	transport := grpc.WithTransportCredentials(insecure.NewCredentials())
	if s.tlsCA != "" {
		creds, err := credentials.NewClientTLSFromFile(s.tlsCA, "")
		if err != nil {
			t.Fatal(err)
		}
		transport = grpc.WithTransportCredentials(creds)
	}
	conn, err := grpc.NewClient(s.GRPCAddr, append([]grpc.DialOption{transport}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

func (s *Server) waitServing(t testing.TB) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn := s.Dial(t)
	defer conn.Close()
	w, err := healthpb.NewHealthClient(conn).Watch(ctx, &healthpb.HealthCheckRequest{}, grpc.WaitForReady(true))
	if err != nil {
		t.Fatalf("health watch: %v", err)
	}
	for {
		resp, err := w.Recv()
		if err != nil {
			t.Fatalf("server never became SERVING: %v", err)
		}
		if resp.GetStatus() == healthpb.HealthCheckResponse_SERVING {
			return
		}
	}
}

// HTTPClient returns an HTTP client for the gateway: over TLS, trusting the
// server's certificate and speaking HTTP/2, when the server serves TLS.
func (s *Server) HTTPClient() *http.Client { return s.client }

// SelfSigned writes a certificate for 127.0.0.1 that is its own CA, and its
// key, for Security.TLSCertFile and TLSKeyFile.
func SelfSigned(t testing.TB) (certFile, keyFile string) {
	t.Helper()
	cert, _, err := selfsigned.New()
	if err != nil {
		t.Fatal(err)
	}
	return WriteCertificate(t, cert)
}

// WriteCertificate writes cert, from package selfsigned, and its key, for
// Security.TLSCertFile and TLSKeyFile.
func WriteCertificate(t testing.TB, cert tls.Certificate) (certFile, keyFile string) {
	t.Helper()
	certPEM, keyPEM, err := selfsigned.PEM(cert)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	for path, b := range map[string][]byte{certFile: certPEM, keyFile: keyPEM} {
		if err := os.WriteFile(path, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return certFile, keyFile
}

// Ingest posts one webhook body as OTPLESS does and returns the answer; any
// status but 200 fails the test.
func (s *Server) Ingest(t testing.TB, body []byte) *eventsv1.IngestResponse {
	t.Helper()
	resp, err := s.client.Post(s.HTTPURL+s.WebhookPath, "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatalf("POST webhook: %v", err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("POST webhook: %d %s", resp.StatusCode, b)
	}
	out := &eventsv1.IngestResponse{}
	if err := protojson.Unmarshal(b, out); err != nil {
		t.Fatalf("decoding %s: %v", b, err)
	}
	return out
}
