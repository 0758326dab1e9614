package cli_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unicode"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/otpless-events/otpless-events/cmd/otpless-events/cli"
	eventsv1 "github.com/otpless-events/otpless-events/gen/otpless/events/v1"
	"github.com/otpless-events/otpless-events/internal/testserver"
	"github.com/otpless-events/otpless-events/server"
)

// The scenario the README's "Try it in one minute" replays, from the
// repository's own copy.
const (
	tryScenario = "../../../testdata/scenarios/whatsapp-fails-then-sms.jsonl"
	tryID       = "c2a1d4e3f6b5a8c7d0e9f1a2b3c4d5e6"
)

// tryChanges are the changes watch prints for tryScenario, in order.
var tryChanges = []string{
	"2025-11-26T10:31:00.000Z INITIATED OTP via WHATSAPP, SMS",
	"2025-11-26T10:31:00.300Z WHATSAPP SENT",
	"2025-11-26T10:31:02.100Z WHATSAPP FAILED: Mobile Number not OPT-IN (code 033, retriable once the user opts in)",
	"2025-11-26T10:31:02.200Z FALLBACK WHATSAPP → SMS",
	"2025-11-26T10:31:05.200Z SMS DELIVERED",
	"2025-11-26T10:31:15.000Z SUCCESS",
}

// run runs the command line to its end.
func run(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	return runIn(t, strings.NewReader(""), args...)
}

// runIn is run with stdin as standard input.
func runIn(t *testing.T, stdin io.Reader, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var out, errOut bytes.Buffer
	code = cli.Main(ctx, args, stdin, &out, &errOut)
	return code, out.String(), errOut.String()
}

// running is a command line running in the background, its output read
// line by line as it comes.
type running struct {
	stdout, stderr chan string
	code           chan int
}

func start(t *testing.T, args ...string) *running {
	t.Helper()
	return startIn(t, strings.NewReader(""), args...)
}

// startIn is start with stdin as standard input.
func startIn(t *testing.T, stdin io.Reader, args ...string) *running {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	outR, outW := io.Pipe()
	errR, errW := io.Pipe()
	r := &running{stdout: lines(outR), stderr: lines(errR), code: make(chan int, 1)}
	var wg sync.WaitGroup
	wg.Go(func() {
		r.code <- cli.Main(ctx, args, stdin, outW, errW)
		outW.Close()
		errW.Close()
	})
	t.Cleanup(func() { cancel(); wg.Wait() })
	return r
}

func lines(r io.Reader) chan string {
	c := make(chan string, 100)
	go func() {
		defer close(c)
		sc := bufio.NewScanner(r)
		for sc.Scan() {
			c <- sc.Text()
		}
	}()
	return c
}

// next is the next line of c.
func next(t *testing.T, c chan string) string {
	t.Helper()
	select {
	case l, ok := <-c:
		if !ok {
			t.Fatal("output ended")
		}
		return l
	case <-time.After(30 * time.Second):
		t.Fatal("no output")
	}
	return ""
}

// rest is every line until the command ends, and its exit code.
func (r *running) rest(t *testing.T) ([]string, int) {
	t.Helper()
	var out []string
	for l := range r.stdout {
		out = append(out, l)
	}
	select {
	case code := <-r.code:
		return out, code
	case <-time.After(30 * time.Second):
		t.Fatal("the command did not end")
	}
	return nil, 0
}

// watchLine is one line of watch's readable output.
type watchLine struct {
	rev     int64
	status  string
	changes []string
}

func parseWatch(t *testing.T, line string) watchLine {
	t.Helper()
	f := strings.Fields(line)
	if len(f) < 3 || f[0] != "rev" {
		t.Fatalf("watch line %q", line)
	}
	rev, err := strconv.ParseInt(f[1], 10, 64)
	if err != nil {
		t.Fatalf("watch line %q: %v", line, err)
	}
	rest := strings.TrimSpace(strings.SplitN(strings.TrimSpace(line[strings.Index(line, f[2])+len(f[2]):]), "\n", 2)[0])
	return watchLine{rev: rev, status: f[2], changes: strings.Split(rest, "; ")}
}

// checkChanges: revisions only increase, every change is printed once, in
// order (a watcher that fell behind may get several in one line), and the
// last line is SUCCESS.
func checkChanges(t *testing.T, out []string, want []string) {
	t.Helper()
	var got []string
	var rev int64 = -1
	var last watchLine
	for _, l := range out {
		last = parseWatch(t, l)
		if last.rev <= rev {
			t.Errorf("revision %d after %d: %q", last.rev, rev, l)
		}
		rev = last.rev
		got = append(got, last.changes...)
	}
	if !slices.Equal(got, want) {
		t.Errorf("watch printed:\n%s\nwant the changes:\n%s", strings.Join(out, "\n"), strings.Join(want, "\n"))
	}
	if last.status != "SUCCESS" {
		t.Errorf("last line %+v, want SUCCESS", last)
	}
}

