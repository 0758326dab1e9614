package loadgen

import (
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"time"

	"github.com/otpless-events/otpless-events/internal/selfsigned"
)

// Ceiling is a bare net/http server on a loopback port that reads each
// body and answers 200: what any Go HTTP server can do on this machine,
// to compare the service with.
type Ceiling struct {
	// URL is where to post.
	URL string
	// TLS is the client configuration that trusts the server's
	// certificate; nil for plain HTTP.
	TLS *tls.Config
	srv *http.Server
}

// StartCeiling starts a Ceiling, serving HTTPS with a certificate of its
// own when useTLS is set (as the service does when the run posts to an
// https URL: TLS costs both sides CPU on every request).
func StartCeiling(useTLS bool) (*Ceiling, error) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	c := &Ceiling{URL: "http://" + lis.Addr().String() + "/"}
	if useTLS {
		cert, pool, err := selfsigned.New()
		if err != nil {
			lis.Close()
			return nil, err
		}
		lis = tls.NewListener(lis, &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12})
		c.URL = "https://" + lis.Addr().String() + "/"
		c.TLS = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	}
	c.srv = &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			_, _ = io.Copy(io.Discard, r.Body)
			w.WriteHeader(http.StatusOK)
		}),
		ReadHeaderTimeout: 10 * time.Second,
	}
	go func() { _ = c.srv.Serve(lis) }()
	return c, nil
}

// Close stops the server.
func (c *Ceiling) Close() error { return c.srv.Close() }
