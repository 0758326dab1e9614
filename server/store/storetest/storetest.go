// Package storetest is the conformance suite of store.Store. Every backend's
// tests call RunWithOptions with a constructor of fresh, empty stores, so
// that all backends are held to one contract (the Store doc comments) by the
// same tests. It is an ordinary package so that backend packages can import it.
//
// It may import package store, the state fold, the generated API types and
// protobuf; never a backend.
package storetest

import (
	"context"
	"errors"
	"maps"
	"slices"
	"sort"
	"testing"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	eventsv1 "github.com/otpless-events/otpless-events/gen/otpless/events/v1"
	"github.com/otpless-events/otpless-events/server/store"
)

// Options adapts the suite to a backend.
type Options struct {
	// Reopen closes s and returns a new store over the same data, as after
	// a restart. Nil skips the Persistence test.
	Reopen func(t *testing.T, s store.Store) store.Store

	// SetSnapshot overwrites the stored snapshot of r's request with r, as
	// an earlier build's fold may have made it (revision and all). Nil
	// skips the PurgePIIRefoldsAnEarlierFold test.
	SetSnapshot func(t *testing.T, s store.Store, r *eventsv1.AuthRequest)

	// Damage overwrites stored data with bytes that do not decode: the
	// snapshot of requestID's request when eventID is empty, the event
	// eventID of no request when requestID is empty, else the event eventID
	// of requestID's request (the request's other data left as it is). Nil
	// skips the PurgePIIAroundDamagedData and RetryToDamagedEvent tests.
	Damage func(t *testing.T, s store.Store, requestID, eventID string)

	// Exceptions names tests the backend is known not to pass, each with
	// the reason; they are skipped with that reason. Naming a test that
	// does not exist fails the run, so the list cannot go stale.
	Exceptions map[string]string
}

// RunWithOptions runs the conformance suite, each test as a parallel
// subtest on a store of its own, as opts say. newStore must return an
// open, empty store; the suite closes it when the subtest ends.
func RunWithOptions(t *testing.T, newStore func(t *testing.T) store.Store, opts Options) {
	s := suite{newStore: newStore, opts: opts}
	tests := []struct {
		name string
		run  func(t *testing.T, s suite)
	}{
		{"CommitNew", testCommitNew},
		{"CommitRetryIsDuplicate", testCommitRetryIsDuplicate},
		{"RetryToDamagedEvent", testRetryToDamagedEvent},
		{"DuplicateInOneBatch", testDuplicateInOneBatch},
		{"OneRequestManyWebhooks", testOneRequestManyWebhooks},
		{"SeveralRequests", testSeveralRequests},
		{"EventsWithoutRequestID", testEventsWithoutRequestID},
		{"CommitStoresNoRawBody", testCommitStoresNoRawBody},
		{"EmptyBatch", testEmptyBatch},
		{"GetRequestNotFound", testGetRequestNotFound},
		{"SnapshotIsFold", testSnapshotIsFold},
		{"RevisionIncreasesByOne", testRevisionIncreasesByOne},
		{"ListEventsOrderAndBodies", testListEventsOrderAndBodies},
		{"ListEventsPaging", testListEventsPaging},
		{"ListEventsPagingWhileWriting", testListEventsPagingWhileWriting},
		{"ListEventsInvalidToken", testListEventsInvalidToken},
		{"ListEventsNotFound", testListEventsNotFound},
		{"ListEventsPageSizeBounds", testListEventsPageSizeBounds},
		{"ConcurrentCommits", testConcurrentCommits},
		{"CanceledContext", testCanceledContext},
		{"CommitCanceledMidway", testCommitCanceledMidway},
		{"Closed", testClosed},
		{"Ping", testPing},
		{"Persistence", testPersistence},
		{"PurgePII", testPurgePII},
		{"PurgePIIMany", testPurgePIIMany},
		{"PurgePIIWebhookOfTwoRequests", testPurgePIIWebhookOfTwoRequests},
		{"PurgePIIRefoldsAnEarlierFold", testPurgePIIRefoldsAnEarlierFold},
		{"PurgeCanceledMidway", testPurgeCanceledMidway},
		{"PurgePIIAroundDamagedData", testPurgePIIAroundDamagedData},
		{"Export", testExport},
		{"ExportSnapshot", testExportSnapshot},
		{"ExportPageBytes", testExportPageBytes},
		{"ExportPurged", testExportPurged},
		{"Copy", testCopy},
		{"CopyUpdateTime", testCopyUpdateTime},
		{"ExportReceivedWhole", testExportReceivedWhole},
		{"CopyInterrupted", testCopyInterrupted},
	}
	known := map[string]bool{}
	for _, tt := range tests {
		known[tt.name] = true
	}
	for _, name := range slices.Sorted(maps.Keys(opts.Exceptions)) {
		if !known[name] {
			t.Fatalf("storetest: Options.Exceptions names unknown test %q", name)
		}
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if reason, ok := opts.Exceptions[tt.name]; ok {
				t.Skipf("backend exception: %s", reason)
			}
			tt.run(t, s)
		})
	}
}

