package server_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	eventsv1 "github.com/otpless-events/otpless-events/gen/otpless/events/v1"
	"github.com/otpless-events/otpless-events/server"
	"github.com/otpless-events/otpless-events/server/state"
	"github.com/otpless-events/otpless-events/server/store/pgstore/pgtest"
)

// TestRacingWebhooks posts, in an order drawn from a logged seed and from
// several goroutines at once, every copy of the delivery reports of a few
// auth requests: each event three times, twice byte-equal and once as
// another body of the same event (keys in another order, other spacing,
// as a retry may come), each copy to a server drawn at random, and so
// for a few events that name no request. On SQLite
// there is one server; on PostgreSQL two replicas share one schema, so
// that they race each other's duplicates. Watchers follow every request on
// every server from the start, and more join in the middle of the stream.
//
// Every post must be answered 200, each event stored by exactly one of
// them; every server must then read the same snapshot, the fold of the
// events stored, one per event; and every watcher must have received a
// SNAPSHOT, then UPDATEs at increasing revisions whose events are exactly
// those added since the message before (event_count grows by their
// number: no event missing, none twice), up to the final snapshot.
func TestRacingWebhooks(t *testing.T) {
	t.Parallel()
	t.Run("SQLite", func(t *testing.T) {
		t.Parallel()
		ts := startServer(t, nil)
		raceWebhooks(t, []*testServer{ts})
	})
	t.Run("PostgreSQL", func(t *testing.T) {
		t.Parallel()
		dsn, _ := pgtest.Schema(t)
		onPG := func(c *server.Config) { c.Store = dsn }
		raceWebhooks(t, []*testServer{startServer(t, onPG), startServer(t, onPG)})
	})
}

