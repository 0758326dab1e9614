// Package groupcommit batches concurrent webhook writes into few
// store.Commit calls. Submit enqueues without blocking (a full queue is
// store.ErrOverloaded at once, so memory stays bounded) and waits for the
// commit of its batch; one writer goroutine takes whatever is queued, up to
// MaxBatch, commits it in one transaction and answers every caller. A
// caller is answered with success only after its webhook is committed.
//
// It may import package store only; it works with any backend.
package groupcommit

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/otpless-events/otpless-events/server/store"
)

// Options configures a Writer. Zero values take the defaults.
type Options struct {
	// QueueSize bounds the webhooks waiting for the writer (default 4096).
	QueueSize int
	// MaxBatch bounds the webhooks of one Commit (default 256).
	MaxBatch int
	// OnCommit, when set, is called by the writer goroutine after each
	// successful commit that changed some request, with those changes,
	// before any caller of the batch is answered. It delays every later
	// commit while it runs, so it must be quick and must not call Submit.
	OnCommit func([]store.Change)
	// Observe, when set, is called by the writer goroutine after each
	// store.Commit with its size, duration and error, for metrics. Like
	// OnCommit it must be quick.
	Observe func(Batch)
	// Logger receives commit failures (default: discard).
	Logger *slog.Logger
}

// Batch describes one store.Commit of the writer, for Options.Observe.
type Batch struct {
	// Webhooks is how many webhooks the commit held.
	Webhooks int
	// Took is how long store.Commit took.
	Took time.Duration
	// Err is the commit's error; nil when it succeeded.
	Err error
}

// Writer is a group-commit writer in front of a store.Store. Its methods are
// safe for concurrent use.
type Writer struct {
	store    store.Store
	queue    chan *item
	maxBatch int
	onCommit func([]store.Change)
	observe  func(Batch)
	log      *slog.Logger
	now      func() time.Time
	after    func(time.Duration) <-chan time.Time
	failures failures // the writer goroutine's, and Stop's once its ctx ended
	panics   panics   // the writer goroutine's own

	mu      sync.RWMutex // guards started and stopped; Submit holds it for reading while it enqueues
	started bool
	stopped bool
	quit    chan struct{}      // closed by the first Stop: drain the queue and exit
	cancel  context.CancelFunc // cancels the commits in flight: Stop's ctx ended
	done    chan struct{}      // closed when the writer goroutine has exited
}

// item is one Submit waiting for its batch.
type item struct {
	webhook store.Webhook
	done    chan outcome // buffered: the writer never blocks on a caller
	// state is queued until the writer takes the item into a commit or its
	// caller gives up waiting, whichever comes first: a webhook taken is
	// committed, and its caller waits for the outcome even once its
	// context has ended, so that logs and metrics say what happened to it.
	state atomic.Int32
}

// The states of an item.
const (
	queued int32 = iota
	taken
	abandoned
)

type outcome struct {
	result store.Result
	err    error
}

// New returns a Writer committing to s. Call Start before Submit.
func New(s store.Store, opts Options) *Writer {
	if opts.QueueSize <= 0 {
		opts.QueueSize = 4096
	}
	if opts.MaxBatch <= 0 {
		opts.MaxBatch = 256
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	return &Writer{
		store:    s,
		queue:    make(chan *item, opts.QueueSize),
		maxBatch: opts.MaxBatch,
		onCommit: opts.OnCommit,
		observe:  opts.Observe,
		log:      opts.Logger.With("component", "groupcommit"),
		now:      time.Now,
		after:    time.After,
		panics:   panics{},
		quit:     make(chan struct{}),
		done:     make(chan struct{}),
	}
}

// Start starts the writer goroutine and returns. Commits run with ctx's
// values but not its cancellation: canceling ctx stops the writer as Stop
// does (queued webhooks are still committed). Start may be called once, and
// not after Stop.
func (w *Writer) Start(ctx context.Context) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	switch {
	case w.stopped:
		return fmt.Errorf("groupcommit: start: %w", store.ErrClosed)
	case w.started:
		return errors.New("groupcommit: start: already started")
	}
	w.started = true
	commitCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	w.cancel = cancel
	go w.run(commitCtx)
	stop := context.AfterFunc(ctx, func() { w.beginStop() })
	go func() {
		<-w.done
		stop()
	}()
	return nil
}

