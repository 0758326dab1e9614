package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	eventsv1 "github.com/otpless-events/otpless-events/gen/otpless/events/v1"
	"github.com/otpless-events/otpless-events/internal/fixtures"
	"github.com/otpless-events/otpless-events/internal/ssetest"
	"github.com/otpless-events/otpless-events/server/pii"
	"github.com/otpless-events/otpless-events/server/state"
	"github.com/otpless-events/otpless-events/server/store/pgstore/pgtest"
)

// replay posts copies of the shared scenarios to servers that are killed
// and restarted on the same store, as OTPLESS would: each auth request's
// bodies in order, many requests at once, and, after a failure, the body
// that failed again (and the one before it, a retry of a webhook already
// answered). It remembers what every 200 said.
type replay struct {
	t        *testing.T
	requests []authRequest
	next     []int // per auth request, the body to send next

	mu       sync.Mutex
	known    map[string]map[string]*eventsv1.Event // request id: every event of its bodies
	acked    map[string]map[string]bool            // request id: the events a 200 named
	ackedRev map[string]int64                      // request id: the highest revision a 200 named
	readRev  map[string]int64                      // request id: the revision last read back
	// purging: retention strips the events of personal data as they
	// arrive, so that a request's snapshot is the fold of its stored
	// events, not of the events its bodies have.
	purging bool
	// killAfterTerm, when set, is how long after the SIGTERM of send a
	// SIGKILL follows: a kill in the middle of the graceful shutdown.
	killAfterTerm func() time.Duration
}

func newReplay(t *testing.T, n int) *replay {
	r := &replay{t: t, requests: copyScenarios(t, n), known: map[string]map[string]*eventsv1.Event{},
		acked: map[string]map[string]bool{}, ackedRev: map[string]int64{}, readRev: map[string]int64{}}
	r.next = make([]int, len(r.requests))
	for _, ar := range r.requests {
		for id, events := range ar.events {
			r.known[id] = events
			r.acked[id] = map[string]bool{}
		}
	}
	return r
}

// post sends one body and reports whether a 200 said it was stored, and
// the answer. Any answer but a 200 and a 503 with Retry-After is an error
// of the test; a connection refused or cut is not (the server is gone).
func (r *replay) post(client *http.Client, p *proc, body []byte) (*eventsv1.IngestResponse, bool) {
	resp, err := client.Post(p.httpURL+"/v1/webhooks/otpless/"+testWebhookKey, "application/json", bytes.NewReader(body))
	if err != nil {
		return nil, false
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	switch {
	case err != nil:
		return nil, false // cut halfway: the server died while answering
	case resp.StatusCode == http.StatusServiceUnavailable && resp.Header.Get("Retry-After") != "":
		return nil, false
	case resp.StatusCode != http.StatusOK:
		r.t.Errorf("a webhook answered %d %s, want 200, or 503 with Retry-After", resp.StatusCode, b)
		return nil, false
	}
	out := &eventsv1.IngestResponse{}
	if err := protojson.Unmarshal(b, out); err != nil {
		r.t.Errorf("a 200 whose body does not decode: %v: %s", err, b)
		return nil, false
	}
	return out, true
}

// record notes what a 200 said.
func (r *replay) record(out *eventsv1.IngestResponse) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, e := range out.GetEvents() {
		id := e.GetRequestId()
		if _, ok := r.known[id][e.GetEventId()]; !ok {
			r.t.Errorf("a 200 named event %s of %s, which no body sent has", e.GetEventId(), id)
			continue
		}
		r.acked[id][e.GetEventId()] = true
		r.ackedRev[id] = max(r.ackedRev[id], e.GetRevision())
	}
}

