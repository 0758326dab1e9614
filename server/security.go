package server

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"

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