// The README's "Try it in one minute", against a server that checks
// credentials, with them in the environment as serve prints them: watch
// follows the request that send replays to SUCCESS and exits 0; get prints
// the snapshot.
func TestTryItInOneMinute(t *testing.T) {
	ts := testserver.Start(t, testserver.Secure)
	t.Setenv("OTPLESS_WEBHOOK_URL", ts.HTTPURL+ts.WebhookPath)
	t.Setenv("OTPLESS_EVENTS_API_KEY", testserver.AdminKey)
	t.Setenv("OTPLESS_EVENTS_GRPC_ADDR", ts.GRPCAddr)

	w := start(t, "watch", tryID)
	if l := next(t, w.stdout); l != "rev 0   UNKNOWN      no event yet; waiting" {
		t.Fatalf("first line %q, want the empty snapshot", l)
	}

	code, out, errOut := run(t, "send", tryScenario)
	if code != 0 {
		t.Fatalf("send: exit %d: %s", code, errOut)
	}
	sent := strings.Split(strings.TrimSpace(out), "\n")
	if len(sent) != len(tryChanges) || sent[2] != tryScenario+":3  "+tryID+"  rev 3  FAILED" {
		t.Errorf("send printed:\n%s", out)
	}

	rest, code := w.rest(t)
	if code != 0 {
		t.Fatalf("watch: exit %d", code)
	}
	checkChanges(t, rest, tryChanges)

	code, out, errOut = run(t, "get", tryID)
	if code != 0 {
		t.Fatalf("get: exit %d: %s", code, errOut)
	}
	snap := &eventsv1.AuthRequest{}
	if err := protojson.Unmarshal([]byte(out), snap); err != nil || snap.GetStatus() != eventsv1.RequestStatus_REQUEST_STATUS_SUCCESS || snap.GetRevision() != 6 {
		t.Fatalf("get printed %s (%v), want the SUCCESS snapshot at revision 6", out, err)
	}

	// Watching a finished request: one JSON line, the final snapshot.
	code, out, errOut = run(t, "watch", "--json", tryID)
	msg := &eventsv1.WatchRequestResponse{}
	if code != 0 || strings.Count(out, "\n") != 1 || protojson.Unmarshal([]byte(out), msg) != nil || msg.GetRequest().GetStatus() != eventsv1.RequestStatus_REQUEST_STATUS_SUCCESS {
		t.Fatalf("watch --json of a finished request: exit %d, %q %s", code, out, errOut)
	}
}

// FAILED is not final: watch keeps following, and when --timeout passes it
// exits non-zero saying the request is FAILED and why.
func TestWatchFailedRequestTimesOut(t *testing.T) {
	t.Parallel()
	ts := testserver.Start(t, nil)
	bodies := scenarioBodies(t)
	for _, b := range bodies[:3] { // INITIATED, SENT, FAILED
		ts.Ingest(t, b)
	}
	code, out, errOut := run(t, "watch", "--grpc-addr", ts.GRPCAddr, "--timeout", "2s", tryID)
	if code == 0 {
		t.Fatalf("watch of a FAILED request exited 0:\n%s", out)
	}
	if l := parseWatch(t, out); l.status != "FAILED" || l.rev != 3 {
		t.Errorf("watch printed %q, want the FAILED snapshot", out)
	}
	if want := "timed out: request " + tryID + " is FAILED, not SUCCESS (WHATSAPP Mobile Number not OPT-IN (code 033, retriable once the user opts in))"; !strings.Contains(errOut, want) {
		t.Errorf("stderr %q, want %q", errOut, want)
	}

	// Reported unreachable as well: that is the reason given.
	ts.Ingest(t, []byte(`{"token":"tok","timestamp":1764153300000,"requestId":"`+tryID+`","notificationType":"UNREACHABLE"}`))
	_, _, errOut = run(t, "watch", "--grpc-addr", ts.GRPCAddr, "--timeout", "2s", tryID)
	if want := "timed out: request " + tryID + " is FAILED, not SUCCESS (OTPLESS reported the user unreachable)"; !strings.Contains(errOut, want) {
		t.Errorf("stderr %q, want %q", errOut, want)
	}
}

// When the server restarts, watch gets RECONNECT, waits for the server and
// resumes after the last revision it printed: nothing missed, nothing twice.
func TestWatchReconnectsAcrossRestart(t *testing.T) {
	t.Parallel()
	ts := testserver.Start(t, nil)
	bodies := scenarioBodies(t)
	w := start(t, "watch", "--grpc-addr", ts.GRPCAddr, tryID)
	next(t, w.stdout) // the empty snapshot
	var out []string
	for _, b := range bodies[:2] {
		ts.Ingest(t, b)
		out = append(out, next(t, w.stdout))
	}
	ts.Restart(t)
	if l := next(t, w.stderr); l != "the server asked to reconnect at revision 2" {
		t.Fatalf("stderr %q, want the reconnect", l)
	}
	// Revision 3 exists only on the restarted server: once watch prints it,
	// it follows that server. Whether it came as an update or, if watch
	// reconnected after it, in the snapshot that resumes the stream, it is
	// printed once.
	ts.Ingest(t, bodies[2])
	third := next(t, w.stdout)
	if l := parseWatch(t, third); l.rev != 3 || l.status != "FAILED" {
		t.Fatalf("after the restart watch printed %q, want revision 3", third)
	}
	for _, b := range bodies[3:] {
		ts.Ingest(t, b)
	}
	rest, code := w.rest(t)
	if code != 0 {
		t.Fatalf("watch: exit %d", code)
	}
	for i, line := range out {
		if l := parseWatch(t, line); l.rev != int64(i+1) || !slices.Equal(l.changes, tryChanges[i:i+1]) {
			t.Errorf("before the restart watch printed %q, want %q at revision %d", line, tryChanges[i], i+1)
		}
	}
	if l := parseWatch(t, rest[0]); l.rev != 4 {
		t.Errorf("after revision 3 watch printed %q, want revision 4", rest[0])
	}
	checkChanges(t, rest, tryChanges[3:])
}

