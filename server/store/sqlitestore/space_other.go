//go:build !linux

package sqlitestore

import "errors"

// freeBytes cannot tell off Linux (statfs(2) differs on every system): a
// full disk shows in commits only there.
func freeBytes(string) (uint64, error) { return 0, errors.ErrUnsupported }
