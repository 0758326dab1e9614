// Package pgnotify carries changes committed by any replica to the watchers
// of this one. Every commit on PostgreSQL sends a NOTIFY naming the request
// and its new revision (see pgstore.Notification); a Relay holds one
// dedicated LISTEN connection, and for the requests watched here it reads
// what changed (store.ChangeReader) and publishes it to the local broker.
//
// The Relay is the only publisher of its broker: the local writer's changes
// go through OnCommit too. For every watched request it remembers the
// revision it last published and publishes changes that follow on from it:
// one of this replica's commits directly, when it is the next revision, and
// otherwise what the store says changed since. So a watcher receives each
// change in revision order, whichever replica committed it. Where the Relay
// cannot know what a request's watchers have, it reads from revision 0, and
// the watchers drop the events at or below the revision they have (each
// event read carries its revision: store.Change.EventRevisions).
//
// A notification is a hint, not the data: when the connection drops, the
// Relay reconnects with backoff, listens again, and then re-reads every
// watched request, so nothing committed meanwhile is missed; it also
// re-reads the watched requests it knows every Recheck, in case, and every
// watched request every Recheck while it is not listening. A connection
// that goes silent instead (a partition, a failover behind the same
// address), or stops getting notifications (a pooler in transaction mode),
// is pinged once quiet for Options.Ping: a notification sent from another
// connection must reach it within as long, or it is given up. Whoever
// learns sooner that the database answers again after being unreachable
// from this replica calls Resync, so that watchers need not wait for that.
//
// It may import the broker, package store, pgstore (for the notification
// format) and pgx; nothing from the servers.
package pgnotify

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/otpless-events/otpless-events/server/broker"
	"github.com/otpless-events/otpless-events/server/store"
	"github.com/otpless-events/otpless-events/server/store/pgstore"
)

// Source is what a Relay needs of the store: *pgstore.Store.
type Source interface {
	store.ChangeReader
	// ListenConfig returns the configuration of the listening connection.
	ListenConfig() *pgx.ConnConfig
	// Channel is the channel commits are notified on.
	Channel() string
	// Notify sends payload on Channel as commits do, from a connection
	// other than the listening one.
	Notify(ctx context.Context, payload string) error
}

var _ Source = (*pgstore.Store)(nil)

// Options configures a Relay. Zero values take the defaults.
type Options struct {
	// Recheck is how often the watched requests are re-read in case a
	// notification was missed (default 10s).
	Recheck time.Duration
	// Ping is how long the listening connection may stay quiet before it is
	// pinged, and how long the ping may take: a connection gone silent is
	// given up within twice this, three times when the ping's notification
	// cannot be sent either (a partition) (default 5s).
	Ping time.Duration
	// MinBackoff and MaxBackoff bound the wait before reconnecting and
	// before retrying a failed read (defaults 100ms and 5s).
	MinBackoff, MaxBackoff time.Duration
	// Timeout bounds connecting and each read (default 10s).
	Timeout time.Duration
	// Logger receives connection losses and failed reads (default: discard).
	Logger *slog.Logger
}

// Relay fans out the commits of every replica to the local broker. Its
// methods are safe for concurrent use.
type Relay struct {
	src    Source
	broker *broker.Broker
	opts   Options
	log    *slog.Logger

	mu sync.Mutex
	// published holds, per watched request, the revision of the last change
	// published. A request missing here is one whose watchers have not been
	// sent anything by the Relay yet.
	published map[string]int64
	// pending holds the requests to re-read. For a request in published the
	// read starts after its published revision; for one not (yet) there,
	// after the revision stored here.
	pending map[string]int64
	// resync asks for every watched request to be re-read: after listening
	// (again), when notifications may have been missed (Resync), and every
	// Recheck while not listening.
	resync bool
	// listening: the LISTEN connection is up, so notifications come.
	listening bool
	losses    atomic.Uint64 // listening connections lost, not opened, or found deaf
	wake      chan struct{} // the worker has something to do

	// afterListen, set by tests, runs on the listening connection after
	// LISTEN.
	afterListen func(context.Context, *pgx.Conn) error

	startOnce, stopOnce sync.Once
	stopped             atomic.Bool // Stop was called
	cancel              context.CancelFunc
	done                sync.WaitGroup
}