func raceWebhooks(t *testing.T, servers []*testServer) {
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 153))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	const requests = 4
	type post struct {
		body   []byte
		server int
		event  string // "request/channel/status/time", which names the event
	}
	var (
		posts  []post
		events = map[string]bool{}
		ids    []string
	)
	for r := range requests {
		id := fmt.Sprintf("race-%d-%d", seed%1000, r)
		ids = append(ids, id)
		for i, ch := range []string{"WHATSAPP", "SMS", "EMAIL"} {
			for j, st := range []string{"SENT", "DELIVERED", "READ", "FAILED", "CLICKED"} {
				ms := int64(1764153000000 + 1000*(i*5+j))
				name := fmt.Sprintf("%s/%s/%s/%d", id, ch, st, ms)
				events[name] = true
				same := fmt.Appendf(nil, `{"data":{"requestId":%q,"status":%q,"channel":%q},"eventType":"DLR","timestamp":%d}`, id, st, ch, ms)
				other := fmt.Appendf(nil, "{ \"timestamp\": %d, \"eventType\": \"DLR\",\n  \"data\": { \"channel\": %q, \"status\": %q, \"requestId\": %q } }", ms, ch, st, id)
				for _, b := range [][]byte{same, same, other} {
					posts = append(posts, post{body: b, server: rng.IntN(len(servers)), event: name})
				}
			}
		}
	}
	// Events of no request (a legacy UNREACHABLE may name none), which no
	// request's lock covers.
	for k := range 6 {
		name := fmt.Sprintf("no request/tok-%d-%d", seed%1000, k)
		events[name] = true
		same := fmt.Appendf(nil, `{"token":"tok-%d-%d","timestamp":%d,"notificationType":"UNREACHABLE"}`, seed%1000, k, 1764153000000+k)
		other := fmt.Appendf(nil, "{\"notificationType\": \"UNREACHABLE\",\n \"timestamp\": %d, \"token\": \"tok-%d-%d\"}", 1764153000000+k, seed%1000, k)
		for _, b := range [][]byte{same, same, other} {
			posts = append(posts, post{body: b, server: rng.IntN(len(servers)), event: name})
		}
	}
	rng.Shuffle(len(posts), func(i, j int) { posts[i], posts[j] = posts[j], posts[i] })

	// Watchers of every request on every server from the start, and more
	// that join before the posts at these indexes.
	var (
		mu       sync.Mutex
		watchers []*raceWatcher
	)
	watchAll := func() {
		for _, id := range ids {
			for s, ts := range servers {
				w := startRaceWatcher(t, ctx, ts.requests, id, s)
				mu.Lock()
				watchers = append(watchers, w)
				mu.Unlock()
			}
		}
	}
	watchAll()
	joinAt := map[int]bool{len(posts) / 5: true, len(posts) / 2: true, 4 * len(posts) / 5: true}

	type answer struct {
		stored int32
		err    error
	}
	answers := make([]answer, len(posts))
	// A client of its own, whose connections are closed at the end: one
	// it opened and never used would hold up the server's shutdown (net/http
	// waits up to 5 s for a connection that has sent nothing yet).
	client := &http.Client{Transport: http.DefaultTransport.(*http.Transport).Clone()}
	defer client.CloseIdleConnections()
	next := make(chan int)
	var posting sync.WaitGroup
	for range 8 {
		posting.Go(func() {
			for i := range next {
				p := posts[i]
				ts := servers[p.server]
				req, err := http.NewRequestWithContext(ctx, http.MethodPost, ts.httpURL+ts.webhookPath, bytes.NewReader(p.body))
				if err != nil {
					answers[i].err = err
					continue
				}
				req.Header.Set("Content-Type", "application/json")
				resp, err := client.Do(req)
				if err != nil {
					answers[i].err = err
					continue
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					answers[i].err = fmt.Errorf("%d %s", resp.StatusCode, b)
					continue
				}
				ir := &eventsv1.IngestResponse{}
				if err := protojson.Unmarshal(b, ir); err != nil {
					answers[i].err = fmt.Errorf("decoding %s: %w", b, err)
					continue
				}
				answers[i].stored = ir.GetStored()
			}
		})
	}
	for i := range posts {
		if joinAt[i] {
			watchAll()
		}
		next <- i
	}
	close(next)
	posting.Wait()

	storedBy := map[string]int32{}
	for i, a := range answers {
		if a.err != nil {
			t.Errorf("post %d (%s) to server %d: %v", i, posts[i].event, posts[i].server, a.err)
		}
		storedBy[posts[i].event] += a.stored
	}
	for name := range events {
		if n := storedBy[name]; n != 1 {
			t.Errorf("event %s: stored by %d posts, want exactly 1", name, n)
		}
	}
	if t.Failed() {
		return
	}

	for _, id := range ids {
		var final *eventsv1.AuthRequest
		for s, ts := range servers {
			got, err := ts.requests.GetRequest(ctx, &eventsv1.GetRequestRequest{RequestId: id})
			if err != nil {
				t.Fatalf("GetRequest(%s) on server %d: %v", id, s, err)
			}
			if final == nil {
				final = got.GetRequest()
			} else if !proto.Equal(got.GetRequest(), final) {
				t.Errorf("%s: the servers disagree:\n%v\n%v", id, final, got.GetRequest())
			}
		}
		stored, err := servers[0].requests.ListRequestEvents(ctx, &eventsv1.ListRequestEventsRequest{RequestId: id, PageSize: 100})
		if err != nil {
			t.Fatal(err)
		}
		seen := map[string]bool{}
		for _, e := range stored.GetEvents() {
			if seen[e.GetEventId()] {
				t.Errorf("%s: event %s stored twice", id, e.GetEventId())
			}
			seen[e.GetEventId()] = true
		}
		if want := 15; len(stored.GetEvents()) != want || final.GetEventCount() != int32(want) {
			t.Errorf("%s: %d events stored, event_count %d; want %d", id, len(stored.GetEvents()), final.GetEventCount(), want)
		}
		fold := state.Fold(id, stored.GetEvents())
		fold.Revision, fold.UpdateTime = final.GetRevision(), final.GetUpdateTime()
		if !proto.Equal(fold, final) {
			t.Errorf("%s: snapshot is not the fold of its stored events:\n got %v\nwant %v", id, final, fold)
		}
		mu.Lock()
		for _, w := range watchers {
			if w.id == id {
				w.check(t, final)
			}
		}
		mu.Unlock()
	}
}

