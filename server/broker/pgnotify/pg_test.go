package pgnotify_test

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	eventsv1 "github.com/otpless-events/otpless-events/gen/otpless/events/v1"
	"github.com/otpless-events/otpless-events/server/broker"
	"github.com/otpless-events/otpless-events/server/broker/pgnotify"
	"github.com/otpless-events/otpless-events/server/store"
	"github.com/otpless-events/otpless-events/server/store/pgstore"
	"github.com/otpless-events/otpless-events/server/store/pgstore/pgtest"
)

func openStore(t *testing.T, dsn string) *pgstore.Store {
	t.Helper()
	s, err := pgstore.Open(t.Context(), dsn, pgstore.WithTimeout(2*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// replica is a store with its broker and relay, as server wires them.
type replica struct {
	store  *pgstore.Store
	broker *broker.Broker
	relay  *pgnotify.Relay
}

func startReplica(t *testing.T, dsn string) *replica {
	t.Helper()
	return startReplicaWith(t, dsn, nil)
}

// startReplicaWith starts a replica whose relay options mutate adjusts,
// running each of before on the relay before it starts.
func startReplicaWith(t *testing.T, dsn string, mutate func(*pgnotify.Options), before ...func(*pgnotify.Relay)) *replica {
	t.Helper()
	s := openStore(t, dsn)
	b := broker.New(1 << 14)
	opts := pgnotify.Options{
		MinBackoff: 10 * time.Millisecond, MaxBackoff: 200 * time.Millisecond,
		Logger: slog.New(slog.NewTextHandler(t.Output(), nil)),
	}
	if mutate != nil {
		mutate(&opts)
	}
	r := pgnotify.New(s, b, opts)
	for _, f := range before {
		f(r)
	}
	if err := r.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Stop(); b.Close() })
	return &replica{s, b, r}
}

// commit commits one event of id on the replica and hands the changes to
// its relay, as the group-commit writer does.
func (rp *replica) commit(t *testing.T, id, eventID string) {
	now := time.Now()
	e := &eventsv1.Event{
		EventId: eventID, RequestId: id, Kind: eventsv1.EventKind_EVENT_KIND_DELIVERY, Status: "SENT", Channel: "SMS",
		EventTime: timestamppb.New(now), ReceiveTime: timestamppb.New(now),
	}
	_, changes, err := rp.store.Commit(context.Background(), []store.Webhook{{Body: []byte("{}"), Received: now, Events: []*eventsv1.Event{e}}})
	if err != nil {
		t.Errorf("commit %s: %v", eventID, err)
		return
	}
	rp.relay.OnCommit(changes)
}

// follow collects a subscription's changes, as a watcher at revision from
// does, until the request reaches rev, and checks that each event came
// once, in revision order.
func follow(t *testing.T, sub *broker.Subscription, from, rev int64, wantEvents int) *eventsv1.AuthRequest {
	t.Helper()
	deadline := time.After(20 * time.Second)
	var (
		last = from
		snap *eventsv1.AuthRequest
		seen = map[string]int{}
	)
	for last < rev {
		select {
		case <-sub.Ready():
		case <-deadline:
			t.Fatalf("stuck at revision %d, want %d", last, rev)
		}
		changes, dropped := sub.Next()
		if dropped != 0 {
			t.Fatal("the subscription dropped changes")
		}
		for _, c := range changes {
			if c.Request.GetRevision() <= last {
				t.Fatalf("revision %d after %d", c.Request.GetRevision(), last)
			}
			for _, e := range c.EventsAfter(last) {
				seen[e.GetEventId()]++
			}
			last, snap = c.Request.GetRevision(), c.Request
		}
	}
	for id, n := range seen {
		if n != 1 {
			t.Errorf("event %s delivered %d times", id, n)
		}
	}
	if len(seen) != wantEvents {
		t.Errorf("%d events delivered, want %d", len(seen), wantEvents)
	}
	return snap
}

// TestReplicasWatchEachOther: two replicas commit events of the same
// requests at once; the watchers on each replica get every change, whichever
// replica made it, each event once, in revision order, ending at the stored
// snapshot.
func TestReplicasWatchEachOther(t *testing.T) {
	t.Parallel()
	dsn, _ := pgtest.Schema(t)
	replicas := []*replica{startReplica(t, dsn), startReplica(t, dsn)}
	ids := []string{"w-a", "w-b", "w-c"}
	subs := map[string][]*broker.Subscription{}
	for _, id := range ids {
		for _, rp := range replicas {
			sub := rp.broker.Subscribe(id)
			t.Cleanup(sub.Close)
			subs[id] = append(subs[id], sub)
		}
	}
	const perWriter = 20
	var wg sync.WaitGroup
	for i, rp := range replicas {
		for w := range 3 {
			wg.Go(func() {
				rng := rand.New(rand.NewPCG(uint64(i), uint64(w)))
				for k := range perWriter {
					id := ids[rng.IntN(len(ids))]
					rp.commit(t, id, fmt.Sprintf("%s-%d-%d-%d", id, i, w, k))
				}
			})
		}
	}
	wg.Wait()
	for _, id := range ids {
		want, err := replicas[0].store.GetRequest(t.Context(), id)
		if err != nil {
			t.Fatal(err)
		}
		for i, sub := range subs[id] {
			got := follow(t, sub, 0, want.GetRevision(), int(want.GetEventCount()))
			if !proto.Equal(got, want) {
				t.Errorf("%s on replica %d ended at\n%s\nwant\n%s", id, i, protojson.Format(got), protojson.Format(want))
			}
		}
	}
}

// cutAndOther starts two replicas on a fresh schema: cut reaches the
// database through proxy, which can cut it off, and other directly.
func cutAndOther(t *testing.T) (proxy *pgtest.Proxy, cut, other *replica) {
	t.Helper()
	dsn, _ := pgtest.Schema(t)
	proxy = pgtest.NewProxy(t, pgtest.Addr(t, dsn))
	return proxy, startReplica(t, pgtest.WithAddr(t, dsn, proxy.Addr())), startReplica(t, dsn)
}

// TestReconnect: while a replica's connection to the database is cut,
// another commits; once it is back, the replica's relay reconnects and its
// watchers get those changes without any further commit.
func TestReconnect(t *testing.T) {
	t.Parallel()
	proxy, cut, other := cutAndOther(t)
	sub := cut.broker.Subscribe("rc")
	defer sub.Close()

	other.commit(t, "rc", "rc-1")
	follow(t, sub, 0, 1, 1)

	proxy.Cut()
	other.commit(t, "rc", "rc-2")
	other.commit(t, "rc", "rc-3")
	proxy.Restore()
	got := follow(t, sub, 1, 3, 2)
	if got.GetEventCount() != 3 {
		t.Errorf("snapshot after reconnecting has %d events, want 3", got.GetEventCount())
	}
}

// TestNewWatcherAfterReconnect: a request was watched, and is not any more
// when the connection is cut; another replica commits meanwhile. A watcher
// that starts once the replica listens again gets, with the next commit,
// only the events its snapshot does not count.
func TestNewWatcherAfterReconnect(t *testing.T) {
	t.Parallel()
	dsn, _ := pgtest.Schema(t)
	proxy := pgtest.NewProxy(t, pgtest.Addr(t, dsn))
	// No recheck: the commit after the watcher starts reaches it by its
	// notification, not by a re-read that could come at any time.
	cut := startReplicaWith(t, pgtest.WithAddr(t, dsn, proxy.Addr()), noRecheck)
	other := startReplica(t, dsn)
	first := cut.broker.Subscribe("nw")
	other.commit(t, "nw", "nw-1")
	follow(t, first, 0, 1, 1)
	first.Close()

	proxy.Cut()
	other.commit(t, "nw", "nw-2")
	other.commit(t, "nw", "nw-3")
	proxy.Restore()
	// The replica reconnects on its own; wait until it reads again.
	var snap *eventsv1.AuthRequest
	for deadline := time.Now().Add(20 * time.Second); snap.GetRevision() != 3; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the cut replica reads revision %d, want 3", snap.GetRevision())
		}
		snap, _ = cut.store.GetRequest(t.Context(), "nw")
	}
	// And until its relay listens again, and has taken the re-read of the
	// watched requests that follows (none: nobody watches nw now). A
	// watcher that started before that re-read would be sent revision 3,
	// which its snapshot has.
	for deadline := time.Now().Add(20 * time.Second); cut.relay.Losses() == 0 || !pgnotify.Settled(cut.relay); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the cut replica's relay does not listen again (%d losses)", cut.relay.Losses())
		}
	}

	second := cut.broker.Subscribe("nw")
	defer second.Close()
	snap, err := cut.store.GetRequest(t.Context(), "nw")
	if err != nil {
		t.Fatal(err)
	}
	other.commit(t, "nw", "nw-4")
	follow(t, second, snap.GetRevision(), 4, int(4-snap.GetRevision()))
}

