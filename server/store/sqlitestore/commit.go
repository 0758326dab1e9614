package sqlitestore

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"math/bits"
	"runtime/debug"
	"slices"
	"strings"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	eventsv1 "github.com/otpless-events/otpless-events/gen/otpless/events/v1"
	"github.com/otpless-events/otpless-events/server/state"
	"github.com/otpless-events/otpless-events/server/store"
)

// Commit implements store.Store. The batch is written in one transaction
// of a few set-based statements, whatever its size:
//
//  1. One query reads the largest webhook id and PRAGMA data_version (a
//     change there means another connection wrote the file: the event
//     cache is emptied).
//  2. Which events are stored already: for a request in the event cache,
//     its entry says; the revision and events of the other requests come
//     from one query of their rows, and then feed the fold and the cache
//     too; request-less events are looked up by one more query.
//  3. The bodies that bring a new event (ids from the largest id up, in
//     batch order), then the new request-less events, each in multi-row
//     INSERTs.
//  4. Each changed request's row, in multi-row upserts: its snapshot, the
//     fold of its stored events and its new ones, and its new events
//     appended to its events column (see entries.go).
//
// The event cache is updated only once the transaction has committed, and
// emptied when it did not.
func (s *Store) Commit(ctx context.Context, batch []store.Webhook) ([]store.Result, []store.Change, error) {
	const op = "commit"
	if s.closed.Load() {
		return nil, nil, fmt.Errorf("sqlitestore: %s: %w", op, store.ErrClosed)
	}
	if err := ctx.Err(); err != nil {
		return nil, nil, fmt.Errorf("sqlitestore: %s: %w", op, err)
	}
	if err := store.CheckBatch(batch); err != nil {
		return nil, nil, fmt.Errorf("sqlitestore: %s: %w", op, err)
	}
	if len(batch) == 0 {
		return nil, nil, nil
	}
	if err := s.lockWriter(ctx); err != nil {
		return nil, nil, fmt.Errorf("sqlitestore: %s: %w", op, err)
	}
	defer s.unlockWriter()
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return nil, nil, s.fail(ctx, op, err)
	}
	defer rollbackOnPanic(s, tx)
	c := commit{s: s, tx: tx, batch: batch}
	err = c.run(ctx)
	if err == nil && s.beforeTxCommit != nil {
		err = s.beforeTxCommit()
	}
	if err == nil {
		err = tx.Commit()
	}
	if err != nil {
		tx.Rollback()
		// Whatever failed, the cache may no longer match the file (a failed
		// COMMIT may still have reached it): start over from the file.
		s.cache.clear()
		if isFull(err) {
			s.diskFull.Store(true)
		}
		return nil, nil, s.fail(ctx, op, err)
	}
	s.diskFull.Store(false)
	c.afterCommit()
	return c.results, c.changes, nil
}

// afterCommit updates the event cache once the transaction has committed.
// The batch is stored then, whatever happens: a panic here (a bug) must not
// answer it as failed, nor keep its changes from the watchers. It empties
// the cache instead, which then starts over from the file, and is logged.
func (c *commit) afterCommit() {
	defer func() {
		if p := recover(); p != nil {
			c.s.cache.clear()
			c.s.log.Error("updating the event cache panicked; emptied it", "panic", p, "stack", string(debug.Stack()))
		}
	}()
	if c.s.afterTxCommit != nil {
		c.s.afterTxCommit()
	}
	c.updateCache()
}

// rollbackOnPanic, deferred after BeginTx, ends the transaction and empties
// the event cache if a panic passes, then lets it go on: left open, the
// transaction would hold the only writer connection, and every later
// write would wait for it.
func rollbackOnPanic(s *Store, tx *sql.Tx) {
	if p := recover(); p != nil {
		tx.Rollback()
		s.cache.clear()
		panic(p)
	}
}

