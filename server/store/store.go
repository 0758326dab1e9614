// Package store defines how auth-request state is kept: the Store interface
// that every backend implements, the values that cross it, and its sentinel
// errors. Backends live in sibling packages (sqlitestore, ...) and are all
// checked by the conformance suite in storetest.
//
// It may import the generated API types and the state fold, nothing from the
// servers.
package store

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	eventsv1 "github.com/otpless-events/otpless-events/gen/otpless/events/v1"
)

// Sentinel errors. Backends wrap them with %w; callers test with errors.Is.
var (
	// ErrNotFound: no event of the request has been stored.
	ErrNotFound = errors.New("store: not found")
	// ErrInvalidPageToken: the page token was not made by this store.
	ErrInvalidPageToken = errors.New("store: invalid page token")
	// ErrUnavailable: the backend cannot be reached or failed; nothing of the
	// failed call was stored. Retrying later may succeed.
	ErrUnavailable = errors.New("store: unavailable")
	// ErrOverloaded: the write queue is full; nothing was stored.
	ErrOverloaded = errors.New("store: write queue full")
	// ErrClosed: the store or the writer has been closed.
	ErrClosed = errors.New("store: closed")
	// ErrDamaged: stored data does not decode, or lacks what it must hold;
	// no retry mends it.
	ErrDamaged = errors.New("store: damaged data")
	// ErrDenied: the database refused the call for want of a privilege
	// (its role lacks a grant); nothing of it was stored. It is also
	// ErrUnavailable, as a server answers it: granting the privilege
	// mends it, without a restart.
	ErrDenied error = denied{}
)

type denied struct{}

func (denied) Error() string { return "store: permission denied" }

// Is makes ErrDenied ErrUnavailable too.
func (denied) Is(target error) bool { return target == ErrUnavailable }

// NewerSchemaError refuses a database that a newer build migrated: this
// one does not know its schema. No retry mends it.
type NewerSchemaError struct{ Version, Known int }

func (e NewerSchemaError) Error() string {
	return fmt.Sprintf("schema version %d is newer than this binary knows (%d)", e.Version, e.Known)
}

// OtherMigrationError refuses a store that records a migration of this
// build's under another name: another build's migration of that version
// (the development builds of 2026-11-30 17:33-17:50 UTC had one), which
// this build does not know, ran there, and this build's never will, the
// version being taken. No retry mends it; the store is left as it is.
type OtherMigrationError struct {
	Version int
	// Applied is the name the store records, "" when it records none
	// for Version; Known is this build's migration of Version.
	Applied, Known string
}

func (e OtherMigrationError) Error() string {
	applied := fmt.Sprintf("was applied as %s", e.Applied)
	if e.Applied == "" {
		applied = "is not recorded as applied"
	}
	return fmt.Sprintf("schema migration %d %s, but this binary's migration %d is %s: another build migrated the store, "+
		"and this binary will not take it as up to date; it is left as it is (see Upgrading in the README for what to do)",
		e.Version, applied, e.Version, e.Known)
}

// Webhook is one received body and the events normalization made of it.
type Webhook struct {
	// Body is the webhook body, verbatim.
	Body []byte
	// Received is when the body arrived.
	Received time.Time
	// Events are the normalized events, with EventId, RequestId and
	// ReceiveTime set. RawBody is not set; the store keeps Body once.
	Events []*eventsv1.Event
}

// EventResult is the outcome for one event of a Webhook.
type EventResult struct {
	// Duplicate is true when an event with the same RequestId and EventId had
	// been stored before (or earlier in the same batch).
	Duplicate bool
	// Revision is the request's revision after the commit (0 for events
	// without a request id).
	Revision int64
}

// Result is the outcome for one Webhook: one EventResult per event, in order.
type Result struct {
	Events []EventResult
}

// Change is one request's new snapshot after a commit and the new events that
// produced it (RawBody not set).
type Change struct {
	Request *eventsv1.AuthRequest
	Events  []*eventsv1.Event
	// EventRevisions, when set, holds the revision that added each event
	// (parallel to Events), for a Change that spans several revisions (see
	// ChangeReader); when nil, every event came with Request's revision.
	EventRevisions []int64
	// Refold marks the change a retention purge made (see Purger): a new
	// snapshot at the revision after the one before, with no event. It may
	// reach the broker before the commit of the revision before it, so a
	// watcher still behind that revision is missing events it does not
	// carry.
	Refold bool
}

// EventsAfter returns the events of c added after revision rev: what a
// watcher that has rev is still missing.
func (c Change) EventsAfter(rev int64) []*eventsv1.Event {
	if c.EventRevisions == nil {
		if c.Request.GetRevision() > rev {
			return c.Events
		}
		return nil
	}
	var out []*eventsv1.Event
	for i, e := range c.Events {
		if c.EventRevisions[i] > rev {
			out = append(out, e)
		}
	}
	return out
}

// Page selects a page of events.
type Page struct {
	// Size is how many events at most; the caller keeps it within bounds
	// (backends use Limit).
	Size int
	// Token is empty for the first page, else a previous next-page token
	// of the same request (see Cursor).
	Token string
}

