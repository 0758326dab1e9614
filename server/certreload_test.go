package server_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/otpless-events/otpless-events/internal/testlog"
	"github.com/otpless-events/otpless-events/internal/testserver"
	"github.com/otpless-events/otpless-events/server"
)

// testCA issues server and client certificates for 127.0.0.1 as PEM.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  []byte
}

func newTestCA(t *testing.T) testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "reload CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return testCA{cert: cert, key: key, pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

// issue returns a certificate of serial and notAfter, and its key, as PEM.
func (ca testCA) issue(t *testing.T, serial int64, notAfter time.Time, usage x509.ExtKeyUsage) (certPEM, keyPEM []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: "127.0.0.1"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: notAfter,
		ExtKeyUsage: []x509.ExtKeyUsage{usage}, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER})
}

// client returns ca's client certificate for mutual TLS.
func (ca testCA) client(t *testing.T) tls.Certificate {
	t.Helper()
	certPEM, keyPEM := ca.issue(t, 99, time.Now().Add(time.Hour), x509.ExtKeyUsageClientAuth)
	c, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// secretVolume lays files out as Kubernetes mounts a secret: each name a
// symlink to ..data/name, ..data a symlink to the current version's
// directory, which an update replaces in one rename.
type secretVolume struct {
	dir      string
	versions int
}

func newSecretVolume(t *testing.T, files map[string][]byte) *secretVolume {
	t.Helper()
	v := &secretVolume{dir: t.TempDir()}
	v.swap(t, files)
	for name := range files {
		if err := os.Symlink(filepath.Join("..data", name), filepath.Join(v.dir, name)); err != nil {
			t.Fatal(err)
		}
	}
	return v
}

func (v *secretVolume) path(name string) string { return filepath.Join(v.dir, name) }

// swap writes files into a new version's directory and points ..data at it.
func (v *secretVolume) swap(t *testing.T, files map[string][]byte) {
	t.Helper()
	v.versions++
	version := fmt.Sprintf("..v%d", v.versions)
	if err := os.Mkdir(filepath.Join(v.dir, version), 0o700); err != nil {
		t.Fatal(err)
	}
	for name, b := range files {
		if err := os.WriteFile(filepath.Join(v.dir, version, name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	tmp := filepath.Join(v.dir, "..data_tmp")
	if err := os.Symlink(version, tmp); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(v.dir, "..data")); err != nil {
		t.Fatal(err)
	}
}

// write replaces one file of the current version in place, as a tool that
// writes the certificate and the key one after the other does.
func (v *secretVolume) write(t *testing.T, name string, b []byte) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(v.dir, "..data", name), b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// A certificate renewed on disk is served without a restart, on both
// ports, and its end is in the metrics; a certificate and key that do
// not match (one written, the other not yet) leave the one served as it
// is, with one warning. The client CA is read again too.
func TestCertificateRenewedOnDisk(t *testing.T) {
	t.Parallel()
	ca1, ca2 := newTestCA(t), newTestCA(t)
	roots := x509.NewCertPool()
	roots.AddCert(ca1.cert)
	roots.AddCert(ca2.cert)
	end := time.Now().Add(2 * time.Hour).Truncate(time.Second)
	certA, keyA := ca1.issue(t, 10, end, x509.ExtKeyUsageServerAuth)
	certB, keyB := ca1.issue(t, 11, end.Add(time.Hour), x509.ExtKeyUsageServerAuth)
	certC, keyC := ca2.issue(t, 12, end.Add(2*time.Hour), x509.ExtKeyUsageServerAuth)
	client1, client2 := ca1.client(t), ca2.client(t)

	vol := newSecretVolume(t, map[string][]byte{"tls.crt": certA, "tls.key": keyA, "ca.crt": ca1.pem})
	var logs testlog.Buffer
	cfg := server.DefaultConfig()
	cfg.GRPCAddr, cfg.HTTPAddr, cfg.MetricsAddr, cfg.DataDir = "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0", t.TempDir()
	cfg.Logger = slog.New(slog.NewJSONHandler(&logs, nil))
	cfg.Security.Disabled = true
	cfg.Security.TLSCertFile, cfg.Security.TLSKeyFile, cfg.Security.ClientCAFile = vol.path("tls.crt"), vol.path("tls.key"), vol.path("ca.crt")
	server.SetCertCheck(&cfg, time.Nanosecond) // every handshake and scrape looks at the files
	srv := testserver.Run(t, cfg)

	// served is the serial of the certificate a new handshake gets on
	// each port, after checking the gRPC port speaks h2 and accepts
	// client (by a health check).
	served := func(client tls.Certificate) (httpSerial, grpcSerial int64) {
		t.Helper()
		hc, err := tls.Dial("tcp", srv.HTTPAddr().String(), &tls.Config{RootCAs: roots, NextProtos: []string{"h2", "http/1.1"}})
		if err != nil {
			t.Fatalf("HTTP port handshake: %v", err)
		}
		defer hc.Close()
		gc, err := tls.Dial("tcp", srv.GRPCAddr().String(), &tls.Config{RootCAs: roots, NextProtos: []string{"h2"}, Certificates: []tls.Certificate{client}})
		if err != nil {
			t.Fatalf("gRPC port handshake: %v", err)
		}
		defer gc.Close()
		if p := gc.ConnectionState().NegotiatedProtocol; p != "h2" {
			t.Errorf("gRPC port negotiated %q, want h2", p)
		}
		if err := healthCheck(srv.GRPCAddr().String(), roots, client); err != nil {
			t.Fatalf("health check with the client certificate: %v", err)
		}
		return hc.ConnectionState().PeerCertificates[0].SerialNumber.Int64(), gc.ConnectionState().PeerCertificates[0].SerialNumber.Int64()
	}
	expect := func(step string, client tls.Certificate, serial int64, notAfter time.Time) {
		t.Helper()
		if h, g := served(client); h != serial || g != serial {
			t.Errorf("%s: served certificates %d (HTTP) and %d (gRPC), want %d", step, h, g, serial)
		}
		if got, want := scrapeGauge(t, srv.MetricsAddr().String(), "otpless_events_tls_certificate_expiration_timestamp_seconds"), float64(notAfter.Unix()); got != want {
			t.Errorf("%s: expiration gauge %v, want %v", step, got, want)
		}
	}
	expect("at start", client1, 10, end)

	// The certificate written, its key not yet: the pair does not match.
	vol.write(t, "tls.crt", certB)
	expect("certificate without its key", client1, 10, end)
	expect("certificate without its key, again", client1, 10, end)
	if w := tlsWarnings(t, &logs); len(w) != 1 || !strings.Contains(fmt.Sprint(w[0]["error"]), "private key does not match") {
		t.Errorf("warnings after a mismatched pair, checked twice: %v; want one, saying the key does not match", w)
	}
	vol.write(t, "tls.key", keyB)
	expect("certificate and key renewed in place", client1, 11, end.Add(time.Hour))

	// A new version of the secret: another CA, its server and client
	// certificates.
	vol.swap(t, map[string][]byte{"tls.crt": certC, "tls.key": keyC, "ca.crt": ca2.pem})
	expect("secret volume swapped", client2, 12, end.Add(2*time.Hour))
	if err := healthCheck(srv.GRPCAddr().String(), roots, client1); err == nil {
		t.Error("a client certificate of the CA replaced is still accepted")
	}
	if w := tlsWarnings(t, &logs); len(w) != 1 {
		t.Errorf("warnings: %v; want only the mismatched pair's", w)
	}
}

func healthCheck(addr string, roots *x509.CertPool, client tls.Certificate) error {
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{RootCAs: roots, Certificates: []tls.Certificate{client}})))
	if err != nil {
		return err
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err = healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
	return err
}

func tlsWarnings(t *testing.T, logs *testlog.Buffer) []map[string]any {
	t.Helper()
	var warnings []map[string]any
	for _, l := range logs.Lines(t) {
		if l["level"] == "WARN" && strings.Contains(fmt.Sprint(l["msg"]), "TLS") {
			warnings = append(warnings, l)
		}
	}
	return warnings
}

// scrapeGauge reads one unlabelled series from the metrics listener at addr.
func scrapeGauge(t *testing.T, addr, name string) float64 {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatalf("%s: %v", line, err)
			}
			return f
		}
	}
	t.Fatalf("/metrics has no %s", name)
	return 0
}
