package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/encoding/protojson"

	eventsv1 "github.com/otpless-events/otpless-events/gen/otpless/events/v1"
	"github.com/otpless-events/otpless-events/internal/ssetest"
	"github.com/otpless-events/otpless-events/server/auth"
)

// Credentials the binary is started with, through the environment as an
// operator would give them.
const (
	testAPIKey     = "e2e-admin-key"
	testWebhookKey = "e2e-webhook-key-0123456789"
)

func credentialsEnv() []string {
	return []string{
		"OTPLESS_EVENTS_API_KEYS=" + auth.FormatAPIKey("e2e", testAPIKey, []auth.Scope{auth.ScopeAdmin}),
		"OTPLESS_EVENTS_WEBHOOK_KEYS=" + testWebhookKey,
	}
}

// binary is built once per test run.
var binary struct {
	once sync.Once
	path string
	err  error
}

func buildBinary(t *testing.T) string {
	t.Helper()
	binary.once.Do(func() {
		dir, err := os.MkdirTemp("", "otpless-events-bin")
		if err != nil {
			binary.err = err
			return
		}
		binary.path = filepath.Join(dir, "otpless-events")
		out, err := exec.Command("go", "build", "-o", binary.path, ".").CombinedOutput()
		if err != nil {
			binary.err = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if binary.err != nil {
		t.Fatal(binary.err)
	}
	return binary.path
}

func TestMain(m *testing.M) {
	code := m.Run()
	if binary.path != "" {
		os.RemoveAll(filepath.Dir(binary.path))
	}
	os.Exit(code)
}

// proc is a running `otpless-events serve`.
type proc struct {
	cmd        *exec.Cmd
	grpcAddr   string
	httpURL    string
	gomaxprocs int           // as the "serving" line reports it
	exited     chan struct{} // closed when the process has exited
	waitErr    error
	stdout     *bytes.Buffer // read only after exited
}

// startServe runs the real binary on ephemeral ports with env added to its
// environment, and reads the addresses from its "serving" log line.
func startServe(t *testing.T, dataDir string, env ...string) *proc {
	t.Helper()
	return startServeUnder(t, nil, dataDir, env...)
}

// startServeUnder is startServe with the command line prefixed by wrapper
// (a program that runs the binary, such as taskset).
func startServeUnder(t *testing.T, wrapper []string, dataDir string, env ...string) *proc {
	t.Helper()
	args := append(wrapper, buildBinary(t), "serve",
		"--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0",
		"--data-dir", dataDir, "--log-format", "json", "--metrics-addr", "127.0.0.1:0")
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Env = append(append(os.Environ(), "OTPLESS_EVENTS_WATCH_HEARTBEAT=1s"), env...)
	var stdout bytes.Buffer
	cmd.Stdout = &stdout
	p := &proc{cmd: cmd, exited: make(chan struct{}), stdout: &stdout}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	type serving struct {
		Msg, GRPC, HTTP string
		GOMAXPROCS      int `json:"gomaxprocs"`
	}
	addrs := make(chan serving, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			var line serving
			if json.Unmarshal(sc.Bytes(), &line) == nil && line.Msg == "serving" {
				addrs <- line
			}
			t.Logf("serve: %s", sc.Bytes())
		}
		p.waitErr = cmd.Wait()
		close(p.exited)
	}()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-p.exited
	})
	select {
	case a := <-addrs:
		p.grpcAddr, p.httpURL, p.gomaxprocs = a.GRPC, "http://"+a.HTTP, a.GOMAXPROCS
	case <-p.exited:
		t.Fatalf("serve exited before serving: %v", p.waitErr)
	case <-time.After(30 * time.Second):
		t.Fatal("serve did not start")
	}
	return p
}

