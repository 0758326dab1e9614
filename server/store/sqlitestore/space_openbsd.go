package sqlitestore

import "golang.org/x/sys/unix"

// statfsAvail is the blocks of st an unprivileged process may write, and
// their size: on OpenBSD the fields f_bavail and f_bsize.
func statfsAvail(st *unix.Statfs_t) (blocks, size uint64) {
	return atLeastZero(st.F_bavail), uint64(st.F_bsize)
}
