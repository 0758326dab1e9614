package cli_test

import (
	"encoding/json"
	"fmt"
	"net"
	"os"
	"strings"
	"testing"
)

// serveOnATakenPort runs serve with its HTTP address taken, and more
// flags: it stops at once, with an error.
func serveOnATakenPort(t *testing.T, flags ...string) (code int, stderr string) {
	t.Helper()
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	args := append([]string{"serve", "--data-dir", t.TempDir(), "--http-addr", taken.Addr().String(), "--grpc-addr", "127.0.0.1:0", "--metrics-addr", ""}, flags...)
	code, _, stderr = run(t, args...)
	return code, stderr
}

// An error that stops serve after its logger exists is a line of the log,
// in the log's format: with --log-format json, every line of standard
// error is JSON, the last one saying why serve stopped.
func TestServeFailureIsLogged(t *testing.T) {
	t.Parallel()
	code, errOut := serveOnATakenPort(t, "--log-format", "json")
	lines := strings.Split(strings.TrimSpace(errOut), "\n")
	var last map[string]any
	for _, l := range lines {
		if err := json.Unmarshal([]byte(l), &last); err != nil {
			t.Fatalf("exit %d; a line of standard error is not JSON: %q\n%s", code, l, errOut)
		}
	}
	if code != 1 || last["level"] != "ERROR" || last["msg"] != "serve stopped" || !strings.Contains(fmt.Sprint(last["error"]), "address already in use") {
		t.Errorf("exit %d, last line %v: want exit 1 and an ERROR line saying why", code, last)
	}
}

// With the log's level above errors, the error is printed as before: serve
// never exits 1 saying nothing.
func TestServeFailureIsPrintedAboveErrorLevel(t *testing.T) {
	t.Parallel()
	code, errOut := serveOnATakenPort(t, "--log-level", "ERROR+1")
	if code != 1 || !strings.Contains(errOut, "error: ") || !strings.Contains(errOut, "address already in use") {
		t.Errorf("exit %d, standard error %q: want exit 1 and the error", code, errOut)
	}
}

// A configuration unusable whatever the credentials is refused before a
// first start makes them: they are printed once only, and would be lost.
func TestServeRefusesBadConfigBeforeMakingCredentials(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	code, out, errOut := run(t, "serve", "--data-dir", dir, "--http-addr", "", "--grpc-addr", "127.0.0.1:0", "--metrics-addr", "")
	if code != 1 || strings.Contains(out, "export") || !strings.Contains(errOut, "http") {
		t.Errorf("serve with an empty --http-addr: exit %d, stdout %q, stderr %q; want 1, no credentials printed, the address named", code, out, errOut)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Errorf("serve refused its configuration but left %d files in its data directory", len(entries))
	}
}
