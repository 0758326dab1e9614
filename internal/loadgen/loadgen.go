// Package loadgen drives realistic OTPLESS traffic at an otpless-events HTTP
// gateway while gRPC watchers follow the requests, and measures what the
// bench command reports: webhooks/s, ingest latency, webhook-to-watcher
// delivery latency, errors by kind.
//
// Traffic is whole auth requests (NewRequest): a fixed number of them in
// progress at once, their webhooks interleaved round-robin, so that each
// request's webhooks are spread out in time as OTPLESS's are. In open loop
// webhook k is due at start + k/Rate whatever happened before, and its
// latency counts from that intended time, so a stall shows as latency
// instead of hiding as fewer requests sent (coordinated omission). In closed
// loop each of Concurrency workers sends its next webhook when the previous
// one is answered.
//
// It imports the generated API, gRPC and fasthttp; nothing from the server.
package loadgen

import (
	"cmp"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/valyala/fasthttp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	eventsv1 "github.com/otpless-events/otpless-events/gen/otpless/events/v1"
)

// Config is one run.
type Config struct {
	// WebhookURL is where webhooks are posted, webhook key included.
	WebhookURL string
	// TLS, when set, is used for an https WebhookURL.
	TLS *tls.Config
	// Rate is the target in webhooks per second (open loop); 0 runs closed
	// loop.
	Rate float64
	// Concurrency is the number of senders: the most webhooks in flight.
	Concurrency int
	// Duration is how long webhooks are sent.
	Duration time.Duration
	// Requests is how many auth requests are in progress at once (default:
	// the largest of Watchers, Concurrency and 1000; see InProgress).
	Requests int
	// Watchers follow that many of the requests in progress with
	// WatchRequest: over gRPC, spread over WatchConns, or, when SSE is set,
	// as Server-Sent Events from the HTTP gateway.
	Watchers   int
	WatchConns []*grpc.ClientConn
	SSE        *SSE
	// Mix shapes the requests.
	Mix Mix
	// Seed makes the traffic repeatable; request ids differ per run.
	Seed uint64
	// WatchersReady, when set, is called once every watcher is subscribed,
	// before the first webhook; TrafficDone once the last answer came and
	// the watchers drained, before they close their streams.
	WatchersReady func()
	TrafficDone   func()
	// Drain is how long watchers may still take, after the last answer, to
	// receive the deliveries expected (default DefaultDrain). It ends as
	// soon as none is outstanding.
	Drain time.Duration

	// sendTimeout bounds one post (default: the const sendTimeout).
	sendTimeout time.Duration
}

// DefaultDrain is Config.Drain's default.
const DefaultDrain = 2 * time.Second

// InProgress is how many auth requests are in progress at once: Requests,
// or by default the largest of Watchers, Concurrency and 1000. Fewer than
// Concurrency would have webhooks of one request in flight together,
// reordered beyond Mix.Reorder.
func (c Config) InProgress() int {
	if c.Requests > 0 {
		return c.Requests
	}
	return max(c.Watchers, c.Concurrency, 1000)
}

