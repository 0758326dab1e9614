package server

import (
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// certCheckInterval is how often at most the TLS files are read again, by
// a handshake or a scrape of the metrics that finds the last look older.
const certCheckInterval = 5 * time.Second

// certReloader serves the certificate (and the client CAs) the TLS files
// hold now: a handshake or a scrape reads the files again when the last
// look is over its interval old, and a change that parses replaces what
// is served. Files are read by their paths each time, so a symlink
// swapped (a Kubernetes secret volume's ..data) is followed. A change that
// does not parse (a certificate written before its key) leaves the last
// good one served, with a warning once per change.
type certReloader struct {
	certFile, keyFile, caFile string
	every                     time.Duration
	log                       *slog.Logger

	// served is what handshakes get.
	served atomic.Pointer[servedTLS]
	// next is when the files are due to be read again (Unix nanoseconds).
	next atomic.Int64

	// mu is held by the one check running; the others serve what is
	// there meanwhile rather than wait for its files.
	mu sync.Mutex
	// pairSeen and caSeen digest the files as last read, loaded or not:
	// a change is loaded, or warned of, once.
	pairSeen, caSeen [sha256.Size]byte
}

// servedTLS is one certificate and client CA pool, with the gRPC port's
// configuration made of them.
type servedTLS struct {
	cert *tls.Certificate // its Leaf set
	pool *x509.CertPool   // nil: no client certificate required
	grpc *tls.Config
}

// newCertReloader reads the files, failing on what cannot be served.
func newCertReloader(cfg Security, every time.Duration, log *slog.Logger) (*certReloader, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	r := &certReloader{certFile: cfg.TLSCertFile, keyFile: cfg.TLSKeyFile, caFile: cfg.ClientCAFile, every: every, log: log}
	pair, pairSeen, err := readFiles(r.certFile, r.keyFile)
	var cert *tls.Certificate
	if err == nil {
		cert, err = parsePair(pair)
	}
	if err != nil {
		return nil, fmt.Errorf("TLS certificate %s and key %s: %w", r.certFile, r.keyFile, err)
	}
	var pool *x509.CertPool
	var caSeen [sha256.Size]byte
	if r.caFile != "" {
		var ca [][]byte
		if ca, caSeen, err = readFiles(r.caFile); err != nil {
			return nil, fmt.Errorf("client CA: %w", err)
		}
		if pool, err = parseCA(ca[0], r.caFile); err != nil {
			return nil, err
		}
	}
	r.pairSeen, r.caSeen = pairSeen, caSeen
	r.served.Store(newServedTLS(cert, pool))
	r.next.Store(time.Now().Add(every).UnixNano())
	return r, nil
}

func newServedTLS(cert *tls.Certificate, pool *x509.CertPool) *servedTLS {
	c := &tls.Config{Certificates: []tls.Certificate{*cert}, MinVersion: tls.VersionTLS12, NextProtos: []string{"h2"}}
	if pool != nil {
		c.ClientCAs = pool
		c.ClientAuth = tls.RequireAndVerifyClientCert
	}
	return &servedTLS{cert: cert, pool: pool, grpc: c}
}

// httpConfig is the HTTP port's TLS configuration (net/http adds h2).
func (r *certReloader) httpConfig() *tls.Config {
	return &tls.Config{
		MinVersion:     tls.VersionTLS12,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return r.current().cert, nil },
	}
}

// grpcConfig is the gRPC port's: h2, and the client CAs when set.
func (r *certReloader) grpcConfig() *tls.Config {
	return &tls.Config{
		MinVersion:         tls.VersionTLS12,
		NextProtos:         []string{"h2"},
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) { return r.current().grpc, nil },
	}
}

// current is what is served, after reading the files again when due.
func (r *certReloader) current() *servedTLS {
	if time.Now().UnixNano() >= r.next.Load() && r.mu.TryLock() {
		if time.Now().UnixNano() >= r.next.Load() {
			r.check()
			r.next.Store(time.Now().Add(r.every).UnixNano())
		}
		r.mu.Unlock()
	}
	return r.served.Load()
}

// check reads the files, and serves what changed and parses. Call it
// with mu held.
func (r *certReloader) check() {
	old := r.served.Load()
	cert, pool := old.cert, old.pool
	if pair, seen, err := readFiles(r.certFile, r.keyFile); seen != r.pairSeen {
		r.pairSeen = seen
		if err == nil {
			var c *tls.Certificate
			if c, err = parsePair(pair); err == nil {
				cert = c
				r.log.Info("TLS certificate loaded again", "file", r.certFile, "not_after", c.Leaf.NotAfter)
				warnOutOfDate(r.log, r.certFile, c.Leaf, time.Now())
			}
		}
		if err != nil {
			r.log.Warn("the TLS certificate or key file changed but cannot be served; the previous certificate is served meanwhile",
				"cert_file", r.certFile, "key_file", r.keyFile, "error", err)
		}
	}
	if r.caFile != "" {
		if ca, seen, err := readFiles(r.caFile); seen != r.caSeen {
			r.caSeen = seen
			if err == nil {
				var p *x509.CertPool
				if p, err = parseCA(ca[0], r.caFile); err == nil {
					pool = p
					r.log.Info("client CA loaded again", "file", r.caFile)
				}
			}
			if err != nil {
				r.log.Warn("the client CA file changed but cannot be used; the previous CAs are used meanwhile", "file", r.caFile, "error", err)
			}
		}
	}
	if cert != old.cert || pool != old.pool {
		r.served.Store(newServedTLS(cert, pool))
	}
}

// readFiles reads paths, and digests what it read or the first error,
// which it returns.
func readFiles(paths ...string) ([][]byte, [sha256.Size]byte, error) {
	h := sha256.New()
	contents := make([][]byte, 0, len(paths))
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			fmt.Fprintf(h, "error %s", err)
			return nil, [sha256.Size]byte(h.Sum(nil)), err
		}
		fmt.Fprintf(h, "%d:", len(b))
		h.Write(b)
		contents = append(contents, b)
	}
	return contents, [sha256.Size]byte(h.Sum(nil)), nil
}

// parsePair parses a certificate and its key, which must match.
func parsePair(pair [][]byte) (*tls.Certificate, error) {
	cert, err := tls.X509KeyPair(pair[0], pair[1])
	if err != nil {
		return nil, err
	}
	if cert.Leaf == nil {
		if cert.Leaf, err = x509.ParseCertificate(cert.Certificate[0]); err != nil {
			return nil, err
		}
	}
	return &cert, nil
}

// parseCA parses the client CA file's certificates.
func parseCA(pem []byte, file string) (*x509.CertPool, error) {
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, errors.New("client CA: no certificate in " + file)
	}
	return pool, nil
}