// New returns a Relay publishing the changes of src to b. Call Start.
func New(src Source, b *broker.Broker, opts Options) *Relay {
	if opts.Recheck <= 0 {
		opts.Recheck = 10 * time.Second
	}
	if opts.Ping <= 0 {
		opts.Ping = 5 * time.Second
	}
	if opts.MinBackoff <= 0 {
		opts.MinBackoff = 100 * time.Millisecond
	}
	if opts.MaxBackoff < opts.MinBackoff {
		opts.MaxBackoff = max(opts.MinBackoff, 5*time.Second)
	}
	if opts.Timeout <= 0 {
		opts.Timeout = 10 * time.Second
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	return &Relay{
		src:       src,
		broker:    b,
		opts:      opts,
		log:       opts.Logger.With("component", "pgnotify"),
		published: map[string]int64{},
		pending:   map[string]int64{},
		wake:      make(chan struct{}, 1),
	}
}

// Start starts listening and relaying in the background and returns; a
// database that cannot be reached is retried, not an error. Canceling ctx
// stops the Relay as Stop does. Start may be called once, and not after
// Stop: a stopped Relay does not start again.
func (r *Relay) Start(ctx context.Context) error {
	started := false
	r.startOnce.Do(func() {
		started = true
		ctx, r.cancel = context.WithCancel(ctx)
		r.done.Go(func() { r.listen(ctx) })
		r.done.Go(func() { r.work(ctx) })
	})
	switch {
	case started:
		return nil
	case r.stopped.Load():
		return errors.New("pgnotify: start: stopped: a Relay does not start again")
	}
	return errors.New("pgnotify: start: already started")
}

// Stop stops the Relay and waits for its goroutines. It is idempotent.
func (r *Relay) Stop() {
	r.stopped.Store(true) // before startOnce: a Start that finds it done sees this
	r.stopOnce.Do(func() {
		r.startOnce.Do(func() {}) // never start after Stop
		if r.cancel != nil {
			r.cancel()
		}
		r.done.Wait()
	})
}

// Listening reports whether the listening connection is up and listening.
func (r *Relay) Listening() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.listening
}

// Losses returns how many times the listening connection was lost or could
// not be opened (each is logged).
func (r *Relay) Losses() uint64 { return r.losses.Load() }

// OnCommit takes the changes of this replica's own commits (it is the
// group-commit writer's OnCommit). A change that follows on from what was
// published for its request is published at once; otherwise a commit of
// another replica came in between, and the request is re-read. It never
// waits on the database.
func (r *Relay) OnCommit(changes []store.Change) {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []store.Change
	for _, c := range changes {
		id, rev := c.Request.GetRequestId(), c.Request.GetRevision()
		if !r.broker.HasSubscribers(id) {
			delete(r.published, id)
			continue
		}
		p, known := r.published[id]
		switch {
		case !known && rev == 1:
			// The request's first change: it carries all its events,
			// which no watcher can have yet.
			out = append(out, c)
			r.published[id] = rev
		case !known:
			// Nothing published yet: where this commit's watchers
			// started is not known, so wait for its notification, which
			// comes in commit order with those of the other replicas
			// (or, while not listening, for the next Recheck).
		case rev <= p:
		case rev == p+1:
			out = append(out, c)
			r.published[id] = rev
		default:
			r.pending[id] = p
			r.signal()
		}
	}
	if len(out) > 0 {
		r.broker.Publish(out)
	}
}

// Resync re-reads every watched request, from revision 0 for those the
// Relay has published nothing for (their watchers drop the events they
// have). Call it once the database answers again after being unreachable
// from this replica: the listening connection may be silent for good (a
// failover behind the same address) without the Relay knowing yet. It
// does not wait for the read.
func (r *Relay) Resync() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.resync = true
	r.signal()
}