// lockWriter takes the writer lock, which every write transaction and every
// use of the event cache holds, once the database file and its log are still
// the ones opened (checkFile; else it is not taken): what a write would put
// in a file removed or replaced, while it waited too, would reach no one.
func (s *Store) lockWriter(ctx context.Context) error {
	select {
	case s.writer <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	if err := s.checkFile(); err != nil {
		s.unlockWriter()
		return err
	}
	return nil
}

func (s *Store) unlockWriter() { <-s.writer }

// commit is one Commit's transaction.
type commit struct {
	s     *Store
	tx    *sql.Tx
	batch []store.Webhook

	events   [][]planned         // per webhook, per event
	requests map[string]*pending // by request id
	order    []*pending          // in order of first appearance
	results  []store.Result
	changes  []store.Change
}

// planned is one event of the batch.
type planned struct {
	event *eventsv1.Event // without RawBody
	p     *pending        // nil for a request-less event
	first bool            // the first of its key in the batch; later ones are duplicates
	isNew bool
}

// pending is what one commit does to one request.
type pending struct {
	requestID string
	revision  int64 // before the commit, then after it

	// The events stored before the commit: their ids, and decoded (from
	// the cache, or from the file when needed).
	ids         []string
	idSet       map[string]struct{} // for requests with many events
	stored      []*eventsv1.Event
	storedBytes int      // their size as stored
	data        [][]byte // undecoded, parallel to ids, when read from the file

	added     int               // how many of the batch's events are new
	events    []*eventsv1.Event // the new ones, in batch order
	entries   []byte            // the new ones as stored
	cacheable bool              // to be cached if the commit succeeds and the request is not done
	terminal  bool              // the new snapshot is terminal
}

func (p *pending) has(eventID string) bool {
	if p.idSet != nil {
		_, ok := p.idSet[eventID]
		return ok
	}
	return slices.Contains(p.ids, eventID)
}

func (p *pending) touched() bool { return len(p.events) > 0 }

func (c *commit) run(ctx context.Context) error {
	s := c.s
	var maxID, dataVersion int64
	if err := c.tx.StmtContext(ctx, s.head).QueryRowContext(ctx).Scan(&maxID, &dataVersion); err != nil {
		return fmt.Errorf("read head: %w", err)
	}
	if dataVersion != s.dataVersion {
		// Another connection wrote the file (or this is the first commit).
		s.cache.clear()
		s.dataVersion = dataVersion
	}

	if err := c.plan(ctx); err != nil {
		return err
	}

	// Which first occurrences are new; the webhooks that bring one get ids.
	var (
		webhookArgs = make([]any, 0, 4*len(c.batch))
		eventArgs   []any
		latest      time.Time
		requestIDs  []string // of one webhook's new events
	)
	for i, wh := range c.batch {
		if wh.Received.After(latest) {
			latest = wh.Received
		}
		webhookID := maxID + 1
		requestIDs = requestIDs[:0]
		isNew := false
		for j := range c.events[i] {
			pl := &c.events[i][j]
			if !pl.isNew {
				continue
			}
			isNew = true
			e := pl.event
			data, err := proto.Marshal(e)
			if err != nil {
				return fmt.Errorf("encode event %s: %w", e.GetEventId(), err)
			}
			p := pl.p
			if p == nil {
				eventArgs = append(eventArgs, "", e.GetEventId(), webhookID, store.EventTimeMillis(e), data)
				continue
			}
			if !slices.Contains(requestIDs, p.requestID) {
				requestIDs = append(requestIDs, p.requestID)
			}
			p.events = append(p.events, e)
			p.entries = appendEntry(p.entries, entry{webhookID, store.EventTimeMillis(e), e.GetEventId(), data})
		}
		if isNew {
			maxID = webhookID
			body := wh.Body
			if body == nil {
				body = []byte{}
			}
			webhookArgs = append(webhookArgs, webhookID, wh.Received.UnixMilli(), body, jsonArray(requestIDs))
		}
	}
	if err := s.insertWebhooks.exec(ctx, c.tx, webhookArgs); err != nil {
		return fmt.Errorf("insert webhooks: %w", err)
	}
	if err := s.insertEvents.exec(ctx, c.tx, eventArgs); err != nil {
		return fmt.Errorf("insert events: %w", err)
	}

	c.results = make([]store.Result, len(c.batch))
	if len(c.order) > 0 {
		if latest.IsZero() {
			latest = time.Now()
		}
		if err := c.fold(ctx, latest); err != nil {
			return err
		}
	}
	for i := range c.batch {
		res := make([]store.EventResult, len(c.events[i]))
		for j, pl := range c.events[i] {
			res[j].Duplicate = !pl.isNew
			if pl.p != nil {
				res[j].Revision = pl.p.revision
			}
		}
		c.results[i].Events = res
	}
	return nil
}

// plan sorts the batch's events by request and finds which are new.
func (c *commit) plan(ctx context.Context) error {
	type key struct{ requestID, eventID string }
	var (
		cache    = c.s.cache
		seen     = make(map[key]struct{})
		misses   []string // requests not in the cache
		noReqIDs []string // ids of the first occurrences of request-less events
	)
	c.requests = make(map[string]*pending)
	c.events = make([][]planned, len(c.batch))
	for i, wh := range c.batch {
		pls := make([]planned, len(wh.Events))
		for j, e := range wh.Events {
			if e.GetRawBody() != "" { // not expected; the body is stored once
				e = proto.CloneOf(e)
				e.RawBody = ""
			}
			pl := &pls[j]
			pl.event = e
			k := key{e.GetRequestId(), e.GetEventId()}
			if _, dup := seen[k]; !dup {
				seen[k] = struct{}{}
				pl.first = true
			}
			rid := k.requestID
			if rid == "" {
				if pl.first {
					noReqIDs = append(noReqIDs, k.eventID)
				}
				continue
			}
			p := c.requests[rid]
			if p == nil {
				p = &pending{requestID: rid}
				c.requests[rid] = p
				c.order = append(c.order, p)
				if ce := cache.get(rid); ce != nil {
					p.revision, p.stored, p.storedBytes = ce.revision, ce.events, ce.bytes
					p.ids = make([]string, len(ce.events))
					for n, e := range ce.events {
						p.ids[n] = e.GetEventId()
					}
				} else {
					misses = append(misses, rid)
				}
			}
			pl.p = p
		}
		c.events[i] = pls
	}

	if len(misses) > 0 {
		if err := c.load(ctx, misses); err != nil {
			return err
		}
	}
	var storedNoReq map[string]bool
	if len(noReqIDs) > 0 {
		var err error
		if storedNoReq, err = c.storedWithoutRequest(ctx, noReqIDs); err != nil {
			return err
		}
	}

	for _, p := range c.order {
		if len(p.ids) > 32 {
			p.idSet = make(map[string]struct{}, len(p.ids))
			for _, id := range p.ids {
				p.idSet[id] = struct{}{}
			}
		}
	}
	for i := range c.events {
		for j := range c.events[i] {
			pl := &c.events[i][j]
			switch {
			case !pl.first:
			case pl.p == nil:
				pl.isNew = !storedNoReq[pl.event.GetEventId()]
			default:
				pl.isNew = !pl.p.has(pl.event.GetEventId())
				if pl.isNew {
					pl.p.added++
				}
			}
		}
	}

	// Decode the stored events read from the file of the requests to fold.
	// Only those are cached: a request that got no new event stays as it
	// is in the cache, or out of it.
	for _, p := range c.order {
		p.cacheable = cache.max > 0 && p.added > 0 && len(p.ids)+p.added <= maxCachedEvents
		if p.stored != nil || len(p.data) == 0 || p.added == 0 {
			continue
		}
		p.stored = make([]*eventsv1.Event, len(p.data))
		for n, data := range p.data {
			e := new(eventsv1.Event)
			if err := proto.Unmarshal(data, e); err != nil {
				return fmt.Errorf("%w: decode event %s of %s: %w", store.ErrDamaged, p.ids[n], p.requestID, err)
			}
			p.stored[n] = e
		}
		p.data = nil
	}
	return nil
}

// load reads the revision and all stored events of requests.
func (c *commit) load(ctx context.Context, requests []string) error {
	rows, err := c.tx.StmtContext(ctx, c.s.requestsOf).QueryContext(ctx, jsonArray(requests))
	if err != nil {
		return fmt.Errorf("load events: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var (
			rid      string
			revision int64
			column   []byte
		)
		if err := rows.Scan(&rid, &revision, &column); err != nil {
			return fmt.Errorf("load events: %w", err)
		}
		p := c.requests[rid]
		p.revision = revision
		entries, err := parseEntries(column)
		if err != nil {
			return fmt.Errorf("load events of %s: %w", rid, err)
		}
		p.ids = make([]string, len(entries))
		p.data = make([][]byte, len(entries))
		for n, e := range entries {
			p.ids[n], p.data[n] = e.eventID, e.data
		}
		p.storedBytes = len(column)
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("load events: %w", err)
	}
	return nil
}

// storedWithoutRequest returns which of the request-less events ids are
// stored.
func (c *commit) storedWithoutRequest(ctx context.Context, ids []string) (map[string]bool, error) {
	rows, err := c.tx.StmtContext(ctx, c.s.storedNoRequest).QueryContext(ctx, jsonArray(ids))
	if err != nil {
		return nil, fmt.Errorf("look up events: %w", err)
	}
	defer rows.Close()
	stored := map[string]bool{}
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			return nil, fmt.Errorf("look up events: %w", err)
		}
		stored[id] = true
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("look up events: %w", err)
	}
	return stored, nil
}

