package testnet

import (
	"errors"
	"net"
	"runtime"
	"syscall"
	"testing"
)

// A dial to ClosedAddr is refused, and on Linux the port cannot be
// listened on, on its own address or on all.
func TestClosedAddr(t *testing.T) {
	t.Parallel()
	addr := ClosedAddr(t)
	if c, err := net.Dial("tcp", addr); !errors.Is(err, syscall.ECONNREFUSED) {
		if c != nil {
			c.Close()
		}
		t.Errorf("dial %s: %v, want connection refused", addr, err)
	}
	if runtime.GOOS != "linux" {
		return // other systems may bind a connection's port with SO_REUSEADDR
	}
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	for _, at := range []string{addr, ":" + port} {
		if l, err := net.Listen("tcp", at); err == nil {
			l.Close()
			t.Errorf("listen on %s succeeded while ClosedAddr held it", at)
		}
	}
}
