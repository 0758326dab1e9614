package pgnotify

import (
	"context"

	"github.com/jackc/pgx/v5"
)

// SetAfterListen makes r run f on its listening connection right after
// LISTEN. Call it before Start.
func SetAfterListen(r *Relay, f func(context.Context, *pgx.Conn) error) { r.afterListen = f }
