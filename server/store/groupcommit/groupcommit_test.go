package groupcommit

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	eventsv1 "github.com/otpless-events/otpless-events/gen/otpless/events/v1"
	"github.com/otpless-events/otpless-events/server/store"
)

// fakeStore stores nothing: webhook n (its body is n) gets revision n for
// its one event and one Change of request "r<n>". hook, when set, runs
// first in every Commit and can block it or fail it; a done ctx fails it.
type fakeStore struct {
	store.Store // only Commit is used

	hook func(ctx context.Context, call int, batch []store.Webhook) error
	// forget keeps no batch (committed reports none), so that the store
	// holds none of the webhooks it answered.
	forget bool
	// answer, when set, changes what a commit that succeeded returns.
	answer func([]store.Result, []store.Change) ([]store.Result, []store.Change)

	mu      sync.Mutex
	calls   int
	batches [][]store.Webhook
}

func (f *fakeStore) Commit(ctx context.Context, batch []store.Webhook) ([]store.Result, []store.Change, error) {
	f.mu.Lock()
	call := f.calls
	f.calls++
	if !f.forget {
		f.batches = append(f.batches, batch)
	}
	f.mu.Unlock()
	if f.hook != nil {
		if err := f.hook(ctx, call, batch); err != nil {
			return nil, nil, err
		}
	}
	if err := ctx.Err(); err != nil {
		return nil, nil, err
	}
	results := make([]store.Result, len(batch))
	changes := make([]store.Change, len(batch))
	for i, wh := range batch {
		n := number(wh)
		results[i] = store.Result{Events: []store.EventResult{{Revision: int64(n)}}}
		changes[i] = store.Change{Request: &eventsv1.AuthRequest{RequestId: "r" + strconv.Itoa(n), Revision: int64(n)}}
	}
	if f.answer != nil {
		results, changes = f.answer(results, changes)
	}
	return results, changes, nil
}

// committed returns the numbers of all committed webhooks and the batch
// sizes.
func (f *fakeStore) committed() (numbers, sizes []int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, b := range f.batches {
		sizes = append(sizes, len(b))
		for _, wh := range b {
			numbers = append(numbers, number(wh))
		}
	}
	return numbers, sizes
}

func webhook(n int) store.Webhook {
	return store.Webhook{
		Body:     []byte(strconv.Itoa(n)),
		Received: time.Now(),
		Events:   []*eventsv1.Event{{EventId: "e" + strconv.Itoa(n), RequestId: "r" + strconv.Itoa(n)}},
	}
}

func number(wh store.Webhook) int {
	n, err := strconv.Atoi(string(wh.Body))
	if err != nil {
		panic(err)
	}
	return n
}

// gate blocks the first Commit until released, signaling entered when it
// gets there; later Commits pass.
type gate struct {
	entered chan int // batch size of the first Commit
	release chan struct{}
}

func newGate() *gate {
	return &gate{entered: make(chan int, 1), release: make(chan struct{})}
}

func (g *gate) hook(ctx context.Context, call int, batch []store.Webhook) error {
	if call > 0 {
		return nil
	}
	g.entered <- len(batch)
	select {
	case <-g.release:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// start returns a started Writer on s, stopped at the end of the test.
func start(t *testing.T, s store.Store, opts Options) *Writer {
	t.Helper()
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.NewTextHandler(t.Output(), nil))
	}
	w := New(s, opts)
	if err := w.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := w.Stop(ctx); err != nil {
			t.Errorf("Stop: %v", err)
		}
	})
	return w
}

// recv returns the next value of ch, or fails the test with a goroutine
// dump if none comes in 10s: a deadlock guard, not a wait.
func recv[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(10 * time.Second):
		pprof.Lookup("goroutine").WriteTo(os.Stderr, 2)
		t.Fatalf("timed out waiting for %s", what)
		panic("unreachable")
	}
}

// submitAsync runs Submit in a goroutine; the channel yields its outcome.
func submitAsync(ctx context.Context, w *Writer, wh store.Webhook) <-chan outcome {
	ch := make(chan outcome, 1)
	go func() {
		r, err := w.Submit(ctx, wh)
		ch <- outcome{r, err}
	}()
	return ch
}

