package loadgen

import (
	"io"
	"net"
	"net/http"
	"time"
)

// Ceiling is a bare net/http server on a loopback port that reads each
// body and answers 200: what any Go HTTP server can do on this machine,
// to compare the service with.
type Ceiling struct {
	// URL is where to post.
	URL string
	srv *http.Server
}

// StartCeiling starts a Ceiling.
func StartCeiling() (*Ceiling, error) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			_, _ = io.Copy(io.Discard, r.Body)
			w.WriteHeader(http.StatusOK)
		}),
		ReadHeaderTimeout: 10 * time.Second,
	}
	go func() { _ = srv.Serve(lis) }()
	return &Ceiling{URL: "http://" + lis.Addr().String() + "/", srv: srv}, nil
}

// Close stops the server.
func (c *Ceiling) Close() error { return c.srv.Close() }