func TestWatchAndGetErrors(t *testing.T) {
	t.Parallel()
	ts := testserver.Start(t, testserver.Secure)
	tests := []struct {
		name     string
		args     []string
		mentions string
	}{
		{"get without a credential", []string{"get", "--grpc-addr", ts.GRPCAddr, tryID}, "Unauthenticated"},
		{"watch without a credential", []string{"watch", "--grpc-addr", ts.GRPCAddr, tryID}, "Unauthenticated"},
		{"no server", []string{"watch", "--grpc-addr", "127.0.0.1:1", tryID}, "Unavailable"},
		{"no request id", []string{"get"}, "accepts 1 arg"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			code, _, errOut := run(t, tt.args...)
			if code == 0 || !strings.Contains(errOut, tt.mentions) {
				t.Fatalf("exit %d, stderr %q; want an error mentioning %q", code, errOut, tt.mentions)
			}
		})
	}
	// An API key from a file.
	keyFile := filepath.Join(t.TempDir(), "key")
	if err := os.WriteFile(keyFile, []byte(testserver.AdminKey+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	code, _, errOut := run(t, "get", "--grpc-addr", ts.GRPCAddr, "--api-key-file", keyFile, "nobody")
	if code == 0 || !strings.Contains(errOut, "request nobody: no event of this request has been stored (NotFound)") {
		t.Fatalf("get of an unknown request: exit %d, %q", code, errOut)
	}
}

// watch started while its server shuts down (a rolling deploy) waits for
// it, as it does after a reconnect: the server answered, refusing the
// stream for now. Where nothing listens it fails at once (the "no server"
// case above): a mistyped address must not hang.
func TestWatchStartedDuringShutdown(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var calls atomic.Int32
	srv := grpc.NewServer(grpc.UnknownServiceHandler(func(_ any, stream grpc.ServerStream) error {
		if calls.Add(1) == 1 {
			return status.Error(codes.Unavailable, "server is shutting down, reconnect to another replica or retry later")
		}
		var req eventsv1.WatchRequestRequest
		if err := stream.RecvMsg(&req); err != nil {
			return err
		}
		return stream.SendMsg(&eventsv1.WatchRequestResponse{
			Type: eventsv1.WatchMessageType_WATCH_MESSAGE_TYPE_SNAPSHOT, Revision: 6,
			Request: &eventsv1.AuthRequest{RequestId: req.GetRequestId(), Revision: 6, EventCount: 6, Status: eventsv1.RequestStatus_REQUEST_STATUS_SUCCESS},
		})
	}))
	go srv.Serve(ln)
	t.Cleanup(srv.Stop)
	code, out, errOut := run(t, "watch", "--grpc-addr", ln.Addr().String(), tryID)
	if code != 0 || !strings.Contains(out, "SUCCESS") || !strings.Contains(errOut, "shutting down") {
		t.Errorf("watch of a server refusing its first stream while shutting down: exit %d, %q, stderr %q; want it to wait, saying why, then exit 0 on SUCCESS", code, out, errOut)
	}
}

// watch, get and bench's watchers (gRPC or SSE) do not send the API key in
// clear to another machine, nor send and bench's posts the webhook key and
// the bodies: they say how to connect instead, before anything goes out.
func TestClientsRefusePlaintextToRemote(t *testing.T) {
	t.Parallel()
	body := filepath.Join(t.TempDir(), "body.json")
	if err := os.WriteFile(body, []byte(`{"eventType": "DLR", "data": {"requestId": "r1", "status": "SENT", "channel": "SMS"}}`), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{
		{"send", "--http-addr", "http://192.0.2.1:8080", body},
		{"send", "--http-addr", "otpless.example:8080", body},
		{"bench", "--http-addr", "192.0.2.1:8080", "--duration", "1s"},
		{"get", "--grpc-addr", "192.0.2.1:9090", tryID},
		{"watch", "--grpc-addr", "192.0.2.1:9090", tryID},
		{"watch", "--grpc-addr", "example.com:9090", "--json", tryID},
		{"bench", "--watchers", "1", "--grpc-addr", "192.0.2.1:9090", "--http-addr", "127.0.0.1:1", "--duration", "1s"},
		{"bench", "--watchers", "1", "--watch-via", "sse", "--http-addr", "http://192.0.2.1:8080", "--duration", "1s"},
	} {
		code, out, errOut := run(t, args...)
		if code == 0 || out != "" || !strings.Contains(errOut, "not loopback") || !strings.Contains(errOut, "--tls") || !strings.Contains(errOut, "--plaintext") {
			t.Errorf("%v: exit %d, %q, stderr %q; want it refused, naming --tls and --plaintext", args, code, out, errOut)
		}
	}
	code, _, errOut := run(t, "get", "--grpc-addr", "192.0.2.1:9090", "--plaintext", "--tls", tryID)
	if code == 0 || !strings.Contains(errOut, "--plaintext and --tls") {
		t.Errorf("get --plaintext --tls: exit %d, stderr %q; want the contradiction refused", code, errOut)
	}
	// With --plaintext the post goes ahead (and finds nobody there).
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	var out, stderr bytes.Buffer
	if code := cli.Main(ctx, []string{"send", "--plaintext", "--http-addr", "http://192.0.2.1:8080", body}, nil, &out, &stderr); code == 0 || strings.Contains(stderr.String(), "not loopback") {
		t.Errorf("send --plaintext: exit %d, stderr %q; want it posted, and failed", code, stderr.String())
	}
}

func TestSend(t *testing.T) {
	t.Parallel()
	ts := testserver.Start(t, nil)
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	sent := `{"data":{"requestId":"send-req","status":"SENT","channel":"SMS"},"eventType":"DLR","timestamp":1764153000400}`
	one := write("sent.json", sent+"\n")
	mixed := write("mixed.jsonl", sent+"\n\n"+`{"hello":"world"}`+"\n")
	other := write("body.txt", sent)

	code, out, errOut := run(t, "send", "--http-addr", ts.HTTPURL, one, one)
	want := one + "  send-req  rev 1  SENT\n" + one + "  send-req  rev 1  SENT  (duplicate)\n"
	if code != 0 || out != want {
		t.Fatalf("send twice: exit %d, %q (%s), want %q", code, out, errOut, want)
	}
	code, out, errOut = run(t, "send", "--http-addr", strings.TrimPrefix(ts.HTTPURL, "http://"), mixed)
	if code == 0 || out != mixed+":1  send-req  rev 1  SENT  (duplicate)\n" || !strings.Contains(errOut, mixed+":3: HTTP 400: ") {
		t.Fatalf("send with a bad line: exit %d, %q, %q; want the first line sent, then line 3 refused", code, out, errOut)
	}
	if code, _, errOut = run(t, "send", other); code == 0 || !strings.Contains(errOut, ".jsonl") {
		t.Fatalf("send of a .txt: exit %d, %q", code, errOut)
	}
	// A file an editor began with a byte order mark.
	bom := write("bom.jsonl", "\uFEFF"+sent+"\n")
	if code, out, errOut = run(t, "send", "--http-addr", ts.HTTPURL, bom); code != 0 || !strings.Contains(out, "(duplicate)") {
		t.Fatalf("send of a file with a byte order mark: exit %d, %q, %q", code, out, errOut)
	}

	// A server that checks credentials refuses a body without its key.
	sec := testserver.Start(t, testserver.Secure)
	if code, _, errOut = run(t, "send", "--http-addr", sec.HTTPURL, one); code == 0 || !strings.Contains(errOut, "HTTP 401") {
		t.Fatalf("send without the webhook key: exit %d, %q", code, errOut)
	}
	// A webhook URL pasted with a trailing "/": the server's 404 says why.
	if code, _, errOut = run(t, "send", "--http-addr", sec.HTTPURL+sec.WebhookPath+"/", one); code == 0 || !strings.Contains(errOut, "HTTP 404") || !strings.Contains(errOut, `(a trailing "/"?)`) {
		t.Fatalf("send to the webhook URL and a \"/\": exit %d, %q; want the 404 saying why", code, errOut)
	}

	// Nothing sent, or nothing stored, is no success: an empty file, and
	// a URL that answers 200 without naming an event (not this server).
	if code, out, errOut = run(t, "send", "--http-addr", ts.HTTPURL, write("empty.jsonl", "\n\n")); code == 0 || out != "" || !strings.Contains(errOut, "no webhook body") {
		t.Errorf("send of an empty file: exit %d, %q, %q; want 1, saying there was no body", code, out, errOut)
	}
	other200 := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "{}") }))
	t.Cleanup(other200.Close)
	if code, out, errOut = run(t, "send", "--http-addr", other200.URL, one); code == 0 || out != "" || !strings.Contains(errOut, "names no event") {
		t.Errorf("send to a server answering 200 {}: exit %d, %q, %q; want 1", code, out, errOut)
	}
}