// noRecheck leaves a relay only its notifications, its resyncs and its
// reconnections to learn of other replicas' commits.
func noRecheck(o *pgnotify.Options) { o.Recheck = time.Hour }

// TestSilentConnectionGivenUp: when the listening connection goes silent
// for good (a partition, healed for new connections only: a failover
// behind the same address), the relay finds out by itself, reconnects and
// reads what it missed, so its watchers get another replica's commits.
func TestSilentConnectionGivenUp(t *testing.T) {
	t.Parallel()
	dsn, _ := pgtest.Schema(t)
	proxy := pgtest.NewProxy(t, pgtest.Addr(t, dsn))
	cut := startReplicaWith(t, pgtest.WithAddr(t, dsn, proxy.Addr()), noRecheck)
	other := startReplica(t, dsn)
	sub := cut.broker.Subscribe("sc")
	defer sub.Close()
	other.commit(t, "sc", "sc-1")
	follow(t, sub, 0, 1, 1)

	proxy.Freeze()
	proxy.RestoreNew()
	start := time.Now()
	other.commit(t, "sc", "sc-2")
	follow(t, sub, 1, 2, 1)
	t.Logf("the commit reached the watcher %s after the listening connection went silent", time.Since(start).Round(time.Millisecond))
	proxy.Cut() // pgx gives a connection given up 15 s to say goodbye, and closing the store waits
}

