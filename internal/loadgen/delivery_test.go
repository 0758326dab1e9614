package loadgen

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protojson"

	eventsv1 "github.com/otpless-events/otpless-events/gen/otpless/events/v1"
	"github.com/otpless-events/otpless-events/server/normalize"
)

// deliverySetup is a runner with one watched slot whose watcher follows
// generation 0, and a clock of explicit instants.
func deliverySetup(t *testing.T) (*runner, *slot, *genState, func(ms int) time.Time) {
	t.Helper()
	r := newRunner(t.Context(), Config{Requests: 1, Watchers: 1, Concurrency: 1})
	t.Cleanup(r.close)
	s := r.slots[0]
	s.mu.Lock()
	s.armed = 0
	g := s.genState(0)
	g.open = true
	s.mu.Unlock()
	t0 := time.Now()
	return r, s, g, func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
}

// A delivery is measured from the post of the attempt that was stored (from
// when it was due, in open loop: a stall of the senders shows): a retry
// after a refused original, not the original; the first of two answered
// 2xx; and not at all when an earlier attempt got no answer (it may have
// been the one stored) or none was answered 2xx.
func TestDeliveryFromStoredAttempt(t *testing.T) {
	t.Parallel()
	const key = "DELIVERED/SMS"
	type post struct {
		at, answered int // ms
		o            outcome
		late         int // ms it went out after it was due (open loop)
	}
	for _, tc := range []struct {
		name      string
		posts     []post
		delivered int           // ms
		want      time.Duration // 0: not measured
	}{
		{"retry stored after a refused original", []post{{0, 2, refused, 0}, {1000, 1007, stored, 0}}, 1005, 5 * time.Millisecond},
		{"original stored, retry a duplicate", []post{{0, 2, stored, 0}, {1000, 1001, stored, 0}}, 3, 3 * time.Millisecond},
		{"delivered before the answer", []post{{0, 9, stored, 0}}, 4, 4 * time.Millisecond},
		{"original unanswered, may have been stored", []post{{0, 30, unknown, 0}, {1000, 1002, stored, 0}}, 1004, 0},
		{"none stored", []post{{0, 2, refused, 0}}, 5, 0},
		{"sent late: from when it was due", []post{{0, 3, stored, 800}}, 4, 804 * time.Millisecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r, s, _, at := deliverySetup(t)
			var refs []attemptRef
			for i, p := range tc.posts {
				wh := Webhook{Key: key, Retry: i > 0}
				due := at(p.at - p.late)
				refs = append(refs, r.noteSend(job{slot: s, gen: 0, wh: wh, intended: due}, at(p.at)))
			}
			// The answers and the delivery, in time order.
			type step struct {
				at  int
				run func()
			}
			steps := []step{{tc.delivered, func() { r.deliver(s, 0, key, at(tc.delivered)) }}}
			for i, p := range tc.posts {
				steps = append(steps, step{p.answered, func() { r.noteAnswer(s, refs[i], p.o, at(p.answered)) }})
			}
			slices.SortStableFunc(steps, func(a, b step) int { return cmp.Compare(a.at, b.at) })
			for _, st := range steps {
				st.run()
			}
			switch n := r.delivery.Count(); {
			case tc.want == 0 && n != 0:
				t.Errorf("measured %v, want no measure", r.delivery.Max())
			case tc.want != 0 && (n != 1 || r.delivery.Max() != tc.want):
				t.Errorf("measured %d deliveries, the longest %v: want one of %v", n, r.delivery.Max(), tc.want)
			}
		})
	}
}

// deliver is what follow does with an UPDATE carrying the event key of
// generation gen.
func (r *runner) deliver(s *slot, gen int, key string, at time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r.delivered(s, s.gens[gen], key, at)
}