// Submit queues webhook for the next batch and waits until that batch is
// committed or ctx is done. A full queue is store.ErrOverloaded and a
// stopped writer store.ErrClosed, both at once and with nothing stored. A
// failed commit wraps store.ErrUnavailable, or the store's own sentinel
// error. If ctx ends first, Submit returns ctx's error and the webhook may
// still be committed (or, if the writer had not taken it yet, dropped).
func (w *Writer) Submit(ctx context.Context, webhook store.Webhook) (store.Result, error) {
	it, err := w.enqueue(ctx, webhook)
	if err != nil {
		return store.Result{}, err
	}
	return w.wait(ctx, it)
}

func (w *Writer) enqueue(ctx context.Context, webhook store.Webhook) (*item, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("groupcommit: submit: %w", err)
	}
	it := &item{webhook: webhook, done: make(chan outcome, 1)}
	w.mu.RLock()
	defer w.mu.RUnlock()
	switch {
	case w.stopped:
		return nil, fmt.Errorf("groupcommit: submit: %w", store.ErrClosed)
	case !w.started:
		return nil, fmt.Errorf("groupcommit: submit: %w: writer not started", store.ErrUnavailable)
	}
	select {
	case w.queue <- it:
		return it, nil
	default:
		return nil, fmt.Errorf("groupcommit: submit: %w", store.ErrOverloaded)
	}
}

// Queued returns how many webhooks wait for the writer (not counting the
// batch being committed).
func (w *Writer) Queued() int { return len(w.queue) }

func (w *Writer) wait(ctx context.Context, it *item) (store.Result, error) {
	select {
	case o := <-it.done:
		return o.result, o.err
	case <-ctx.Done():
		if it.state.CompareAndSwap(queued, abandoned) {
			return store.Result{}, fmt.Errorf("groupcommit: submit: waiting for the commit: %w", ctx.Err())
		}
		o := <-it.done // in a commit already, which the store's timeouts bound
		return o.result, o.err
	}
}

// Stop stops accepting webhooks (Submit returns store.ErrClosed), commits
// what is queued and returns once the writer goroutine has exited. If ctx
// ends first, the commit in flight is canceled, the webhooks left are
// answered with errors, and Stop logs the failed commits waiting for
// their line and returns ctx's error without waiting further. Stop is
// idempotent and may be called before Start.
func (w *Writer) Stop(ctx context.Context) error {
	if !w.beginStop() {
		return nil // never started
	}
	select {
	case <-w.done:
		return nil
	case <-ctx.Done():
		w.cancel()
		// The failures waiting for their line are logged now: the
		// writer may be held in a commit the store is slow to end, and
		// the process gone before it logs them.
		w.failures.flush(w.log, w.now())
		return fmt.Errorf("groupcommit: stop: %w", ctx.Err())
	}
}

// beginStop marks the writer stopped and tells the goroutine to drain. It
// reports whether the goroutine was started.
func (w *Writer) beginStop() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.stopped {
		w.stopped = true
		close(w.quit)
	}
	return w.started
}

// run is the writer goroutine: one batch at a time until Stop, then what is
// left in the queue. Once stopped is set no Submit can enqueue, so an empty
// queue after quit is final.
func (w *Writer) run(ctx context.Context) {
	defer close(w.done)
	defer w.cancel()
	batch := make([]*item, 0, w.maxBatch)
	var flush <-chan time.Time // armed while failures wait to be logged
	for {
		select {
		case <-flush:
			// A failure logged at once since the timer was armed makes
			// it early for those after: they wait for the next interval.
			flush = nil
			if d, ok := w.failures.due(w.now()); ok && d > 0 {
				flush = w.after(d)
			} else {
				w.failures.flush(w.log, w.now())
			}
		case it := <-w.queue:
			// Handlers that are runnable now are about to submit: yielding
			// once lets them join this batch rather than wait out a whole
			// commit for the next. Under load this made commits fewer and
			// larger, and cut the server's CPU per webhook by 9-18% and
			// the p99 at 5,000/s with watchers by half; when nothing else
			// is runnable it returns at once.
			runtime.Gosched()
			batch = w.fill(append(batch[:0], it))
			w.commit(ctx, take(batch))
			clear(batch) // the memory is reused: keep no answered webhook
			if d, ok := w.failures.due(w.now()); ok && flush == nil {
				flush = w.after(d)
			}
		case <-w.quit:
			for {
				batch = w.fill(batch[:0])
				if len(batch) == 0 {
					w.failures.flush(w.log, w.now())
					return
				}
				w.commit(ctx, take(batch))
				clear(batch)
			}
		}
	}
}