// holdFirstBatch starts w's first commit with webhook 0 and returns once
// the store holds it; enqueue then queues behind it.
func holdFirstBatch(t *testing.T, w *Writer, g *gate) <-chan outcome {
	t.Helper()
	first := submitAsync(t.Context(), w, webhook(0))
	if n := recv(t, g.entered, "the first commit"); n != 1 {
		t.Fatalf("first batch has %d webhooks, want 1", n)
	}
	return first
}

func enqueueAll(t *testing.T, w *Writer, from, to int) []*item {
	t.Helper()
	var items []*item
	for n := from; n < to; n++ {
		it, err := w.enqueue(t.Context(), webhook(n))
		if err != nil {
			t.Fatalf("enqueue %d: %v", n, err)
		}
		items = append(items, it)
	}
	return items
}

func wantResult(t *testing.T, n int, o outcome) {
	t.Helper()
	if o.err != nil {
		t.Errorf("webhook %d: %v", n, o.err)
		return
	}
	if len(o.result.Events) != 1 || o.result.Events[0].Revision != int64(n) {
		t.Errorf("webhook %d got result %+v, want its own (revision %d)", n, o.result, n)
	}
}

func TestBatching(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		maxBatch, queued int
		wantSizes        []int
	}{
		{maxBatch: 100, queued: 50, wantSizes: []int{1, 50}},
		{maxBatch: 10, queued: 25, wantSizes: []int{1, 10, 10, 5}},
		{maxBatch: 1, queued: 3, wantSizes: []int{1, 1, 1, 1}},
	} {
		t.Run(fmt.Sprintf("max%d_queued%d", tt.maxBatch, tt.queued), func(t *testing.T) {
			t.Parallel()
			g := newGate()
			fs := &fakeStore{hook: g.hook}
			w := start(t, fs, Options{MaxBatch: tt.maxBatch})
			first := holdFirstBatch(t, w, g)
			items := enqueueAll(t, w, 1, 1+tt.queued)
			close(g.release)

			wantResult(t, 0, recv(t, first, "webhook 0"))
			for i, it := range items {
				wantResult(t, i+1, recv(t, it.done, "a queued webhook"))
			}
			if _, sizes := fs.committed(); !slices.Equal(sizes, tt.wantSizes) {
				t.Errorf("batch sizes %v, want %v", sizes, tt.wantSizes)
			}
		})
	}
}

func TestConcurrentSubmitters(t *testing.T) {
	t.Parallel()
	fs := &fakeStore{}
	w := start(t, fs, Options{MaxBatch: 64})
	const goroutines, each = 32, 50
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Go(func() {
			for i := range each {
				n := g*each + i
				r, err := w.Submit(t.Context(), webhook(n))
				wantResult(t, n, outcome{r, err})
			}
		})
	}
	wg.Wait()
	numbers, sizes := fs.committed()
	slices.Sort(numbers)
	if len(numbers) != goroutines*each || numbers[0] != 0 || numbers[len(numbers)-1] != goroutines*each-1 {
		t.Errorf("committed %d webhooks, want each of %d once", len(numbers), goroutines*each)
	}
	t.Logf("%d webhooks in %d commits", len(numbers), len(sizes))
}

// TestOverloaded: a queue of QueueSize webhooks, the smallest too, is full
// with that many waiting behind the commit in flight.
func TestOverloaded(t *testing.T) {
	t.Parallel()
	for _, size := range []int{1, 2} {
		t.Run(fmt.Sprint(size), func(t *testing.T) {
			t.Parallel()
			g := newGate()
			w := start(t, &fakeStore{hook: g.hook}, Options{QueueSize: size})
			first := holdFirstBatch(t, w, g)
			items := enqueueAll(t, w, 1, size+1) // the queue is full now

			_, err := w.Submit(t.Context(), webhook(size+1))
			if !errors.Is(err, store.ErrOverloaded) {
				t.Fatalf("Submit to a full queue: %v, want ErrOverloaded", err)
			}
			close(g.release)
			wantResult(t, 0, recv(t, first, "webhook 0"))
			for i, it := range items {
				wantResult(t, i+1, recv(t, it.done, "a queued webhook"))
			}
			// Room again.
			r, err := w.Submit(t.Context(), webhook(size+2))
			wantResult(t, size+2, outcome{r, err})
		})
	}
}