// send posts what is left with senders goroutines until everything is
// answered 200 or the server is gone; after the stop-th 200 it signals
// the server with sig (stop 0: never). It returns the 200s counted.
func (r *replay) send(p *proc, senders, stop int, sig syscall.Signal) int {
	client := &http.Client{Timeout: 20 * time.Second}
	defer client.CloseIdleConnections()
	var (
		oks  atomic.Int64
		once sync.Once
		wg   sync.WaitGroup
	)
	todo := make(chan int, len(r.requests))
	for u := range r.requests {
		if r.next[u] < len(r.requests[u].bodies) {
			todo <- u
		}
	}
	close(todo)
	for range senders {
		wg.Go(func() {
			for u := range todo {
				bodies := r.requests[u].bodies
				if j := r.next[u] - 1; j >= 0 {
					// A retry of a body answered 200 already: all its
					// events are duplicates.
					if out, ok := r.post(client, p, bodies[j]); ok {
						for _, e := range out.GetEvents() {
							if !e.GetDuplicate() {
								r.t.Errorf("a body answered 200 before, sent again: event %s of %s not a duplicate", e.GetEventId(), e.GetRequestId())
							}
						}
						r.record(out)
					}
				}
				for ; r.next[u] < len(bodies); r.next[u]++ {
					out, ok := r.post(client, p, bodies[r.next[u]])
					if !ok {
						break // sent again by the next round
					}
					r.record(out)
					if n := oks.Add(1); int(n) == stop {
						once.Do(func() {
							p.cmd.Process.Signal(sig)
							if r.killAfterTerm != nil {
								time.AfterFunc(r.killAfterTerm(), func() { p.cmd.Process.Signal(syscall.SIGKILL) })
							}
						})
					}
				}
			}
		})
	}
	wg.Wait()
	return int(oks.Load())
}

// verify reads every request back: its events are distinct, among those
// its bodies have, and hold every event a 200 named; its snapshot is the
// fold of those events, counts them, and is at no lower revision than any
// a 200 named or read before.
func (r *replay) verify(p *proc) {
	t := r.t
	t.Helper()
	c := p.client(t, testAPIKey)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	r.mu.Lock()
	defer r.mu.Unlock()
	for id, known := range r.known {
		got, err := c.GetRequest(ctx, &eventsv1.GetRequestRequest{RequestId: id})
		if status.Code(err) == codes.NotFound {
			if len(r.acked[id]) > 0 {
				t.Errorf("%s: not found, but a 200 named %d of its events", id, len(r.acked[id]))
			}
			continue
		}
		if err != nil {
			t.Fatalf("GetRequest(%s): %v", id, err)
		}
		snap := got.GetRequest()
		var listed []*eventsv1.Event
		seen := map[string]bool{}
		for token := ""; ; {
			page, err := c.ListRequestEvents(ctx, &eventsv1.ListRequestEventsRequest{RequestId: id, PageToken: token})
			if err != nil {
				t.Fatalf("ListRequestEvents(%s): %v", id, err)
			}
			for _, e := range page.GetEvents() {
				if seen[e.GetEventId()] {
					t.Errorf("%s: event %s (%s) stored twice", id, e.GetEventId(), e.GetStatus())
				}
				if _, ok := known[e.GetEventId()]; !ok {
					t.Errorf("%s: event %s (%s) stored, which no body sent has", id, e.GetEventId(), e.GetStatus())
				}
				seen[e.GetEventId()] = true
				listed = append(listed, e)
			}
			if token = page.GetNextPageToken(); token == "" {
				break
			}
		}
		for e := range r.acked[id] {
			if !seen[e] {
				t.Errorf("%s: event %s (%s) answered 200, lost", id, e, known[e].GetStatus())
			}
		}
		if int(snap.GetEventCount()) != len(listed) {
			t.Errorf("%s: snapshot counts %d events, %d stored", id, snap.GetEventCount(), len(listed))
		}
		want := state.Fold(id, listed)
		s := proto.CloneOf(snap)
		s.Revision, s.UpdateTime = 0, nil
		// While retention purges, the events listed may have lost
		// personal data the snapshot read before them still had: read
		// again until no purge came between.
		if !proto.Equal(s, want) && r.purging {
			t.Logf("%s: a purge came between the reads; reading again", id)
			s, want = r.settled(ctx, c, id)
		}
		if !proto.Equal(s, want) {
			t.Errorf("%s: snapshot is not the fold of its stored events:\n got %s\nwant %s", id, protojson.Format(s), protojson.Format(want))
		}
		if rev := snap.GetRevision(); rev < r.ackedRev[id] || rev < r.readRev[id] {
			t.Errorf("%s: revision %d after a restart; a 200 named %d, a read gave %d", id, rev, r.ackedRev[id], r.readRev[id])
		}
		r.readRev[id] = snap.GetRevision()
	}
}