// Result is what a run measured.
type Result struct {
	// Elapsed runs from the first webhook to the last answer; in open loop
	// it lasts at least the n intervals of the n webhooks sent (n/Rate,
	// about Duration), as webhook k owns [k/Rate, (k+1)/Rate), and in
	// closed loop at least Duration (unless canceled), for which the
	// senders sent: a run whose last posts all failed (a server down, or
	// stalled) lasted that long all the same.
	Elapsed time.Duration `json:"elapsed_ns"`
	// Sent counts webhooks posted; OK those answered 200.
	Sent int64 `json:"sent"`
	OK   int64 `json:"ok"`
	// Throughput is OK per second of Elapsed.
	Throughput float64 `json:"webhooks_per_second"`
	// RequestsStarted counts the auth requests whose first webhook was
	// sent, RequestsWhole those whose every webhook was: the mix (retries,
	// fallbacks, SUCCESS ending a watch) is that of whole requests, and a
	// run too short for its requests in progress sends mostly their first
	// webhooks.
	RequestsStarted int64 `json:"requests_started"`
	RequestsWhole   int64 `json:"requests_whole"`
	// Ingest is the latency of the posts answered 200, Failed that of the
	// others until their answer or failure (a timeout counts the time until
	// then, so that a stall ending in timeouts shows; posts the run's end
	// canceled do not count): from the intended send time in open loop,
	// from the send in closed loop.
	Ingest Latency `json:"ingest"`
	Failed Latency `json:"failed"`
	// Delivery is the latency from a webhook's post (in open loop, from
	// the time it was due, as for Ingest) to a watcher receiving the UPDATE
	// with its event. It runs from the attempt that was stored: the first
	// answered 2xx, when a retry follows a refused one. A delivery that
	// may have come from a post that got no answer (and so may have been
	// stored) is not measured.
	Delivery Latency `json:"delivery"`
	// DeliveryExpected counts the events of watched requests that their
	// watcher had to receive in an UPDATE: stored (answered 2xx) with every
	// post of the event made while the watcher's stream was open (so the
	// event is not in the stream's snapshot), and answered before the
	// request's SUCCESS may have been stored (the stream ends with it).
	// Requests whose stream ended otherwise (an error, RECONNECT) are left
	// out. DeliveryLost counts those that never arrived, by the end of the
	// drain after the last answer; DeliveryResynced those missing from
	// streams on which the server sent a new SNAPSHOT, as it does instead
	// of the updates a watcher fell too far behind for.
	DeliveryExpected int64 `json:"delivery_expected"`
	DeliveryLost     int64 `json:"delivery_lost"`
	DeliveryResynced int64 `json:"delivery_resynced"`
	// Errors counts failed posts by kind: http_NNN (answered with another
	// status than 200), timeout (connecting, the TLS handshake, waiting
	// for a connection or for the answer), connection_refused,
	// connection_reset (closed by the server before the answer), canceled
	// (the run was canceled with the post not sent or not answered), and
	// transport (anything else).
	Errors map[string]int64 `json:"errors,omitempty"`
	// WatchersReady is how many watchers were subscribed when the traffic
	// started; WatchLate counts requests whose first webhook went out
	// before their watcher was subscribed (their first events arrive in the
	// snapshot and are not measured).
	WatchersReady int   `json:"watchers_ready"`
	WatchLate     int64 `json:"watch_late"`
	// WatchAbandoned counts watched requests whose watcher gave them up
	// for the next request of its slot, as they could no longer end (the
	// stream ends only with SUCCESS, and a refused post is not retried):
	// every post of SUCCESS (the mix's retries included) was answered and
	// none 2xx. When all were refused, the watcher leaves once it
	// received what it expects of the request, or after Drain; when one got
	// no answer (it may have been stored, and its UPDATE may still come),
	// after Drain unless the stream ends first. An event stored meanwhile
	// moves that to Drain after its answer. The request is then judged as
	// those open at the end of the run are.
	WatchAbandoned int64            `json:"watch_abandoned"`
	WatchErrors    map[string]int64 `json:"watch_errors,omitempty"`
}

// Latency summarizes a Histogram.
type Latency struct {
	Count uint64        `json:"count"`
	P50   time.Duration `json:"p50_ns"`
	P90   time.Duration `json:"p90_ns"`
	P99   time.Duration `json:"p99_ns"`
	Max   time.Duration `json:"max_ns"`
}

func summarize(h *Histogram) Latency {
	return Latency{Count: h.Count(), P50: h.Quantile(0.5), P90: h.Quantile(0.9), P99: h.Quantile(0.99), Max: h.Max()}
}

// RequestID is the OTPLESS-like request id (32 hex digits) of generation
// gen of slot in run.
func RequestID(run uint32, slot, gen int) string {
	return fmt.Sprintf("%08x%08x%016x", run, uint32(slot), uint64(gen))
}

// Run sends traffic as cfg says and returns what it measured. It fails only
// when it cannot start; errors of single webhooks are counted. Canceling ctx
// ends the posts in flight at once (their connections are closed) and skips
// the drain.
func Run(ctx context.Context, cfg Config) (*Result, error) {
	if cfg.Concurrency <= 0 || cfg.Duration <= 0 || cfg.Rate < 0 || cfg.Requests < 0 || cfg.Watchers < 0 {
		return nil, errors.New("loadgen: concurrency and duration must be positive, rate, requests and watchers not negative")
	}
	if cfg.Watchers > 0 && len(cfg.WatchConns) == 0 && cfg.SSE == nil {
		return nil, errors.New("loadgen: watchers need a gRPC connection or an SSE endpoint")
	}
	cfg.Requests = cfg.InProgress()
	if cfg.Requests < cfg.Watchers {
		return nil, fmt.Errorf("loadgen: %d watchers need as many requests in progress, not %d", cfg.Watchers, cfg.Requests)
	}
	if cfg.Drain <= 0 {
		cfg.Drain = DefaultDrain
	}
	r := newRunner(ctx, cfg)
	defer r.close()

	watchCtx, stopWatchers := context.WithCancel(ctx)
	var watchers sync.WaitGroup
	defer func() { stopWatchers(); watchers.Wait() }()
	var ready int64
	if cfg.Watchers > 0 {
		r.startWatchers(watchCtx, &watchers)
		ready = r.armed.Load()
		if cfg.WatchersReady != nil {
			cfg.WatchersReady()
		}
	}

	start := time.Now()
	r.lastDone.Store(start.UnixNano())
	var elapsed time.Duration
	if cfg.Rate > 0 {
		// Webhook k owns the interval [k/Rate, (k+1)/Rate): n of them take
		// n intervals, however soon the last is answered.
		n := r.openLoop(ctx, start)
		elapsed = time.Duration(float64(n) / cfg.Rate * float64(time.Second))
	} else {
		// The senders send for Duration, less when ctx ends the run: a
		// run whose last posts all failed lasted that long all the same.
		r.closedLoop(ctx, start)
		elapsed = min(cfg.Duration, time.Since(start))
	}
	elapsed = max(elapsed, time.Duration(r.lastDone.Load()-start.UnixNano()))
	if cfg.Watchers > 0 && ctx.Err() == nil {
		r.drain(ctx, cfg.Drain)
	}
	if cfg.TrafficDone != nil {
		cfg.TrafficDone()
	}
	stopWatchers()
	watchers.Wait()
	if ctx.Err() == nil {
		r.judgeOpen()
	}

	res := &Result{
		Elapsed:          elapsed,
		Sent:             r.sent.Load(),
		OK:               r.ok.Load(),
		Ingest:           summarize(&r.ingest),
		Failed:           summarize(&r.failed),
		Delivery:         summarize(&r.delivery),
		DeliveryExpected: r.expected.Load(),
		DeliveryLost:     r.lost.Load(),
		DeliveryResynced: r.resynced.Load(),
		Errors:           r.errs.snapshot(),
		WatchersReady:    int(ready),
		WatchLate:        r.late.Load(),
		WatchAbandoned:   r.abandoned.Load(),
		WatchErrors:      r.watchErrs.snapshot(),
	}
	if elapsed > 0 {
		res.Throughput = float64(res.OK) / elapsed.Seconds()
	}
	res.RequestsStarted, res.RequestsWhole = r.requests()
	return res, nil
}