type suite struct {
	newStore func(t *testing.T) store.Store
	opts     Options
}

// open returns a fresh store, closed when the test ends.
func (su suite) open(t *testing.T) store.Store {
	t.Helper()
	s := su.newStore(t)
	t.Cleanup(func() { closeStore(t, s) })
	return s
}

// reopen replaces s by a store over the same data.
func (su suite) reopen(t *testing.T, s store.Store) store.Store {
	t.Helper()
	s2 := su.opts.Reopen(t, s)
	t.Cleanup(func() { closeStore(t, s2) })
	return s2
}

func closeStore(t *testing.T, s store.Store) {
	if err := s.Close(); err != nil && !errors.Is(err, store.ErrClosed) {
		t.Errorf("Close: %v", err)
	}
}

// commit commits batch and fails the test on error.
func commit(t *testing.T, s store.Store, batch ...store.Webhook) ([]store.Result, []store.Change) {
	t.Helper()
	results, changes, err := s.Commit(context.Background(), batch)
	if err != nil {
		t.Fatalf("Commit: %v", err)
	}
	if len(results) != len(batch) {
		t.Fatalf("Commit: %d results for %d webhooks", len(results), len(batch))
	}
	for i, r := range results {
		if len(r.Events) != len(batch[i].Events) {
			t.Fatalf("Commit: webhook %d: %d event results for %d events", i, len(r.Events), len(batch[i].Events))
		}
	}
	return results, changes
}

// get returns the snapshot of requestID and fails the test on error.
func get(t *testing.T, s store.Store, requestID string) *eventsv1.AuthRequest {
	t.Helper()
	r, err := s.GetRequest(context.Background(), requestID)
	if err != nil {
		t.Fatalf("GetRequest(%q): %v", requestID, err)
	}
	return r
}

// listAll walks every page of requestID's events, size events a page, and
// checks the tokens: empty on the last page only.
func listAll(t *testing.T, s store.Store, requestID string, size int) []*eventsv1.Event {
	t.Helper()
	var all []*eventsv1.Event
	token := ""
	for pages := 0; ; pages++ {
		if pages > 10000 {
			t.Fatalf("ListEvents(%q, size %d): no last page after %d pages", requestID, size, pages)
		}
		page, next, err := s.ListEvents(context.Background(), requestID, store.Page{Size: size, Token: token})
		if err != nil {
			t.Fatalf("ListEvents(%q, size %d, page %d): %v", requestID, size, pages, err)
		}
		if len(page) > size {
			t.Fatalf("ListEvents(%q, size %d): page of %d", requestID, size, len(page))
		}
		if len(page) == 0 && token != "" {
			t.Fatalf("ListEvents(%q, size %d): empty page %d: the page before was the last but had a next token", requestID, size, pages)
		}
		if next != "" && len(page) < size {
			t.Fatalf("ListEvents(%q, size %d): short page of %d with a next token", requestID, size, len(page))
		}
		all = append(all, page...)
		if next == "" {
			return all
		}
		token = next
	}
}

// wantErr fails the test unless err wraps target.
func wantErr(t *testing.T, what string, err, target error) {
	t.Helper()
	if !errors.Is(err, target) {
		t.Errorf("%s: got error %v, want %v", what, err, target)
	}
}

// equalProto fails the test unless got and want are equal.
func equalProto(t *testing.T, what string, got, want proto.Message) {
	t.Helper()
	if !proto.Equal(got, want) {
		t.Errorf("%s:\n got %s\nwant %s", what, protojson.Format(got), protojson.Format(want))
	}
}

// equalEvents fails the test unless got and want hold equal events in the
// same order.
func equalEvents(t *testing.T, what string, got, want []*eventsv1.Event) {
	t.Helper()
	if len(got) != len(want) {
		t.Errorf("%s: got events %q, want %q", what, ids(got), ids(want))
		return
	}
	for i := range got {
		equalProto(t, what, got[i], want[i])
	}
}

// equalEventSets is equalEvents ignoring order.
func equalEventSets(t *testing.T, what string, got, want []*eventsv1.Event) {
	t.Helper()
	byKey := func(events []*eventsv1.Event) []*eventsv1.Event {
		out := slices.Clone(events)
		sort.SliceStable(out, func(i, j int) bool { return keyOf(out[i]).String() < keyOf(out[j]).String() })
		return out
	}
	equalEvents(t, what, byKey(got), byKey(want))
}

// checkResults fails the test unless results are, event by event, the
// duplicate flags and revisions wanted.
func checkResults(t *testing.T, results []store.Result, wantDup [][]bool, wantRev [][]int64) {
	t.Helper()
	for i, r := range results {
		for j, er := range r.Events {
			if er.Duplicate != wantDup[i][j] {
				t.Errorf("webhook %d event %d: Duplicate = %v, want %v", i, j, er.Duplicate, wantDup[i][j])
			}
			if er.Revision != wantRev[i][j] {
				t.Errorf("webhook %d event %d: Revision = %d, want %d", i, j, er.Revision, wantRev[i][j])
			}
		}
	}
}