// raceWatcher follows one request on one server.
type raceWatcher struct {
	id     string
	server int
	msgs   chan *eventsv1.WatchRequestResponse
	first  *eventsv1.WatchRequestResponse
	errc   chan error
}

func startRaceWatcher(t *testing.T, ctx context.Context, c eventsv1.RequestServiceClient, id string, server int) *raceWatcher {
	t.Helper()
	stream, first := openWatch(t, ctx, c, &eventsv1.WatchRequestRequest{RequestId: id})
	w := &raceWatcher{id: id, server: server, first: first, msgs: make(chan *eventsv1.WatchRequestResponse, 1000), errc: make(chan error, 1)}
	go func() {
		for {
			m, err := stream.Recv()
			if err != nil {
				w.errc <- err
				return
			}
			w.msgs <- m
		}
	}()
	return w
}

// check takes the watcher's messages up to the final snapshot's revision
// and checks them.
func (w *raceWatcher) check(t *testing.T, final *eventsv1.AuthRequest) {
	t.Helper()
	who := fmt.Sprintf("watcher of %s on server %d from revision %d", w.id, w.server, w.first.GetRevision())
	if w.first.GetType() != eventsv1.WatchMessageType_WATCH_MESSAGE_TYPE_SNAPSHOT {
		t.Errorf("%s: first message %v, want a SNAPSHOT", who, w.first)
		return
	}
	last, count := w.first.GetRevision(), w.first.GetRequest().GetEventCount()
	delivered := map[string]bool{}
	lastSnap := w.first.GetRequest()
	timeout := time.After(30 * time.Second) // not a verdict: only ends a hang
	for last < final.GetRevision() {
		var m *eventsv1.WatchRequestResponse
		select {
		case m = <-w.msgs:
		case err := <-w.errc:
			if errors.Is(err, io.EOF) {
				err = errors.New("the stream ended")
			}
			t.Errorf("%s: at revision %d of %d: %v", who, last, final.GetRevision(), err)
			return
		case <-timeout:
			t.Errorf("%s: stuck at revision %d of %d", who, last, final.GetRevision())
			return
		}
		switch m.GetType() {
		case eventsv1.WatchMessageType_WATCH_MESSAGE_TYPE_HEARTBEAT:
			continue
		case eventsv1.WatchMessageType_WATCH_MESSAGE_TYPE_UPDATE:
		default:
			t.Errorf("%s: after revision %d: %v, want an UPDATE", who, last, m)
			return
		}
		if m.GetRevision() <= last || m.GetRequest().GetRevision() != m.GetRevision() {
			t.Errorf("%s: UPDATE at revision %d (snapshot %d) after %d", who, m.GetRevision(), m.GetRequest().GetRevision(), last)
		}
		for _, e := range m.GetEvents() {
			if delivered[e.GetEventId()] {
				t.Errorf("%s: event %s delivered twice", who, e.GetEventId())
			}
			delivered[e.GetEventId()] = true
		}
		if got, want := m.GetRequest().GetEventCount(), count+int32(len(m.GetEvents())); got != want {
			t.Errorf("%s: UPDATE at revision %d after %d has %d events and event_count %d; want %d (events missing or repeated)", who, m.GetRevision(), last, len(m.GetEvents()), got, want)
		}
		last, count, lastSnap = m.GetRevision(), m.GetRequest().GetEventCount(), m.GetRequest()
	}
	if last != final.GetRevision() || !proto.Equal(lastSnap, final) {
		t.Errorf("%s: last snapshot\n%v\nwant the final one\n%v", who, lastSnap, final)
	}
}
