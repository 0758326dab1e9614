package storetest

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"

	"google.golang.org/protobuf/types/known/timestamppb"

	eventsv1 "github.com/otpless-events/otpless-events/gen/otpless/events/v1"
	"github.com/otpless-events/otpless-events/server/store"
)

// testConcurrentCommits has many goroutines commit overlapping events of a
// few requests at once. No event may be lost or counted new twice, every
// revision must be handed out once, and the final snapshot must be the fold
// of every event.
func testConcurrentCommits(t *testing.T, su suite) {
	const (
		goroutines = 8
		commits    = 8  // per goroutine
		poolSize   = 16 // distinct events per request
	)
	s := su.open(t)
	requests := []string{"r-a", "r-b", "r-c"}
	channels := []string{"WHATSAPP", "SMS", "EMAIL"}
	statuses := []string{"SENT", "DELIVERED", "READ", "FAILED", "CLICKED"}
	// The same event id always stands for the same event, down to its
	// receive time, whichever copy is stored.
	event := func(rid string, k int) *eventsv1.Event {
		e := delivery(rid, fmt.Sprintf("%s-%02d", rid, k), channels[k%3], statuses[k%5], at((k*7)%50))
		e.ReceiveTime = timestamppb.New(at(500 + k))
		return e
	}

	var (
		mu       sync.Mutex
		newCount = map[eventKey]int{}
		sent     = map[eventKey]*eventsv1.Event{}
		changes  = map[string][]store.Change{}
		wg       sync.WaitGroup
	)
	for g := range goroutines {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(1, uint64(g)))
			for c := range commits {
				var batch []store.Webhook
				for w := range 1 + rng.IntN(3) {
					var evs []*eventsv1.Event
					for range 1 + rng.IntN(2) {
						evs = append(evs, event(requests[rng.IntN(len(requests))], rng.IntN(poolSize)))
					}
					batch = append(batch, hook(at(1000+g*100+c*10+w), evs...))
				}
				results, chs, err := s.Commit(context.Background(), batch)
				if err != nil {
					t.Errorf("goroutine %d commit %d: %v", g, c, err)
					return
				}
				mu.Lock()
				for i, wh := range batch {
					for j, e := range wh.Events {
						k := keyOf(e)
						sent[k] = e
						if !results[i].Events[j].Duplicate {
							newCount[k]++
						}
					}
				}
				for _, ch := range chs {
					rid := ch.Request.GetRequestId()
					changes[rid] = append(changes[rid], ch)
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		return
	}

	for k := range sent {
		if n := newCount[k]; n != 1 {
			t.Errorf("event %v reported new %d times, want once", k, n)
		}
	}
	for _, rid := range requests {
		var all []*eventsv1.Event
		for k, e := range sent {
			if k.requestID == rid {
				all = append(all, e)
			}
		}
		chs := changes[rid]
		if len(all) == 0 {
			continue
		}
		slices.SortFunc(chs, func(a, b store.Change) int {
			return int(a.Request.GetRevision() - b.Request.GetRevision())
		})
		var fromChanges []*eventsv1.Event
		for i, ch := range chs {
			if rev := ch.Request.GetRevision(); rev != int64(i+1) {
				t.Errorf("%s: change %d has revision %d, want %d (revisions must be handed out once each)", rid, i, rev, i+1)
			}
			fromChanges = append(fromChanges, ch.Events...)
		}
		equalEventSets(t, rid+": events of all changes", fromChanges, all)

		got := get(t, s, rid)
		last := chs[len(chs)-1].Request
		equalProto(t, rid+": GetRequest vs the last change", got, last)
		want := snapshot(rid, all, int64(len(chs)), got.GetUpdateTime().AsTime())
		equalProto(t, rid+": GetRequest vs the fold of all events", got, want)
		if got.GetEventCount() != int32(len(all)) {
			t.Errorf("%s: event_count %d, want %d", rid, got.GetEventCount(), len(all))
		}
		listed := listAll(t, s, rid, 7)
		for _, e := range listed {
			e.RawBody = ""
		}
		equalEventSets(t, rid+": ListEvents", listed, all)
	}
}
