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
	// the larger of Watchers and 1000).
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
	// before the first webhook.
	WatchersReady func()
}

// Result is what a run measured.
type Result struct {
	// Elapsed runs from the first webhook to the last answer.
	Elapsed time.Duration `json:"elapsed_ns"`
	// Sent counts webhooks posted; OK those answered 200.
	Sent int64 `json:"sent"`
	OK   int64 `json:"ok"`
	// Throughput is OK per second of Elapsed.
	Throughput float64 `json:"webhooks_per_second"`
	// Ingest is the latency of 200 answers: from the intended send time in
	// open loop, from the send in closed loop.
	Ingest Latency `json:"ingest"`
	// Delivery is the latency from posting a webhook to a watcher
	// receiving the UPDATE with its event.
	Delivery Latency `json:"delivery"`
	// Errors counts failed posts by kind (http_503, timeout, ...).
	Errors map[string]int64 `json:"errors,omitempty"`
	// WatchersReady is how many watchers were subscribed when the traffic
	// started; WatchLate counts requests whose first webhook went out
	// before their watcher was subscribed (their first events arrive in the
	// snapshot and are not measured).
	WatchersReady int              `json:"watchers_ready"`
	WatchLate     int64            `json:"watch_late"`
	WatchErrors   map[string]int64 `json:"watch_errors,omitempty"`
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
// when it cannot start; errors of single webhooks are counted.
func Run(ctx context.Context, cfg Config) (*Result, error) {
	if cfg.Concurrency <= 0 || cfg.Duration <= 0 || cfg.Rate < 0 {
		return nil, errors.New("loadgen: concurrency and duration must be positive, rate not negative")
	}
	if cfg.Watchers > 0 && len(cfg.WatchConns) == 0 && cfg.SSE == nil {
		return nil, errors.New("loadgen: watchers need a gRPC connection or an SSE endpoint")
	}
	if cfg.Requests <= 0 {
		cfg.Requests = max(cfg.Watchers, 1000)
	}
	if cfg.Requests < cfg.Watchers {
		return nil, fmt.Errorf("loadgen: %d watchers need as many requests in progress, not %d", cfg.Watchers, cfg.Requests)
	}
	r := newRunner(cfg)
	defer r.client.CloseIdleConnections()

	watchCtx, stopWatchers := context.WithCancel(ctx)
	var watchers sync.WaitGroup
	defer func() { stopWatchers(); watchers.Wait() }()
	if cfg.Watchers > 0 {
		r.startWatchers(watchCtx, &watchers)
		if cfg.WatchersReady != nil {
			cfg.WatchersReady()
		}
	}

	start := time.Now()
	r.lastDone.Store(start.UnixNano())
	if cfg.Rate > 0 {
		r.openLoop(ctx, start)
	} else {
		r.closedLoop(ctx, start)
	}
	elapsed := time.Duration(r.lastDone.Load() - start.UnixNano())
	stopWatchers()
	watchers.Wait()

	res := &Result{
		Elapsed:       elapsed,
		Sent:          r.sent.Load(),
		OK:            r.ok.Load(),
		Ingest:        summarize(&r.ingest),
		Delivery:      summarize(&r.delivery),
		Errors:        r.errs.snapshot(),
		WatchersReady: int(r.armed.Load()),
		WatchLate:     r.late.Load(),
		WatchErrors:   r.watchErrs.snapshot(),
	}
	if elapsed > 0 {
		res.Throughput = float64(res.OK) / elapsed.Seconds()
	}
	return res, nil
}

type runner struct {
	cfg    Config
	client *fasthttp.Client
	run    uint32

	mu     sync.Mutex // guards rng, cursor and the slots' scripts
	rng    *rand.Rand
	cursor int
	slots  []*slot

	sent, ok  atomic.Int64
	lastDone  atomic.Int64 // unix ns of the last answer
	ingest    Histogram
	delivery  Histogram
	errs      counter
	late      atomic.Int64
	armed     atomic.Int64 // watchers subscribed at least once
	watchErrs counter
}

// slot is one auth request in progress after another.
type slot struct {
	index   int
	watched bool

	// Under runner.mu: the generator's position.
	gen    int
	script []Webhook
	pos    int

	// Under mu: the senders' and the watcher's view.
	mu      sync.Mutex
	sending int                  // generation whose webhooks are going out
	armed   int                  // generation the watcher is subscribed to
	sent    map[string]time.Time // sending's events not delivered yet, by key
}

type job struct {
	slot     *slot
	gen      int
	wh       Webhook
	intended time.Time
}

// newRunner makes the runner. Webhooks go out through fasthttp's client,
// which writes and reads on the caller's goroutine: net/http's, with two
// goroutines per connection and a hand-off between them for every request,
// cost the load generator about twice the CPU, taken from the server it
// measures when both share a machine.
func newRunner(cfg Config) *runner {
	client := &fasthttp.Client{
		Dial:                          (&fasthttp.TCPDialer{Concurrency: cfg.Concurrency}).Dial,
		MaxConnsPerHost:               cfg.Concurrency,
		MaxConnWaitTimeout:            sendTimeout, // a sender waits for a connection rather than failing
		MaxIdleConnDuration:           90 * time.Second,
		ReadTimeout:                   sendTimeout,
		WriteTimeout:                  sendTimeout,
		TLSConfig:                     cfg.TLS,
		NoDefaultUserAgentHeader:      true,
		DisableHeaderNamesNormalizing: true,
	}
	r := &runner{
		cfg:    cfg,
		client: client,
		run:    rand.Uint32(),
		rng:    rand.New(rand.NewPCG(cfg.Seed, cfg.Seed^0x9e3779b97f4a7c15)),
		slots:  make([]*slot, cfg.Requests),
	}
	for i := range r.slots {
		r.slots[i] = &slot{index: i, watched: i < cfg.Watchers, gen: -1, sending: -1, armed: -1, sent: map[string]time.Time{}}
	}
	return r
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
	}
	s.pos++
	return job{slot: s, gen: s.gen, wh: s.script[s.pos-1]}
}