// requests counts the requests started and those sent whole.
func (r *runner) requests() (started, whole int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, s := range r.slots {
		if s.gen < 0 {
			continue
		}
		started += int64(s.gen + 1)
		whole += int64(s.gen) // the earlier ones
		if s.pos == len(s.script) {
			whole++
		}
	}
	return started, whole
}

type runner struct {
	cfg         Config
	client      *fasthttp.Client
	sendTimeout time.Duration
	conns       conns
	stopClosing func() bool
	run         uint32

	mu      sync.Mutex // guards rng, cursor and the slots' scripts
	rng     *rand.Rand
	cursor  int
	slots   []*slot
	watched []*slot // the slots with a watcher, spread evenly among all

	sent, ok  atomic.Int64
	lastDone  atomic.Int64 // unix ns of the last answer
	ingest    Histogram
	failed    Histogram
	delivery  Histogram
	errs      counter
	late      atomic.Int64
	armed     atomic.Int64 // watchers subscribed at least once
	watchErrs counter

	expected, lost, resynced atomic.Int64 // deliveries, see Result
	abandoned                atomic.Int64 // see Result.WatchAbandoned
}

// slot is one auth request in progress after another.
type slot struct {
	index   int
	watched bool

	// Under runner.mu: the generator's position.
	gen       int
	script    []Webhook
	pos       int
	successes int // posts of SUCCESS in script

	// Under mu: the senders' and the watcher's view.
	mu      sync.Mutex
	sending int               // generation whose webhooks are going out
	armed   int               // generation the watcher subscribed to last
	gens    map[int]*genState // generations a sender or the watcher still needs
}

// genState is what was posted of one generation of a watched slot and what
// its watcher received; under the slot's mu.
type genState struct {
	open      bool // the watcher's stream is open, after its snapshot
	judged    bool // its expected deliveries are counted, or it was given up
	resynced  bool // its stream carried another SNAPSHOT: updates were dropped
	keys      []keyState
	successes int // posts of SUCCESS the request has, once one is posted

	// While the stream is open: cancel ends it, giveUp is set once the
	// request can no longer end (see leaveIfDead), abandoned once the
	// watcher gave it up.
	cancel    context.CancelFunc
	giveUp    *time.Timer
	giveUpAt  time.Time // when giveUp fires
	abandoned bool
}

// keyState is one event of a generation: its posts, its answer, its
// delivery.
type keyState struct {
	key       string
	attempts  []attempt
	unwatched bool      // posted while the stream was not open: may be in its snapshot
	stored    time.Time // when the first 2xx answer came
	delivered time.Time // when the watcher received it
	settled   bool      // delivered, and measured if that could be
}

// attempt is one post of an event: when it was due (open loop; closed
// loop: when it was sent) and sent.
type attempt struct {
	due, sent time.Time
	outcome   outcome
}

type outcome uint8

const (
	inFlight outcome = iota
	stored           // answered 2xx
	refused          // answered with another status: not stored
	unknown          // no answer: may have been stored
)

// attemptRef names an attempt for its answer; g is nil when the post is
// not followed.
type attemptRef struct {
	g      *genState
	key, n int
}

// successKey is the key of the event that ends a request's watch.
var successKey = EventKey("SUCCESS", "")

type job struct {
	slot      *slot
	gen       int
	wh        Webhook
	intended  time.Time
	successes int // posts of SUCCESS in the request
}