// An event is expected on the watch when it was stored by posts all made
// while the stream was open and answered before SUCCESS was posted; those
// that never arrived are lost, or skipped when the server sent a new
// SNAPSHOT instead of updates.
func TestDeliveriesExpected(t *testing.T) {
	t.Parallel()
	type post struct {
		key       string
		at        int // ms
		o         outcome
		delivered bool
	}
	for _, tc := range []struct {
		name                            string
		opened                          int // ms: when the stream's snapshot arrived
		resynced                        bool
		posts                           []post
		wantExpected, wantLost, wantRes int64
	}{
		{"all arrived", 0, false, []post{{"INITIATED/", 1, stored, true}, {"DELIVERED/SMS", 10, stored, true}, {"SUCCESS/", 20, stored, true}}, 3, 0, 0},
		{"one never arrived", 0, false, []post{{"INITIATED/", 1, stored, true}, {"DELIVERED/SMS", 10, stored, false}, {"SUCCESS/", 20, stored, true}}, 3, 1, 0},
		{"SUCCESS never arrived", 0, false, []post{{"INITIATED/", 1, stored, true}, {"SUCCESS/", 20, stored, false}}, 2, 1, 0},
		{"posted before the snapshot", 5, false, []post{{"INITIATED/", 1, stored, false}, {"SUCCESS/", 20, stored, true}}, 1, 0, 0},
		{"posted after SUCCESS (reordered)", 0, false, []post{{"INITIATED/", 1, stored, true}, {"SUCCESS/", 10, stored, true}, {"READ/WHATSAPP", 20, stored, false}}, 2, 0, 0},
		{"stored before SUCCESS's retry", 0, false, []post{{"INITIATED/", 1, stored, true}, {"SUCCESS/", 10, refused, false}, {"DELIVERED/SMS", 15, stored, false}, {"SUCCESS/", 20, stored, true}}, 3, 1, 0},
		{"refused", 0, false, []post{{"INITIATED/", 1, stored, true}, {"DELIVERED/SMS", 10, refused, false}, {"SUCCESS/", 20, stored, true}}, 2, 0, 0},
		{"missing after a resync", 0, true, []post{{"INITIATED/", 1, stored, true}, {"DELIVERED/SMS", 10, stored, false}, {"SUCCESS/", 20, stored, true}}, 3, 0, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r, s, g, at := deliverySetup(t)
			s.mu.Lock()
			g.open, g.resynced = false, tc.resynced
			s.mu.Unlock()
			for _, p := range tc.posts {
				if p.at > tc.opened {
					s.mu.Lock()
					g.open = true
					s.mu.Unlock()
				}
				ref := r.noteSend(job{slot: s, gen: 0, wh: Webhook{Key: p.key}}, at(p.at))
				r.noteAnswer(s, ref, p.o, at(p.at+1))
				if p.delivered {
					r.deliver(s, 0, p.key, at(p.at+2))
				}
			}
			if want := tc.wantLost > 0; r.outstanding() != want {
				t.Errorf("outstanding %v, want %v", !want, want)
			}
			r.judgeOpen()
			if got := [3]int64{r.expected.Load(), r.lost.Load(), r.resynced.Load()}; got != [3]int64{tc.wantExpected, tc.wantLost, tc.wantRes} {
				t.Errorf("expected, lost, resynced = %v, want %v", got, [3]int64{tc.wantExpected, tc.wantLost, tc.wantRes})
			}
		})
	}
}

// fakeService stores webhooks and streams them to watchers as Server-Sent
// Events, as the service does, with faults to order: the first post of
// every event refused with 503, or some events stored but never sent to
// the watchers.
type fakeService struct {
	refuseFirst   bool
	refuseSuccess func(requestID string) bool
	drop          func(key string) bool

	mu       sync.Mutex
	posts    map[string]int // by request id and key
	requests map[string]*fakeRequest
	dropped  int
}

type fakeRequest struct {
	revision int64
	stored   map[string]bool
	success  bool
	watchers []chan *eventsv1.WatchRequestResponse
}

func (f *fakeService) request(id string) *fakeRequest {
	r := f.requests[id]
	if r == nil {
		r = &fakeRequest{stored: map[string]bool{}}
		f.requests[id] = r
	}
	return r
}

