package server

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
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
	grpcTLS *tls.Config
	httpTLS *tls.Config
}

func newSecurity(cfg Security) (*security, error) {
	s := &security{}
	if err := s.loadTLS(cfg); err != nil {
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

// warnOutOfDate warns when the TLS certificate is out of its validity at
// now. It is served all the same: a client may not check it, and one
// renewed outside the window is a restart away.
func (s *security) warnOutOfDate(log *slog.Logger, file string, now time.Time) {
	if s.httpTLS == nil {
		return
	}
	leaf := s.httpTLS.Certificates[0].Leaf
	switch {
	case now.After(leaf.NotAfter):
		log.Warn("the TLS certificate has expired: clients that check it refuse every connection", "file", file, "not_after", leaf.NotAfter)
	case now.Before(leaf.NotBefore):
		log.Warn("the TLS certificate is not valid yet: clients that check it refuse every connection", "file", file, "not_before", leaf.NotBefore)
	}
}

func (s *security) loadTLS(cfg Security) error {
	if cfg.TLSCertFile == "" {
		return nil
	}
	cert, err := tls.LoadX509KeyPair(cfg.TLSCertFile, cfg.TLSKeyFile)
	if err != nil {
		return fmt.Errorf("TLS certificate %s and key %s: %w", cfg.TLSCertFile, cfg.TLSKeyFile, err)
	}
	base := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	s.httpTLS = base.Clone()
	s.grpcTLS = base.Clone()
	s.grpcTLS.NextProtos = []string{"h2"}
	if cfg.ClientCAFile != "" {
		pem, err := os.ReadFile(cfg.ClientCAFile)
		if err != nil {
			return fmt.Errorf("client CA: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return errors.New("client CA: no certificate in " + cfg.ClientCAFile)
		}
		s.grpcTLS.ClientCAs = pool
		s.grpcTLS.ClientAuth = tls.RequireAndVerifyClientCert
	}
	return nil
}
