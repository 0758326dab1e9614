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
	return uint64(st.Bavail) * uint64(st.Bsize), nil
}