// fill adds queued items to batch, up to maxBatch, without waiting.
func (w *Writer) fill(batch []*item) []*item {
	for len(batch) < w.maxBatch {
		select {
		case it := <-w.queue:
			batch = append(batch, it)
		default:
			return batch
		}
	}
	return batch
}

// take marks the items of batch taken, leaving out those whose callers
// gave up waiting, and returns the rest (in batch's memory).
func take(batch []*item) []*item {
	return slices.DeleteFunc(batch, func(it *item) bool { return !it.state.CompareAndSwap(queued, taken) })
}

// commit commits the batch of taken items and answers every item of it
// exactly once.
func (w *Writer) commit(ctx context.Context, live []*item) {
	if len(live) == 0 {
		return
	}
	webhooks := make([]store.Webhook, len(live))
	for i, it := range live {
		webhooks[i] = it.webhook
	}

	start := time.Now()
	results, changes, err := w.storeCommit(ctx, webhooks)
	if err == nil && len(results) != len(live) {
		err = fmt.Errorf("store returned %d results for %d webhooks", len(results), len(live))
	}
	if w.observe != nil {
		w.observe(Batch{Webhooks: len(live), Took: time.Since(start), Err: err})
	}
	if (errors.Is(err, errPanicked) || errors.Is(err, store.ErrDamaged)) && len(live) > 1 {
		// One webhook may be what makes the store panic, or what reads a
		// request's damaged row, every time: on their own, the others are
		// stored, and only it fails (503) until the bug or the data is
		// mended, rather than every batch its retries join.
		w.log.Warn("committing the webhooks of the batch one at a time", "webhooks", len(live), "err", err)
		for _, it := range live {
			w.commit(ctx, []*item{it})
		}
		return
	}
	if err != nil {
		err = commitError(len(live), err)
		w.failures.failed(w.log, w.now(), len(live), err)
		for _, it := range live {
			it.done <- outcome{err: err}
		}
		return
	}
	w.failures.ok(w.log, w.now())
	if w.onCommit != nil && len(changes) > 0 {
		w.onCommit(changes)
	}
	for i, it := range live {
		it.done <- outcome{result: results[i]}
	}
}

// failureLogInterval is how often, at most, a run of failed commits is
// logged. While the database is unreachable each commit fails at once and
// holds the webhook or two that came meanwhile: a line per commit would be
// a line per webhook, beside each webhook's own 503 line.
const failureLogInterval = 10 * time.Second

// failures keeps the counts that make failed commits a line at most once
// per failureLogInterval, the first at once (a store that fails every other
// commit, a disk nearly full, included); failures left unlogged are logged
// once the interval is over (flush). A run of failures ends with a line at
// the first commit that succeeds once all of them are logged, or, if one
// has succeeded since, when the last of them are.
type failures struct {
	mu                sync.Mutex // the writer goroutine's and Stop's
	line              time.Time  // of the last "commit failed"; zero: none yet
	commits, webhooks int        // failed since that line: the next one's counts
	lastErr           error      // of the last of them
	lastWebhooks      int

	runCommits, runWebhooks int // failed since the last run ended
	runBegan                time.Time
	succeeded               time.Time // of the first commit to succeed since the run's last failure; zero: none
}

func (f *failures) failed(log *slog.Logger, now time.Time, webhooks int, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.runCommits == 0 {
		f.runBegan = now
	}
	f.runCommits++
	f.runWebhooks += webhooks
	f.succeeded = time.Time{}
	f.commits++
	f.webhooks += webhooks
	f.lastErr, f.lastWebhooks = err, webhooks
	if f.line.IsZero() || now.Sub(f.line) >= failureLogInterval {
		f.flushLocked(log, now)
	}
}

// flush logs the failures not logged yet, if any, and the end of their
// run if a commit has succeeded since.
func (f *failures) flush(log *slog.Logger, now time.Time) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.flushLocked(log, now)
}

func (f *failures) flushLocked(log *slog.Logger, now time.Time) {
	if f.commits == 0 {
		return
	}
	log.Error("commit failed", "webhooks", f.lastWebhooks, "err", f.lastErr,
		"failed_commits", f.commits, "failed_webhooks", f.webhooks)
	f.line, f.commits, f.webhooks, f.lastErr = now, 0, 0, nil
	if !f.succeeded.IsZero() {
		f.end(log)
	}
}

// due reports whether failures wait to be logged, and in how long.
func (f *failures) due(now time.Time) (time.Duration, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.line.Add(failureLogInterval).Sub(now), f.commits > 0
}

