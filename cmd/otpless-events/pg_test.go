package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	eventsv1 "github.com/otpless-events/otpless-events/gen/otpless/events/v1"
	"github.com/otpless-events/otpless-events/internal/fixtures"
	"github.com/otpless-events/otpless-events/internal/testnet"
	"github.com/otpless-events/otpless-events/server/state"
	"github.com/otpless-events/otpless-events/server/store/pgstore/pgtest"
)

// authRequest is one copy of a scenario under request ids of its own.
type authRequest struct {
	bodies [][]byte
	// Per request id: all its distinct events, and those a watcher must
	// see: the ones up to the first terminal snapshot, where streams end.
	events, streamed map[string]map[string]*eventsv1.Event
}

// copyScenarios makes n auth requests from the shared scenarios, copy k of
// a scenario with "-k" appended to each of its request ids.
func copyScenarios(t *testing.T, n int) []authRequest {
	t.Helper()
	scenarios := fixtures.Scenarios(t)
	out := make([]authRequest, 0, n)
	for k := 0; len(out) < n; k++ {
		sc := scenarios[k%len(scenarios)]
		ids := map[string]bool{}
		for _, b := range sc.Bodies {
			for _, e := range fixtures.Events(t, b) {
				ids[e.GetRequestId()] = true
			}
		}
		ar := authRequest{events: map[string]map[string]*eventsv1.Event{}, streamed: map[string]map[string]*eventsv1.Event{}}
		for _, b := range sc.Bodies {
			for id := range ids {
				b = bytes.ReplaceAll(b, []byte(`"`+id+`"`), fmt.Appendf(nil, `"%s-%d"`, id, k))
			}
			ar.bodies = append(ar.bodies, b)
			for _, e := range fixtures.Events(t, b) {
				id := e.GetRequestId()
				if !strings.HasSuffix(id, fmt.Sprintf("-%d", k)) {
					t.Fatalf("scenario %s: request id %q not rewritten", sc.Name, id)
				}
				if ar.events[id] == nil {
					ar.events[id], ar.streamed[id] = map[string]*eventsv1.Event{}, map[string]*eventsv1.Event{}
				}
				ar.events[id][e.GetEventId()] = e
				if !state.Terminal(foldSet(id, ar.streamed[id])) {
					ar.streamed[id][e.GetEventId()] = e
				}
			}
		}
		out = append(out, ar)
	}
	return out
}

func foldSet(id string, events map[string]*eventsv1.Event) *eventsv1.AuthRequest {
	list := make([]*eventsv1.Event, 0, len(events))
	for _, e := range events {
		list = append(list, e)
	}
	return state.Fold(id, list)
}