// TestListenNotInEffect: a listening connection that answers queries but
// gets no notifications (behind a pooler in transaction mode, LISTEN lasts
// only its own transaction) is found out by the relay's ping, a
// notification sent from another connection. The relay says why,
// reconnects and reads what it missed, so its watchers get another
// replica's commits.
func TestListenNotInEffect(t *testing.T) {
	t.Parallel()
	dsn, _ := pgtest.Schema(t)
	var said atomic.Bool
	deaf := startReplicaWith(t, dsn, func(o *pgnotify.Options) {
		noRecheck(o)
		o.Ping = 200 * time.Millisecond
		o.Logger = slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr {
			if a.Key == "error" && strings.Contains(a.Value.String(), "LISTEN is not in effect") {
				said.Store(true)
			}
			return a
		}}))
	}, func(r *pgnotify.Relay) {
		pgnotify.SetAfterListen(r, func(ctx context.Context, conn *pgx.Conn) error {
			_, err := conn.Exec(ctx, "UNLISTEN *")
			return err
		})
	})
	other := startReplica(t, dsn)
	sub := deaf.broker.Subscribe("deaf")
	defer sub.Close()
	other.commit(t, "deaf", "deaf-1")
	follow(t, sub, 0, 1, 1)
	for deadline := time.Now().Add(20 * time.Second); !said.Load(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the relay did not log that LISTEN is not in effect")
		}
	}
}

// pingCounter is a store that counts the notifications a relay sends
// through it.
type pingCounter struct {
	*pgstore.Store
	sent atomic.Int64
}

func (p *pingCounter) Notify(ctx context.Context, payload string) error {
	p.sent.Add(1)
	return p.Store.Notify(ctx, payload)
}

// TestPingTravelsAsCommitsDo: the ping of a quiet listening connection is a
// notification sent from another connection, the way other replicas'
// commits come; sent from the listening connection itself, a pooler in
// transaction mode can run it on the very backend that listens, and the
// ping passes while the commits are lost. On a connection that hears the
// channel, the pings pass: the listener is never given up.
func TestPingTravelsAsCommitsDo(t *testing.T) {
	t.Parallel()
	dsn, _ := pgtest.Schema(t)
	src := &pingCounter{Store: openStore(t, dsn)}
	b := broker.New(16)
	// A ping's notification must come back within Ping: 1 s leaves room
	// for a loaded machine.
	r := pgnotify.New(src, b, pgnotify.Options{Ping: time.Second, Recheck: time.Hour, Logger: slog.New(slog.NewTextHandler(t.Output(), nil))})
	if err := r.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Stop(); b.Close() })
	for deadline := time.Now().Add(20 * time.Second); src.sent.Load() < 3; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%d pings sent through the store in 20 s, want 3", src.sent.Load())
		}
	}
	if n := r.Losses(); n != 0 || !r.Listening() {
		t.Errorf("after 3 pings: %d losses, listening %v; want none, and listening", n, r.Listening())
	}
}