func TestCommitFailure(t *testing.T) {
	t.Parallel()
	diskOnFire := errors.New("disk I/O error")
	for _, tt := range []struct {
		name    string
		err     error
		want    []error
		wantNot error
	}{
		{name: "plain", err: diskOnFire, want: []error{store.ErrUnavailable, diskOnFire}},
		{name: "unavailable", err: fmt.Errorf("x: %w", store.ErrUnavailable), want: []error{store.ErrUnavailable}},
		{name: "closed", err: fmt.Errorf("x: %w", store.ErrClosed), want: []error{store.ErrClosed}, wantNot: store.ErrUnavailable},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			g := newGate()
			var onCommit int
			fs := &fakeStore{hook: func(ctx context.Context, call int, batch []store.Webhook) error {
				if err := g.hook(ctx, call, batch); err != nil {
					return err
				}
				return tt.err
			}}
			w := start(t, fs, Options{OnCommit: func([]store.Change) { onCommit++ }})
			first := holdFirstBatch(t, w, g)
			items := enqueueAll(t, w, 1, 20)
			close(g.release)

			outcomes := []outcome{recv(t, first, "webhook 0")}
			for _, it := range items {
				outcomes = append(outcomes, recv(t, it.done, "a queued webhook"))
			}
			for n, o := range outcomes {
				if len(o.result.Events) != 0 {
					t.Errorf("webhook %d: got a result with the error", n)
				}
				for _, want := range tt.want {
					if !errors.Is(o.err, want) {
						t.Errorf("webhook %d: %v, want %v", n, o.err, want)
					}
				}
				if tt.wantNot != nil && errors.Is(o.err, tt.wantNot) {
					t.Errorf("webhook %d: %v, must not be %v", n, o.err, tt.wantNot)
				}
			}
			if err := w.Stop(t.Context()); err != nil {
				t.Fatal(err)
			}
			if onCommit != 0 {
				t.Errorf("OnCommit called %d times after failed commits", onCommit)
			}
		})
	}
}

func TestStopDrains(t *testing.T) {
	t.Parallel()
	g := newGate()
	fs := &fakeStore{hook: g.hook}
	w := New(fs, Options{})
	if err := w.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	first := holdFirstBatch(t, w, g)
	items := enqueueAll(t, w, 1, 30)

	stopped := make(chan error, 1)
	go func() { stopped <- w.Stop(t.Context()) }()
	recv(t, w.quit, "Stop to close the writer")
	if _, err := w.Submit(t.Context(), webhook(99)); !errors.Is(err, store.ErrClosed) {
		t.Errorf("Submit after Stop: %v, want ErrClosed", err)
	}
	close(g.release)
	if err := recv(t, stopped, "Stop"); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	wantResult(t, 0, recv(t, first, "webhook 0"))
	for i, it := range items {
		wantResult(t, i+1, recv(t, it.done, "a queued webhook"))
	}
	if numbers, _ := fs.committed(); len(numbers) != 30 {
		t.Errorf("committed %d webhooks, want 30", len(numbers))
	}
	if err := w.Stop(t.Context()); err != nil {
		t.Errorf("second Stop: %v", err)
	}
}

func TestStopDeadline(t *testing.T) {
	t.Parallel()
	g := newGate() // never released: the store hangs until its ctx ends
	w := New(&fakeStore{hook: g.hook}, Options{})
	if err := w.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	first := holdFirstBatch(t, w, g)
	items := enqueueAll(t, w, 1, 10)

	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if err := w.Stop(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("Stop with a canceled context: %v", err)
	}
	// Everyone is answered, with an error.
	for _, ch := range append([]<-chan outcome{first}, itemChans(items)...) {
		if o := recv(t, ch, "an answer"); !errors.Is(o.err, store.ErrUnavailable) {
			t.Errorf("after a hard stop: %v, want ErrUnavailable", o.err)
		}
	}
	recv(t, w.done, "the writer to exit")
}

