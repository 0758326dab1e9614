package loadgen

import (
	"cmp"
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
	r.delivered(s.gens[gen], key, at)
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
	refuseFirst bool
	drop        func(key string) bool

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
	if f.refuseFirst && f.posts[e.GetRequestId()+key] == 1 {
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
