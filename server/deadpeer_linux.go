package server

import (
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// closeDeadPeers, as a net.ListenConfig's Control, sets TCP_USER_TIMEOUT
// on the listening socket, which the connections it accepts inherit: data
// sent and not acknowledged for DeadPeerTimeout ends the connection. A
// kernel that refuses the option (a sandbox's) leaves connections as they
// were, rather than keeping the server from starting.
func closeDeadPeers(_, _ string, c syscall.RawConn) error {
	return c.Control(func(fd uintptr) {
		_ = unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_USER_TIMEOUT, int(DeadPeerTimeout/time.Millisecond))
	})
}