func (p *proc) client(t *testing.T, apiKey string) eventsv1.RequestServiceClient {
	t.Helper()
	conn, err := grpc.NewClient(p.grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithPerRPCCredentials(auth.BearerCredentials{Token: apiKey, Insecure: true}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return eventsv1.NewRequestServiceClient(conn)
}

// TestKill9KeepsAcknowledgedWebhooks: every webhook answered 2xx is there
// after kill -9 and a restart.
func TestKill9KeepsAcknowledgedWebhooks(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and kills the binary; skipped with -short")
	}
	dataDir := t.TempDir()
	p := startServe(t, dataDir, credentialsEnv()...)

	type ack struct{ requestID, eventID string }
	var (
		mu     sync.Mutex
		acked  []ack
		wg     sync.WaitGroup
		killed = make(chan struct{})
	)
	const workers, killAfter = 8, 400
	client := &http.Client{Timeout: 10 * time.Second}
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-killed:
					return
				default:
				}
				id := fmt.Sprintf("kill9-%d-%d", w, i)
				body := fmt.Sprintf(`{"data":{"requestId":%q,"status":"SENT","channel":"WHATSAPP"},"eventType":"DLR","timestamp":%d}`, id, 1764153000000+i)
				resp, err := client.Post(p.httpURL+"/v1/webhooks/otpless/"+testWebhookKey, "application/json", strings.NewReader(body))
				if err != nil {
					return // the server is gone
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					continue
				}
				out := &eventsv1.IngestResponse{}
				if err := protojson.Unmarshal(b, out); err != nil {
					// A 200 with a cut body can't be attributed; the server died mid-write.
					continue
				}
				mu.Lock()
				acked = append(acked, ack{id, out.GetEvents()[0].GetEventId()})
				n := len(acked)
				mu.Unlock()
				if n == killAfter {
					p.cmd.Process.Signal(syscall.SIGKILL)
					close(killed)
				}
			}
		}()
	}
	wg.Wait()
	<-p.exited
	mu.Lock()
	defer mu.Unlock()
	if len(acked) < killAfter {
		t.Fatalf("only %d webhooks acknowledged before the kill", len(acked))
	}

	p2 := startServe(t, dataDir, credentialsEnv()...)
	c := p2.client(t, testAPIKey)
	ctx := context.Background()
	for _, a := range acked {
		resp, err := c.ListRequestEvents(ctx, &eventsv1.ListRequestEventsRequest{RequestId: a.requestID})
		if err != nil {
			t.Fatalf("acknowledged request %s lost after kill -9: %v", a.requestID, err)
		}
		if len(resp.GetEvents()) != 1 || resp.GetEvents()[0].GetEventId() != a.eventID {
			t.Fatalf("acknowledged event %s of %s lost after kill -9: %v", a.eventID, a.requestID, resp.GetEvents())
		}
	}
	t.Logf("%d acknowledged webhooks all present after kill -9", len(acked))
}

