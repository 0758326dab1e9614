package store

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"
)

// Exporter is implemented by stores whose webhooks can be read back (the
// Store interface does not require it): Copy reads a store with it to
// commit what it holds into another.
type Exporter interface {
	// Export calls page with every stored webhook, in the order the store
	// gave them their ids (the order they were committed, on a store with
	// one writer), a page at a time: at most size webhooks (one if size is
	// not positive), fewer once their bodies reach ExportPageBytes (one at least). Each
	// holds its body (empty once PurgePII purged it), its Received time
	// (whole, see WholeReceived), and the events stored with it, those
	// that were new when it was committed (a webhook is stored only with one), with their personal
	// data removed once purged; RawBody is not set. Every page is read
	// from one snapshot of the store, taken when Export begins: what is
	// committed meanwhile is left out. page may keep the webhooks; an
	// error from it ends Export with that error.
	Export(ctx context.Context, size int, page func([]Webhook) error) error
}

// WholeReceived sets wh.Received, kept by a backend only to precision
// (a whole millisecond, say) and read back so, to the time whole: the
// ReceiveTime of one of wh's events, kept whole, which is the arrival of
// the webhook that stored it, when it comes within precision after
// wh.Received. Else (an event without one) wh.Received stays as kept.
// Export gives the time whole, so that a copy's snapshots are dated to the
// nanosecond, as its source's are, whatever the source's backend.
func WholeReceived(wh *Webhook, precision time.Duration) {
	for _, e := range wh.Events {
		if e.GetReceiveTime() == nil {
			continue
		}
		if t := e.GetReceiveTime().AsTime(); !t.Before(wh.Received) && t.Before(wh.Received.Add(precision)) {
			wh.Received = t
			return
		}
	}
}

// Page sizes of Export.
const (
	// ExportPageSize is Copy's page, the default --max-batch of serve.
	ExportPageSize = 256
	// ExportPageBytes ends a page of Export once the bodies it holds
	// come to that much, so that memory stays bounded by a few pages
	// whatever the size of the webhooks.
	ExportPageBytes = 4 << 20
)

// ExportPages is the loop of a backend's Export: read returns the page
// after the webhook id after (0 for the first) and the ids of its
// webhooks, or an empty page at the end; each page goes to page. A webhook
// is stored only with an event that was new, so one without events is an
// error: the events it brought were not found.
func ExportPages(page func([]Webhook) error, read func(after int64) ([]Webhook, []int64, error)) error {
	for after := int64(0); ; {
		whs, ids, err := read(after)
		if err != nil || len(whs) == 0 {
			return err
		}
		for i, wh := range whs {
			if len(wh.Events) == 0 {
				return fmt.Errorf("%w: webhook %d: none of its events found", ErrDamaged, ids[i])
			}
		}
		if err := page(whs); err != nil {
			return err
		}
		after = ids[len(ids)-1]
	}
}

// CopyStats counts what Copy did.
type CopyStats struct {
	// Webhooks is how many webhooks were read from the source.
	Webhooks int
	// Events is how many of their events the destination stored, and
	// Duplicates how many it had already (a run after another, or a
	// destination that replicas write to as well).
	Events, Duplicates int
	// Requests is how many requests the destination knew nothing of
	// before.
	Requests int
}

// CopyWindow bounds how far apart the webhooks of one of Copy's commits
// were received. The destination dates a snapshot by the latest webhook
// of the commit that made it, so a copied snapshot's update time is at
// most that much after its request's last webhook (a source's own commits
// hold webhooks that arrived together), while a busy store's pages still
// go in a commit or a few.
const CopyWindow = time.Second

// Copy commits every webhook of from into to, in from's order (see
// Exporter), each page in commits of webhooks received within CopyWindow
// of each other, and of one webhook a request at most: to dedups, folds
// and numbers revisions as for webhooks it receives, so a copy run again
// adds nothing, and one interrupted leaves whole commits and goes on when
// run again. A request's revision in to is thus at least its revision in
// from, and the same only where each of from's commits brought it one
// webhook, with the same snapshot at each revision: a watcher resuming
// after a revision from's server sent it gets a fresh snapshot unless it
// has it. progress, when not nil, gets the counts after each page.
func Copy(ctx context.Context, from Exporter, to Store, progress func(CopyStats)) (CopyStats, error) {
	var st CopyStats
	var toErr error
	err := from.Export(ctx, ExportPageSize, func(page []Webhook) error {
		for len(page) > 0 {
			n := copyCommit(page)
			if toErr = copyBatch(ctx, to, page[:n], &st); toErr != nil {
				return toErr
			}
			page = page[n:]
		}
		if progress != nil {
			progress(st)
		}
		return nil
	})
	switch {
	case err == nil:
		return st, nil
	case ctx.Err() != nil: // the caller's end (db copy's Ctrl-C), which either store then reports
		return st, fmt.Errorf("copy: interrupted: %w", context.Cause(ctx))
	case toErr != nil:
		return st, fmt.Errorf("copy: %w: %w", ErrDestination, toErr)
	}
	return st, fmt.Errorf("copy: source: %w", err)
}

// ErrDestination is in the errors of a copy that its destination gave
// (Copy's, and opening the destination's): the others are the source's, and
// what is said of an error, as of damaged data, is said of the right store.
var ErrDestination = errors.New("destination")

// copyCommit is how many of page's first webhooks Copy commits at once:
// received within CopyWindow of each other (received times need not follow
// the ids, with replicas' clocks or a clock set back: the earliest and the
// latest count), and none naming a request another of them names.
func copyCommit(page []Webhook) int {
	first, last := page[0].Received, page[0].Received
	requests := requestsOf(page[0], nil)
	for n, wh := range page[1:] {
		first, last = minTime(first, wh.Received), maxTime(last, wh.Received)
		if last.Sub(first) >= CopyWindow || slices.ContainsFunc(requestsOf(wh, nil), func(rid string) bool { return slices.Contains(requests, rid) }) {
			return n + 1
		}
		requests = requestsOf(wh, requests)
	}
	return len(page)
}

// requestsOf appends to ids the request ids wh's events name that ids
// lacks.
func requestsOf(wh Webhook, ids []string) []string {
	for _, e := range wh.Events {
		if rid := e.GetRequestId(); rid != "" && !slices.Contains(ids, rid) {
			ids = append(ids, rid)
		}
	}
	return ids
}

func minTime(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

func maxTime(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

// copyBatch commits batch into to and counts it in st.
func copyBatch(ctx context.Context, to Store, batch []Webhook, st *CopyStats) error {
	results, changes, err := to.Commit(ctx, batch)
	if err != nil {
		return err
	}
	st.Webhooks += len(batch)
	for _, r := range results {
		for _, e := range r.Events {
			if e.Duplicate {
				st.Duplicates++
			} else {
				st.Events++
			}
		}
	}
	for _, c := range changes {
		// The first commit of a request makes it at revision 1.
		if c.Request.GetRevision() == 1 && !c.Refold {
			st.Requests++
		}
	}
	return nil
}