// newRunner makes the runner. Webhooks go out through fasthttp's client,
// which writes and reads on the caller's goroutine: net/http's, with two
// goroutines per connection and a hand-off between them for every request,
// cost the load generator about twice the CPU, taken from the server it
// measures when both share a machine. fasthttp knows no context, so the
// runner dials with ctx and closes every connection when ctx is canceled:
// the posts in flight end at once instead of at their timeout.
func newRunner(ctx context.Context, cfg Config) *runner {
	r := &runner{
		cfg:         cfg,
		sendTimeout: cmp.Or(cfg.sendTimeout, sendTimeout),
		run:         rand.Uint32(),
		rng:         rand.New(rand.NewPCG(cfg.Seed, cfg.Seed^0x9e3779b97f4a7c15)),
		slots:       make([]*slot, cfg.Requests),
	}
	dialer := &net.Dialer{Timeout: dialTimeout}
	r.client = &fasthttp.Client{
		Dial:                          func(addr string) (net.Conn, error) { return r.conns.dial(ctx, dialer, addr) },
		MaxConnsPerHost:               cfg.Concurrency,
		MaxConnWaitTimeout:            r.sendTimeout, // a sender waits for a connection rather than failing
		MaxIdleConnDuration:           90 * time.Second,
		ReadTimeout:                   r.sendTimeout,
		WriteTimeout:                  r.sendTimeout,
		TLSConfig:                     cfg.TLS,
		NoDefaultUserAgentHeader:      true,
		DisableHeaderNamesNormalizing: true,
	}
	r.stopClosing = context.AfterFunc(ctx, r.conns.closeAll)
	// Slot i is watched when it brings the count of watched slots among
	// the first i+1 to the next whole number of Watchers/Requests: watched
	// webhooks then go out all along the round-robin, not in one burst of
	// it, so that no stall of the server misses them.
	for i := range r.slots {
		s := &slot{index: i, gen: -1, sending: -1, armed: -1, gens: map[int]*genState{}}
		s.watched = (i+1)*cfg.Watchers/cfg.Requests > i*cfg.Watchers/cfg.Requests
		if s.watched {
			r.watched = append(r.watched, s)
		}
		r.slots[i] = s
	}
	return r
}

// close releases the runner's connections.
func (r *runner) close() {
	r.stopClosing()
	r.client.CloseIdleConnections()
}

// conns are the runner's open connections, closed all at once when the run
// is canceled.
type conns struct {
	mu     sync.Mutex
	closed bool
	m      map[*trackedConn]struct{}
}

func (c *conns) dial(ctx context.Context, d *net.Dialer, addr string) (net.Conn, error) {
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		conn.Close()
		return nil, context.Cause(ctx)
	}
	tc := &trackedConn{Conn: conn, conns: c}
	if c.m == nil {
		c.m = map[*trackedConn]struct{}{}
	}
	c.m[tc] = struct{}{}
	return tc, nil
}

func (c *conns) closeAll() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closed = true
	for tc := range c.m {
		tc.Conn.Close()
	}
	c.m = nil
}

type trackedConn struct {
	net.Conn
	conns *conns
}

func (tc *trackedConn) Close() error {
	tc.conns.mu.Lock()
	delete(tc.conns.m, tc)
	tc.conns.mu.Unlock()
	return tc.Conn.Close()
}

// next is the next webhook to send: round-robin over the slots, a new
// request in a slot whose request is all sent.
func (r *runner) next() job {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := r.slots[r.cursor]
	r.cursor = (r.cursor + 1) % len(r.slots)
	if s.pos == len(s.script) {
		s.gen++
		s.script = NewRequest(r.rng, RequestID(r.run, s.index, s.gen), time.Now(), r.cfg.Mix)
		s.pos = 0
		s.successes = 0
		for _, wh := range s.script {
			if wh.Key == successKey {
				s.successes++
			}
		}
	}
	s.pos++
	return job{slot: s, gen: s.gen, wh: s.script[s.pos-1], successes: s.successes}
}

// openLoop dispatches webhook k at start + k/Rate to the senders, for
// Duration, then waits for the answers. It returns how many it dispatched.
func (r *runner) openLoop(ctx context.Context, start time.Time) int {
	jobs := make(chan job, r.cfg.Concurrency)
	var senders sync.WaitGroup
	for range r.cfg.Concurrency {
		senders.Go(func() {
			for j := range jobs {
				r.send(ctx, j)
			}
		})
	}
	// Webhook k is due at k/Rate seconds, computed in floating point so
	// that no rate truncates to a shorter interval; none goes early (that
	// would read as less latency), and a dispatcher behind schedule sends
	// what is due at once.
	n := dueBefore(r.cfg.Rate, r.cfg.Duration)
	wait := time.NewTimer(0)
	defer wait.Stop()
	dispatched := 0
dispatch:
	for k := range n {
		due := start.Add(time.Duration(float64(k) / r.cfg.Rate * float64(time.Second)))
		if d := time.Until(due); d > 0 {
			wait.Reset(d)
			select {
			case <-wait.C:
			case <-ctx.Done():
				break dispatch
			}
		}
		j := r.next()
		j.intended = due
		select {
		case jobs <- j:
			dispatched++
		case <-ctx.Done():
			break dispatch
		}
	}
	close(jobs)
	senders.Wait()
	return dispatched
}

