package gateway

import (
	"log/slog"
	"net/http"
	"strings"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"github.com/otpless-events/otpless-events/server/gateway/ui"
)

// frontend puts what browsers need in front of next (webhooks, then the
// gateway mux): the status page at /ui/ (and / redirecting there), and on
// the watch route, CORS (by cors, the policy accessTokenFromQuery also
// answers by) and Server-Sent Events.
func frontend(mux *runtime.ServeMux, next http.Handler, cors corsPolicy, opts Options) http.Handler {
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	heartbeat := opts.SSEHeartbeat
	if heartbeat <= 0 {
		heartbeat = DefaultSSEHeartbeat
	}
	watch := &watchHandler{
		next:      next,
		mux:       mux,
		watch:     opts.Watch,
		cors:      cors,
		heartbeat: heartbeat,
		streams:   opts.Streams,
		log:       log,
		panicked:  opts.Panicked,

		writeTimeout: StreamWriteTimeout,
	}
	page := ui.Handler()
	uiRoot := strings.TrimSuffix(ui.Path, "/")
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch p := r.URL.Path; {
		case p == "/" && (r.Method == http.MethodGet || r.Method == http.MethodHead):
			ui.Redirect(w, r, http.StatusFound)
		case p == uiRoot || strings.HasPrefix(p, ui.Path):
			if r.Method != http.MethodGet && r.Method != http.MethodHead {
				w.Header().Set("Allow", "GET, HEAD")
				routingErrorHandler(r.Context(), mux, nil, w, r, http.StatusMethodNotAllowed)
				return
			}
			page.ServeHTTP(w, r)
		default:
			watch.ServeHTTP(w, r)
		}
	})
}
