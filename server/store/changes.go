package store

import "context"

// ChangeReader is implemented by backends that several replicas share (the
// Store interface does not require it). A replica uses it to fan out commits
// made by the others: told that a request changed elsewhere, it reads what
// changed since the revision it last published, rather than the whole
// history.
type ChangeReader interface {
	// ChangesSince returns, for every request of since (request id ->
	// revision) whose revision is now higher, one Change: the current
	// snapshot and the events added after that revision (RawBody not set),
	// in the order they were committed, each with its revision in
	// EventRevisions. Both are read at one point in time, so the events are
	// exactly those between the two revisions. Requests unknown or not newer
	// are left out; the order of the Changes is unspecified.
	ChangesSince(ctx context.Context, since map[string]int64) ([]Change, error)
}
