package server

import (
	"context"
	"errors"
	"fmt"
	"html"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"net/url"
	rpprof "runtime/pprof"
	"slices"
	"strings"

	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/recovery"
	"google.golang.org/grpc"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	eventsv1 "github.com/otpless-events/otpless-events/gen/otpless/events/v1"
	"github.com/otpless-events/otpless-events/server/gateway"
	"github.com/otpless-events/otpless-events/server/observe"
	"github.com/otpless-events/otpless-events/server/openapi"
)

// DefaultMetricsAddr is where serve exposes /metrics and /debug/pprof
// unless told otherwise. Config's own default serves neither, so that
// embedded servers and tests open no fixed port.
const DefaultMetricsAddr = "127.0.0.1:9100"

// Health service names of grpc.health.v1.Health. The empty name is the
// server's readiness: SERVING once Run has started, NOT_SERVING while the
// store is unreachable and from the start of shutdown; GET /readyz answers
// it. LivenessService is SERVING from New until shutdown: the process is up.
const (
	ReadinessService = ""
	LivenessService  = "liveness"
)

// unaryInterceptors is the gRPC unary chain, outermost first: metrics (so
// they count the code a panic became), recovery (a panic becomes INTERNAL),
// the observe interceptor (request id, one log line per call, and the log
// line of a panic with its stack; it must stay right after recovery), then
// inner: authentication and whatever else checks calls.
func (s *Server) unaryInterceptors(inner ...grpc.UnaryServerInterceptor) []grpc.UnaryServerInterceptor {
	return append([]grpc.UnaryServerInterceptor{
		s.obs.GRPC.UnaryServerInterceptor(),
		recovery.UnaryServerInterceptor(recovery.WithRecoveryHandlerContext(s.obs.RecoverGRPC)),
		s.obs.UnaryServerInterceptor(),
	}, inner...)
}

// streamInterceptors is unaryInterceptors for streams.
func (s *Server) streamInterceptors(inner ...grpc.StreamServerInterceptor) []grpc.StreamServerInterceptor {
	return append([]grpc.StreamServerInterceptor{
		s.obs.GRPC.StreamServerInterceptor(),
		recovery.StreamServerInterceptor(recovery.WithRecoveryHandlerContext(s.obs.RecoverGRPC)),
		s.obs.StreamServerInterceptor(),
	}, inner...)
}

// watchInProcess runs WatchRequest for the gateway's watch streams through
// the gRPC server's stream interceptors, without a connection.
func (s *Server) watchInProcess(requests eventsv1.RequestServiceServer, inner []grpc.StreamServerInterceptor) gateway.WatchFunc {
	watch := gateway.InProcess(requests, s.streamInterceptors(inner...)...)
	return func(ctx context.Context, req *eventsv1.WatchRequestRequest, send func(*eventsv1.WatchRequestResponse) error) error {
		return watch(observe.InProcess(ctx, gateway.IsEventStream(ctx)), req, send)
	}
}

// observeServer finishes the metrics once every gRPC service is registered:
// per-method series start at zero, and the gauges read at scrape time are
// registered. The process is live from here on.
func (s *Server) observeServer() {
	s.obs.GRPC.InitializeMetrics(s.grpc)
	s.obs.GaugeFunc("write_queue_webhooks", "Webhooks waiting for the group-commit writer.",
		func() float64 { return float64(s.writer.Queued()) })
	s.obs.GaugeFunc("ready", "1 while the server is ready (the readiness health status is SERVING), else 0.",
		func() float64 {
			if s.ready(context.Background()) {
				return 1
			}
			return 0
		})
	if c := s.certs; c != nil {
		s.obs.GaugeFunc("tls_certificate_expiration_timestamp_seconds", "When the TLS certificate served ends (its NotAfter, Unix time), as the files hold it now.",
			func() float64 { return float64(c.current().cert.Leaf.NotAfter.Unix()) })
	}
	if r := s.relay; r != nil {
		s.obs.GaugeFunc("pg_listening", "1 while the PostgreSQL listener, which passes other replicas' commits on to watchers here, is connected and listening, else 0.",
			func() float64 {
				if r.Listening() {
					return 1
				}
				return 0
			})
		s.obs.CounterFunc("pg_listener_losses_total", "Times the PostgreSQL listener's connection was lost or could not be opened, or stopped getting notifications.",
			func() float64 { return float64(r.Losses()) })
	}
	s.health.SetServingStatus(LivenessService, healthpb.HealthCheckResponse_SERVING)
}

