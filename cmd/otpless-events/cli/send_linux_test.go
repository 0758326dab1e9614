package cli_test

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/otpless-events/otpless-events/internal/testserver"
)

// send reads each file once: what it posts is what it checked. A file
// that reads differently the second time (here a pipe, which the first
// read empties) was checked, then read again to be sent.
func TestSendReadsEachFileOnce(t *testing.T) {
	t.Parallel()
	ts := testserver.Start(t, nil)
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if _, err := w.WriteString(`{"data":{"requestId":"once-req","status":"SENT","channel":"SMS"},"eventType":"DLR","timestamp":1764153000400}`); err != nil {
		t.Fatal(err)
	}
	w.Close()
	file := filepath.Join(t.TempDir(), "once.json")
	if err := os.Symlink(fmt.Sprintf("/proc/self/fd/%d", r.Fd()), file); err != nil {
		t.Fatal(err)
	}
	code, out, errOut := run(t, "send", "--http-addr", ts.HTTPURL, file)
	if code != 0 || out != file+"  once-req  rev 1  SENT\n" {
		t.Fatalf("send of a file that reads once: exit %d, %q, %q; want its body sent", code, out, errOut)
	}
}
