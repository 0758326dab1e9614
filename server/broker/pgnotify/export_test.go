package pgnotify

import (
	"context"

	"github.com/jackc/pgx/v5"
)

// SetAfterListen makes r run f on its listening connection right after
// LISTEN. Call it before Start.
func SetAfterListen(r *Relay, f func(context.Context, *pgx.Conn) error) { r.afterListen = f }

// Settled reports whether r listens, and its worker has taken the re-read
// of every watched request that listening (again) asks for.
func Settled(r *Relay) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.listening && !r.resync
}