// settled reads request id's events, its snapshot and its events again,
// until both reads of the events agree, and returns the snapshot without
// revision and update time, and the fold of those events: no purge of the
// request committed between the reads, so the two must be equal.
func (r *replay) settled(ctx context.Context, c eventsv1.RequestServiceClient, id string) (got, want *eventsv1.AuthRequest) {
	t := r.t
	t.Helper()
	list := func() []*eventsv1.Event {
		var out []*eventsv1.Event
		for token := ""; ; {
			page, err := c.ListRequestEvents(ctx, &eventsv1.ListRequestEventsRequest{RequestId: id, PageToken: token})
			if err != nil {
				t.Fatalf("ListRequestEvents(%s): %v", id, err)
			}
			out = append(out, page.GetEvents()...)
			if token = page.GetNextPageToken(); token == "" {
				return out
			}
		}
	}
	for {
		before := list()
		snap, err := c.GetRequest(ctx, &eventsv1.GetRequestRequest{RequestId: id})
		if err != nil {
			t.Fatalf("GetRequest(%s): %v", id, err)
		}
		if after := list(); slices.EqualFunc(before, after, func(a, b *eventsv1.Event) bool { return proto.Equal(a, b) }) {
			got = proto.CloneOf(snap.GetRequest())
			got.Revision, got.UpdateTime = 0, nil
			return got, state.Fold(id, after)
		}
		if ctx.Err() != nil {
			t.Fatalf("%s: its events changed between every two reads until %v", id, ctx.Err())
		}
	}
}

// finished checks that every request is the fold of all its bodies' events.
func (r *replay) finished(p *proc) {
	r.t.Helper()
	if r.purging {
		r.purged(p)
		return
	}
	c := p.client(r.t, testAPIKey)
	for id, known := range r.known {
		got, err := c.GetRequest(context.Background(), &eventsv1.GetRequestRequest{RequestId: id})
		if err != nil {
			r.t.Fatalf("GetRequest(%s): %v", id, err)
		}
		checkSnapshot(r.t, id, got.GetRequest(), known)
	}
}