// Files of one name in different directories (a day's capture each) are
// told apart: what send prints, and the line it stops at, name the file as
// given on the command line.
func TestSendNamesFilesAsGiven(t *testing.T) {
	t.Parallel()
	ts := testserver.Start(t, nil)
	dir := t.TempDir()
	day1, day2 := filepath.Join(dir, "day1", "webhooks.jsonl"), filepath.Join(dir, "day2", "webhooks.jsonl")
	for path, content := range map[string]string{
		day1: `{"data":{"requestId":"days-req","status":"SENT","channel":"SMS"},"eventType":"DLR","timestamp":1764153000400}` + "\n",
		day2: `{"hello":"world"}` + "\n",
	} {
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	code, out, errOut := run(t, "send", "--http-addr", ts.HTTPURL, day1, day2)
	if code == 0 || out != day1+":1  days-req  rev 1  SENT\n" || !strings.Contains(errOut, day2+":1: HTTP 400: ") {
		t.Fatalf("send of two files named alike: exit %d, %q, %q; want %s:1 sent, then %s:1 refused", code, out, errOut, day1, day2)
	}
}

// A file named on the command line that send cannot read (a typo, a
// wrong extension) is refused before anything is posted, rather than after
// the files before it: a replay is not left half done.
func TestSendChecksEveryFileFirst(t *testing.T) {
	t.Parallel()
	ts := testserver.Start(t, nil)
	dir := t.TempDir()
	good := filepath.Join(dir, "good.jsonl")
	if err := os.WriteFile(good, []byte(`{"data":{"requestId":"half-req","status":"SENT","channel":"SMS"},"eventType":"DLR","timestamp":1764153000400}`+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	txt := filepath.Join(dir, "more.txt")
	if err := os.WriteFile(txt, []byte(`{}`), 0o600); err != nil {
		t.Fatal(err)
	}
	sub := filepath.Join(dir, "capture.jsonl")
	if err := os.Mkdir(sub, 0o700); err != nil {
		t.Fatal(err)
	}
	// A .json file is one body: an empty one (a capture cut short) was
	// posted as an empty body, after the files before it.
	blank := filepath.Join(dir, "blank.json")
	if err := os.WriteFile(blank, []byte("\uFEFF \n\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	// A body that is not JSON (a capture cut off, a line of a scenario
	// edited by hand) was posted, and refused by the server, after the
	// bodies before it.
	cut := filepath.Join(dir, "cut.json")
	if err := os.WriteFile(cut, []byte(`{"data":{"requestId":"half-req","status":"DELIVERED","channel":"SMS"},"eventType":"DLR","timest`), 0o600); err != nil {
		t.Fatal(err)
	}
	badLine := filepath.Join(dir, "edited.jsonl")
	if err := os.WriteFile(badLine, []byte(`{"data":{"requestId":"half-req","status":"DELIVERED","channel":"SMS"},"eventType":"DLR","timestamp":1764153001400}`+"\n\n"+`{"data":{"requestId":"half-req","status":"READ",}}`+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ bad, want string }{
		{filepath.Join(dir, "missing.jsonl"), "no such file"},
		{txt, "want a .json file"},
		{sub, "directory"},
		{blank, blank + ": empty, want one JSON body"},
		{cut, cut + ": not JSON (a .json file is one body): unexpected end of JSON input"},
		{badLine, badLine + ":3: not JSON (a .jsonl file is one body per line): invalid character '}'"},
	} {
		code, out, errOut := run(t, "send", "--http-addr", ts.HTTPURL, good, tc.bad)
		if code != 1 || out != "" || !strings.Contains(errOut, tc.want) {
			t.Errorf("send %s %s: exit %d, %q, %q; want 1 saying %q, nothing sent", good, tc.bad, code, out, errOut, tc.want)
		}
	}
	if code, _, errOut := run(t, "get", "--grpc-addr", ts.GRPCAddr, "half-req"); code != 1 || !strings.Contains(errOut, "NotFound") {
		t.Errorf("get of the request of the file before the bad one: exit %d, %q; want it never sent", code, errOut)
	}
}

// send - reads standard input, as one more file: its bodies are posted as
// they come, one per line or each over several lines.
func TestSendStdin(t *testing.T) {
	t.Parallel()
	ts := testserver.Start(t, nil)
	r, w := io.Pipe()
	file := filepath.Join(t.TempDir(), "sent.json")
	if err := os.WriteFile(file, []byte(`{"data":{"requestId":"stdin-req","status":"SENT","channel":"SMS"},"eventType":"DLR","timestamp":1764153000400}`), 0o600); err != nil {
		t.Fatal(err)
	}

	s := startIn(t, r, "send", "--http-addr", ts.HTTPURL, file, "-")
	t.Cleanup(func() { w.Close() }) // first: send may be reading
	if l := next(t, s.stdout); l != file+"  stdin-req  rev 1  SENT" {
		t.Fatalf("send printed %q, want the file's body first", l)
	}
	if _, err := io.WriteString(w, `{"data":{"requestId":"stdin-req","status":"DELIVERED","channel":"SMS"},"eventType":"DLR","timestamp":1764153001400}`+"\n\n"); err != nil {
		t.Fatal(err)
	}
	// Posted while standard input is still open.
	if l := next(t, s.stdout); l != "stdin:1  stdin-req  rev 2  DELIVERED" {
		t.Fatalf("send printed %q, want the first body of standard input", l)
	}
	if _, err := io.WriteString(w, "{\n  \"data\": {\"requestId\": \"stdin-req\", \"status\": \"READ\", \"channel\": \"SMS\"},\n  \"eventType\": \"DLR\",\n  \"timestamp\": 1764153002400\n}\n"); err != nil {
		t.Fatal(err)
	}
	w.Close()
	rest, code := s.rest(t)
	if code != 0 || !slices.Equal(rest, []string{"stdin:3  stdin-req  rev 3  READ"}) {
		t.Fatalf("send: exit %d, then printed %q; want the pretty-printed body from line 3", code, rest)
	}

	// What is not JSON stops send, naming its line.
	notJSON := strings.NewReader(`{"data":{"requestId":"stdin-req","status":"READ","channel":"SMS"},"eventType":"DLR","timestamp":1764153002400}` + "\nnot JSON\n")
	code, out, errOut := runIn(t, notJSON, "send", "--http-addr", ts.HTTPURL, "-")
	if code == 0 || out != "stdin:1  stdin-req  rev 3  READ  (duplicate)\n" || !strings.Contains(errOut, "stdin:2: not JSON") {
		t.Fatalf("send of a stream with a line that is not JSON: exit %d, %q, %q", code, out, errOut)
	}
	if code, _, errOut = run(t, "send", "--http-addr", ts.HTTPURL, "-", file, "-"); code == 0 || !strings.Contains(errOut, "more than once") {
		t.Fatalf("send - twice: exit %d, %q", code, errOut)
	}
}

func scenarioBodies(t *testing.T) [][]byte {
	t.Helper()
	b, err := os.ReadFile(tryScenario)
	if err != nil {
		t.Fatal(err)
	}
	return bytes.Split(bytes.TrimSpace(b), []byte("\n"))
}

// The client commands reach a server that serves TLS when told which CA to
// trust, and refuse to talk to it otherwise.
func TestClientsOverTLS(t *testing.T) {
	certFile, keyFile := testserver.SelfSigned(t)
	ts := testserver.Start(t, func(c *server.Config) {
		testserver.Secure(c)
		c.Security.TLSCertFile, c.Security.TLSKeyFile = certFile, keyFile
	})
	t.Setenv("OTPLESS_WEBHOOK_URL", ts.HTTPURL+ts.WebhookPath)
	t.Setenv("OTPLESS_EVENTS_API_KEY", testserver.AdminKey)

	if code, out, errOut := run(t, "send", "--tls-ca-file", certFile, tryScenario); code != 0 || strings.Count(out, "\n") != len(tryChanges) {
		t.Fatalf("send over TLS: exit %d, %q %s", code, out, errOut)
	}
	code, out, errOut := run(t, "watch", "--grpc-addr", ts.GRPCAddr, "--tls-ca-file", certFile, tryID)
	if code != 0 || parseWatch(t, out).status != "SUCCESS" {
		t.Fatalf("watch over TLS: exit %d, %q %s", code, out, errOut)
	}
	bench := func(wantCode int, args ...string) (sent, ok int, errs map[string]int) {
		t.Helper()
		code, out, errOut := run(t, append([]string{"bench", "--json", "--concurrency", "2"}, args...)...)
		var report struct {
			Result struct {
				Sent, OK int
				Errors   map[string]int
			}
		}
		if err := json.Unmarshal([]byte(out), &report); code != wantCode || err != nil {
			t.Fatalf("bench %v: exit %d (want %d), %v, %s %s", args, code, wantCode, err, out, errOut)
		}
		return report.Result.Sent, report.Result.OK, report.Result.Errors
	}
	// TLS asked for, an http:// URL given: refused, rather than sent in clear.
	t.Setenv("OTPLESS_WEBHOOK_URL", strings.Replace(ts.HTTPURL, "https://", "http://", 1)+ts.WebhookPath)
	if code, _, errOut := run(t, "send", "--tls-ca-file", certFile, tryScenario); code == 0 || !strings.Contains(errOut, "https://") || strings.Contains(errOut, "testserver-webhook-key") {
		t.Errorf("send --tls-ca-file to an http:// URL: exit %d, %q; want it refused, the key not shown", code, errOut)
	}
	t.Setenv("OTPLESS_WEBHOOK_URL", ts.HTTPURL+ts.WebhookPath)
	if sent, ok, errs := bench(0, "--tls-ca-file", certFile, "--rate", "100", "--duration", "300ms"); sent != 30 || ok != 30 {
		t.Fatalf("bench over TLS: %d sent, %d ok, errors %v", sent, ok, errs)
	}
	// Nothing answered 200: the report, and a failed exit.
	if sent, ok, errs := bench(1, "--rate", "100", "--duration", "100ms"); sent == 0 || ok != 0 || errs["transport"] != sent {
		t.Fatalf("bench trusted a certificate no system CA signed: %d sent, %d ok, errors %v", sent, ok, errs)
	}
	if code, _, errOut := run(t, "get", "--grpc-addr", ts.GRPCAddr, tryID); code == 0 || !strings.Contains(errOut, "does the server use TLS?") {
		t.Fatalf("get in plaintext from a TLS server: exit %d, %q; want it failed, asking whether the server uses TLS", code, errOut)
	}
	if code, _, _ := run(t, "get", "--grpc-addr", ts.GRPCAddr, "--tls", tryID); code == 0 {
		t.Fatal("get trusted a certificate no system CA signed")
	}
}

// A gRPC client pointed at the HTTP port, or at a plaintext server with TLS,
// is told what is likely wrong, besides grpc-go's words.
func TestClientConnectionHints(t *testing.T) {
	t.Parallel()
	ts := testserver.Start(t, nil)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"get", "--grpc-addr", strings.TrimPrefix(ts.HTTPURL, "http://"), tryID}, "is it the HTTP port?"},
		{[]string{"get", "--grpc-addr", ts.GRPCAddr, "--tls", tryID}, "does the server use TLS?"},
		{[]string{"get", "--grpc-addr", "127.0.0.1", tryID}, "give a port"},
	} {
		if code, _, errOut := run(t, tc.args...); code != 1 || !strings.Contains(errOut, tc.want) {
			t.Errorf("%v: exit %d, %q; want 1 saying %q", tc.args, code, errOut, tc.want)
		}
	}
	// send, pointed at the gRPC port.
	body := filepath.Join(t.TempDir(), "sent.json")
	if err := os.WriteFile(body, []byte(`{"eventType":"DLR","data":{"requestId":"r","status":"SENT"}}`), 0o600); err != nil {
		t.Fatal(err)
	}
	if code, _, errOut := run(t, "send", "--http-addr", ts.GRPCAddr, body); code != 1 || !strings.Contains(errOut, "is it the gRPC port?") {
		t.Errorf("send to the gRPC port: exit %d, %q; want 1 saying it is the gRPC port", code, errOut)
	}
}

// An unreachable server must not make send print the webhook key.
func TestSendErrorHidesWebhookKey(t *testing.T) {
	body := filepath.Join(t.TempDir(), "sent.json")
	if err := os.WriteFile(body, []byte(`{"eventType":"DLR","data":{"requestId":"r","status":"SENT"}}`), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, url := range []string{
		"http://127.0.0.1:1/v1/webhooks/otpless/whk_SECRETKEY",  // unreachable
		" http://127.0.0.1:1/v1/webhooks/otpless/whk_SECRETKEY", // does not parse
		"http://127.0.0.1:1/v1/webhooks/otpless/whk_SECRETKEY%zz",
	} {
		t.Setenv("OTPLESS_WEBHOOK_URL", url)
		code, _, errOut := run(t, "send", body)
		if code == 0 || strings.Contains(errOut, "SECRETKEY") || !strings.Contains(errOut, "{key}") {
			t.Errorf("send to %q: exit %d, stderr %q; want an error without the key", url, code, errOut)
		}
	}
	// A Basic password holding an unescaped "/", "?" or "#" makes the URL
	// parse with the password's start as the port.
	for _, url := range []string{
		"http://otpless:SECRETpw/x+Y==@127.0.0.1:1/v1/webhooks/otpless",
		"http://otpless:SECRETpw?x@127.0.0.1:1/v1/webhooks/otpless",
		"http://otpless:SECRETpw#x@127.0.0.1:1/v1/webhooks/otpless",
	} {
		t.Setenv("OTPLESS_WEBHOOK_URL", url)
		code, _, errOut := run(t, "send", body)
		if code == 0 || strings.Contains(errOut, "SECRET") || !strings.Contains(errOut, "percent-encoded") {
			t.Errorf("send to %q: exit %d, stderr %q; want an error without the password, saying what to do", url, code, errOut)
		}
	}
}

// A request that has not begun, watched across reconnects (here, streams
// ended by the server's maximum duration): its empty snapshot is printed
// once, and the first change after it.
func TestWatchPrintsTheEmptySnapshotOnce(t *testing.T) {
	t.Parallel()
	ts := testserver.Start(t, func(c *server.Config) { c.MaxWatchDuration = 200 * time.Millisecond })
	w := start(t, "watch", "--grpc-addr", ts.GRPCAddr, tryID)
	if l := parseWatch(t, next(t, w.stdout)); l.rev != 0 {
		t.Fatalf("first line at revision %d, want the empty snapshot", l.rev)
	}
	for asked := 0; asked < 2; {
		if strings.HasPrefix(next(t, w.stderr), "the server asked to reconnect") {
			asked++
		}
	}
	ts.Ingest(t, scenarioBodies(t)[0])
	if l := parseWatch(t, next(t, w.stdout)); l.rev != 1 {
		t.Fatalf("after two reconnects watch printed revision %d, want 1 (the empty snapshot once only)", l.rev)
	}
}

// Client flags that cannot work are refused saying why, before any call:
// an empty key file, a URL where a gRPC address goes.
func TestClientFlagsThatCannotWork(t *testing.T) {
	t.Parallel()
	empty, twoLines, unsafe := filepath.Join(t.TempDir(), "key"), filepath.Join(t.TempDir(), "apikey-output"), filepath.Join(t.TempDir(), "pasted")
	if err := os.WriteFile(empty, []byte("\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(unsafe, []byte("ak_\u00a0abcdef\n"), 0o600); err != nil { // a no-break space pasted in
		t.Fatal(err)
	}
	if err := os.WriteFile(twoLines, []byte("key:    oek_abc\nconfig: client 0123 read\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	body := filepath.Join(t.TempDir(), "sent.json")
	if err := os.WriteFile(body, []byte(`{"eventType":"DLR","data":{"requestId":"r","status":"SENT"}}`), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"get", "--api-key-file", empty, tryID}, "is empty"},
		{[]string{"get", "--api-key-file", twoLines, tryID}, "more than one line"},
		{[]string{"get", "--api-key-file", unsafe, tryID}, "printable ASCII"},
		{[]string{"send", "--plaintext", "--tls-ca-file", empty, "--http-addr", "https://127.0.0.1:1", body}, "--plaintext and --tls"},
		{[]string{"bench", "--tls", "--http-addr", "http://127.0.0.1:1", "--duration", "1s"}, "is http://"},
		{[]string{"watch", "--api-key-file", empty, tryID}, "is empty"},
		{[]string{"get", "--grpc-addr", "http://127.0.0.1:9090", tryID}, "not an HTTP URL"},
		{[]string{"watch", "--timeout", "-1s", tryID}, "must not be negative"},
		{[]string{"watch", "--idle-timeout", "-1s", tryID}, "must not be negative"},
	} {
		if code, _, errOut := run(t, tc.args...); code != 1 || !strings.Contains(errOut, tc.want) {
			t.Errorf("%v: exit %d, %q; want 1 saying %q", tc.args, code, errOut, tc.want)
		}
	}
}

// get escapes in its JSON the control characters protojson leaves, as watch
// --json does: what it prints comes from webhook senders.
func TestGetPrintsNoControlCharacters(t *testing.T) {
	t.Parallel()
	ts := testserver.Start(t, nil)
	file := filepath.Join(t.TempDir(), "c1.json")
	if err := os.WriteFile(file, []byte(`{"data":{"requestId":"c1-req","status":"SENT","channel":"SMS\u009b2J\u007f"},"eventType":"DLR","timestamp":1764153000400}`), 0o600); err != nil {
		t.Fatal(err)
	}
	if code, _, errOut := run(t, "send", "--http-addr", ts.HTTPURL, file); code != 0 {
		t.Fatalf("send: exit %d: %s", code, errOut)
	}
	code, out, errOut := run(t, "get", "--grpc-addr", ts.GRPCAddr, "c1-req")
	if code != 0 || strings.ContainsFunc(strings.TrimSuffix(out, "\n"), func(r rune) bool { return unicode.IsControl(r) && r != '\n' }) || !strings.Contains(out, `SMS\u009b2J\u007f`) {
		t.Fatalf("get: exit %d, printed %q (%s); want the control characters escaped", code, out, errOut)
	}
}

// A request id that is not UTF-8 cannot be sent (the API's ids are UTF-8
// text): get and watch say so, not grpc-go's INTERNAL about marshaling.
func TestRequestIDNotUTF8(t *testing.T) {
	t.Parallel()
	ts := testserver.Start(t, nil)
	for _, cmd := range []string{"get", "watch"} {
		code, out, errOut := run(t, cmd, "--grpc-addr", ts.GRPCAddr, "req-\xff")
		if code != 1 || out != "" || !strings.Contains(errOut, "not valid UTF-8") || strings.Contains(errOut, "Internal") {
			t.Errorf("%s of an id that is not UTF-8: exit %d, %q, %q; want 1 saying the id is not UTF-8", cmd, code, out, errOut)
		}
	}
}

// A request id is often copied from a webhook, whose sender chose it: one
// holding control characters, which the API refuses, is not echoed to the
// terminal as it is (an ESC sequence would set its title, or clear it).
func TestRequestIDControlCharactersNotEchoed(t *testing.T) {
	t.Parallel()
	ts := testserver.Start(t, nil)
	for _, cmd := range []string{"get", "watch"} {
		code, out, errOut := run(t, cmd, "--grpc-addr", ts.GRPCAddr, "req\x1b]0;PWNED\a")
		if code != 1 || out != "" || strings.ContainsFunc(strings.TrimSuffix(errOut, "\n"), unicode.IsControl) || !strings.Contains(errOut, `req\x1b]0;PWNED\a`) {
			t.Errorf("%s of an id with control characters: exit %d, %q, %q; want 1, the id escaped", cmd, code, out, errOut)
		}
	}
}

// slowLink forwards connections to addr, each only after a delay, as a
// distant server's round trips make the handshakes slow; it returns the
// address to connect to instead.
func slowLink(t *testing.T, addr string, delay time.Duration) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			in, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer in.Close()
				time.Sleep(delay)
				out, err := net.Dial("tcp", addr)
				if err != nil {
					return
				}
				defer out.Close()
				go io.Copy(out, in)
				io.Copy(in, out)
			}()
		}
	}()
	return ln.Addr().String()
}

// A server whose connection takes longer than grpc-go's first backoff
// (0.1 s) to set up, as one a few round trips away over TLS does, is
// reached: the connection is not given up on at the first backoff.
func TestClientsOfASlowLink(t *testing.T) {
	t.Parallel()
	ts := testserver.Start(t, nil)
	for _, b := range scenarioBodies(t) {
		ts.Ingest(t, b)
	}
	addr := slowLink(t, ts.GRPCAddr, 300*time.Millisecond)
	for _, args := range [][]string{{"get"}, {"watch", "--json"}} {
		code, out, errOut := run(t, append(args, "--grpc-addr", addr, tryID)...)
		if code != 0 || !strings.Contains(out, "REQUEST_STATUS_SUCCESS") {
			t.Errorf("%s over a slow link: exit %d, %q; want the SUCCESS snapshot", args[0], code, errOut)
		}
	}
}

// An API key in the environment that no header can carry is refused
// saying so, not with grpc-go's INTERNAL about a header value.
func TestAPIKeyEnvironmentNotPrintable(t *testing.T) {
	t.Setenv("OTPLESS_EVENTS_API_KEY", "ak_abc\x01def")
	if code, _, errOut := run(t, "get", "--grpc-addr", "127.0.0.1:1", tryID); code != 1 || !strings.Contains(errOut, "$OTPLESS_EVENTS_API_KEY holds a character other than printable ASCII") {
		t.Errorf("exit %d, %q; want 1 naming the variable", code, errOut)
	}
}

// An empty environment variable leaves a flag that is not text unset (VAR=
// is a common way to unset one), rather than failing to parse "".
func TestEmptyEnvironmentVariables(t *testing.T) {
	t.Setenv("OTPLESS_EVENTS_JSON", "")
	t.Setenv("OTPLESS_EVENTS_PLAINTEXT", "")
	code, _, errOut := run(t, "get", "--grpc-addr", "127.0.0.1:1", tryID)
	if code != 1 || strings.Contains(errOut, "OTPLESS_EVENTS_") || strings.Contains(errOut, "invalid argument") {
		t.Errorf("get with OTPLESS_EVENTS_JSON and _PLAINTEXT empty: exit %d, %q; want it to go on (and find nobody there)", code, errOut)
	}
}

// A server run with --grpc-client-ca refuses get and watch, which present
// no client certificate, at the handshake: they say so, rather than ask
// whether the server uses TLS when they were told it does.
func TestClientsOfAMutualTLSServer(t *testing.T) {
	t.Parallel()
	certFile, keyFile := testserver.SelfSigned(t)
	cfg := server.DefaultConfig()
	cfg.GRPCAddr, cfg.HTTPAddr, cfg.DataDir = "127.0.0.1:0", "127.0.0.1:0", t.TempDir()
	cfg.Security.Disabled = true
	cfg.Security.TLSCertFile, cfg.Security.TLSKeyFile, cfg.Security.ClientCAFile = certFile, keyFile, certFile // its own CA
	srv := testserver.Run(t, cfg)
	for _, cmd := range [][]string{{"get"}, {"watch", "--timeout", "20s"}} {
		code, _, errOut := run(t, append(cmd, "--grpc-addr", srv.GRPCAddr().String(), "--tls-ca-file", certFile, tryID)...)
		if code != 1 || strings.Contains(errOut, "does the server use TLS?") || !strings.Contains(errOut, "client certificate") {
			t.Errorf("%s over TLS from a server that requires a client certificate: exit %d, %q; want 1 saying it requires a client certificate", cmd[0], code, errOut)
		}
	}
}

// get against a server that takes the call and never answers (a stuck
// proxy, a wedged process) gives up after --timeout, saying so, rather
// than hold a script for ever.
func TestGetTimeout(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	stuck := grpc.NewServer(grpc.UnknownServiceHandler(func(_ any, stream grpc.ServerStream) error {
		<-stream.Context().Done()
		return stream.Context().Err()
	}))
	go stuck.Serve(ln)
	t.Cleanup(stuck.Stop)
	code, out, errOut := run(t, "get", "--timeout", "200ms", "--grpc-addr", ln.Addr().String(), tryID)
	if code != 1 || out != "" || !strings.Contains(errOut, "no answer within --timeout 200ms") {
		t.Errorf("get of a server that never answers: exit %d, %q, %q; want 1 naming --timeout", code, out, errOut)
	}
	if code, _, errOut := run(t, "get", "--timeout", "-1s", tryID); code != 1 || !strings.Contains(errOut, "--timeout must not be negative") {
		t.Errorf("get --timeout -1s: exit %d, %q; want it refused", code, errOut)
	}
}
