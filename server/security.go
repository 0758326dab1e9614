package server

import (
	"crypto/tls"
	"crypto/x509"
	"log/slog"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/tap"

	"github.com/otpless-events/otpless-events/server/auth"
)

// security is Security turned into what the servers need.
type security struct {
	tokens  *auth.TokenSigner
	guard   *auth.WebhookGuard
	keyring *auth.Keyring
	unary   []grpc.UnaryServerInterceptor
	stream  []grpc.StreamServerInterceptor
	tap     tap.ServerInHandle // nil: none
	certs   *certReloader      // nil: no TLS
	grpcTLS *tls.Config
	httpTLS *tls.Config
}

// newSecurity reads the TLS files, if any, again at most every certCheck
// (zero: certCheckInterval), logging their changes to log.
func newSecurity(cfg Security, certCheck time.Duration, log *slog.Logger) (*security, error) {
	s := &security{}
	if err := s.loadTLS(cfg, certCheck, log.With("component", "tls")); err != nil {
		return nil, err
	}
	if cfg.Disabled {
		return s, nil
	}
	var err error
	if s.tokens, err = auth.NewTokenSigner(cfg.WatchTokenKeys); err != nil {
		return nil, err
	}
	if s.guard, err = auth.NewWebhookGuard(cfg.Webhook); err != nil {
		return nil, err
	}
	s.keyring = auth.NewKeyring(cfg.APIKeys, s.tokens)
	s.unary = append(s.unary, s.keyring.UnaryInterceptor())
	s.stream = append(s.stream, s.keyring.StreamInterceptor())
	s.tap = s.keyring.TapHandle
	return s, nil
}

// warnOutOfDate warns when leaf, the TLS certificate of file, is out of
// its validity at now. It is served all the same: a client may not check
// it, and a renewed one is read from the files without a restart.
func warnOutOfDate(log *slog.Logger, file string, leaf *x509.Certificate, now time.Time) {
	switch {
	case now.After(leaf.NotAfter):
		log.Warn("the TLS certificate has expired: clients that check it refuse every connection", "file", file, "not_after", leaf.NotAfter)
	case now.Before(leaf.NotBefore):
		log.Warn("the TLS certificate is not valid yet: clients that check it refuse every connection", "file", file, "not_before", leaf.NotBefore)
	}
}

// loadTLS reads the TLS files, when set, into a reloader checking them
// every interval (zero: certCheckInterval) and logging to log.
func (s *security) loadTLS(cfg Security, every time.Duration, log *slog.Logger) error {
	if cfg.TLSCertFile == "" {
		return nil
	}
	if every <= 0 {
		every = certCheckInterval
	}
	var err error
	if s.certs, err = newCertReloader(cfg, every, log); err != nil {
		return err
	}
	s.httpTLS, s.grpcTLS = s.certs.httpConfig(), s.certs.grpcConfig()
	return nil
}