// TestTwoReplicasOnPostgres runs two serve processes on one PostgreSQL
// schema. Webhooks of 50 auth requests are posted round robin to both while
// a watcher on each replica follows every request: each watcher sees every
// change of its request once, in revision order, up to the terminal
// snapshot, and both replicas return the same final snapshot, the fold of
// all the request's events.
func TestTwoReplicasOnPostgres(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary; skipped with -short")
	}
	dsn, _ := pgtest.Schema(t)
	env := append(credentialsEnv(), "OTPLESS_EVENTS_STORE="+dsn)
	replicas := []*proc{startServe(t, t.TempDir(), env...), startServe(t, t.TempDir(), env...)}
	clients := []eventsv1.RequestServiceClient{replicas[0].client(t, testAPIKey), replicas[1].client(t, testAPIKey)}
	requests := copyScenarios(t, 50)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	// A watcher per request on each replica, in place before any webhook.
	type watcher struct {
		id      string
		replica int
		msgs    []*eventsv1.WatchRequestResponse
		err     error
	}
	var (
		watchers []*watcher
		watching sync.WaitGroup
		ready    sync.WaitGroup
	)
	for _, ar := range requests {
		for id := range ar.events {
			for r, c := range clients {
				w := &watcher{id: id, replica: r}
				watchers = append(watchers, w)
				stream, err := c.WatchRequest(ctx, &eventsv1.WatchRequestRequest{RequestId: id})
				if err != nil {
					t.Fatal(err)
				}
				ready.Add(1)
				watching.Go(func() {
					first := true
					for {
						m, err := stream.Recv()
						if first {
							first = false
							ready.Done()
						}
						if err != nil {
							if !errors.Is(err, io.EOF) {
								w.err = err
							}
							return
						}
						w.msgs = append(w.msgs, m)
					}
				})
			}
		}
	}
	ready.Wait()

	// Each request's bodies in order, alternating replicas; requests in
	// parallel.
	client := &http.Client{Timeout: 30 * time.Second}
	sem := make(chan struct{}, 16)
	var posting sync.WaitGroup
	for u, ar := range requests {
		posting.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			for j, body := range ar.bodies {
				p := replicas[(u+j)%len(replicas)]
				resp, err := client.Post(p.httpURL+"/v1/webhooks/otpless/"+testWebhookKey, "application/json", bytes.NewReader(body))
				if err != nil {
					t.Errorf("request %d body %d: %v", u, j, err)
					return
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					t.Errorf("request %d body %d: %d %s", u, j, resp.StatusCode, b)
					return
				}
			}
		})
	}
	posting.Wait()
	if t.Failed() {
		return
	}
	watching.Wait()

	byID := map[string]authRequest{}
	for _, ar := range requests {
		for id := range ar.events {
			byID[id] = ar
		}
	}
	finals := map[string]*eventsv1.AuthRequest{}
	for id, ar := range byID {
		var snaps [2]*eventsv1.AuthRequest
		for r, c := range clients {
			resp, err := c.GetRequest(ctx, &eventsv1.GetRequestRequest{RequestId: id})
			if err != nil {
				t.Fatalf("GetRequest(%s) on replica %d: %v", id, r, err)
			}
			snaps[r] = resp.GetRequest()
		}
		if !proto.Equal(snaps[0], snaps[1]) {
			t.Errorf("%s: the replicas disagree:\n%v\n%v", id, snaps[0], snaps[1])
		}
		checkSnapshot(t, id, snaps[0], ar.events[id])
		finals[id] = snaps[0]
	}
	for _, w := range watchers {
		if w.err != nil {
			t.Errorf("watcher of %s on replica %d ended with %v", w.id, w.replica, w.err)
			continue
		}
		ar := byID[w.id]
		checkWatch(t, fmt.Sprintf("%s on replica %d", w.id, w.replica), w.msgs, ar.events[w.id], ar.streamed[w.id], finals[w.id])
	}
	t.Logf("%d requests, %d watchers on 2 replicas", len(byID), len(watchers))
}

// checkSnapshot: got is the fold of the request's events.
func checkSnapshot(t *testing.T, what string, got *eventsv1.AuthRequest, events map[string]*eventsv1.Event) {
	t.Helper()
	g := proto.CloneOf(got)
	g.Revision, g.UpdateTime = 0, nil
	if want := foldSet(got.GetRequestId(), events); !proto.Equal(g, want) {
		t.Errorf("%s: snapshot is not the fold of its events:\n got %s\nwant %s", what, protojson.Format(g), protojson.Format(want))
	}
}

// checkWatch: a SNAPSHOT at revision 0, then UPDATEs at increasing revisions
// carrying each event at most once, every event before the terminal one
// among them, the last terminal and the fold of all the events delivered;
// it is the final snapshot unless events came after the terminal one.
func checkWatch(t *testing.T, who string, msgs []*eventsv1.WatchRequestResponse, all, streamed map[string]*eventsv1.Event, final *eventsv1.AuthRequest) {
	t.Helper()
	if len(msgs) < 2 || msgs[0].GetType() != eventsv1.WatchMessageType_WATCH_MESSAGE_TYPE_SNAPSHOT || msgs[0].GetRevision() != 0 {
		t.Errorf("%s: stream %v, want a SNAPSHOT at revision 0 and updates", who, msgs)
		return
	}
	delivered := map[string]*eventsv1.Event{}
	var rev int64
	for i, m := range msgs[1:] {
		switch m.GetType() {
		case eventsv1.WatchMessageType_WATCH_MESSAGE_TYPE_HEARTBEAT:
			continue
		case eventsv1.WatchMessageType_WATCH_MESSAGE_TYPE_UPDATE:
		default:
			t.Errorf("%s: message %d is %v", who, i+1, m.GetType())
			return
		}
		if m.GetRevision() <= rev || m.GetRequest().GetRevision() != m.GetRevision() || len(m.GetEvents()) == 0 {
			t.Errorf("%s: UPDATE %d at revision %d (snapshot %d, %d events) after %d", who, i+1, m.GetRevision(), m.GetRequest().GetRevision(), len(m.GetEvents()), rev)
		}
		rev = m.GetRevision()
		for _, e := range m.GetEvents() {
			if _, dup := delivered[e.GetEventId()]; dup {
				t.Errorf("%s: event %s (%s) delivered twice", who, e.GetEventId(), e.GetStatus())
			}
			if _, ok := all[e.GetEventId()]; !ok {
				t.Errorf("%s: unknown event %s delivered", who, e.GetEventId())
			}
			delivered[e.GetEventId()] = e
		}
	}
	for id, e := range streamed {
		if _, ok := delivered[id]; !ok {
			t.Errorf("%s: event %s (%s) never delivered", who, id, e.GetStatus())
		}
	}
	last := msgs[len(msgs)-1].GetRequest()
	if !state.Terminal(last) {
		t.Errorf("%s: the stream ended on a non-terminal snapshot %v", who, last)
	}
	checkSnapshot(t, who+" (last update vs its events)", last, delivered)
	if len(delivered) == len(all) && !proto.Equal(last, final) {
		t.Errorf("%s: last snapshot\n%v\nwant the final one\n%v", who, last, final)
	}
}