// ok records a commit that succeeded: the run ends now if all its failures
// are logged, else once they are (flush).
func (f *failures) ok(log *slog.Logger, now time.Time) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.runCommits == 0 || !f.succeeded.IsZero() {
		return
	}
	f.succeeded = now
	if f.commits == 0 {
		f.end(log)
	}
}

func (f *failures) end(log *slog.Logger) {
	log.Info("commits succeed again", "failed_commits", f.runCommits, "failed_webhooks", f.runWebhooks, "failed_for", f.succeeded.Sub(f.runBegan))
	f.runCommits, f.runWebhooks, f.succeeded = 0, 0, time.Time{}
}

// errPanicked is the error of a commit in which the store panicked.
var errPanicked = errors.New("the store panicked")

// storeCommit is w.store.Commit, with a panic turned into an error of
// this batch (errPanicked, naming where the store panicked): a webhook
// that makes the store panic is answered 503, and OTPLESS's retries of it
// cannot end the process again and again. The panic is logged with its
// stack when the place it came from has logged none for
// panicStackInterval; else its failure is in the "commit failed" lines
// alone (every 10 s at most, with counts, their err naming the panic and
// its place).
func (w *Writer) storeCommit(ctx context.Context, batch []store.Webhook) (results []store.Result, changes []store.Change, err error) {
	defer func() {
		if p := recover(); p != nil {
			at := panicPlace()
			if repeats, ok := w.panics.stack(at, w.now()); ok {
				attrs := []any{"webhooks", len(batch), "panic", p, "at", at}
				if repeats > 0 {
					attrs = append(attrs, "repeats", repeats)
				}
				w.log.Error("the store panicked in a commit", append(attrs, "stack", string(debug.Stack()))...)
			}
			results, changes, err = nil, nil, fmt.Errorf("%w in %s: %v", errPanicked, at, p)
		}
	}()
	return w.store.Commit(ctx, batch)
}

// panicStackInterval is how often, at most, the stack of the store's
// panics at one place is logged. A webhook that makes the store panic
// does so at each of OTPLESS's retries, and at each batch it joins (and
// again as the batch is committed one at a time), a stack of some KiB
// each time, which would bury the rest of the log; the first says all
// there is to say. Once an interval is over, the next one is logged with
// how many came since, so that a log of the last few minutes of the
// trouble holds one.
const panicStackInterval = 10 * time.Minute

// panics holds, for each place the store panicked at, when its stack was
// last logged and how many panics there have logged none since. Its keys
// are places in the code, so it stays small.
type panics map[string]*panicLog

type panicLog struct {
	logged  time.Time
	repeats int
}

// stack reports whether a panic at place is to be logged with its stack,
// and how many there logged none since the last that was.
func (p panics) stack(place string, now time.Time) (repeats int, ok bool) {
	l := p[place]
	if l == nil {
		p[place] = &panicLog{logged: now}
		return 0, true
	}
	if now.Sub(l.logged) < panicStackInterval {
		l.repeats++
		return 0, false
	}
	repeats = l.repeats
	l.logged, l.repeats = now, 0
	return repeats, true
}

// panicPlace names, from a deferred function recovering a panic, the
// function that panicked and its line: the first frame below
// runtime.gopanic outside package runtime (which raises a nil
// dereference or an index out of range on the code's behalf). "" when
// there is none.
func panicPlace() string {
	var pcs [64]uintptr
	frames := runtime.CallersFrames(pcs[:runtime.Callers(1, pcs[:])])
	panicking := false
	for {
		f, more := frames.Next()
		if panicking && !strings.HasPrefix(f.Function, "runtime.") {
			return fmt.Sprintf("%s (%s:%d)", f.Function, filepath.Base(f.File), f.Line)
		}
		panicking = panicking || f.Function == "runtime.gopanic"
		if !more {
			return ""
		}
	}
}

// commitError wraps a failed commit once: the store's sentinel if it gave
// one, else store.ErrUnavailable.
func commitError(n int, err error) error {
	for _, sentinel := range []error{store.ErrUnavailable, store.ErrClosed, store.ErrOverloaded} {
		if errors.Is(err, sentinel) {
			return fmt.Errorf("groupcommit: commit of %d webhooks: %w", n, err)
		}
	}
	return fmt.Errorf("groupcommit: commit of %d webhooks: %w: %w", n, store.ErrUnavailable, err)
}