func (f *fakeService) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	if req.Method == http.MethodGet {
		f.watch(w, req)
		return
	}
	body, _ := io.ReadAll(req.Body)
	in, err := normalize.Decode(body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	events, err := normalize.Events(in, time.Now())
	if err != nil || len(events) != 1 {
		http.Error(w, fmt.Sprint(err), http.StatusBadRequest)
		return
	}
	e := events[0]
	key := EventKey(e.GetStatus(), e.GetChannel())
	f.mu.Lock()
	defer f.mu.Unlock()
	f.posts[e.GetRequestId()+key]++
	if f.refuseFirst && f.posts[e.GetRequestId()+key] == 1 || key == successKey && f.refuseSuccess != nil && f.refuseSuccess(e.GetRequestId()) {
		w.WriteHeader(http.StatusServiceUnavailable)
		return
	}
	r := f.request(e.GetRequestId())
	if r.stored[key] {
		return // a duplicate
	}
	r.stored[key] = true
	r.revision++
	r.success = r.success || key == successKey
	if f.drop != nil && f.drop(key) {
		f.dropped += len(r.watchers)
		return
	}
	m := &eventsv1.WatchRequestResponse{Type: eventsv1.WatchMessageType_WATCH_MESSAGE_TYPE_UPDATE, Revision: r.revision, Request: r.snapshot(e.GetRequestId()), Events: []*eventsv1.Event{e}}
	for _, c := range r.watchers {
		c <- m
	}
	if r.success {
		r.watchers = nil
	}
}

func (r *fakeRequest) snapshot(id string) *eventsv1.AuthRequest {
	s := &eventsv1.AuthRequest{RequestId: id, Revision: r.revision}
	if r.success {
		s.Status = eventsv1.RequestStatus_REQUEST_STATUS_SUCCESS
	}
	return s
}

// watch serves GET /v1/requests/{id}:watch: subscribe, snapshot, updates
// until SUCCESS.
func (f *fakeService) watch(w http.ResponseWriter, req *http.Request) {
	id := strings.TrimSuffix(strings.TrimPrefix(req.URL.Path, "/v1/requests/"), ":watch")
	c := make(chan *eventsv1.WatchRequestResponse, 64)
	f.mu.Lock()
	r := f.request(id)
	if !r.success {
		r.watchers = append(r.watchers, c)
	}
	first := &eventsv1.WatchRequestResponse{Type: eventsv1.WatchMessageType_WATCH_MESSAGE_TYPE_SNAPSHOT, Revision: r.revision, Request: r.snapshot(id)}
	f.mu.Unlock()
	w.Header().Set("Content-Type", "text/event-stream")
	for m := first; ; {
		data, _ := protojson.Marshal(m)
		fmt.Fprintf(w, "event: %s\ndata: %s\n\n", m.GetType(), data)
		w.(http.Flusher).Flush()
		if m.GetRequest().GetStatus() == eventsv1.RequestStatus_REQUEST_STATUS_SUCCESS {
			return
		}
		select {
		case m = <-c:
		case <-req.Context().Done():
			return
		}
	}
}