// purged waits until retention has stripped every request of personal
// data: its snapshot is then the fold of all its events, stripped.
func (r *replay) purged(p *proc) {
	t := r.t
	t.Helper()
	c := p.client(t, testAPIKey)
	deadline := time.Now().Add(30 * time.Second)
	for id, known := range r.known {
		stripped := map[string]*eventsv1.Event{}
		for eid, e := range known {
			e = proto.CloneOf(e)
			pii.StripEvent(e)
			stripped[eid] = e
		}
		want := foldSet(id, stripped)
		for {
			got, err := c.GetRequest(context.Background(), &eventsv1.GetRequestRequest{RequestId: id})
			if err != nil {
				t.Fatalf("GetRequest(%s): %v", id, err)
			}
			s := proto.CloneOf(got.GetRequest())
			s.Revision, s.UpdateTime = 0, nil
			if proto.Equal(s, want) {
				break
			}
			if time.Now().After(deadline) {
				t.Errorf("%s: not the fold of its events stripped of personal data 30 s after the last webhook:\n got %s\nwant %s", id, protojson.Format(s), protojson.Format(want))
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
}

// stopped waits for p to exit after sig and checks how it ended.
func stopped(t *testing.T, p *proc, sig syscall.Signal) {
	t.Helper()
	select {
	case <-p.exited:
	case <-time.After(30 * time.Second):
		t.Fatalf("serve still runs 30 s after %v", sig)
	}
	if sig == syscall.SIGTERM && p.waitErr != nil {
		t.Errorf("serve exited with %v after SIGTERM, want 0", p.waitErr)
	}
}

// killAndRestart replays the scenarios against start's servers, stopping
// each with sig after a random number of 200s, and checks the store after
// every restart; the last server gets everything left, and stops with
// SIGTERM.
func killAndRestart(t *testing.T, sig syscall.Signal, start func(t *testing.T) *proc) *replay {
	return killAndRestartReplay(t, newReplay(t, 40), sig, start)
}

func killAndRestartReplay(t *testing.T, r *replay, sig syscall.Signal, start func(t *testing.T) *proc) *replay {
	seed := rand.Uint64()
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, seed))
	total := 0
	for _, ar := range r.requests {
		total += len(ar.bodies)
	}
	const rounds, senders = 3, 16
	for round := range rounds {
		p := start(t)
		if round > 0 {
			r.verify(p)
		}
		stop := 1 + rng.IntN(total/(rounds+1))
		oks := r.send(p, senders, stop, sig)
		if r.killAfterTerm != nil {
			stopped(t, p, syscall.SIGKILL) // whichever ended it
		} else {
			stopped(t, p, sig)
		}
		t.Logf("round %d: %d webhooks answered 200, %v after the %d-th", round, oks, sig, stop)
		if t.Failed() {
			return r
		}
	}
	p := start(t)
	r.verify(p)
	r.send(p, senders, 0, 0)
	for u, ar := range r.requests {
		if r.next[u] != len(ar.bodies) {
			t.Fatalf("auth request %d: %d of %d bodies answered 200 by a server left running", u, r.next[u], len(ar.bodies))
		}
	}
	r.verify(p)
	r.finished(p)
	p.cmd.Process.Signal(syscall.SIGTERM)
	stopped(t, p, syscall.SIGTERM)
	return r
}

// TestKilledAtRandomKeepsEveryAcknowledgedWebhook: the server, killed with
// SIGKILL at random points among 16 senders replaying the scenarios and
// restarted on the same data directory, has every webhook it answered 200
// for, each event once, and snapshots that are the folds of what it
// stored and never go back a revision; once everything is sent, each
// request is the fold of all its events, and db check finds the file
// sound.
func TestKilledAtRandomKeepsEveryAcknowledgedWebhook(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and kills the binary; skipped with -short")
	}
	t.Parallel()
	dataDir := t.TempDir()
	r := killAndRestart(t, syscall.SIGKILL, func(t *testing.T) *proc { return startServe(t, dataDir, credentialsEnv()...) })
	out, err := exec.Command(buildBinary(t), "db", "check", "--data-dir", dataDir).CombinedOutput()
	if err != nil || !strings.HasSuffix(strings.TrimSpace(string(out)), "ok") {
		t.Errorf("db check: %v\n%s", err, out)
	}
	// Each webhook stored once: a copy of the store finds no event twice.
	events := 0
	for _, known := range r.known {
		events += len(known)
	}
	out, err = exec.Command(buildBinary(t), "db", "copy", "--data-dir", dataDir, "--to", "sqlite://"+t.TempDir()+"/copy.db").Output()
	if want := fmt.Sprintf(" webhooks read: %d events stored, 0 duplicates, %d new requests", events, len(r.known)); err != nil || !strings.Contains(string(out), want) {
		t.Errorf("db copy: %v\n%s\nwant %q", err, out, want)
	}
}

// TestTerminatedUnderLoadKeepsEveryAcknowledgedWebhook is the same with
// SIGTERM: every webhook in flight is answered 200 and stored, or refused
// with 503 and Retry-After, or not answered at all (the port closed), and
// the process exits 0.
func TestTerminatedUnderLoadKeepsEveryAcknowledgedWebhook(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary; skipped with -short")
	}
	t.Parallel()
	dataDir := t.TempDir()
	killAndRestart(t, syscall.SIGTERM, func(t *testing.T) *proc { return startServe(t, dataDir, credentialsEnv()...) })
}

