//go:build !(linux || darwin || freebsd || openbsd || dragonfly)

package sqlitestore

import "errors"

// freeBytes cannot tell where statfs(2) is not to be had: a full disk shows
// in commits only there.
func freeBytes(string) (uint64, error) { return 0, errors.ErrUnsupported }