// fold writes the new snapshot of every touched request and makes the
// changes, in order.
func (c *commit) fold(ctx context.Context, updated time.Time) error {
	args := make([]any, 0, 5*len(c.order))
	c.changes = make([]store.Change, 0, len(c.order))
	for _, p := range c.order {
		if !p.touched() {
			continue
		}
		snap := state.Fold(p.requestID, slices.Concat(p.stored, p.events))
		p.revision++
		p.terminal = state.Terminal(snap)
		snap.Revision = p.revision
		snap.UpdateTime = timestamppb.New(updated)
		data, err := proto.Marshal(snap)
		if err != nil {
			return fmt.Errorf("encode snapshot of %s: %w", p.requestID, err)
		}
		args = append(args, p.requestID, p.revision, data, updated.UnixMilli(), p.entries)
		c.changes = append(c.changes, store.Change{Request: snap, Events: p.events})
	}
	if err := c.s.upsertRequests.exec(ctx, c.tx, args); err != nil {
		return fmt.Errorf("write snapshots: %w", err)
	}
	return nil
}

// updateCache records the changed requests in the event cache, once the
// transaction has committed. Requests that are done (terminal) leave it:
// few events follow.
func (c *commit) updateCache() {
	cache := c.s.cache
	for _, p := range c.order {
		if !p.touched() {
			continue // unchanged
		}
		if !p.cacheable || p.terminal {
			cache.remove(p.requestID)
			continue
		}
		events := slices.Grow(slices.Clip(p.stored), len(p.events))
		for _, e := range p.events {
			// The cache's own copy, equal to what it reads back from the
			// file (the event was encoded whole, without its raw body); a
			// clone, which shares the strings, rather than decoding it.
			events = append(events, proto.CloneOf(e))
		}
		cache.put(p.requestID, p.revision, events, p.storedBytes+len(p.entries))
	}
}