// End to end with watchers on a fake service: retries of refused originals
// are delivered and measured with nothing lost, and deliveries the service
// drops count as lost.
func TestRunCountsLostDeliveries(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		svc  *fakeService
	}{
		{"every original refused, its retry stored", &fakeService{refuseFirst: true}},
		{"DELIVERED never sent to watchers", &fakeService{drop: func(key string) bool { return strings.HasPrefix(key, "DELIVERED/") }}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tc.svc.posts, tc.svc.requests = map[string]int{}, map[string]*fakeRequest{}
			srv := httptest.NewServer(tc.svc)
			defer srv.Close()
			mix := Mix{Fallback: 0.2, Reorder: 0.1}
			if tc.svc.refuseFirst {
				mix.Duplicate = 1 // every event posted twice
			}
			res, err := Run(t.Context(), Config{WebhookURL: srv.URL + "/v1/webhooks/otpless", Rate: 400, Concurrency: 4, Duration: 300 * time.Millisecond,
				Requests: 4, Watchers: 4, SSE: &SSE{BaseURL: srv.URL}, Mix: mix, Seed: 5})
			if err != nil {
				t.Fatal(err)
			}
			tc.svc.mu.Lock()
			dropped := int64(tc.svc.dropped)
			tc.svc.mu.Unlock()
			if res.WatchersReady != 4 || len(res.WatchErrors) > 0 || res.DeliveryExpected == 0 || res.Delivery.Count == 0 {
				t.Fatalf("%d watchers ready, watch errors %v, %d deliveries expected, %d measured", res.WatchersReady, res.WatchErrors, res.DeliveryExpected, res.Delivery.Count)
			}
			if dropped == 0 && res.DeliveryLost != 0 || dropped > 0 && (res.DeliveryLost == 0 || res.DeliveryLost > dropped) || res.DeliveryResynced != 0 {
				t.Errorf("%d of %d deliveries lost, %d resynced: the service dropped %d", res.DeliveryLost, res.DeliveryExpected, res.DeliveryResynced, dropped)
			}
			if tc.svc.refuseFirst && (res.Errors["http_503"] < res.Sent/2 || res.OK == 0) {
				t.Errorf("%d ok, errors %v of %d sent: want the first post of every event refused", res.OK, res.Errors, res.Sent)
			}
		})
	}
}

