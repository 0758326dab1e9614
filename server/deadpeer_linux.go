package server

import (
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// closeDeadPeers, as a net.ListenConfig's Control, sets TCP_USER_TIMEOUT
// on the listening socket, which the connections it accepts inherit: data
// sent and not acknowledged for DeadPeerTimeout ends the connection.
func closeDeadPeers(_, _ string, c syscall.RawConn) error {
	var err error
	if cerr := c.Control(func(fd uintptr) {
		err = unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_USER_TIMEOUT, int(DeadPeerTimeout/time.Millisecond))
	}); cerr != nil {
		return cerr
	}
	return err
}
