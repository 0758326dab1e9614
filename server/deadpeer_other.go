//go:build !linux

package server

import "syscall"

// closeDeadPeers is nil where TCP_USER_TIMEOUT is not to be had: a dead
// peer's connection then lasts until TCP's retransmissions give up.
var closeDeadPeers func(network, address string, c syscall.RawConn) error
