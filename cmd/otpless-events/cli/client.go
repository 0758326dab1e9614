package cli

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	neturl "net/url"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/otpless-events/otpless-events/server"
	"github.com/otpless-events/otpless-events/server/auth"
	"github.com/otpless-events/otpless-events/server/normalize"
)

// envAPIKey holds the API key (or a watch token) the client commands send.
// It is read from the environment or a file, never from a flag's value,
// which other users of the machine could see.
const envAPIKey = EnvPrefix + "API_KEY"

// clientFlags are how the client commands reach a server.
type clientFlags struct {
	grpcAddr   string
	apiKeyFile string
	tls        bool
	tlsCAFile  string
	plaintext  bool
}

func (f *clientFlags) register(fs *pflag.FlagSet, withGRPC bool) {
	if withGRPC {
		f.grpcAddr = server.DefaultConfig().GRPCAddr
		fs.StringVar(&f.grpcAddr, "grpc-addr", f.grpcAddr, "gRPC address of the server")
		fs.StringVar(&f.apiKeyFile, "api-key-file", "", "file holding the API key or watch token to send (default: $"+envAPIKey+")")
	}
	fs.BoolVar(&f.plaintext, "plaintext", false, "connect without TLS even to an address that is not loopback, sending keys and data in clear")
	fs.BoolVar(&f.tls, "tls", false, "connect over TLS, trusting the system's certificate authorities")
	fs.StringVar(&f.tlsCAFile, "tls-ca-file", "", "connect over TLS, trusting this CA certificate (PEM)")
}

// apiKey is the credential to send: --api-key-file, else $OTPLESS_EVENTS_API_KEY.
func (f *clientFlags) apiKey() (string, error) {
	key, from := strings.TrimSpace(os.Getenv(envAPIKey)), "$"+envAPIKey
	if f.apiKeyFile != "" {
		b, err := os.ReadFile(f.apiKeyFile)
		if err != nil {
			return "", fmt.Errorf("API key: %w", err)
		}
		key, from = strings.TrimSpace(string(b)), f.apiKeyFile
		switch {
		case key == "":
			return "", fmt.Errorf("API key: %s is empty", from)
		case strings.ContainsAny(key, "\r\n"):
			return "", fmt.Errorf("API key: %s holds more than one line; it must hold the key alone (of apikey's output, what follows \"key:\")", from)
		}
	}
	if !headerSafe(key) {
		return "", fmt.Errorf("API key: %s holds a character other than printable ASCII, which no Authorization header can carry", from)
	}
	return key, nil
}

// headerSafe reports whether key is printable ASCII, as API keys and watch
// tokens are: grpc-go refuses anything else in a header, as INTERNAL.
func headerSafe(key string) bool {
	return !strings.ContainsFunc(key, func(r rune) bool { return r < ' ' || r > '~' })
}

