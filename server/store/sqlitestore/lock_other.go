//go:build !(linux || darwin || freebsd || netbsd || openbsd || dragonfly)

package sqlitestore

import "os"

// lockFile takes no lock where flock(2) is not to be had.
func lockFile(string) (*os.File, error) { return nil, nil }
