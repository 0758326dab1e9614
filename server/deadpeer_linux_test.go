package server

import (
	"net"
	"net/http"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Connections to both ports are closed once what the server sent has gone
// unacknowledged for DeadPeerTimeout: the kernel does it, by the
// TCP_USER_TIMEOUT they inherit from their listener.
func TestConnectionsCloseOnDeadPeers(t *testing.T) {
	t.Parallel()
	accepted := make(chan net.Conn, 1)
	s := startOps(t, nil, func(s *Server) {
		s.http.ConnState = func(c net.Conn, state http.ConnState) {
			if state == http.StateNew {
				select { // the first; another must not hold the accept loop
				case accepted <- c:
				default:
				}
			}
		}
	})
	client, err := net.Dial("tcp", s.HTTPAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	select {
	case c := <-accepted:
		if got := userTimeout(t, c); got != DeadPeerTimeout {
			t.Errorf("an HTTP connection's TCP_USER_TIMEOUT is %v, want %v", got, DeadPeerTimeout)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the HTTP connection was never accepted")
	}
	// The gRPC connection startOps made, which the listener tracks.
	s.peers.mu.Lock()
	var grpcConns []net.Conn
	for _, c := range s.peers.m {
		grpcConns = append(grpcConns, c.(*trackedConn).Conn)
	}
	s.peers.mu.Unlock()
	if len(grpcConns) == 0 {
		t.Fatal("no gRPC connection")
	}
	for _, c := range grpcConns {
		if got := userTimeout(t, c); got != DeadPeerTimeout {
			t.Errorf("a gRPC connection's TCP_USER_TIMEOUT is %v, want %v", got, DeadPeerTimeout)
		}
	}
}

func userTimeout(t *testing.T, c net.Conn) time.Duration {
	t.Helper()
	raw, err := c.(syscall.Conn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var ms int
	if cerr := raw.Control(func(fd uintptr) { ms, err = unix.GetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_USER_TIMEOUT) }); cerr != nil {
		t.Fatal(cerr)
	}
	if err != nil {
		t.Fatal(err)
	}
	return time.Duration(ms) * time.Millisecond
}