// tlsConfig is nil for plaintext.
func (f *clientFlags) tlsConfig() (*tls.Config, error) {
	if !f.tls && f.tlsCAFile == "" {
		return nil, nil
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if f.tlsCAFile != "" {
		pem, err := os.ReadFile(f.tlsCAFile)
		if err != nil {
			return nil, fmt.Errorf("TLS CA: %w", err)
		}
		cfg.RootCAs = x509.NewCertPool()
		if !cfg.RootCAs.AppendCertsFromPEM(pem) {
			return nil, errors.New("TLS CA: no certificate in " + f.tlsCAFile)
		}
	}
	return cfg, nil
}

// dial connects to the gRPC API with the configured credential. Without
// TLS it reaches only this machine, unless --plaintext says otherwise.
func (f *clientFlags) dial() (*grpc.ClientConn, error) {
	tlsCfg, err := f.tlsConfig()
	if err != nil {
		return nil, err
	}
	if scheme, _, ok := strings.Cut(f.grpcAddr, "://"); ok && (strings.EqualFold(scheme, "http") || strings.EqualFold(scheme, "https")) {
		return nil, fmt.Errorf("--grpc-addr %q: want host:port or a gRPC target (dns:///host:port, unix:path), not an HTTP URL", f.grpcAddr)
	}
	if _, _, err := net.SplitHostPort(f.grpcAddr); err != nil && strings.Contains(err.Error(), "missing port") {
		return nil, fmt.Errorf("--grpc-addr %q: give a port (host:port; the server's is 9090 by default)", f.grpcAddr)
	}
	target := dialAddr(f.grpcAddr)
	switch {
	case tlsCfg != nil && f.plaintext:
		return nil, errTLSAndPlaintext
	case tlsCfg == nil:
		if err := f.inClear(target, fmt.Sprintf("gRPC address %q", f.grpcAddr)); err != nil {
			return nil, err
		}
	}
	key, err := f.apiKey()
	if err != nil {
		return nil, err
	}
	// MinConnectTimeout too: left out, it is 0, and grpc-go gives an
	// attempt (TCP, TLS, the server's preface) only the backoff's wait,
	// 0.1 s for the first, which a server a few round trips away misses.
	reconnect := grpc.WithConnectParams(grpc.ConnectParams{Backoff: reconnectBackoff, MinConnectTimeout: connectTimeout})
	opts := []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials()), reconnect}
	if tlsCfg != nil {
		// A server that requires a certificate (serve's --grpc-client-ca)
		// would refuse the handshake, which the client sees only as a
		// reset, a broken pipe or an alert, by timing: its request is
		// where to say so.
		tlsCfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			return nil, errClientCertificate
		}
		opts[0] = grpc.WithTransportCredentials(credentials.NewTLS(tlsCfg))
	}
	if key != "" {
		opts = append(opts, grpc.WithPerRPCCredentials(auth.BearerCredentials{Token: key, Insecure: tlsCfg == nil}))
	}
	conn, err := grpc.NewClient(target, opts...)
	if err != nil {
		return nil, fmt.Errorf("gRPC address %q: %w", f.grpcAddr, err)
	}
	return conn, nil
}

// reconnectBackoff spaces the attempts to connect: a failed attempt is
// followed by another within 5 s, however long the server is away, as the
// README says of watch (grpc-go's own backoff grows to two minutes). The
// jitter, which keeps watchers from coming back all at once, lengthens a
// wait by up to a fifth: 4 s at most, 4.8 s with it.
var reconnectBackoff = backoff.Config{BaseDelay: 100 * time.Millisecond, Multiplier: 2, Jitter: 0.2, MaxDelay: 4 * time.Second}

// connectTimeout bounds an attempt to connect: time for the handshakes
// over a slow link, and short enough that an attempt lost in a network
// partition does not keep watch from a server that is back for long.
const connectTimeout = 5 * time.Second

// inClear refuses a connection without TLS to target (a host:port, or a
// gRPC target) unless it is this machine or --plaintext says so; shown
// names it in the error.
func (f *clientFlags) inClear(target, shown string) error {
	if f.plaintext || loopback(target) {
		return nil
	}
	return fmt.Errorf("%s is not loopback, and without TLS the API key and the requests' data would cross the network in clear: "+
		"give --tls (or --tls-ca-file) for a server with TLS, or --plaintext to connect in clear anyway", shown)
}

// errTLSAndPlaintext refuses flags that ask for TLS and for none.
var errTLSAndPlaintext = errors.New("--plaintext and --tls or --tls-ca-file: pick one")

// postTo refuses to post to webhookURL with flags that cannot work with it,
// or in clear to another machine without --plaintext.
func (f *clientFlags) postTo(webhookURL string) error {
	tls := f.tls || f.tlsCAFile != ""
	switch {
	case tls && f.plaintext:
		return errTLSAndPlaintext
	case tls && strings.HasPrefix(webhookURL, "http://"):
		return fmt.Errorf("TLS asked for, but the webhook URL %s is http://: give an https:// one", redactURL(webhookURL))
	}
	return f.postInClear(webhookURL)
}