// TestServeWaitsForPostgres: serve started before its PostgreSQL can be
// reached (they start together) serves, live but not ready, answers
// webhooks with 503 and Retry-After, and exits 0 at once on SIGTERM;
// serve pointed at a database that does not exist exits 1 at once, saying
// so.
func TestServeWaitsForPostgres(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary; skipped with -short")
	}
	t.Parallel()
	dsn, _ := pgtest.Schema(t)
	t.Run("unreachable", func(t *testing.T) {
		t.Parallel()
		p := startServe(t, t.TempDir(), append(credentialsEnv(), "OTPLESS_EVENTS_STORE="+pgtest.WithAddr(t, dsn, testnet.ClosedAddr(t)))...)
		for path, want := range map[string]int{"/healthz": http.StatusOK, "/readyz": http.StatusServiceUnavailable} {
			resp, err := http.Get(p.httpURL + path)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != want {
				t.Errorf("GET %s while waiting for the database: %d, want %d", path, resp.StatusCode, want)
			}
		}
		resp, err := http.Post(p.httpURL+"/v1/webhooks/otpless/"+testWebhookKey, "application/json",
			strings.NewReader(`{"data":{"requestId":"r1","status":"SENT","channel":"SMS"},"eventType":"DLR","timestamp":1764153000000}`))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" {
			t.Errorf("a webhook while waiting for the database: %d, Retry-After %q; want 503 with Retry-After", resp.StatusCode, resp.Header.Get("Retry-After"))
		}
		if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		select {
		case <-p.exited:
			if p.waitErr != nil {
				t.Errorf("serve exited with %v after SIGTERM while waiting for the database, want 0", p.waitErr)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("serve did not exit within 10 s of SIGTERM while waiting for the database")
		}
	})
	t.Run("no such database", func(t *testing.T) {
		t.Parallel()
		u, err := url.Parse(dsn)
		if err != nil {
			t.Fatal(err)
		}
		u.Path = "/otpless_no_such_database"
		cmd := exec.Command(buildBinary(t), "serve", "--data-dir", t.TempDir(),
			"--http-addr", "127.0.0.1:0", "--grpc-addr", "127.0.0.1:0", "--metrics-addr", "")
		cmd.Env = append(append(os.Environ(), credentialsEnv()...), "OTPLESS_EVENTS_STORE="+u.String())
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		exited := make(chan error, 1)
		go func() { exited <- cmd.Wait() }()
		select {
		case err := <-exited:
			var exit *exec.ExitError
			if !errors.As(err, &exit) || exit.ExitCode() != 1 {
				t.Errorf("serve with a database that does not exist: %v, want exit status 1", err)
			}
		case <-time.After(30 * time.Second):
			cmd.Process.Kill()
			<-exited
			t.Fatalf("serve with a database that does not exist still runs after 30 s:\n%s", stderr.String())
		}
		if !strings.Contains(stderr.String(), `database \"otpless_no_such_database\" does not exist`) {
			t.Errorf("serve's log does not say that the database does not exist:\n%s", stderr.String())
		}
	})
}
