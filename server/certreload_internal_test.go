package server

import (
	"bytes"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/otpless-events/otpless-events/internal/selfsigned"
	"github.com/otpless-events/otpless-events/internal/testlog"
)

// The files are read again once their interval is over, not before, and
// a key gone (removed, or not written yet) leaves the certificate served,
// warned of once however many checks find it gone.
func TestCertReloaderInterval(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	write := func() (der []byte) {
		t.Helper()
		c, _, err := selfsigned.New()
		if err != nil {
			t.Fatal(err)
		}
		certPEM, keyPEM, err := selfsigned.PEM(c)
		if err != nil {
			t.Fatal(err)
		}
		for path, b := range map[string][]byte{certFile: certPEM, keyFile: keyPEM} {
			if err := os.WriteFile(path, b, 0o600); err != nil {
				t.Fatal(err)
			}
		}
		return c.Certificate[0]
	}
	served := func(r *certReloader) []byte { return r.current().cert.Certificate[0] }
	first := write()
	var logs testlog.Buffer
	r, err := newCertReloader(Security{TLSCertFile: certFile, TLSKeyFile: keyFile}, time.Hour, slog.New(slog.NewJSONHandler(&logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	due := func() { r.next.Store(0) } // as if the hour had passed
	second := write()
	if !bytes.Equal(served(r), first) {
		t.Fatal("files read again before their interval")
	}
	due()
	if !bytes.Equal(served(r), second) {
		t.Fatal("files not read again once due")
	}
	if err := os.Remove(keyFile); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		due()
		if !bytes.Equal(served(r), second) {
			t.Fatal("key removed: the certificate served is not the previous one")
		}
	}
	if w := logs.Matching(t, map[string]any{"level": "WARN"}); len(w) != 1 || w[0]["key_file"] != keyFile {
		t.Errorf("warnings with the key removed, checked three times: %v; want one naming %s", w, keyFile)
	}
}