// notified takes a notification: request id changed to revision rev.
func (r *Relay) notified(id string, rev int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.broker.HasSubscribers(id) {
		delete(r.published, id)
		delete(r.pending, id)
		return
	}
	if p, known := r.published[id]; known {
		if rev > p {
			r.pending[id] = p
			r.signal()
		}
		return
	}
	// The first notification since the request was watched: its watchers
	// read their snapshot after subscribing, so at revision rev-1 or later
	// (the notification of rev-1, had it come later, would have been taken
	// first). Reading after rev-1 misses nothing.
	if after, ok := r.pending[id]; !ok || rev-1 < after {
		r.pending[id] = rev - 1
	}
	r.signal()
}

// signal wakes the worker. r.mu is held.
func (r *Relay) signal() {
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// take returns the requests to read now, each with the revision to read
// after, and forgets them.
func (r *Relay) take() map[string]int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	since := make(map[string]int64, len(r.pending))
	if r.resync {
		r.resync = false
		for _, id := range r.broker.Watched() {
			// Unknown: its watchers may be at any revision. Read from 0;
			// they drop the events they have.
			since[id] = 0
		}
	}
	for id, after := range r.pending {
		if cur, ok := since[id]; !ok || after < cur {
			since[id] = after
		}
	}
	clear(r.pending)
	for id := range since {
		if p, known := r.published[id]; known {
			since[id] = p
		} else if !r.broker.HasSubscribers(id) {
			delete(since, id)
		}
	}
	return since
}

// recheck queues every watched request the Relay has published for, and
// forgets those nobody watches any more; while not listening, it asks for
// every watched request.
func (r *Relay) recheck() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.listening {
		r.resync = true
	}
	for id, p := range r.published {
		if !r.broker.HasSubscribers(id) {
			delete(r.published, id)
			continue
		}
		r.pending[id] = p
	}
	if len(r.pending) > 0 || r.resync {
		r.signal()
	}
}

// retry puts back what take returned, after a failed read.
func (r *Relay) retry(since map[string]int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for id, after := range since {
		if cur, ok := r.pending[id]; !ok || after < cur {
			r.pending[id] = after
		}
	}
	r.signal()
}

// deliver publishes what was read: for each request, the change since the
// revision asked for, unless the Relay has moved past that revision
// meanwhile (one of this replica's commits), in which case it reads again
// from there rather than send events twice.
func (r *Relay) deliver(since map[string]int64, changes []store.Change) {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []store.Change
	for _, c := range changes {
		id, rev := c.Request.GetRequestId(), c.Request.GetRevision()
		if !r.broker.HasSubscribers(id) {
			delete(r.published, id)
			continue
		}
		p, known := r.published[id]
		switch {
		case known && rev <= p:
			continue
		case known && p != since[id]:
			r.pending[id] = p
			r.signal()
			continue
		}
		out = append(out, c)
		r.published[id] = rev
	}
	if len(out) > 0 {
		r.broker.Publish(out)
	}
}

// work reads and publishes what take returns, until ctx ends.
func (r *Relay) work(ctx context.Context) {
	tick := time.NewTicker(r.opts.Recheck)
	defer tick.Stop()
	backoff := r.opts.MinBackoff
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			r.recheck()
			continue
		case <-r.wake:
		}
		since := r.take()
		if len(since) == 0 {
			continue
		}
		rctx, cancel := context.WithTimeout(ctx, r.opts.Timeout)
		changes, err := r.src.ChangesSince(rctx, since)
		cancel()
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			r.log.Warn("reading changes failed; retrying", "requests", len(since), "in", backoff, "error", err)
			if !sleep(ctx, backoff) {
				return
			}
			backoff = min(2*backoff, r.opts.MaxBackoff)
			r.retry(since)
			continue
		}
		backoff = r.opts.MinBackoff
		r.deliver(since, changes)
	}
}

// listen keeps a LISTEN connection open until ctx ends, reconnecting with
// backoff.
func (r *Relay) listen(ctx context.Context) {
	backoff := r.opts.MinBackoff
	for {
		began := time.Now()
		err := r.session(ctx)
		if ctx.Err() != nil {
			return
		}
		r.losses.Add(1)
		if time.Since(began) > r.opts.MaxBackoff {
			backoff = r.opts.MinBackoff // it worked for a while
		}
		r.log.Warn("listening connection lost; reconnecting", "in", backoff, "error", err)
		if !sleep(ctx, backoff) {
			return
		}
		backoff = min(2*backoff, r.opts.MaxBackoff)
	}
}