func itemChans(items []*item) []<-chan outcome {
	var chs []<-chan outcome
	for _, it := range items {
		chs = append(chs, it.done)
	}
	return chs
}

func TestLifecycle(t *testing.T) {
	t.Parallel()
	ctx := t.Context()

	w := New(&fakeStore{}, Options{})
	if _, err := w.Submit(ctx, webhook(1)); !errors.Is(err, store.ErrUnavailable) {
		t.Errorf("Submit before Start: %v, want ErrUnavailable", err)
	}
	if err := w.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if err := w.Start(ctx); err == nil {
		t.Error("second Start succeeded")
	}
	if err := w.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := w.Submit(ctx, webhook(2)); !errors.Is(err, store.ErrClosed) {
		t.Errorf("Submit after Stop: %v, want ErrClosed", err)
	}
	if err := w.Start(ctx); !errors.Is(err, store.ErrClosed) {
		t.Errorf("Start after Stop: %v, want ErrClosed", err)
	}

	never := New(&fakeStore{}, Options{})
	if err := never.Stop(ctx); err != nil {
		t.Errorf("Stop before Start: %v", err)
	}
	if err := never.Start(ctx); !errors.Is(err, store.ErrClosed) {
		t.Errorf("Start after Stop: %v, want ErrClosed", err)
	}
}

func TestStartContextCanceled(t *testing.T) {
	t.Parallel()
	fs := &fakeStore{}
	w := New(fs, Options{})
	ctx, cancel := context.WithCancel(t.Context())
	if err := w.Start(ctx); err != nil {
		t.Fatal(err)
	}
	r, err := w.Submit(t.Context(), webhook(1))
	wantResult(t, 1, outcome{r, err})
	cancel()
	recv(t, w.done, "the writer to exit")
	if _, err := w.Submit(t.Context(), webhook(2)); !errors.Is(err, store.ErrClosed) {
		t.Errorf("Submit after the Start context ended: %v, want ErrClosed", err)
	}
}

func TestSubmitContextCanceled(t *testing.T) {
	t.Parallel()
	g := newGate()
	fs := &fakeStore{hook: g.hook}
	w := start(t, fs, Options{})
	first := holdFirstBatch(t, w, g)

	ctx, cancel := context.WithCancel(t.Context())
	it, err := w.enqueue(ctx, webhook(1))
	if err != nil {
		t.Fatal(err)
	}
	cancel()
	if _, err := w.wait(ctx, it); !errors.Is(err, context.Canceled) {
		t.Errorf("Submit whose context ended: %v, want context.Canceled", err)
	}
	if _, err := w.Submit(ctx, webhook(2)); !errors.Is(err, context.Canceled) {
		t.Errorf("Submit with an ended context: %v, want context.Canceled", err)
	}

	close(g.release)
	wantResult(t, 0, recv(t, first, "webhook 0"))
	if err := w.Stop(t.Context()); err != nil {
		t.Fatal(err)
	}
	// The writer left out the webhook nobody waited for any more.
	if numbers, _ := fs.committed(); !slices.Equal(numbers, []int{0}) {
		t.Errorf("committed %v, want [0]", numbers)
	}
}

// TestSubmitContextEndsInTheCommit: a caller whose context ends while its
// webhook is in a commit gets the commit's outcome: the webhook is stored,
// and the caller's logs and metrics must not say otherwise (they said "not
// stored", and counted a rejection, of webhooks that were committed).
func TestSubmitContextEndsInTheCommit(t *testing.T) {
	t.Parallel()
	g := newGate()
	w := start(t, &fakeStore{hook: g.hook}, Options{})
	ctx, cancel := context.WithCancel(t.Context())
	first := submitAsync(ctx, w, webhook(0))
	recv(t, g.entered, "the first commit")
	cancel()
	select {
	case o := <-first:
		t.Fatalf("Submit returned %+v while its webhook was in the commit", o)
	case <-time.After(50 * time.Millisecond):
	}
	close(g.release)
	wantResult(t, 0, recv(t, first, "webhook 0"))
}

