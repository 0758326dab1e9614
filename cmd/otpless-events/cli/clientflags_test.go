package cli

import (
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// dial connects in clear only to this machine, unless told to: the API key
// must not cross the network unencrypted by mistake.
func TestDialRefusesPlaintextToRemote(t *testing.T) {
	t.Parallel()
	local := []string{
		"127.0.0.1:9090", "127.1.2.3:9090", "[::1]:9090", "[::ffff:127.0.0.1]:9090",
		"localhost:9090", "LOCALHOST:9090", "localhost.:9090",
		":9090", "0.0.0.0:9090", "[::]:9090", // a listen address: dial makes it 127.0.0.1
		"dns:///localhost:9090", "passthrough:///127.0.0.1:9090", "unix:///run/otpless-events.sock",
	}
	remote := []string{
		"192.0.2.1:9090", "10.0.0.1:9090", "[2001:db8::1]:9090", "example.com:9090",
		"localhost.example.com:9090", "127.0.0.1.example.com:9090", "dns:///example.com:9090",
		"dns://127.0.0.1/example.com:9090", // a local DNS server, a remote address
	}
	tests := []struct {
		name     string
		addrs    []string
		flags    clientFlags
		mentions string // the error; empty: dial succeeds
	}{
		{"loopback in clear", local, clientFlags{}, ""},
		{"remote in clear", remote, clientFlags{}, "--plaintext"},
		{"remote with --plaintext", remote, clientFlags{plaintext: true}, ""},
		{"remote over TLS", remote, clientFlags{tls: true}, ""},
		{"--plaintext and --tls", []string{"192.0.2.1:9090", "127.0.0.1:9090"}, clientFlags{tls: true, plaintext: true}, "--plaintext and --tls"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			for _, addr := range tt.addrs {
				f := tt.flags
				f.grpcAddr = addr
				conn, err := f.dial() // grpc.NewClient connects on first use: nothing goes out
				if err == nil {
					conn.Close()
				}
				switch {
				case tt.mentions == "" && err != nil:
					t.Errorf("%s: %v", addr, err)
				case tt.mentions != "" && (err == nil || !strings.Contains(err.Error(), tt.mentions)):
					t.Errorf("%s: error %v, want one mentioning %s", addr, err, tt.mentions)
				}
			}
		})
	}
}

// send and bench post in clear only to this machine, a listen address's
// unspecified host (as in a URL written after --http-addr :8080) included:
// a post to it reaches this machine, as a dial of it does.
func TestPostRefusesPlaintextToRemote(t *testing.T) {
	t.Parallel()
	const path = "/v1/webhooks/otpless/whk_0123456789abcdef"
	for _, host := range []string{"127.0.0.1:8080", "[::1]:8080", "localhost:8080", "0.0.0.0:8080", "[::]:8080", ":8080"} {
		if err := new(clientFlags).postTo("http://" + host + path); err != nil {
			t.Errorf("post to %s: %v, want it taken for this machine", host, err)
		}
	}
	for _, host := range []string{"192.0.2.1:8080", "[2001:db8::1]:8080", "otpless.example:8080"} {
		if err := new(clientFlags).postTo("http://" + host + path); err == nil || !strings.Contains(err.Error(), "--plaintext") {
			t.Errorf("post to %s: %v, want it refused, naming --plaintext", host, err)
		}
	}
}

// A call refused for its credentials says where the key sent comes from:
// the server's words alone did not say that none was set.
func TestRPCErrorNamesTheKeysSource(t *testing.T) {
	err := rpcError("request r", status.Error(codes.Unauthenticated, "missing or invalid credentials"))
	if !strings.Contains(err.Error(), "--api-key-file") || !strings.Contains(err.Error(), "$"+envAPIKey) {
		t.Errorf("%v, want the key's sources named", err)
	}
}

// A plaintext client of a TLS server reads EOF or a reset, by timing:
// either way it is asked whether the server uses TLS.
func TestRPCErrorHints(t *testing.T) {
	for _, desc := range []string{
		`connection error: desc = "error reading server preface: EOF"`,
		`connection error: desc = "error reading server preface: read tcp 127.0.0.1:1->127.0.0.1:2: read: connection reset by peer"`,
		`connection error: desc = "error reading server preface: connection reset by peer"`,
	} {
		if err := rpcError("request r", status.Error(codes.Unavailable, desc)); !strings.Contains(err.Error(), "does the server use TLS?") {
			t.Errorf("%s: %v, want the TLS hint", desc, err)
		}
	}
}

// The README says watch tries a server that is away again at most 5 s
// after a failed attempt: grpc-go lengthens its longest wait by up to the
// jitter.
func TestReconnectBackoffWithinFiveSeconds(t *testing.T) {
	t.Parallel()
	if longest := time.Duration(float64(reconnectBackoff.MaxDelay) * (1 + reconnectBackoff.Jitter)); longest > 5*time.Second {
		t.Errorf("attempts to connect up to %s apart, want at most 5 s", longest)
	}
}