// openLoop dispatches webhook k at start + k/Rate to the senders, for
// Duration, then waits for the answers.
func (r *runner) openLoop(ctx context.Context, start time.Time) {
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
		case <-ctx.Done():
			break dispatch
		}
	}
	close(jobs)
	senders.Wait()
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
	if j.slot.watched {
		r.noteSend(j, time.Now())
	}
	r.sent.Add(1)
	if ctx.Err() != nil {
		r.errs.add("canceled")
		return
	}
	req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	req.SetRequestURI(r.cfg.WebhookURL)
	req.Header.SetMethod(fasthttp.MethodPost)
	req.Header.SetContentType("application/json")
	req.SetBodyRaw(j.wh.Body)
	err := r.client.DoTimeout(req, resp, sendTimeout)
	if err != nil {
		r.errs.add(transportError(err))
		return
	}
	done := time.Now()
	for last := r.lastDone.Load(); done.UnixNano() > last && !r.lastDone.CompareAndSwap(last, done.UnixNano()); last = r.lastDone.Load() {
	}
	if code := resp.StatusCode(); code != http.StatusOK {
		r.errs.add(fmt.Sprintf("http_%d", code))
		return
	}
	r.ok.Add(1)
	r.ingest.Record(done.Sub(j.intended))
}

// noteSend records when a watched request's event went out. The first
// webhook of a generation moves the slot to it; if the watcher is not
// subscribed to it yet, the request counts as late.
func (r *runner) noteSend(j job, at time.Time) {
	s := j.slot
	s.mu.Lock()
	defer s.mu.Unlock()
	if j.gen > s.sending {
		s.sending = j.gen
		clear(s.sent)
		if s.armed != j.gen {
			r.late.Add(1)
		}
	}
	if j.gen == s.sending && j.wh.Key != "" {
		if _, ok := s.sent[j.wh.Key]; !ok {
			s.sent[j.wh.Key] = at
		}
	}
}

// delivered records the delivery of the event key of generation gen.
func (r *runner) delivered(s *slot, gen int, key string, at time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.sending != gen {
		return
	}
	if t, ok := s.sent[key]; ok {
		delete(s.sent, key)
		r.delivery.Record(at.Sub(t))
	}
}

// startWatchers subscribes one watcher per watched slot and returns once
// all are subscribed (or a minute has passed).
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
		wg.Go(func() { r.watch(ctx, r.slots[i], sub, ready, opening) })
	}
	timeout := time.After(time.Minute)
	for range r.cfg.Watchers {
		select {
		case <-ready:
		case <-timeout:
			return
		case <-ctx.Done():
			return
		}
	}
}

// watch follows slot s: subscribes to its next request before that
// request's first webhook, records every UPDATE's events, and moves on when
// the stream ends (after SUCCESS).
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
		stream, err := subscribe(ctx, RequestID(r.run, s.index, gen))
		if first {
			<-opening
		}
		if err != nil {
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
		s.armed = gen
		s.mu.Unlock()
		if first {
			first = false
			r.armed.Add(1)
			ready <- struct{}{}
		}
		r.follow(ctx, s, gen, stream)
		stream.Close()
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

func (r *runner) follow(ctx context.Context, s *slot, gen int, stream watchStream) {
	for {
		m, err := stream.Recv()
		if err != nil {
			if !errors.Is(err, io.EOF) && ctx.Err() == nil {
				r.watchErrs.add(errorKind(err))
			}
			return
		}
		if m.GetType() != eventsv1.WatchMessageType_WATCH_MESSAGE_TYPE_UPDATE {
			continue
		}
		now := time.Now()
		for _, e := range m.GetEvents() {
			r.delivered(s, gen, EventKey(e.GetStatus(), e.GetChannel()), now)
		}
	}
}

// sendTimeout bounds one post.
const sendTimeout = 30 * time.Second

// transportError names a failed post.
func transportError(err error) string {
	var nerr net.Error
	switch {
	case errors.Is(err, context.Canceled):
		return "canceled"
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, fasthttp.ErrTimeout), errors.As(err, &nerr) && nerr.Timeout():
		return "timeout"
	case errors.Is(err, syscall.ECONNREFUSED):
		return "connection_refused"
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, fasthttp.ErrConnectionClosed):
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