func TestOnCommitBeforeAnswer(t *testing.T) {
	t.Parallel()
	var (
		mu        sync.Mutex
		published = map[string]int{}
	)
	w := start(t, &fakeStore{}, Options{OnCommit: func(changes []store.Change) {
		mu.Lock()
		defer mu.Unlock()
		for _, c := range changes {
			published[c.Request.GetRequestId()]++
		}
	}})
	var wg sync.WaitGroup
	for n := range 200 {
		wg.Go(func() {
			r, err := w.Submit(t.Context(), webhook(n))
			wantResult(t, n, outcome{r, err})
			mu.Lock()
			defer mu.Unlock()
			if published["r"+strconv.Itoa(n)] != 1 {
				t.Errorf("webhook %d answered before its change was published", n)
			}
		})
	}
	wg.Wait()
	mu.Lock()
	defer mu.Unlock()
	for rid, count := range published {
		if count != 1 {
			t.Errorf("change of %s published %d times", rid, count)
		}
	}
	if len(published) != 200 {
		t.Errorf("%d changes published, want 200", len(published))
	}
}

// A store that panics fails that batch like a failed commit (503, so
// OTPLESS retries) and the writer goes on with the next.
func TestStorePanic(t *testing.T) {
	t.Parallel()
	fs := &fakeStore{hook: func(_ context.Context, call int, _ []store.Webhook) error {
		if call == 0 {
			panic("the store's kaboom")
		}
		return nil
	}}
	w := start(t, fs, Options{})
	if _, err := w.Submit(t.Context(), webhook(1)); !errors.Is(err, store.ErrUnavailable) {
		t.Fatalf("Submit into a panicking commit: %v, want ErrUnavailable", err)
	}
	res, err := w.Submit(t.Context(), webhook(2))
	if err != nil || len(res.Events) != 1 || res.Events[0].Revision != 2 {
		t.Fatalf("Submit after the panic: %+v, %v; want it committed", res, err)
	}
	if err := w.Stop(t.Context()); err != nil {
		t.Fatal(err)
	}
}

// A webhook that makes the store panic, or that meets stored data that
// does not decode (its request's row damaged), fails alone: the others of
// its batch are committed one at a time, each answered with its own
// result. Else every batch its retries joined failed whole.
func TestStorePanicIsolatesTheWebhook(t *testing.T) {
	t.Parallel()
	for _, fault := range []string{"panic", "damaged"} {
		for _, batch := range []int{2, 5} { // 2: the least batch there is to split
			t.Run(fmt.Sprintf("%s in a batch of %d", fault, batch), func(t *testing.T) {
				t.Parallel()
				testIsolation(t, batch, func() error {
					if fault == "panic" {
						panic("the store's kaboom")
					}
					return fmt.Errorf("request r%d: %w: decode snapshot", batch, store.ErrDamaged)
				})
			})
		}
	}
}

func testIsolation(t *testing.T, batch int, fail func() error) {
	poison := batch // the last of the batch
	g := newGate()
	fs := &fakeStore{hook: func(ctx context.Context, call int, batch []store.Webhook) error {
		if err := g.hook(ctx, call, batch); err != nil {
			return err
		}
		if slices.ContainsFunc(batch, func(wh store.Webhook) bool { return number(wh) == poison }) {
			return fail()
		}
		return nil
	}}
	var published []int64
	w := start(t, fs, Options{OnCommit: func(changes []store.Change) {
		for _, c := range changes {
			published = append(published, c.Request.GetRevision())
		}
	}})
	first := holdFirstBatch(t, w, g)
	items := enqueueAll(t, w, 1, batch+1)
	close(g.release)

	wantResult(t, 0, recv(t, first, "webhook 0"))
	for i, it := range items {
		o := recv(t, it.done, "a queued webhook")
		if n := i + 1; n == poison {
			if !errors.Is(o.err, store.ErrUnavailable) {
				t.Errorf("the webhook the store fails on: %v, want ErrUnavailable", o.err)
			}
		} else {
			wantResult(t, n, o)
		}
	}
	if _, sizes := fs.committed(); !slices.Equal(sizes, append([]int{1, batch}, slices.Repeat([]int{1}, batch)...)) {
		t.Errorf("batch sizes %v, want 1, %d, then the failed batch again one at a time", sizes, batch)
	}
	var want []int64
	for n := range batch { // every webhook but the poisoned one
		want = append(want, int64(n))
	}
	if !slices.Equal(published, want) {
		t.Errorf("changes published %v, want those of every webhook but the poisoned one", published)
	}
}

