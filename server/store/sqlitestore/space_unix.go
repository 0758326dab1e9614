//go:build linux || darwin || freebsd || openbsd || dragonfly

package sqlitestore

import "golang.org/x/sys/unix"

// freeBytes is how many bytes of the file system holding dir an
// unprivileged process may still write.
func freeBytes(dir string) (uint64, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return 0, err
	}
	avail, size := statfsAvail(&st)
	return avail * size, nil
}

// atLeastZero is n, or 0 for a negative n: the BSDs count the blocks
// available as signed, below zero once root has written into its reserve.
func atLeastZero[T int64 | uint64](n T) uint64 {
	if n < 0 {
		return 0
	}
	return uint64(n)
}