// TestKilledWhilePurgingKeepsEveryAcknowledgedWebhook is the SIGKILL test
// with retention purging every 10 ms what is older than a millisecond, so
// that kills land in purges as well as in commits: every event answered
// 200 is there, each snapshot is the fold of its stored events and never
// goes back a revision, and db check finds the file sound.
func TestKilledWhilePurgingKeepsEveryAcknowledgedWebhook(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and kills the binary; skipped with -short")
	}
	t.Parallel()
	purge := []string{"OTPLESS_EVENTS_PII_RETENTION=1ms", "OTPLESS_EVENTS_RETENTION_INTERVAL=10ms"}
	t.Run("SQLite", func(t *testing.T) {
		t.Parallel()
		dataDir := t.TempDir()
		r := newReplay(t, 40)
		r.purging = true
		killAndRestartReplay(t, r, syscall.SIGKILL, func(t *testing.T) *proc {
			return startServe(t, dataDir, append(credentialsEnv(), purge...)...)
		})
		out, err := exec.Command(buildBinary(t), "db", "check", "--data-dir", dataDir).CombinedOutput()
		if err != nil || !strings.HasSuffix(strings.TrimSpace(string(out)), "ok") {
			t.Errorf("db check: %v\n%s", err, out)
		}
	})
	t.Run("PostgreSQL", func(t *testing.T) {
		t.Parallel()
		dsn, _ := pgtest.Schema(t)
		env := append(append(credentialsEnv(), purge...), "OTPLESS_EVENTS_STORE="+dsn)
		r := newReplay(t, 40)
		r.purging = true
		killAndRestartReplay(t, r, syscall.SIGKILL, func(t *testing.T) *proc { return startServe(t, t.TempDir(), env...) })
	})
}

// TestKilledDuringShutdownKeepsEveryAcknowledgedWebhook is the SIGTERM test
// with a SIGKILL up to 100 ms after the SIGTERM, while the server finishes
// the webhooks in flight and commits what is queued: every webhook answered
// 200 is there all the same.
func TestKilledDuringShutdownKeepsEveryAcknowledgedWebhook(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and kills the binary; skipped with -short")
	}
	t.Parallel()
	for _, pg := range []bool{false, true} {
		t.Run(map[bool]string{false: "SQLite", true: "PostgreSQL"}[pg], func(t *testing.T) {
			t.Parallel()
			dataDir, env := t.TempDir(), credentialsEnv()
			if pg {
				dsn, _ := pgtest.Schema(t)
				env = append(env, "OTPLESS_EVENTS_STORE="+dsn)
			}
			r := newReplay(t, 40)
			r.killAfterTerm = func() time.Duration { return rand.N(100 * time.Millisecond) }
			killAndRestartReplay(t, r, syscall.SIGTERM, func(t *testing.T) *proc { return startServe(t, dataDir, env...) })
			if !pg {
				out, err := exec.Command(buildBinary(t), "db", "check", "--data-dir", dataDir).CombinedOutput()
				if err != nil || !strings.HasSuffix(strings.TrimSpace(string(out)), "ok") {
					t.Errorf("db check: %v\n%s", err, out)
				}
			}
		})
	}
}

// TestKilledAtRandomOnPostgres is the SIGKILL test, and the SIGTERM test
// under load, on PostgreSQL.
func TestKilledAtRandomOnPostgres(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and kills the binary; skipped with -short")
	}
	t.Parallel()
	for _, sig := range []syscall.Signal{syscall.SIGKILL, syscall.SIGTERM} {
		t.Run(sig.String(), func(t *testing.T) {
			t.Parallel()
			dsn, _ := pgtest.Schema(t)
			env := append(credentialsEnv(), "OTPLESS_EVENTS_STORE="+dsn)
			killAndRestart(t, sig, func(t *testing.T) *proc { return startServe(t, t.TempDir(), env...) })
		})
	}
}

// follower is one watch of a request, over gRPC or as Server-Sent Events,
// across restarts: every message it received, and for each connection
// where its messages began.
type follower struct {
	id       string
	sse      bool
	mu       sync.Mutex
	msgs     []*eventsv1.WatchRequestResponse
	starts   []int
	ended    chan struct{} // closed when the current connection's stream ends
	endErr   error         // how it ended: nil, io.EOF (clean) or the error
	noResume bool          // the resume was answered 204 No Content
}

// last returns the revision of the last message received.
func (f *follower) last() int64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.msgs) == 0 {
		return 0
	}
	return f.msgs[len(f.msgs)-1].GetRevision()
}