// TestAnsweredWebhooksAreReleased: once a batch is answered, the writer
// keeps none of its webhooks. It kept them in the memory it reuses for
// the next batch, so that after a burst up to MaxBatch webhooks (their
// bodies up to --max-body-bytes each) stayed in memory until another
// batch as large came.
func TestAnsweredWebhooksAreReleased(t *testing.T) {
	t.Parallel()
	g := newGate()
	w := start(t, &fakeStore{hook: g.hook, forget: true}, Options{MaxBatch: 8})
	first := holdFirstBatch(t, w, g)
	released := make(chan int, 8)
	var outcomes []<-chan outcome
	for n := 1; n <= 4; n++ {
		wh := webhook(n)
		runtime.AddCleanup(&wh.Body[0], func(n int) { released <- n }, n)
		outcomes = append(outcomes, submitAsync(t.Context(), w, wh))
	}
	waitFor(t, func() bool { return w.Queued() == 4 }, "the burst to be queued")
	close(g.release)
	wantResult(t, 0, recv(t, first, "webhook 0"))
	for i, ch := range outcomes {
		wantResult(t, i+1, recv(t, ch, "a webhook of the burst"))
	}
	outcomes = nil

	deadline := time.Now().Add(10 * time.Second)
	for got := 0; got < 4; {
		runtime.GC()
		select {
		case <-released:
			got++
		case <-time.After(10 * time.Millisecond):
			if time.Now().After(deadline) {
				t.Fatalf("%d of the 4 answered webhooks released; the writer still holds the others", got)
			}
		}
	}
}

// waitFor polls cond until it holds, failing the test after 10 s.
func waitFor(t *testing.T, cond func() bool, what string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// A store that answers a batch with more or fewer results than it has
// webhooks fails the batch, rather than having each caller answered by
// position from results that are not theirs or not there.
func TestWrongResultCount(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name   string
		answer func([]store.Result, []store.Change) ([]store.Result, []store.Change)
	}{
		{"one short", func(r []store.Result, c []store.Change) ([]store.Result, []store.Change) { return r[:len(r)-1], c }},
		{"one over", func(r []store.Result, c []store.Change) ([]store.Result, []store.Change) {
			return append(r, store.Result{}), c
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var onCommit int
			w := start(t, &fakeStore{answer: tt.answer}, Options{OnCommit: func([]store.Change) { onCommit++ }})
			if res, err := w.Submit(t.Context(), webhook(1)); !errors.Is(err, store.ErrUnavailable) {
				t.Errorf("Submit: %+v, %v; want ErrUnavailable", res, err)
			}
			if onCommit != 0 {
				t.Errorf("OnCommit called %d times for a failed commit", onCommit)
			}
		})
	}
}

// A commit that changed no request (every webhook a duplicate) calls no
// OnCommit: there is nothing to publish.
func TestOnCommitOnlyForChanges(t *testing.T) {
	t.Parallel()
	var onCommit int
	fs := &fakeStore{answer: func(r []store.Result, _ []store.Change) ([]store.Result, []store.Change) { return r, nil }}
	w := start(t, fs, Options{OnCommit: func([]store.Change) { onCommit++ }})
	r, err := w.Submit(t.Context(), webhook(1))
	wantResult(t, 1, outcome{r, err})
	if onCommit != 0 { // OnCommit runs before the caller is answered
		t.Errorf("OnCommit called %d times for a commit that changed nothing", onCommit)
	}
}