// jsonArray encodes ids (strings or integers) for json_each: one bound
// parameter for any number of ids.
func jsonArray[T string | int64](ids []T) string {
	b, _ := json.Marshal(ids) // strings and integers always encode
	return string(b)
}

// chunkLevels: multi-row statements are prepared for 1, 2, 4, ..., 64 rows.
const chunkLevels = 7

// multiRow is one statement prepared for several row counts, its VALUES
// repeated.
type multiRow struct {
	cols  int
	stmts [chunkLevels]*sql.Stmt
}

// prepareMultiRow prepares head + " VALUES (?, ...), ..." + tail for each
// row count.
func (s *Store) prepareMultiRow(ctx context.Context, m *multiRow, cols int, head, tail string) error {
	m.cols = cols
	row := "(" + strings.Repeat("?, ", cols-1) + "?)"
	for lvl := range chunkLevels {
		q := head + " VALUES " + strings.Repeat(row+", ", 1<<lvl-1) + row + " " + tail
		st, err := s.w.PrepareContext(ctx, q)
		if err != nil {
			return err
		}
		s.stmts = append(s.stmts, st)
		m.stmts[lvl] = st
	}
	return nil
}

// exec runs the statement in tx for args, m.cols per row, in as few
// statements as the prepared row counts allow.
func (m *multiRow) exec(ctx context.Context, tx *sql.Tx, args []any) error {
	for rows := len(args) / m.cols; rows > 0; {
		lvl := min(bits.Len(uint(rows))-1, chunkLevels-1)
		n := 1 << lvl
		if _, err := tx.StmtContext(ctx, m.stmts[lvl]).ExecContext(ctx, args[:n*m.cols]...); err != nil {
			return err
		}
		args, rows = args[n*m.cols:], rows-n
	}
	return nil
}
