package server_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	eventsv1 "github.com/otpless-events/otpless-events/gen/otpless/events/v1"
	"github.com/otpless-events/otpless-events/internal/selfsigned"
	"github.com/otpless-events/otpless-events/internal/testlog"
	"github.com/otpless-events/otpless-events/internal/testserver"
	"github.com/otpless-events/otpless-events/server"
	"github.com/otpless-events/otpless-events/server/auth"
)

// testPKI is a CA with a server certificate for 127.0.0.1 and a client
// certificate, written as PEM files.
type testPKI struct {
	caFile, certFile, keyFile string
	pool                      *x509.CertPool
	client                    tls.Certificate
}

func newTestPKI(t *testing.T) testPKI {
	t.Helper()
	dir := t.TempDir()
	write := func(name string, b []byte) string {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	ca := newTestCA(t)
	p := testPKI{pool: x509.NewCertPool(), client: ca.client(t)}
	p.pool.AddCert(ca.cert)
	p.caFile = write("ca.pem", ca.pem)
	certPEM, keyPEM := ca.issue(t, 2, time.Now().Add(time.Hour), x509.ExtKeyUsageServerAuth)
	p.certFile, p.keyFile = write("server.pem", certPEM), write("server-key.pem", keyPEM)
	return p
}

func TestTLSAndMutualTLS(t *testing.T) {
	t.Parallel()
	pki := newTestPKI(t)
	cfg := server.DefaultConfig()
	cfg.GRPCAddr, cfg.HTTPAddr, cfg.DataDir = "127.0.0.1:0", "127.0.0.1:0", t.TempDir()
	secured(func(s *server.Security) {
		s.TLSCertFile, s.TLSKeyFile, s.ClientCAFile = pki.certFile, pki.keyFile, pki.caFile
	})(&cfg)
	srv := testserver.Run(t, cfg)

	// HTTPS on the gateway.
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pki.pool}}}
	resp, err := client.Post("https://"+srv.HTTPAddr().String()+"/v1/webhooks/otpless/"+testWebhookKey, "application/json",
		strings.NewReader(string(dlr("tls-req", "SENT", 1764153000000))))
	if err != nil {
		t.Fatalf("HTTPS webhook: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("HTTPS webhook: %d", resp.StatusCode)
	}
	get := func(cert *tls.Certificate) error {
		tc := &tls.Config{RootCAs: pki.pool}
		if cert != nil {
			tc.Certificates = []tls.Certificate{*cert}
		}
		conn, err := grpc.NewClient(srv.GRPCAddr().String(), grpc.WithTransportCredentials(credentials.NewTLS(tc)),
			grpc.WithPerRPCCredentials(auth.BearerCredentials{Token: testAdminKey}))
		if err != nil {
			return err
		}
		defer conn.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_, err = eventsv1.NewRequestServiceClient(conn).GetRequest(ctx, &eventsv1.GetRequestRequest{RequestId: "tls-req"})
		return err
	}
	if err := get(&pki.client); err != nil {
		t.Fatalf("gRPC with a client certificate: %v", err)
	}
	if err := get(nil); err == nil {
		t.Fatal("gRPC without a client certificate succeeded under mutual TLS")
	}
}

// A certificate out of its validity, which every client that checks it
// refuses, is served (a client may not check), with a warning at start
// naming the file and when it ends or begins.
func TestCertificateOutOfDateWarned(t *testing.T) {
	t.Parallel()
	now := time.Now()
	for _, tc := range []struct {
		name          string
		from, to      time.Time
		warned, field string
	}{
		{"expired", now.Add(-48 * time.Hour), now.Add(-24 * time.Hour), "the TLS certificate has expired: clients that check it refuse every connection", "not_after"},
		{"not yet valid", now.Add(24 * time.Hour), now.Add(48 * time.Hour), "the TLS certificate is not valid yet: clients that check it refuse every connection", "not_before"},
		{"valid", now.Add(-time.Hour), now.Add(time.Hour), "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			cert, _, err := selfsigned.Valid(tc.from, tc.to)
			if err != nil {
				t.Fatal(err)
			}
			certFile, keyFile := testserver.WriteCertificate(t, cert)
			var logs testlog.Buffer
			cfg := server.DefaultConfig()
			cfg.GRPCAddr, cfg.HTTPAddr, cfg.MetricsAddr, cfg.DataDir = "127.0.0.1:0", "127.0.0.1:0", "", t.TempDir()
			cfg.Logger = slog.New(slog.NewJSONHandler(&logs, nil))
			cfg.Security.Disabled = true
			cfg.Security.TLSCertFile, cfg.Security.TLSKeyFile = certFile, keyFile
			testserver.Run(t, cfg)
			var warnings []map[string]any
			for _, l := range logs.Lines(t) {
				if l["level"] == "WARN" && strings.Contains(fmt.Sprint(l["msg"]), "TLS certificate") {
					warnings = append(warnings, l)
				}
			}
			switch {
			case tc.warned == "" && len(warnings) != 0:
				t.Errorf("warned of a valid certificate: %v", warnings)
			case tc.warned != "" && (len(warnings) != 1 || warnings[0]["msg"] != tc.warned || warnings[0]["file"] != certFile || warnings[0][tc.field] == nil):
				t.Errorf("warnings %v; want one %q naming %s and its %s", warnings, tc.warned, certFile, tc.field)
			}
		})
	}
}