// End to end: a watcher whose request's SUCCESS is refused gives it up
// (it cannot end) once what it expects has arrived, and the report counts
// it; nothing counts as lost.
func TestRunGivesUpRequestsWhoseSuccessIsRefused(t *testing.T) {
	t.Parallel()
	first := fmt.Sprintf("%016x", 0) // the id's suffix of every slot's first request
	svc := &fakeService{posts: map[string]int{}, requests: map[string]*fakeRequest{},
		refuseSuccess: func(id string) bool { return strings.HasSuffix(id, first) }}
	srv := httptest.NewServer(svc)
	defer srv.Close()
	// 30 webhooks for each of 4 requests in progress: every first request
	// (at most 7, no retries) is sent whole.
	res, err := Run(t.Context(), Config{WebhookURL: srv.URL + "/v1/webhooks/otpless", Rate: 400, Concurrency: 4, Duration: 300 * time.Millisecond,
		Requests: 4, Watchers: 4, SSE: &SSE{BaseURL: srv.URL}, Mix: Mix{Fallback: 0.2, Reorder: 0.1}, Seed: 5, Drain: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	if res.WatchersReady != 4 || len(res.WatchErrors) > 0 || res.Errors["http_503"] != 4 {
		t.Fatalf("%d watchers ready, watch errors %v, errors %v: want 4 ready, no watch error, the 4 first SUCCESS posts refused", res.WatchersReady, res.WatchErrors, res.Errors)
	}
	if res.WatchAbandoned != 4 || res.DeliveryLost != 0 {
		t.Errorf("%d watched requests given up, %d of %d deliveries lost: want the 4 whose SUCCESS was refused, none lost", res.WatchAbandoned, res.DeliveryLost, res.DeliveryExpected)
	}
}

// heldStream is a watch on which nothing arrives: Recv says that the
// watcher follows id, then waits until the stream's context ends.
type heldStream struct {
	ctx       context.Context
	id        string
	following chan<- string
}

func (h heldStream) Recv() (*eventsv1.WatchRequestResponse, error) {
	select {
	case h.following <- h.id:
	case <-h.ctx.Done():
	}
	<-h.ctx.Done()
	return nil, h.ctx.Err()
}

func (heldStream) Close() {}

// A watcher leaves a request that can no longer end, for the next request
// of its slot, subscribed before that one's first webhook: once every post
// of its SUCCESS was refused and what it expects has arrived (or after the
// drain, when it does not), or the drain after a SUCCESS post got no answer
// (it may have been stored, and its UPDATE may still come). It stays while
// SUCCESS may be stored. Given up, the request is judged and counted.
func TestWatcherLeavesRequestThatCannotEnd(t *testing.T) {
	t.Parallel()
	const (
		initiated = "INITIATED/"
		smsDLR    = "DELIVERED/SMS"
		deliver   = inFlight // an action that is the event's delivery, not a post
	)
	type action struct {
		key string
		o   outcome
	}
	for _, tc := range []struct {
		name                   string
		successes              int // SUCCESS posts in the request
		drain                  time.Duration
		actions                []action
		leaves                 bool // after the last action
		wantExpected, wantLost int64
	}{
		{"SUCCESS refused", 1, time.Hour, []action{{initiated, stored}, {initiated, deliver}, {successKey, refused}}, true, 1, 0},
		{"SUCCESS and its retry refused", 2, time.Hour, []action{{successKey, refused}, {successKey, refused}}, true, 0, 0},
		{"SUCCESS refused, its retry stored", 2, time.Hour, []action{{successKey, refused}, {successKey, stored}}, false, 0, 0},
		{"SUCCESS refused: leaves once an event arrives", 1, time.Hour, []action{{smsDLR, stored}, {successKey, refused}, {smsDLR, deliver}}, true, 1, 0},
		{"SUCCESS refused: leaves after the drain, an event lost", 1, time.Millisecond, []action{{smsDLR, stored}, {successKey, refused}}, true, 1, 1},
		{"SUCCESS unanswered: stays for the drain", 1, time.Hour, []action{{initiated, stored}, {initiated, deliver}, {successKey, unknown}}, false, 0, 0},
		{"SUCCESS unanswered: leaves after the drain", 1, time.Millisecond, []action{{initiated, stored}, {initiated, deliver}, {successKey, unknown}}, true, 1, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			following := make(chan string)
			r := watchOneSlot(t, tc.drain, func(*runner) subscriber {
				return func(ctx context.Context, id string) (watchStream, error) { return heldStream{ctx, id, following}, nil }
			})
			s := r.slots[0]
			follows := func(gen int) { t.Helper(); awaitGeneration(t, r, following, gen) }
			follows(0)
			for i, a := range tc.actions {
				if n := r.abandoned.Load(); n != 0 {
					t.Fatalf("given up before action %d", i)
				}
				now := time.Now()
				if a.o == deliver {
					r.deliver(s, 0, a.key, now)
					continue
				}
				ref := r.noteSend(job{slot: s, gen: 0, wh: Webhook{Key: a.key}, intended: now, successes: tc.successes}, now)
				r.noteAnswer(s, ref, a.o, now)
			}
			if !tc.leaves {
				if n := r.abandoned.Load(); n != 0 {
					t.Errorf("given up %d times, want the watcher to stay", n)
				}
				return
			}
			follows(1)
			now := time.Now()
			r.noteSend(job{slot: s, gen: 1, wh: Webhook{Key: initiated}, intended: now, successes: 1}, now)
			if got := [4]int64{r.abandoned.Load(), r.expected.Load(), r.lost.Load(), r.late.Load()}; got != [4]int64{1, tc.wantExpected, tc.wantLost, 0} {
				t.Errorf("given up, expected, lost, late = %v, want %v", got, [4]int64{1, tc.wantExpected, tc.wantLost, 0})
			}
			if errs := r.watchErrs.snapshot(); errs != nil {
				t.Errorf("watch errors %v, want none", errs)
			}
		})
	}
}

// An event stored after the watcher began to wait out the drain of a
// request that can no longer end gets the whole drain to arrive, as one
// stored at the end of the run does: the give-up moves to a drain after
// its answer. It kept the first, and such an event, stored late in that
// drain, was counted lost before it could arrive.
func TestWatcherGivesAnEventStoredLateTheWholeDrain(t *testing.T) {
	t.Parallel()
	following := make(chan string)
	r := watchOneSlot(t, time.Hour, func(*runner) subscriber {
		return func(ctx context.Context, id string) (watchStream, error) { return heldStream{ctx, id, following}, nil }
	})
	s := r.slots[0]
	awaitGeneration(t, r, following, 0)
	post := func(key string, o outcome, at time.Time) {
		r.noteAnswer(s, r.noteSend(job{slot: s, gen: 0, wh: Webhook{Key: key}, intended: at, successes: 1}, at), o, at)
	}
	now := time.Now()
	post("DELIVERED/SMS", stored, now) // not delivered yet: the watcher waits the drain
	post(successKey, refused, now)
	late := now.Add(50 * time.Minute) // the answer of a post that was in flight
	post("INITIATED/", stored, late)
	s.mu.Lock()
	due := s.gens[0].giveUpAt
	s.mu.Unlock()
	if want := late.Add(time.Hour); due.Before(want) {
		t.Errorf("the watcher gives the request up at %v after the late event was stored, want a drain (1h) after it", due.Sub(late))
	}
	if n := r.abandoned.Load(); n != 0 {
		t.Errorf("given up %d times, want the watcher to stay", n)
	}
}

// A subscription in place only after the slot began its request's
// successor is dropped for the next request: the request went out
// unwatched, nothing of it is measured, and it would keep the watcher for
// good were its SUCCESS refused.
func TestWatcherSkipsRequestSentBeforeItSubscribed(t *testing.T) {
	t.Parallel()
	following, subscribing, release := make(chan string), make(chan string), make(chan struct{})
	r := watchOneSlot(t, time.Hour, func(r *runner) subscriber {
		return func(ctx context.Context, id string) (watchStream, error) {
			if id == RequestID(r.run, 0, 1) { // held until the slot is past it
				subscribing <- id
				<-release
			}
			return heldStream{ctx, id, following}, nil
		}
	})
	s := r.slots[0]
	wait := func(c <-chan string, gen int) { t.Helper(); awaitGeneration(t, r, c, gen) }
	post := func(gen int, key string, o outcome) {
		now := time.Now()
		r.noteAnswer(s, r.noteSend(job{slot: s, gen: gen, wh: Webhook{Key: key}, intended: now, successes: 1}, now), o, now)
	}
	wait(following, 0)
	post(0, successKey, refused)
	wait(subscribing, 1)
	post(1, successKey, refused) // late, and cannot end
	post(2, "INITIATED/", stored)
	close(release)
	wait(following, 3)
	if got := [2]int64{r.abandoned.Load(), r.late.Load()}; got != [2]int64{1, 2} {
		t.Errorf("given up, late = %v, want [1 2]: the first request given up, the next two late", got)
	}
}

// watchOneSlot runs the watcher of a runner of one slot, subscribing
// through what sub makes of the runner, until the test ends.
func watchOneSlot(t *testing.T, drain time.Duration, sub func(*runner) subscriber) *runner {
	t.Helper()
	var watcher sync.WaitGroup
	t.Cleanup(watcher.Wait)
	ctx, cancel := context.WithCancel(t.Context())
	t.Cleanup(cancel)
	r := newRunner(ctx, Config{Requests: 1, Watchers: 1, Concurrency: 1, Drain: drain})
	t.Cleanup(r.close)
	subscribe := sub(r)
	watcher.Go(func() { r.watch(ctx, r.slots[0], subscribe, make(chan struct{}, 1), make(chan struct{}, 1)) })
	return r
}

// awaitGeneration fails t unless the request the watcher of r's one slot
// takes next on c is generation gen (within 10 s: a deadlock guard, not a
// measure).
func awaitGeneration(t *testing.T, r *runner, c <-chan string, gen int) {
	t.Helper()
	select {
	case id := <-c:
		if want := RequestID(r.run, 0, gen); id != want {
			t.Fatalf("the watcher took %s, want %s (generation %d)", id, want, gen)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("the watcher never took generation %d", gen)
	}
}
