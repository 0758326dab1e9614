package groupcommit

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	eventsv1 "github.com/otpless-events/otpless-events/gen/otpless/events/v1"
	"github.com/otpless-events/otpless-events/server/store"
	"github.com/otpless-events/otpless-events/server/store/sqlitestore"
)

func openSQLite(tb testing.TB) *sqlitestore.Store {
	tb.Helper()
	s, err := sqlitestore.Open(tb.Context(), filepath.Join(tb.TempDir(), "events.db"))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { s.Close() })
	return s
}

// countingStore counts Commit calls.
type countingStore struct {
	store.Store
	commits atomic.Int64
}

func (c *countingStore) Commit(ctx context.Context, batch []store.Webhook) ([]store.Result, []store.Change, error) {
	c.commits.Add(1)
	return c.Store.Commit(ctx, batch)
}

// deliveryWebhook is a webhook with one delivery report, event k of
// requestID; the same (requestID, k) is the same event.
func deliveryWebhook(requestID string, k int) store.Webhook {
	at := time.Date(2026, 11, 26, 10, 0, 0, 0, time.UTC)
	statuses := []string{"SENT", "DELIVERED", "READ", "FAILED"}
	e := &eventsv1.Event{
		EventId:     fmt.Sprintf("%s-%d", requestID, k),
		RequestId:   requestID,
		Kind:        eventsv1.EventKind_EVENT_KIND_DELIVERY,
		Status:      statuses[k%len(statuses)],
		Channel:     "WHATSAPP",
		EventTime:   timestamppb.New(at.Add(time.Duration(k) * time.Second)),
		ReceiveTime: timestamppb.New(at.Add(time.Minute)),
	}
	body := fmt.Sprintf(`{"data":{"requestId":%q,"status":%q,"channel":"WHATSAPP"},"eventType":"DLR","timestamp":%d}`,
		requestID, e.Status, e.EventTime.AsTime().UnixMilli())
	return store.Webhook{Body: []byte(body), Received: at.Add(time.Minute), Events: []*eventsv1.Event{e}}
}

// TestSQLite runs many submitters against the real store, some retrying
// each other's webhooks: every event is stored and reported new once, every
// caller is answered after its change is published, and the published
// changes add up to the stored snapshots.
func TestSQLite(t *testing.T) {
	t.Parallel()
	s := &countingStore{Store: openSQLite(t)}
	var (
		mu        sync.Mutex
		published = map[string][]store.Change{}
	)
	w := start(t, s, Options{OnCommit: func(changes []store.Change) {
		mu.Lock()
		defer mu.Unlock()
		for _, c := range changes {
			rid := c.Request.GetRequestId()
			published[rid] = append(published[rid], c)
		}
	}})

	const goroutines, each, requests = 16, 20, 4
	var (
		wg       sync.WaitGroup
		newCount sync.Map // event id -> *atomic.Int64
	)
	for g := range goroutines {
		wg.Go(func() {
			for i := range each {
				// Goroutines g and g+1 send the same webhooks: retries.
				k := (g/2)*each + i
				wh := deliveryWebhook(fmt.Sprintf("r%d", k%requests), k)
				r, err := w.Submit(t.Context(), wh)
				if err != nil {
					t.Errorf("Submit: %v", err)
					return
				}
				if len(r.Events) != 1 {
					t.Errorf("result %+v, want one event", r)
					return
				}
				rid, rev := wh.Events[0].GetRequestId(), r.Events[0].Revision
				mu.Lock()
				seen := slices.ContainsFunc(published[rid], func(c store.Change) bool { return c.Request.GetRevision() >= rev })
				mu.Unlock()
				if !seen {
					t.Errorf("%s answered at revision %d before that change was published", rid, rev)
				}
				if !r.Events[0].Duplicate {
					n, _ := newCount.LoadOrStore(wh.Events[0].GetEventId(), new(atomic.Int64))
					n.(*atomic.Int64).Add(1)
				}
			}
		})
	}
	wg.Wait()

	distinct := 0
	newCount.Range(func(id, n any) bool {
		distinct++
		if got := n.(*atomic.Int64).Load(); got != 1 {
			t.Errorf("event %v reported new %d times", id, got)
		}
		return true
	})
	if want := goroutines / 2 * each; distinct != want {
		t.Errorf("%d distinct events reported new, want %d", distinct, want)
	}

	mu.Lock()
	defer mu.Unlock()
	total := int32(0)
	for r := range requests {
		rid := fmt.Sprintf("r%d", r)
		snap, err := s.GetRequest(t.Context(), rid)
		if err != nil {
			t.Fatal(err)
		}
		changes := published[rid]
		for i, c := range changes {
			if c.Request.GetRevision() != int64(i+1) {
				t.Errorf("%s: change %d published at revision %d", rid, i, c.Request.GetRevision())
			}
		}
		if snap.GetRevision() != int64(len(changes)) {
			t.Errorf("%s: revision %d, %d changes published", rid, snap.GetRevision(), len(changes))
		}
		total += snap.GetEventCount()
	}
	if int(total) != distinct {
		t.Errorf("snapshots count %d events, want %d", total, distinct)
	}
	t.Logf("%d submissions in %d commits", goroutines*each, s.commits.Load())
	if s.commits.Load() >= goroutines*each {
		t.Errorf("%d commits for %d submissions: no batching", s.commits.Load(), goroutines*each)
	}
}

// BenchmarkGroupCommit measures webhooks/s through a Writer on SQLite with
// parallel submitters, each webhook a new event; requests get four events
// each, so the cost per commit stays put as b.N grows.
func BenchmarkGroupCommit(b *testing.B) {
	s := &countingStore{Store: openSQLite(b)}
	w := New(s, Options{})
	if err := w.Start(b.Context()); err != nil {
		b.Fatal(err)
	}
	defer w.Stop(b.Context())
	benchmarkParallel(b, s, func(wh store.Webhook) error {
		_, err := w.Submit(b.Context(), wh)
		return err
	})
}

// BenchmarkCommitDirect is the baseline: the same load with one
// store.Commit per webhook.
func BenchmarkCommitDirect(b *testing.B) {
	s := &countingStore{Store: openSQLite(b)}
	benchmarkParallel(b, s, func(wh store.Webhook) error {
		_, _, err := s.Commit(b.Context(), []store.Webhook{wh})
		return err
	})
}

func benchmarkParallel(b *testing.B, s *countingStore, submit func(store.Webhook) error) {
	var next atomic.Int64
	b.SetParallelism(32)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			k := int(next.Add(1))
			if err := submit(deliveryWebhook(fmt.Sprintf("r%d", k/4), k)); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "webhooks/s")
	b.ReportMetric(float64(b.N)/float64(s.commits.Load()), "webhooks/commit")
}