func (s *Server) ready(ctx context.Context) bool {
	resp, err := s.health.Check(ctx, &healthpb.HealthCheckRequest{Service: ReadinessService})
	return err == nil && resp.GetStatus() == healthpb.HealthCheckResponse_SERVING
}

// httpHandler puts the operational routes beside the gateway (GET /healthz:
// the process is up; GET /readyz: 200 when ready, else 503; GET
// /openapi.json) and wraps everything in the observe middleware.
func (s *Server) httpHandler(gateway http.Handler) http.Handler {
	doc := openapi.Handler()
	return s.obs.HTTP(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/healthz":
			probe(w, r, http.StatusOK, "ok")
		case "/readyz":
			if s.ready(r.Context()) {
				probe(w, r, http.StatusOK, "ready")
			} else {
				probe(w, r, http.StatusServiceUnavailable, "not ready")
			}
		case "/openapi.json":
			doc.ServeHTTP(w, r)
		default:
			gateway.ServeHTTP(w, r)
		}
	}))
}

func probe(w http.ResponseWriter, r *http.Request, code int, text string) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	if r.Method == http.MethodGet {
		fmt.Fprintln(w, text)
	}
}

// listenMetrics binds the metrics listener when Config.MetricsAddr is set.
// It serves /metrics and the runtime profiles under /debug/pprof/, so it
// belongs on a private address; not the command line, which may hold a
// store DSN's password.
func (s *Server) listenMetrics(ctx context.Context, lc *net.ListenConfig) error {
	if s.cfg.MetricsAddr == "" {
		return nil
	}
	var err error
	if s.metricsLis, err = lc.Listen(ctx, "tcp", s.cfg.MetricsAddr); err != nil {
		return fmt.Errorf("metrics listener: %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", s.obs.Handler())
	mux.HandleFunc("/debug/pprof/{$}", profilesIndex)
	mux.HandleFunc("/debug/pprof/", pprof.Index) // a profile by its name
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	s.metrics = &http.Server{
		Handler: mux,
		// The HTTP port's timeouts: without a read and an idle timeout, a
		// client held a connection (a body it never sent, a keep-alive
		// left idle) for as long as it liked.
		ReadHeaderTimeout: s.cfg.HTTPReadHeaderTimeout,
		ReadTimeout:       s.cfg.HTTPReadTimeout,
		IdleTimeout:       s.cfg.HTTPIdleTimeout,
		// As the HTTP port's: else net/http's lines (a failed accept, a
		// panic) go to Go's default logger, in its own format.
		ErrorLog: slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
	}
	return nil
}

// profilesIndex lists what the metrics listener serves under /debug/pprof/:
// the runtime's profiles, the CPU profile, the trace and the symbol lookup.
// It is net/http/pprof's index but for the command line, which that one
// offers and the listener does not serve.
func profilesIndex(w http.ResponseWriter, _ *http.Request) {
	names := []string{"profile", "symbol", "trace"}
	for _, p := range rpprof.Profiles() {
		names = append(names, p.Name())
	}
	slices.Sort(names)
	var b strings.Builder
	b.WriteString("<!DOCTYPE html>\n<html><head><title>/debug/pprof/</title></head><body>\n<p>Profiles (debug=1: in text; go tool pprof reads them without it):</p>\n<ul>\n")
	for _, n := range names {
		fmt.Fprintf(&b, "<li><a href=\"%s?debug=1\">%s</a></li>\n", html.EscapeString(url.PathEscape(n)), html.EscapeString(n))
	}
	b.WriteString("</ul>\n<p><a href=\"goroutine?debug=2\">every goroutine's stack</a></p>\n</body></html>\n")
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	io.WriteString(w, b.String())
}

// serveMetrics serves the metrics listener, if any, until shutdown closes
// it; errc receives an unexpected end.
func (s *Server) serveMetrics(errc chan<- error) {
	if s.metrics == nil {
		return
	}
	go func() {
		if err := s.metrics.Serve(s.metricsLis); !errors.Is(err, http.ErrServerClosed) {
			errc <- fmt.Errorf("metrics: %w", err)
		}
	}()
}

// MetricsAddr is the address /metrics is served on; nil when disabled.
func (s *Server) MetricsAddr() net.Addr {
	if s.metricsLis == nil {
		return nil
	}
	return s.metricsLis.Addr()
}

// closeMetrics stops the metrics listener; it is last to go, so that
// shutdown can be watched.
func (s *Server) closeMetrics() {
	if s.metrics != nil {
		s.metrics.Close()
	} else if s.metricsLis != nil {
		s.metricsLis.Close()
	}
}

// addrString is a's text, or "" for nil.
func addrString(a net.Addr) string {
	if a == nil {
		return ""
	}
	return a.String()
}