// Store keeps webhooks, their normalized events and the snapshot of every
// request. Implementations are safe for concurrent use.
type Store interface {
	// Commit stores the webhooks in one transaction: each body once, each
	// event unless already stored (then it is a duplicate), and for every
	// request that got new events the fold of all its events as the new
	// snapshot with its revision increased by one. A request whose events were
	// all duplicates keeps its snapshot and revision. It returns one Result
	// per webhook, in order, and one Change per request that changed. On error
	// nothing was stored, unless the commit was sent when the connection to a
	// database server failed (its answer lost): then it may have been, and a
	// retry finds its events stored.
	//
	// Details every backend keeps (storetest checks them):
	//   - A body is stored only when at least one of its events is new.
	//   - Events without a request id are stored and deduplicated like the
	//     others but belong to no request: revision 0, no Change, never
	//     listed or returned.
	//   - Several webhooks of the batch touching one request bump its revision
	//     once; the request's Change holds all its new events of the batch.
	//   - The snapshot's update_time is the latest Received of the batch.
	//   - Changes come in the order their requests first appear in the batch,
	//     each Change's events in batch order. Commit does not modify the
	//     batch; Change.Events may share messages with it.
	//   - A done ctx fails the call with an error wrapping ctx.Err().
	//   - Backend failures wrap ErrUnavailable, stored data that does not
	//     decode ErrDamaged; after Close, ErrClosed.
	Commit(ctx context.Context, batch []Webhook) ([]Result, []Change, error)

	// GetRequest returns the current snapshot, or ErrNotFound (always for
	// the empty request id).
	GetRequest(ctx context.Context, requestID string) (*eventsv1.AuthRequest, error)

	// ListEvents returns a page of the request's events in (event time, event
	// id) order with RawBody set, and the token of the next page ("" on the
	// last page). ErrNotFound when the request has no events (always for the
	// empty request id). The order is by event time in Unix milliseconds
	// (EventTimeMillis), then event id compared bytewise; pages hold
	// page.Limit() events and are keyed by Cursor, so a page boundary stays
	// put while events are added. ErrInvalidPageToken for a token that is not
	// a next-page token returned for this request.
	ListEvents(ctx context.Context, requestID string, page Page) ([]*eventsv1.Event, string, error)

	// Ping reports whether the backend is reachable.
	Ping(ctx context.Context) error

	// Close releases the backend. Calls after Close return ErrClosed; Close
	// itself is idempotent and returns nil again.
	Close() error
}

// Purger is implemented by stores that can forget personal data once its
// retention has passed.
type Purger interface {
	// PurgePII removes, for every webhook received before cutoff, its raw
	// body and the personal data of its events (phone, email, identity,
	// token; see package pii), and refolds the snapshots of the requests
	// concerned so they equal the fold of what is left. Statuses, channels,
	// times and revisions stay: the status history is kept. A refold that
	// changes more than personal data is a change (see Refold): changed,
	// when not nil, gets a Change of each such request (Refold set, no
	// events) once the transaction that made it commits, to publish as
	// a commit's. It returns how many webhooks it purged; running it again
	// purges nothing more. Stored data that does not decode cannot be
	// stripped: the webhooks that brought data to it are left as they are,
	// the others purged, and the run fails as ErrDamaged (PurgeSkips).
	PurgePII(ctx context.Context, cutoff time.Time, changed func([]Change)) (int, error)
}

// PurgeDamage is what a purge's chunk met that does not decode: Errs name
// it, each wrapping ErrDamaged; Webhooks are the chunk's webhooks due that
// brought data to it, which the purge leaves out to go on without.
type PurgeDamage struct {
	Webhooks []int64
	Errs     []error
}

func (d *PurgeDamage) Error() string   { return errors.Join(d.Errs...).Error() }
func (d *PurgeDamage) Unwrap() []error { return d.Errs }

// Add notes err, the damage of data that webhooks brought.
func (d *PurgeDamage) Add(err error, webhooks ...int64) {
	for _, id := range webhooks {
		if !slices.Contains(d.Webhooks, id) {
			d.Webhooks = append(d.Webhooks, id)
		}
	}
	d.Errs = append(d.Errs, err)
}

// Found is d as an error when it holds any damage, else nil.
func (d *PurgeDamage) Found() error {
	if len(d.Errs) == 0 {
		return nil
	}
	return d
}

// PurgeSkips carries a purge run past damage: the webhooks its chunks
// leave out (Skip, never nil: an empty list matches none) and the damage
// that made them.
type PurgeSkips struct {
	Skip    []int64
	damaged []error
}

// NewPurgeSkips returns the skips of a run that has met no damage yet.
func NewPurgeSkips() *PurgeSkips { return &PurgeSkips{Skip: []int64{}} }

// Retry reports whether err, a chunk's, is a PurgeDamage naming webhooks,
// which it adds to Skip: the chunk is then to be run again without them
// (none of them was left out yet: the chunk's queries leave out Skip).
func (p *PurgeSkips) Retry(err error) bool {
	d := (*PurgeDamage)(nil)
	if !errors.As(err, &d) || len(d.Webhooks) == 0 {
		return false
	}
	p.Skip = append(p.Skip, d.Webhooks...)
	p.damaged = append(p.damaged, d.Errs...)
	return true
}

// Err is the error of a run that left webhooks unpurged for damage, naming
// at most five of the damages met; nil when it met none.
func (p *PurgeSkips) Err() error {
	if len(p.damaged) == 0 {
		return nil
	}
	return fmt.Errorf("%d webhooks left unpurged: %w", len(p.Skip), errors.Join(p.damaged[:min(len(p.damaged), 5)]...))
}
