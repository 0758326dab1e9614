//go:build !unix

package cli_test

import "testing"

// runAsNobody: there is no other user to switch to here.
func runAsNobody(t *testing.T, name string) {
	t.Skipf("%s needs a process that may not write a file, which root may: a Unix user to run as", name)
}
