//go:build linux || darwin || freebsd || dragonfly

package sqlitestore

import "golang.org/x/sys/unix"

// statfsAvail is the blocks of st an unprivileged process may write, and
// their size.
func statfsAvail(st *unix.Statfs_t) (blocks, size uint64) {
	return atLeastZero(st.Bavail), uint64(st.Bsize)
}