// received reports whether a message at revision rev or later came.
func (f *follower) received(rev int64) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.msgs) > 0 && f.msgs[len(f.msgs)-1].GetRevision() >= rev
}

// follow opens a stream on p, resuming after the last revision received
// (none at first), and reads it on a goroutine of its own.
func (f *follower) follow(t *testing.T, ctx context.Context, p *proc, c eventsv1.RequestServiceClient) {
	t.Helper()
	after := f.last()
	f.mu.Lock()
	f.starts = append(f.starts, len(f.msgs))
	f.ended, f.endErr = make(chan struct{}), nil
	f.mu.Unlock()
	add := func(m *eventsv1.WatchRequestResponse) {
		f.mu.Lock()
		f.msgs = append(f.msgs, m)
		f.mu.Unlock()
	}
	end := func(err error) {
		f.mu.Lock()
		f.endErr = err
		f.mu.Unlock()
		close(f.ended)
	}
	if !f.sse {
		stream, err := c.WatchRequest(ctx, &eventsv1.WatchRequestRequest{RequestId: f.id, AfterRevision: after})
		if err != nil {
			t.Fatal(err)
		}
		go func() {
			for {
				m, err := stream.Recv()
				if err != nil {
					end(err)
					return
				}
				add(m)
			}
		}()
		return
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, p.httpURL+"/v1/requests/"+f.id+":watch", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Accept", "text/event-stream")
	req.Header.Set("Authorization", "Bearer "+testAPIKey)
	if after > 0 {
		req.Header.Set("Last-Event-ID", strconv.FormatInt(after, 10))
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	switch {
	case resp.StatusCode == http.StatusNoContent && after > 0:
		resp.Body.Close()
		f.mu.Lock()
		f.noResume = true
		f.mu.Unlock()
		end(io.EOF)
		return
	case resp.StatusCode != http.StatusOK:
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		t.Fatalf("%s: event stream answered %d %s", f.id, resp.StatusCode, b)
	}
	go func() {
		defer resp.Body.Close()
		r := ssetest.NewReader(resp.Body)
		for {
			ev, err := r.NextEvent()
			if err != nil {
				end(err)
				return
			}
			m := &eventsv1.WatchRequestResponse{}
			if ev.Event == "error" {
				end(fmt.Errorf("error event: %s", ev.Data))
				return
			}
			if err := protojson.Unmarshal([]byte(ev.Data), m); err != nil {
				end(fmt.Errorf("event %s: %v: %s", ev.Event, err, ev.Data))
				return
			}
			if want := strings.ToLower(strings.TrimPrefix(m.GetType().String(), "WATCH_MESSAGE_TYPE_")); ev.Event != want || ev.ID != strconv.FormatInt(m.GetRevision(), 10) {
				end(fmt.Errorf("event %s with id %s holds a %s at revision %d", ev.Event, ev.ID, want, m.GetRevision()))
				return
			}
			add(m)
		}
	}()
}

// waitStarted waits until the follower's latest stream has brought its
// first message, or has ended: a stream the client has opened may not
// have reached the server yet.
func (f *follower) waitStarted(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		f.mu.Lock()
		started := len(f.msgs) > f.starts[len(f.starts)-1]
		f.mu.Unlock()
		if started {
			return
		}
		select {
		case <-f.ended:
			return
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s (sse %v): no message within 30 s of the stream's start", f.id, f.sse)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// waitFor waits until the follower has received a message at revision
// rev or later, or its stream has ended.
func (f *follower) waitFor(t *testing.T, rev int64) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !f.received(rev) {
		select {
		case <-f.ended:
			return
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s (sse %v): revision %d not received within 30 s; last %d", f.id, f.sse, rev, f.last())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestWatchersResumeAcrossARestart: a gRPC watcher and a Server-Sent
// Events watcher of each request of the scenarios follow it while half its
// webhooks arrive; the server is killed (or terminated), restarted on the
// same data directory, and they resume after the last revision they
// received (after_revision, Last-Event-ID) while the rest arrive. Across
// both connections each sees every change once, in revision order, without
// a gap, up to SUCCESS, where its stream ends; a resume at the revision of
// a finished request gets a HEARTBEAT and the end (gRPC) or 204 No
// Content (Server-Sent Events).
func TestWatchersResumeAcrossARestart(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and kills the binary; skipped with -short")
	}
	t.Parallel()
	for _, tt := range []struct {
		name string
		sig  syscall.Signal
		pg   bool
	}{{"SQLite killed", syscall.SIGKILL, false}, {"SQLite terminated", syscall.SIGTERM, false}, {"PostgreSQL killed", syscall.SIGKILL, true}, {"PostgreSQL terminated", syscall.SIGTERM, true}} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			sig, dataDir, env := tt.sig, t.TempDir(), credentialsEnv()
			if tt.pg {
				dsn, _ := pgtest.Schema(t)
				env = append(env, "OTPLESS_EVENTS_STORE="+dsn)
			}
			requests := copyScenarios(t, len(fixtures.Scenarios(t)))
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			p := startServe(t, dataDir, env...)
			c := p.client(t, testAPIKey)
			byID := map[string]authRequest{}
			var followers []*follower
			for _, ar := range requests {
				for id := range ar.events {
					byID[id] = ar
					for _, sse := range []bool{false, true} {
						f := &follower{id: id, sse: sse}
						f.follow(t, ctx, p, c)
						f.waitFor(t, 0)
						followers = append(followers, f)
					}
				}
			}
			r := &replay{t: t, requests: requests, next: make([]int, len(requests)), known: map[string]map[string]*eventsv1.Event{},
				acked: map[string]map[string]bool{}, ackedRev: map[string]int64{}, readRev: map[string]int64{}}
			for id, ar := range byID {
				r.known[id], r.acked[id] = ar.events[id], map[string]bool{}
			}
			client := &http.Client{Timeout: 20 * time.Second}
			postUpTo := func(p *proc, upTo func(u, n int) int) {
				for u, ar := range requests {
					for ; r.next[u] < upTo(u, len(ar.bodies)); r.next[u]++ {
						out, ok := r.post(client, p, ar.bodies[r.next[u]])
						if !ok {
							t.Fatalf("auth request %d body %d not answered 200", u, r.next[u])
						}
						r.record(out)
					}
				}
			}
			// Some requests finish before the restart, the others halfway.
			postUpTo(p, func(u, n int) int {
				if u%3 == 0 {
					return n
				}
				return n / 2
			})
			for _, f := range followers {
				f.waitFor(t, r.ackedRev[f.id])
			}
			p.cmd.Process.Signal(sig)
			for _, f := range followers {
				select {
				case <-f.ended:
				case <-time.After(30 * time.Second):
					t.Fatalf("%s (sse %v): stream still open 30 s after %v", f.id, f.sse, sig)
				}
			}
			stopped(t, p, sig)

			p = startServe(t, dataDir, env...)
			c = p.client(t, testAPIKey)
			for _, f := range followers {
				f.follow(t, ctx, p, c)
			}
			// The resumes reach the server before the rest of the
			// webhooks, which would make each a resume behind a newer
			// snapshot (answered with that SNAPSHOT) instead of at it.
			for _, f := range followers {
				f.waitStarted(t)
			}
			postUpTo(p, func(_, n int) int { return n })
			for _, f := range followers {
				select {
				case <-f.ended:
				case <-time.After(30 * time.Second):
					t.Fatalf("%s (sse %v): stream still open 30 s after its request's last webhook; received %v", f.id, f.sse, f.msgs)
				}
			}
			resumed := 0
			for _, f := range followers {
				who := fmt.Sprintf("%s (sse %v)", f.id, f.sse)
				if f.endErr != io.EOF {
					t.Errorf("%s: the resumed stream ended with %v, want a clean end", who, f.endErr)
				}
				// The first connection's messages, without a RECONNECT at
				// its end; the second's, without the HEARTBEAT it begins
				// with when nothing changed meanwhile.
				first, second := f.msgs[:f.starts[1]], f.msgs[f.starts[1]:]
				if sig == syscall.SIGTERM {
					if n := len(first); n > 0 && state.Terminal(first[n-1].GetRequest()) {
						// ended at SUCCESS before the signal
					} else if n == 0 || first[n-1].GetType() != eventsv1.WatchMessageType_WATCH_MESSAGE_TYPE_RECONNECT {
						t.Errorf("%s: the stream ended at SIGTERM without a RECONNECT: %v", who, first)
						continue
					} else {
						first = first[:n-1]
					}
				}
				resumedAt := first[len(first)-1].GetRevision()
				finished := state.Terminal(first[len(first)-1].GetRequest())
				switch {
				case finished && f.sse:
					if !f.noResume {
						t.Errorf("%s: a resume at the last revision of a finished request got %v, want 204 No Content", who, second)
					}
					continue
				case len(second) == 0 || second[0].GetType() != eventsv1.WatchMessageType_WATCH_MESSAGE_TYPE_HEARTBEAT || second[0].GetRevision() != resumedAt:
					t.Errorf("%s: resumed after revision %d with %v, want a HEARTBEAT at it", who, resumedAt, second)
					continue
				case finished:
					if len(second) != 1 {
						t.Errorf("%s: a resume at the last revision of a finished request got %v, want a HEARTBEAT alone", who, second)
					}
					continue
				}
				ar := byID[f.id]
				got, err := c.GetRequest(ctx, &eventsv1.GetRequestRequest{RequestId: f.id})
				if err != nil {
					t.Fatal(err)
				}
				checkWatch(t, who, append(slices.Clip(first), second[1:]...), ar.events[f.id], ar.streamed[f.id], got.GetRequest())
				resumed++
			}
			t.Logf("%d watchers, %d resumed to SUCCESS, the others after it", len(followers), resumed)
		})
	}
}

// TestSIGTERMFinishesAWebhookInFlight: at SIGTERM, readiness turns
// NOT_SERVING (a Health.Watch says so before its stream ends), and a
// webhook whose body is still arriving is read, answered 200 and stored.
func TestSIGTERMFinishesAWebhookInFlight(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary; skipped with -short")
	}
	t.Parallel()
	dataDir := t.TempDir()
	p := startServe(t, dataDir, credentialsEnv()...)
	cc, err := grpc.NewClient(p.grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	hw, err := healthpb.NewHealthClient(cc).Watch(context.Background(), &healthpb.HealthCheckRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if m, err := hw.Recv(); err != nil || m.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("readiness before SIGTERM: %v, %v", m, err)
	}

	// A webhook whose handler is reading its body (it asked for it with
	// 100 Continue) when the signal comes.
	body := `{"data":{"requestId":"term-slow","status":"SENT","channel":"SMS"},"eventType":"DLR","timestamp":1764153000000}`
	conn, err := net.Dial("tcp", strings.TrimPrefix(p.httpURL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "POST /v1/webhooks/otpless/%s HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"+
		"Content-Length: %d\r\nExpect: 100-continue\r\n\r\n%s", testWebhookKey, len(body), body[:20])
	conn.SetReadDeadline(time.Now().Add(30 * time.Second))
	br := bufio.NewReader(conn)
	if line, err := br.ReadString('\n'); err != nil || !strings.HasPrefix(line, "HTTP/1.1 100 ") {
		t.Fatalf("the webhook's first answer: %q, %v; want 100 Continue", line, err)
	}
	if _, err := br.ReadString('\n'); err != nil { // the blank line after it
		t.Fatal(err)
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	m, err := hw.Recv()
	if err != nil || m.GetStatus() != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Errorf("readiness after SIGTERM: %v, %v; want NOT_SERVING", m, err)
	}
	io.WriteString(conn, body[20:])
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("the webhook in flight at SIGTERM: %v, want 200", err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("the webhook in flight at SIGTERM: %d %s, want 200", resp.StatusCode, b)
	}
	stopped(t, p, syscall.SIGTERM)
	p = startServe(t, dataDir, credentialsEnv()...)
	if _, err := p.client(t, testAPIKey).GetRequest(context.Background(), &eventsv1.GetRequestRequest{RequestId: "term-slow"}); err != nil {
		t.Errorf("the webhook answered 200 at SIGTERM is not stored: %v", err)
	}
}
