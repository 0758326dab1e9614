package observe

import (
	"errors"
	"io"
	"sync"
	"time"
)

// DefaultLogBacklog is how many bytes of log a LogWriter holds waiting for
// its writer before Write waits: about 4,000 request lines. The write under
// way holds up to as much again.
const DefaultLogBacklog = 1 << 20

// LogWriter passes what is written to it on to w from a goroutine of its
// own. A request then never waits for the log's write(2), nor for another
// request's (slog's handlers write while holding their lock), and the
// lines that arrive while one write is under way go out together in the
// next: under load one system call carries many lines. Lines keep their
// order.
//
// Write copies p and returns at once, unless backlog bytes are waiting
// already (besides those of the write under way): then it waits for room,
// so that a log that cannot keep up slows its writers down rather than
// growing without bound or losing lines. But once one write to w has
// lasted StuckAfter (nothing reads the other end of a pipe), lines that
// find no room are dropped until it ends, and then a line made by
// SetDropNotice says how many: a log nobody reads must not stop the
// requests that log, nor shutdown. Close writes what is waiting and stops
// the goroutine, waiting at most StuckAfter for a write that does not end
// (hardly at all when one is stuck already); what is written after Close
// goes straight to w, or nowhere once Close gave up waiting. A process that dies
// without Close (a fatal error, SIGKILL) loses at most what was waiting.
type LogWriter struct {
	w       io.Writer
	backlog int
	wake    chan struct{} // one pending wake-up; closed by Close
	done    chan struct{} // the goroutine has written everything and ended
	gaveUp  chan struct{} // Close stopped waiting for done: writes are dropped
	giveUp  sync.Once     // closes gaveUp

	mu      sync.Mutex
	room    sync.Cond // a write to w ended, or became stuck
	pending []byte
	spare   []byte // the buffer of the last write, for reuse
	closed  bool
	err     error // of the last failed write to w
	writes  int   // writes to w begun
	writing bool  // one is under way
	stuck   bool  // the write under way has lasted stuckAfter
	dropped int   // lines dropped since the last write that ended
	notice  func(dropped int) []byte

	stuckAfter time.Duration
}

// StuckAfter is how long a write to the log's writer may last before the
// log drops what finds no room.
const StuckAfter = 5 * time.Second

// SetDropNotice sets the line written after lines were dropped, given how
// many (in the log's own format, as its handler would write it). Call it
// before the first Write.
func (l *LogWriter) SetDropNotice(f func(dropped int) []byte) { l.notice = f }

// NewLogWriter starts a LogWriter for w that holds at most backlog bytes
// waiting, and as many in the write under way (DefaultLogBacklog when
// backlog < 1).
func NewLogWriter(w io.Writer, backlog int) *LogWriter {
	if backlog < 1 {
		backlog = DefaultLogBacklog
	}
	l := &LogWriter{w: w, backlog: backlog, wake: make(chan struct{}, 1), done: make(chan struct{}), gaveUp: make(chan struct{}),
		stuckAfter: StuckAfter}
	l.room.L = &l.mu
	go l.run()
	return l
}

// Write queues a copy of p for w. It always succeeds while the writer is
// open: slog has nowhere to report a failed write, and Close returns it.
func (l *LogWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	full := func() bool { return len(l.pending) > 0 && len(l.pending)+len(p) > l.backlog }
	for !l.closed && !l.stuck && full() {
		l.room.Wait()
	}
	if l.stuck && full() {
		l.dropped++
		l.mu.Unlock()
		return len(p), nil
	}
	if l.closed {
		l.mu.Unlock()
		select {
		case <-l.done: // after everything queued before Close
		case <-l.gaveUp:
			return len(p), nil
		}
		l.mu.Lock()
		defer l.mu.Unlock()
		return l.w.Write(p)
	}
	l.pending = append(l.pending, p...)
	l.wakeUp()
	l.mu.Unlock()
	return len(p), nil
}

// wakeUp has the goroutine write what is pending; under mu, before Close.
func (l *LogWriter) wakeUp() {
	select {
	case l.wake <- struct{}{}:
	default: // a wake-up is pending: the goroutine will take it all
	}
}

func (l *LogWriter) run() {
	defer close(l.done)
	for range l.wake {
		l.flush()
	}
	for l.flush() { // what came before Close and after the last wake-up
	}
}

// flush writes what is pending, outside the lock, and reports whether more
// is pending since (a drop notice after Close).
func (l *LogWriter) flush() (more bool) {
	l.mu.Lock()
	b := l.pending
	l.pending = l.spare[:0]
	l.writes++
	l.writing = true
	this := l.writes
	l.mu.Unlock()
	var err error
	if len(b) > 0 {
		stuck := time.AfterFunc(l.stuckAfter, func() {
			l.mu.Lock()
			if l.writing && l.writes == this { // not a write that ended meanwhile
				l.stuck = true
				l.room.Broadcast()
			}
			l.mu.Unlock()
		})
		_, err = l.w.Write(b)
		stuck.Stop()
	}
	l.mu.Lock()
	l.writing, l.stuck = false, false
	if err != nil {
		l.err = err
	}
	if l.dropped > 0 && l.notice != nil {
		l.pending = append(l.pending, l.notice(l.dropped)...)
		l.dropped = 0
		if !l.closed {
			l.wakeUp()
		}
	}
	// b is the next spare, unless it grew past twice the backlog (one line
	// larger than that): then none is kept, since the old spare is what
	// pending uses now.
	l.spare = nil
	if cap(b) <= 2*l.backlog {
		l.spare = b[:0]
	}
	l.room.Broadcast()
	more = l.closed && len(l.pending) > 0
	l.mu.Unlock()
	return more
}

var errStuck = errors.New("log: a write to the log has not ended; what was waiting, and what comes after, is lost")

// Close writes what is waiting, stops the goroutine and returns the error
// of the last failed write, if any. Writes after Close go straight to w.
// Close may be called again: it returns the same.
func (l *LogWriter) Close() error {
	l.mu.Lock()
	if !l.closed {
		l.closed = true
		close(l.wake)
		l.room.Broadcast() // writers waiting for room write directly, after the rest
	}
	wait := l.stuckAfter
	if l.stuck {
		wait = min(wait, 100*time.Millisecond) // for a write that just ended
	}
	l.mu.Unlock()
	select {
	case <-l.done:
	case <-l.gaveUp: // an earlier Close
		return errStuck
	case <-time.After(wait):
		l.giveUp.Do(func() { close(l.gaveUp) })
		return errStuck
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.err
}