// TestPingWithBusyPool: while every pooled connection waits on a lock, no
// commit notifies, the listener is quiet and its ping cannot send a
// notification; that says nothing against the listening connection, which
// is kept.
func TestPingWithBusyPool(t *testing.T) {
	t.Parallel()
	dsn, schema := pgtest.Schema(t)
	s, err := pgstore.Open(t.Context(), dsn, pgstore.WithTimeout(10*time.Second), pgstore.WithMaxConns(1))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	b := broker.New(16)
	r := pgnotify.New(s, b, pgnotify.Options{Ping: 500 * time.Millisecond, Recheck: time.Hour, Logger: slog.New(slog.NewTextHandler(t.Output(), nil))})
	if err := r.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Stop(); b.Close() })

	locker, err := pgx.Connect(t.Context(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer locker.Close(context.Background())
	tx, err := locker.Begin(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(t.Context(), "LOCK TABLE "+pgx.Identifier{schema, "requests"}.Sanitize()+" IN ACCESS EXCLUSIVE MODE"); err != nil {
		t.Fatal(err)
	}
	blocked := make(chan error, 1)
	go func() { // takes the pool's only connection until the lock goes
		now := time.Now()
		e := &eventsv1.Event{EventId: "busy-1", RequestId: "busy", Kind: eventsv1.EventKind_EVENT_KIND_DELIVERY, Status: "SENT", Channel: "SMS", EventTime: timestamppb.New(now), ReceiveTime: timestamppb.New(now)}
		_, _, err := s.Commit(context.Background(), []store.Webhook{{Body: []byte("{}"), Received: now, Events: []*eventsv1.Event{e}}})
		blocked <- err
	}()
	time.Sleep(3 * time.Second) // a ping every second or so, each finding the pool busy (the commit waits up to 10 s)
	if err := tx.Rollback(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := <-blocked; err != nil {
		t.Fatal(err)
	}
	if n := r.Losses(); n != 0 {
		t.Errorf("%d listening connections given up while only the pool was busy", n)
	}
}

// TestResyncAfterFailover: after a failover behind the same address, the
// listening connection stays silent until the relay's ping gives it up
// (here after a minute); Resync, which the server calls once its store
// answers again, reads what was committed meanwhile long before that, also
// for a request whose changes the relay had passed on nothing of.
func TestResyncAfterFailover(t *testing.T) {
	t.Parallel()
	dsn, _ := pgtest.Schema(t)
	proxy := pgtest.NewProxy(t, pgtest.Addr(t, dsn))
	other := startReplica(t, dsn)
	other.commit(t, "rs", "rs-1") // before the relay listens: it passes on nothing of rs
	cut := startReplicaWith(t, pgtest.WithAddr(t, dsn, proxy.Addr()), func(o *pgnotify.Options) {
		noRecheck(o)
		o.Ping = 30 * time.Second
	})
	probe := cut.broker.Subscribe("probe") // the relay listens once a notification comes through
	defer probe.Close()
	other.commit(t, "probe", "probe-1")
	follow(t, probe, 0, 1, 1)
	sub := cut.broker.Subscribe("rs") // a watcher whose snapshot is at revision 1
	defer sub.Close()

	proxy.Freeze()
	proxy.RestoreNew()
	other.commit(t, "rs", "rs-2")
	cut.relay.Resync()
	follow(t, sub, 1, 2, 1) // within 20 s: the ping would take a minute
	proxy.Cut()             // pgx gives a connection given up 15 s to say goodbye, and closing the store waits
}

// TestListenOutlastsIdleSessionTimeout: an idle_session_timeout of the
// role (here of the DSN), which ends sessions left idle that long, does
// not end the listening connection, idle while it waits for
// notifications: it was lost, warned of and counted as a loss, each time.
func TestListenOutlastsIdleSessionTimeout(t *testing.T) {
	t.Parallel()
	dsn, schema := pgtest.Schema(t)
	app := "otpless-test-" + schema
	// 1 s, not less: the timeout also runs between the connection's start
	// and the query that lifts it, which a loaded machine (CI's, with
	// 100 ms) can delay past it.
	for name, value := range map[string]string{"application_name": app, "idle_session_timeout": "1000"} {
		dsn = pgtest.WithParam(t, dsn, name, value)
	}
	// No ping, which could run a query on the listening connection.
	rp := startReplicaWith(t, dsn, func(o *pgnotify.Options) {
		noRecheck(o)
		o.Ping = time.Hour
	})
	observer, err := pgx.Connect(t.Context(), pgtest.DSN(t))
	if err != nil {
		t.Fatal(err)
	}
	defer observer.Close(context.Background())
	// Until the listening session has been idle three times the timeout,
	// by the database's clock.
	for idle := false; !idle; time.Sleep(10 * time.Millisecond) {
		if n := rp.relay.Losses(); n > 0 {
			t.Fatalf("the listening connection was lost %d times", n)
		}
		if err := observer.QueryRow(t.Context(), `SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE application_name = $1
			AND query LIKE 'LISTEN %' AND state = 'idle' AND now() - state_change > interval '3 seconds')`, app).Scan(&idle); err != nil {
			t.Fatal(err)
		}
	}
	if n := rp.relay.Losses(); n > 0 {
		t.Fatalf("the listening connection was lost %d times", n)
	}
}