// session connects, listens, asks for a resync (what was committed before
// LISTEN took effect is read; what comes after is notified), then takes
// notifications until the connection fails or ctx ends.
func (r *Relay) session(ctx context.Context) error {
	cctx, cancel := context.WithTimeout(ctx, r.opts.Timeout)
	conn, err := pgx.ConnectConfig(cctx, r.src.ListenConfig())
	if err == nil {
		_, err = conn.Exec(cctx, "LISTEN "+pgx.Identifier{r.src.Channel()}.Sanitize())
	}
	if err == nil && r.afterListen != nil {
		err = r.afterListen(cctx, conn)
	}
	cancel()
	if conn != nil {
		defer func() {
			cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
			defer cancel()
			conn.Close(cctx)
		}()
	}
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	r.mu.Lock()
	r.resync, r.listening = true, true
	r.signal()
	r.mu.Unlock()
	defer func() {
		r.mu.Lock()
		r.listening = false
		r.mu.Unlock()
	}()
	r.log.Info("listening for the commits of every replica", "channel", r.src.Channel())

	for {
		wctx, cancel := context.WithTimeout(ctx, r.opts.Ping)
		n, err := conn.WaitForNotification(wctx)
		cancel()
		switch {
		case err == nil:
			r.heard(n.Payload)
		case ctx.Err() != nil:
			return ctx.Err()
		case errors.Is(err, context.DeadlineExceeded):
			if err := r.ping(ctx, conn); err != nil {
				return err
			}
		default:
			return fmt.Errorf("wait for notification: %w", err)
		}
	}
}

// pingPrefix starts the payload of a Relay's ping: every Relay on the
// channel hears it, and only the one that sent it waits for it.
const pingPrefix = "ping:"

// heard takes the payload of a notification on the channel.
func (r *Relay) heard(payload string) {
	if strings.HasPrefix(payload, pingPrefix) {
		return
	}
	note, err := pgstore.ParseNotification(payload)
	if err != nil {
		r.log.Warn("ignoring a notification", "error", err)
		return
	}
	r.notified(note.RequestID, note.Revision)
}

// ping makes sure, after a quiet while, that the listening connection is
// still there and still hears the channel: it sends a notification as
// commits do, from another connection, and waits for it on the listening
// one, taking those that come before it. A connection that answers queries
// but no longer gets notifications fails it too: behind a connection
// pooler in transaction mode, LISTEN lasts only its own transaction, and
// the commits of other replicas would never reach this one's watchers. (A
// notification sent from the listening connection itself can come back
// there even so: the pooler may run it on the very backend that listens.)
// When no notification can be sent in time (every pooled connection busy,
// or the database down), it only checks that the listening connection
// answers.
func (r *Relay) ping(ctx context.Context, conn *pgx.Conn) error {
	payload := pingPrefix + strconv.FormatUint(rand.Uint64(), 36)
	nctx, cancel := context.WithTimeout(ctx, r.opts.Ping)
	err := r.src.Notify(nctx, payload)
	cancel()
	pctx, cancel := context.WithTimeout(ctx, r.opts.Ping)
	defer cancel()
	if err != nil {
		if err := conn.Ping(pctx); err != nil {
			return fmt.Errorf("ping: %w", err)
		}
		return nil
	}
	for {
		n, err := conn.WaitForNotification(pctx)
		switch {
		case err == nil && n.Payload == payload:
			return nil
		case err == nil:
			r.heard(n.Payload)
		case ctx.Err() == nil && errors.Is(err, context.DeadlineExceeded):
			return fmt.Errorf("ping: a notification sent from another connection did not reach the listening one within %s: it went silent, or LISTEN is not in effect on it (a connection pooler in transaction mode?)", r.opts.Ping)
		default:
			return fmt.Errorf("ping: %w", err)
		}
	}
}

// sleep waits d or until ctx ends, reporting whether d passed.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
