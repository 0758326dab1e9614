package sqlitestore

import "syscall"

// freeBytes is how many bytes of the file system holding dir an
// unprivileged process may still write.
func freeBytes(dir string) (uint64, error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return 0, err
	}
	return st.Bavail * uint64(st.Bsize), nil
}