// TestSIGTERMShutsDownGracefully: watch streams, over gRPC and as
// Server-Sent Events, get RECONNECT and end cleanly, and the process exits 0.
func TestSIGTERMShutsDownGracefully(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary; skipped with -short")
	}
	p := startServe(t, t.TempDir(), credentialsEnv()...)
	stream, err := p.client(t, testAPIKey).WatchRequest(context.Background(), &eventsv1.WatchRequestRequest{RequestId: "term-req"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); err != nil {
		t.Fatal(err)
	}
	req, err := http.NewRequest(http.MethodGet, p.httpURL+"/v1/requests/term-req:watch", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Accept", "text/event-stream")
	req.Header.Set("Authorization", "Bearer "+testAPIKey)
	sse, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer sse.Body.Close()
	sseReader := ssetest.NewReader(sse.Body)
	var sseEvents []string // event names
	readEvent := func() error {
		ev, err := sseReader.NextEvent()
		if err == nil {
			sseEvents = append(sseEvents, ev.Event)
		}
		return err
	}
	if err := readEvent(); err != nil || sseEvents[0] != "snapshot" {
		t.Fatalf("event stream began with %q (%v), want the snapshot", sseEvents, err)
	}
	body := []byte(`{"data":{"requestId":"term-req","status":"SENT","channel":"SMS"},"eventType":"DLR","timestamp":1764153000000}`)
	resp, err := http.Post(p.httpURL+"/v1/webhooks/otpless/"+testWebhookKey, "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	var last *eventsv1.WatchRequestResponse
	for {
		m, err := stream.Recv()
		if err != nil {
			if err != io.EOF {
				t.Fatalf("stream ended with %v, want a clean end", err)
			}
			break
		}
		last = m
	}
	if last.GetType() != eventsv1.WatchMessageType_WATCH_MESSAGE_TYPE_RECONNECT || last.GetRevision() != 1 {
		t.Fatalf("last message %v, want RECONNECT at revision 1", last)
	}
	var sseErr error
	for sseErr == nil {
		sseErr = readEvent()
	}
	if sseErr != io.EOF || sseEvents[len(sseEvents)-1] != "reconnect" {
		t.Fatalf("event stream: %q, then %v; want it to end cleanly after a reconnect event", sseEvents, sseErr)
	}
	select {
	case <-p.exited:
		if p.waitErr != nil {
			t.Fatalf("serve exited with %v after SIGTERM, want 0", p.waitErr)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("serve did not exit after SIGTERM")
	}
}

// TestFirstStartGeneratesCredentials: with nothing configured, serve makes a
// webhook key and an admin API key, keeps them (the API key as a hash only)
// with mode 0600, prints both once, and they work.
func TestFirstStartGeneratesCredentials(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary; skipped with -short")
	}
	dataDir := t.TempDir()
	p := startServe(t, dataDir)
	for _, name := range []string{"webhook-key", "api-keys", "watch-token-key"} {
		fi, err := os.Stat(filepath.Join(dataDir, name))
		if err != nil || fi.Mode().Perm() != 0o600 {
			t.Fatalf("%s: %v, mode %v; want a 0600 file", name, err, fi.Mode())
		}
	}
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	<-p.exited
	printed := p.stdout.String()
	var webhookURL, apiKey string
	for _, line := range strings.Split(printed, "\n") {
		f := strings.Fields(line)
		if len(f) < 2 || f[0] != "export" {
			continue
		}
		if v, ok := strings.CutPrefix(f[1], "OTPLESS_WEBHOOK_URL="); ok {
			webhookURL = v
		}
		if v, ok := strings.CutPrefix(f[1], "OTPLESS_EVENTS_API_KEY="); ok {
			apiKey = v
		}
	}
	if webhookURL == "" || apiKey == "" {
		t.Fatalf("first start printed no webhook URL or API key:\n%s", printed)
	}
	stored, _ := os.ReadFile(filepath.Join(dataDir, "api-keys"))
	if strings.Contains(string(stored), apiKey) || !strings.Contains(string(stored), auth.HashKey(apiKey)) {
		t.Fatalf("api-keys file holds %q; want the hash of the key, not the key", stored)
	}

	// Second start: same credentials, nothing printed; they work.
	p2 := startServe(t, dataDir)
	webhookURL = p2.httpURL + webhookURL[strings.Index(webhookURL, "/v1/"):] // same key, new port
	resp, err := http.Post(webhookURL, "application/json", strings.NewReader(`{"data":{"requestId":"first-run","status":"SENT","channel":"SMS"},"eventType":"DLR","timestamp":1764153000000}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("POST to the printed webhook URL: %d", resp.StatusCode)
	}
	if _, err := p2.client(t, apiKey).GetRequest(context.Background(), &eventsv1.GetRequestRequest{RequestId: "first-run"}); err != nil {
		t.Fatalf("GetRequest with the printed API key: %v", err)
	}
	p2.cmd.Process.Signal(syscall.SIGTERM)
	<-p2.exited
	if out := p2.stdout.String(); strings.Contains(out, "export") {
		t.Fatalf("second start printed credentials again:\n%s", out)
	}
}

// On one CPU, serve runs with two Ps (one P lets the store's writer stall
// every handler), unless GOMAXPROCS is set.
func TestOneCPURunsTwoProcs(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("CPU affinity through taskset is Linux's")
	}
	taskset, err := exec.LookPath("taskset")
	if err != nil {
		t.Fatalf("taskset (util-linux) is needed: %v", err)
	}
	for _, tt := range []struct {
		name string
		env  []string
		want int
	}{
		{"default", nil, 2},
		{"GOMAXPROCS set", []string{"GOMAXPROCS=1"}, 1},
	} {
		t.Run(tt.name, func(t *testing.T) {
			p := startServeUnder(t, []string{taskset, "--cpu-list", "0"}, t.TempDir(), tt.env...)
			if p.gomaxprocs != tt.want {
				t.Errorf("serving with GOMAXPROCS %d on one CPU, want %d", p.gomaxprocs, tt.want)
			}
		})
	}
}

// A second interrupt ends the process at once, even while the first one
// waits for work that will not end soon: here serve's graceful shutdown,
// for a webhook whose body never comes, which it would wait a minute for.
// (bench, used here before, ends its posts at the first interrupt.) Also
// for a serve started with interrupts ignored, as a shell script's
// background job is: Go catches them all the same, and the second must
// not go back to being ignored.
func TestSecondInterruptEndsAtOnce(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary; skipped with -short")
	}
	t.Parallel()
	for _, tt := range []struct {
		name    string
		wrapper []string
	}{{"default", nil}, {"started with interrupts ignored", []string{"sh", "-c", `trap '' INT; exec "$0" "$@"`}}} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			secondInterruptEndsAtOnce(t, tt.wrapper)
		})
	}
}

func secondInterruptEndsAtOnce(t *testing.T, wrapper []string) {
	p := startServeUnder(t, wrapper, t.TempDir(), append(credentialsEnv(),
		"OTPLESS_EVENTS_SHUTDOWN_GRACE=1m", "OTPLESS_EVENTS_HTTP_READ_TIMEOUT=1m")...)
	conn, err := net.Dial("tcp", strings.TrimPrefix(p.httpURL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "POST /v1/webhooks/otpless/%s HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"+
		"Content-Length: 100\r\nExpect: 100-continue\r\n\r\n", testWebhookKey)
	// The handler asks for the body: the webhook is in flight.
	conn.SetReadDeadline(time.Now().Add(20 * time.Second))
	if line, err := bufio.NewReader(conn).ReadString('\n'); err != nil || !strings.HasPrefix(line, "HTTP/1.1 100 ") {
		t.Fatalf("the webhook's first answer: %q, %v; want 100 Continue", line, err)
	}
	p.cmd.Process.Signal(os.Interrupt)
	// The second interrupt, again until the process ends (one that comes
	// before the process has acted on the first is the second all the
	// same).
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	deadline := time.After(10 * time.Second)
	for ended := false; !ended; {
		select {
		case <-p.exited:
			ended = true
		case <-tick.C:
			p.cmd.Process.Signal(os.Interrupt)
		case <-deadline:
			t.Fatal("still running 10 s after a second interrupt")
		}
	}
	if code := p.cmd.ProcessState.ExitCode(); code != 130 {
		t.Errorf("the process ended with %v, not with 130 (128 + SIGINT): its shutdown did not wait for the webhook, so this test did not test what it means to", p.waitErr)
	}
}

// A first start that fails after making the credentials (here, its HTTP
// port is taken) still prints them: the admin key is kept as a hash only,
// so a later start could not show it.
func TestFailedFirstStartPrintsCredentials(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary; skipped with -short")
	}
	t.Parallel()
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	cmd := exec.Command(buildBinary(t), "serve", "--data-dir", t.TempDir(),
		"--http-addr", taken.Addr().String(), "--grpc-addr", "127.0.0.1:0", "--metrics-addr", "")
	for _, kv := range os.Environ() { // nothing configured: the credentials are made
		if !strings.HasPrefix(kv, "OTPLESS_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	out, err := cmd.Output()
	if err == nil {
		t.Fatal("serve started on a port that is taken")
	}
	for _, want := range []string{"export OTPLESS_WEBHOOK_URL=http://" + taken.Addr().String() + "/v1/webhooks/otpless/", "export OTPLESS_EVENTS_API_KEY=oek_"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("a failed first start printed:\n%s\nwant %q", out, want)
		}
	}
}