// dueBefore is how many webhooks are due before d at rate per second: k
// such that k/rate < d (less a little, as the product of two floats can
// land just past a whole number).
func dueBefore(rate float64, d time.Duration) int {
	return int(math.Ceil(rate*d.Seconds() - 1e-9))
}

// closedLoop runs Concurrency senders back to back for Duration.
func (r *runner) closedLoop(ctx context.Context, start time.Time) {
	end := start.Add(r.cfg.Duration)
	var senders sync.WaitGroup
	for range r.cfg.Concurrency {
		senders.Go(func() {
			for ctx.Err() == nil && time.Now().Before(end) {
				j := r.next()
				j.intended = time.Now()
				r.send(ctx, j)
			}
		})
	}
	senders.Wait()
}

// send posts one webhook and records the outcome.
func (r *runner) send(ctx context.Context, j job) {
	r.sent.Add(1)
	if ctx.Err() != nil {
		r.errs.add("canceled")
		return
	}
	var att attemptRef
	if j.slot.watched {
		att = r.noteSend(j, time.Now())
	}
	req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	req.SetRequestURI(r.cfg.WebhookURL)
	req.Header.SetMethod(fasthttp.MethodPost)
	req.Header.SetContentType("application/json")
	req.SetBodyRaw(j.wh.Body)
	deadline := time.Now().Add(r.sendTimeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	err := r.client.DoDeadline(req, resp, deadline)
	done := time.Now()
	if err != nil {
		kind := transportError(err)
		if ctx.Err() != nil { // its connection was closed, or its deadline was the run's
			kind = "canceled"
		} else {
			r.failed.Record(done.Sub(j.intended)) // a stall that ends in a timeout shows
		}
		r.errs.add(kind)
		r.noteAnswer(j.slot, att, unknown, done)
		return
	}
	for last := r.lastDone.Load(); done.UnixNano() > last && !r.lastDone.CompareAndSwap(last, done.UnixNano()); last = r.lastDone.Load() {
	}
	code := resp.StatusCode()
	o := refused
	if code >= 200 && code < 300 {
		o = stored
	}
	r.noteAnswer(j.slot, att, o, done)
	if code != http.StatusOK {
		r.failed.Record(done.Sub(j.intended))
		r.errs.add(fmt.Sprintf("http_%d", code))
		return
	}
	r.ok.Add(1)
	r.ingest.Record(done.Sub(j.intended))
}

// noteSend records that a watched request's event is being posted at at.
// The first webhook of a generation moves the slot to it; if the watcher
// is not subscribed to it yet, the request counts as late.
func (r *runner) noteSend(j job, at time.Time) attemptRef {
	s := j.slot
	s.mu.Lock()
	defer s.mu.Unlock()
	if j.gen > s.sending {
		s.sending = j.gen
		if s.armed != j.gen {
			r.late.Add(1)
		}
		for gen, g := range s.gens {
			if gen < j.gen && !g.open {
				delete(s.gens, gen)
			}
		}
	}
	if j.wh.Key == "" {
		return attemptRef{}
	}
	g := s.gens[j.gen]
	if g == nil && j.gen == s.sending {
		g = s.genState(j.gen)
	}
	if g == nil || g.judged {
		return attemptRef{}
	}
	if j.wh.Key == successKey {
		g.successes = j.successes
	}
	i := g.key(j.wh.Key)
	k := &g.keys[i]
	if !g.open {
		k.unwatched = true
	}
	k.attempts = append(k.attempts, attempt{due: j.intended, sent: at})
	return attemptRef{g: g, key: i, n: len(k.attempts) - 1}
}

// noteAnswer records how the attempt a ended, at at.
func (r *runner) noteAnswer(s *slot, a attemptRef, o outcome, at time.Time) {
	if a.g == nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	k := &a.g.keys[a.key]
	k.attempts[a.n].outcome = o
	if o == stored && k.stored.IsZero() {
		k.stored = at
	}
	r.settle(k)
	r.leaveIfDead(s, a.g)
}

// delivered records that the watcher of g, generation of s, received the
// event key at at; under the slot's mu.
func (r *runner) delivered(s *slot, g *genState, key string, at time.Time) {
	for i := range g.keys {
		if k := &g.keys[i]; k.key == key {
			if k.delivered.IsZero() {
				k.delivered = at
				r.settle(k)
				r.leaveIfDead(s, g)
			}
			return
		}
	}
}

// successRefused reports whether every post of g's SUCCESS was made and
// answered, none with 2xx, so that the request may never end; unanswered,
// whether one of them got no answer (it may have been stored after all).
// Under the slot's mu.
func (g *genState) successRefused() (refused, unanswered bool) {
	for _, k := range g.keys {
		if k.key != successKey {
			continue
		}
		if len(k.attempts) < g.successes {
			return false, false
		}
		for _, a := range k.attempts {
			switch a.outcome {
			case inFlight, stored:
				return false, false
			case unknown:
				unanswered = true
			}
		}
		return true, unanswered
	}
	return false, false
}

// leaveIfDead has the watcher of g, generation of s, give the request up
// when it can no longer end (Result.WatchAbandoned): at once when its
// SUCCESS was refused and nothing it expects is missing; else Drain
// later, or Drain after the last of its events stored since, unless the
// stream ends first. Under the slot's mu.
func (r *runner) leaveIfDead(s *slot, g *genState) {
	if g.cancel == nil || g.abandoned || g.judged {
		return
	}
	refused, unanswered := g.successRefused()
	if !refused {
		return
	}
	if !unanswered {
		if _, missing := g.expected(); missing == 0 || g.resynced {
			r.abandon(g)
			return
		}
	}
	// Every event stored gets Drain to arrive, as at the end of the run:
	// from when the request could no longer end, or from its answer if
	// that came later (a post that was in flight then).
	from := time.Now()
	if g.giveUp != nil {
		from = g.giveUpAt.Add(-r.cfg.Drain)
	}
	for _, k := range g.keys {
		if k.stored.After(from) {
			from = k.stored
		}
	}
	due := from.Add(r.cfg.Drain)
	switch {
	case g.giveUp == nil:
		g.giveUpAt = due
		g.giveUp = time.AfterFunc(time.Until(due), func() {
			s.mu.Lock()
			defer s.mu.Unlock()
			// Not before giveUpAt: it may have moved while this waited
			// for the lock, and the timer, reset, runs this again.
			if g.cancel != nil && !g.abandoned && !g.judged && !time.Now().Before(g.giveUpAt) {
				r.abandon(g)
			}
		})
	case due.After(g.giveUpAt):
		g.giveUpAt = due
		g.giveUp.Reset(time.Until(due))
	}
}

// abandon judges g, counts it given up and ends its stream; under the
// slot's mu.
func (r *runner) abandon(g *genState) {
	g.abandoned = true
	r.abandoned.Add(1)
	r.judge(g)
	if g.giveUp != nil {
		g.giveUp.Stop()
	}
	g.cancel()
}

// settle measures k's delivery once it is known which post was stored: of
// the posts made before the delivery, the first answered 2xx. It waits
// while one of those is unanswered. It measures nothing when none was
// answered 2xx, or when a post before that one got no answer (it may have
// been the one stored). Under the slot's mu.
func (r *runner) settle(k *keyState) {
	if k.settled || k.delivered.IsZero() {
		return
	}
	var first *attempt
	for i := range k.attempts {
		a := &k.attempts[i]
		if a.sent.After(k.delivered) {
			continue
		}
		if a.outcome == inFlight {
			return
		}
		if a.outcome == stored && (first == nil || a.sent.Before(first.sent)) {
			first = a
		}
	}
	k.settled = true
	if first == nil {
		return
	}
	for _, a := range k.attempts {
		if a.outcome == unknown && a.sent.Before(first.sent) {
			return
		}
	}
	r.delivery.Record(k.delivered.Sub(first.due))
}

// genState returns the state of generation gen, made if need be; under
// the slot's mu.
func (s *slot) genState(gen int) *genState {
	g := s.gens[gen]
	if g == nil {
		g = &genState{}
		s.gens[gen] = g
	}
	return g
}

// key returns the index of key's state, made if need be.
func (g *genState) key(key string) int {
	for i := range g.keys {
		if g.keys[i].key == key {
			return i
		}
	}
	g.keys = append(g.keys, keyState{key: key})
	return len(g.keys) - 1
}

// expected counts the deliveries g's watcher had to receive (see
// Result.DeliveryExpected) and those of them it did not.
func (g *genState) expected() (expected, missing int64) {
	// SUCCESS may have been stored from the first of its posts that was
	// not refused on; the stream ends with it, and what is stored after it
	// reaches no watcher.
	var success time.Time
	for _, k := range g.keys {
		if k.key != successKey {
			continue
		}
		for _, a := range k.attempts {
			if a.outcome != refused && (success.IsZero() || a.sent.Before(success)) {
				success = a.sent
			}
		}
	}
	for _, k := range g.keys {
		if k.unwatched || k.stored.IsZero() {
			continue
		}
		if k.key != successKey && !success.IsZero() && !k.stored.Before(success) {
			continue // may have been stored after SUCCESS, which no watch follows
		}
		expected++
		if k.delivered.IsZero() {
			missing++
		}
	}
	return expected, missing
}

// judge counts g's expected deliveries and those missing, once; under the
// slot's mu.
func (r *runner) judge(g *genState) {
	if g.judged {
		return
	}
	g.judged = true
	expected, missing := g.expected()
	r.expected.Add(expected)
	if g.resynced {
		r.resynced.Add(missing)
	} else {
		r.lost.Add(missing)
	}
}

// judgeOpen judges the generations whose stream was still open at the end
// of the run.
func (r *runner) judgeOpen() {
	for _, s := range r.watched {
		s.mu.Lock()
		for _, g := range s.gens {
			if g.open {
				r.judge(g)
			}
		}
		s.mu.Unlock()
	}
}

// outstanding reports whether an open stream still misses a delivery it
// should receive.
func (r *runner) outstanding() bool {
	for _, s := range r.watched {
		s.mu.Lock()
		for _, g := range s.gens {
			if g.open && !g.judged && !g.resynced {
				if _, missing := g.expected(); missing > 0 {
					s.mu.Unlock()
					return true
				}
			}
		}
		s.mu.Unlock()
	}
	return false
}

// drain waits, for at most d, until no open stream misses a delivery.
func (r *runner) drain(ctx context.Context, d time.Duration) {
	deadline := time.NewTimer(d)
	defer deadline.Stop()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for r.outstanding() {
		select {
		case <-tick.C:
		case <-deadline.C:
			return
		case <-ctx.Done():
			return
		}
	}
}

// startWatchers subscribes one watcher per watched slot and returns once
// all are subscribed, or a minute has passed, or noneReadyAfter has with
// none subscribed (a server that is down or speaks another protocol).
func (r *runner) startWatchers(ctx context.Context, wg *sync.WaitGroup) {
	ready := make(chan struct{}, r.cfg.Watchers)
	opening := make(chan struct{}, 256) // bounds subscriptions in progress at start
	if r.cfg.SSE != nil {
		r.cfg.SSE.start()
	}
	for i := range r.cfg.Watchers {
		var sub subscriber
		if r.cfg.SSE != nil {
			sub = r.cfg.SSE.subscribe
		} else {
			sub = grpcSubscriber(eventsv1.NewRequestServiceClient(r.cfg.WatchConns[i%len(r.cfg.WatchConns)]))
		}
		wg.Go(func() { r.watch(ctx, r.watched[i], sub, ready, opening) })
	}
	timeout, noneReady := time.After(time.Minute), time.After(noneReadyAfter)
	for n := 0; n < r.cfg.Watchers; {
		select {
		case <-ready:
			n++
		case <-noneReady:
			if n == 0 {
				return
			}
		case <-timeout:
			return
		case <-ctx.Done():
			return
		}
	}
}

// noneReadyAfter is how long startWatchers waits for a first subscription.
const noneReadyAfter = 10 * time.Second

// watch follows slot s: subscribes to its next request before that
// request's first webhook, records every UPDATE's events, and moves on when
// the stream ends (after SUCCESS), or when the request can no longer end
// (see leaveIfDead), or, once subscribed, when the slot already sent the
// request's successor: the request went out unwatched, and this watch
// would have nothing to measure, and no end when its SUCCESS was refused.
func (r *runner) watch(ctx context.Context, s *slot, subscribe subscriber, ready chan<- struct{}, opening chan struct{}) {
	first := true
	for ctx.Err() == nil {
		s.mu.Lock()
		gen := s.sending + 1
		s.mu.Unlock()
		if first {
			select {
			case opening <- struct{}{}:
			case <-ctx.Done():
				return
			}
		}
		subCtx, cancel := context.WithCancel(ctx)
		stream, err := subscribe(subCtx, RequestID(r.run, s.index, gen))
		if first {
			<-opening
		}
		if err != nil {
			cancel()
			if ctx.Err() == nil {
				r.watchErrs.add(errorKind(err))
				if first && permanent(err) { // a wrong key, say: retrying cannot help
					ready <- struct{}{}
					return
				}
				select {
				case <-time.After(100 * time.Millisecond):
				case <-ctx.Done():
				}
			}
			continue
		}
		s.mu.Lock()
		if gen < s.sending {
			s.mu.Unlock()
			stream.Close()
			cancel()
			continue
		}
		s.armed = gen
		g := s.genState(gen)
		g.open, g.cancel = true, cancel
		r.leaveIfDead(s, g) // its SUCCESS may have been refused already
		s.mu.Unlock()
		if first {
			first = false
			r.armed.Add(1)
			ready <- struct{}{}
		}
		terminal := r.follow(subCtx, s, g, stream)
		stream.Close()
		cancel()
		s.mu.Lock()
		g.cancel = nil
		if g.giveUp != nil {
			g.giveUp.Stop()
		}
		switch {
		case terminal:
			r.judge(g)
			g.open = false
		case g.abandoned:
			g.open = false // judged when given up
		case ctx.Err() != nil:
			// The run is over: Run judges what is still open.
		default:
			// Ended early (an error, RECONNECT): what it missed is not
			// judged; the error is counted.
			g.open, g.judged = false, true
		}
		if gen < s.sending && !g.open {
			delete(s.gens, gen)
		}
		s.mu.Unlock()
	}
}

// subscriber opens a watch of a request and waits for its snapshot, which
// proves the subscription is in place.
type subscriber func(ctx context.Context, requestID string) (watchStream, error)

// watchStream is an open watch, after its snapshot.
type watchStream interface {
	// Recv returns the next message; io.EOF after the last.
	Recv() (*eventsv1.WatchRequestResponse, error)
	Close()
}

func grpcSubscriber(client eventsv1.RequestServiceClient) subscriber {
	return func(ctx context.Context, id string) (watchStream, error) {
		ctx, cancel := context.WithCancel(ctx)
		stream, err := client.WatchRequest(ctx, &eventsv1.WatchRequestRequest{RequestId: id})
		if err == nil {
			_, err = stream.Recv()
		}
		if err != nil {
			cancel()
			return nil, err
		}
		return grpcStream{stream, cancel}, nil
	}
}

type grpcStream struct {
	grpc.ServerStreamingClient[eventsv1.WatchRequestResponse]
	cancel context.CancelFunc
}

func (s grpcStream) Close() { s.cancel() }

// errorKind names a watch error: its gRPC code or HTTP status, or its Go
// type.
func errorKind(err error) string {
	if st, ok := status.FromError(err); ok {
		return st.Code().String()
	}
	if se, ok := errors.AsType[statusError](err); ok {
		return se.Error()
	}
	if kind := transportError(err); kind != "transport" {
		return kind
	}
	return "other"
}

// permanent reports whether a refused subscription would be refused again:
// the credentials, the scope or the request are wrong.
func permanent(err error) bool {
	if se, ok := errors.AsType[statusError](err); ok {
		return se >= 400 && se < 500 && se != http.StatusTooManyRequests
	}
	switch status.Code(err) {
	case codes.Unauthenticated, codes.PermissionDenied, codes.InvalidArgument, codes.Unimplemented:
		return true
	}
	return false
}

// follow records the events of every UPDATE on stream, the watch of
// generation g of s, until the stream ends or ctx (the stream's) is
// canceled, and reports whether the request reached SUCCESS on it (after
// which the server sends nothing more).
func (r *runner) follow(ctx context.Context, s *slot, g *genState, stream watchStream) (terminal bool) {
	for {
		m, err := stream.Recv()
		if err != nil {
			if !errors.Is(err, io.EOF) && ctx.Err() == nil {
				r.watchErrs.add(errorKind(err))
			}
			return terminal
		}
		switch m.GetType() {
		case eventsv1.WatchMessageType_WATCH_MESSAGE_TYPE_UPDATE:
			now := time.Now()
			s.mu.Lock()
			for _, e := range m.GetEvents() {
				r.delivered(s, g, EventKey(e.GetStatus(), e.GetChannel()), now)
			}
			s.mu.Unlock()
		case eventsv1.WatchMessageType_WATCH_MESSAGE_TYPE_SNAPSHOT:
			// After the first (which subscribe read): the server dropped
			// updates this watcher fell behind on.
			s.mu.Lock()
			g.resynced = true
			s.mu.Unlock()
		}
		if m.GetRequest().GetStatus() == eventsv1.RequestStatus_REQUEST_STATUS_SUCCESS {
			terminal = true
		}
	}
}

// sendTimeout bounds one post, dialTimeout its connecting.
const (
	sendTimeout = 30 * time.Second
	dialTimeout = 3 * time.Second
)

// transportError names a failed post (the kinds of Result.Errors, less
// http_NNN).
func transportError(err error) string {
	var nerr net.Error
	switch {
	case errors.Is(err, context.Canceled):
		return "canceled"
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, fasthttp.ErrTimeout),
		errors.Is(err, fasthttp.ErrDialTimeout), errors.Is(err, fasthttp.ErrTLSHandshakeTimeout),
		errors.Is(err, fasthttp.ErrNoFreeConns), // returned once MaxConnWaitTimeout has passed
		errors.As(err, &nerr) && nerr.Timeout():
		return "timeout"
	case errors.Is(err, syscall.ECONNREFUSED):
		return "connection_refused"
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE), errors.Is(err, syscall.ECONNABORTED),
		errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, fasthttp.ErrConnectionClosed):
		return "connection_reset"
	}
	return "transport"
}

// counter counts by kind.
type counter struct {
	mu sync.Mutex
	m  map[string]int64
}

func (c *counter) add(kind string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil {
		c.m = map[string]int64{}
	}
	c.m[kind]++
}

func (c *counter) snapshot() map[string]int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.m) == 0 {
		return nil
	}
	out := make(map[string]int64, len(c.m))
	for k, v := range c.m {
		out[k] = v
	}
	return out
}