// postInClear refuses to post webhooks to webhookURL over http:// unless
// its host is this machine or --plaintext says so: the key in the URL and
// the bodies' personal data would cross the network in clear.
func (f *clientFlags) postInClear(webhookURL string) error {
	u, err := neturl.Parse(webhookURL)
	if err != nil || u.Scheme != "http" || f.plaintext || loopback(u.Host) {
		return nil
	}
	return fmt.Errorf("%s is not loopback, and over http:// the webhook key and the bodies' personal data would cross the network in clear: "+
		"give an https:// URL (or --tls), or --plaintext to post in clear anyway", redactURL(webhookURL))
}

// dialAddr turns a listen address into one to dial: a missing or
// unspecified host (":9090", "0.0.0.0:9090") means this machine.
func dialAddr(addr string) string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return addr
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		host = "127.0.0.1"
	}
	return net.JoinHostPort(host, port)
}

// loopback reports whether target, as dial passes it to grpc.NewClient,
// or a URL's host, is this machine: a loopback IP (127.0.0.0/8, ::1),
// localhost, a Unix socket, or a listen address's unspecified host (""
// or 0.0.0.0, which a connection takes for this machine). Names are not
// resolved: any other name is taken for another machine.
func loopback(target string) bool {
	if strings.HasPrefix(target, "unix:") || strings.HasPrefix(target, "unix-abstract:") {
		return true
	}
	if _, rest, ok := strings.Cut(target, "://"); ok { // dns:///host:port, passthrough:///host:port
		target = rest[strings.LastIndex(rest, "/")+1:]
	}
	host := target
	if h, _, err := net.SplitHostPort(target); err == nil {
		host = h
	}
	if ip := net.ParseIP(strings.Trim(host, "[]")); ip != nil {
		return ip.IsLoopback() || ip.IsUnspecified()
	}
	if host == "" {
		return true
	}
	return strings.EqualFold(strings.TrimSuffix(host, "."), "localhost")
}

// errClientCertificate fails a handshake with a server that asks for a
// client certificate.
var errClientCertificate = errors.New("the server asks for a client certificate (serve's --grpc-client-ca), which get and watch do not present")

// requestIDArg takes one request id, and refuses here, quoted, one the API
// would refuse: grpc-go could not even send one that is not UTF-8 (its
// INTERNAL about marshaling would read as the server's fault), and the
// error naming one with control characters, copied from a webhook whose
// sender chose it, would write them to the terminal.
func requestIDArg(cmd *cobra.Command, args []string) error {
	if err := cobra.ExactArgs(1)(cmd, args); err != nil {
		return err
	}
	if err := normalize.CheckRequestID(args[0]); err != nil {
		return fmt.Errorf("%w: %q", err, args[0])
	}
	return nil
}

// rpcError says what failed, in the server's words.
func rpcError(what string, err error) error {
	st := status.Convert(err)
	msg := fmt.Sprintf("%s: %s (%s)", what, statusMessage(err), st.Code())
	if st.Code() == codes.Unauthenticated {
		msg += "; the key sent is --api-key-file's, else $" + envAPIKey + " (none when neither is set)"
	}
	if st.Code() == codes.Unavailable {
		for _, h := range connectionHints {
			if strings.Contains(st.Message(), h.says) {
				msg += "; " + h.hint
				break
			}
		}
	}
	return errors.New(msg)
}

// statusMessage is the message of err's gRPC status, fit for a terminal: a
// server's words, or a proxy's answer that grpc-go quotes after a newline,
// with control characters escaped.
func statusMessage(err error) string { return printable(status.Convert(err).Message()) }

// connectionHints say what is likely wrong when grpc-go's words for a
// failed connection say it only to those who know its transport.
var connectionHints = []struct{ says, hint string }{
	{"looked like an HTTP/1.1 header", "is it the HTTP port? --grpc-addr takes the gRPC port (9090 by default)"},
	// A TLS server closes a plaintext connection: EOF, or a reset, by timing.
	{"error reading server preface: ", "does the server use TLS? then give --tls, or --tls-ca-file"},
	{"does not look like a TLS handshake", "does the server use TLS? it answered without: leave out --tls and --tls-ca-file"},
}
