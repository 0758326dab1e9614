package cli

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime"
	"strings"
	"sync/atomic"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"google.golang.org/grpc/grpclog"

	"github.com/otpless-events/otpless-events/server"
	"github.com/otpless-events/otpless-events/server/observe"
	"github.com/otpless-events/otpless-events/server/store/sqlitestore"
)

func newServe(stdout, stderr io.Writer) *cobra.Command {
	cfg := server.DefaultConfig()
	cfg.MetricsAddr = server.DefaultMetricsAddr
	logFormat, logLevel := "text", "info"
	var secFlags securityFlags
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Serve the webhook receiver, the gRPC API and the HTTP gateway",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := bindEnv(cmd.Flags()); err != nil {
				return err
			}
			logs := observe.NewLogWriter(stderr, observe.DefaultLogBacklog)
			defer logs.Close()
			log, err := newLogger(logs, logFormat, logLevel)
			if err != nil {
				return err
			}
			masked := slog.New(observe.MaskingHandler(log.Handler())) // as the server's own lines are
			grpcLog.Store(masked)
			logs.SetDropNotice(dropNotice(logFormat, logLevel))
			cfg.Logger = log
			// From here on an error that stops the server is a line of
			// the log, in its format and masked, rather than plain text
			// (unless the log's level is above errors).
			report := func(l *slog.Logger, err error) error {
				if !l.Enabled(cmd.Context(), slog.LevelError) {
					return err
				}
				l.Error("serve stopped", "error", err)
				return errReported{err}
			}
			fail := func(err error) error { return report(masked, err) }
			// The configuration's errors quote the operator's values, and
			// no secret (those are read after), which masking would hide:
			// "got *******00" for a bound.
			failConfig := func(err error) error { return report(log, err) }
			atLeastTwoProcs(log)
			// What makes the configuration unusable whatever the
			// credentials is refused before a first start makes them (and
			// prints them once only).
			withoutSecurity := cfg
			if withoutSecurity.Security, err = secFlags.settings(); err != nil {
				return failConfig(err)
			}
			withoutSecurity.Security.Disabled = true
			if err := withoutSecurity.Validate(); err != nil {
				return failConfig(fmt.Errorf("config: %w", namedSettings(cmd.Flags(), err)))
			}
			// So is an embedded store this build refuses: New would,
			// once they were made and printed. (A PostgreSQL store is
			// refused once reached, which New leaves to Run when the
			// database does not answer yet.)
			if path, err := cfg.SQLitePath(); err == nil {
				if err := sqlitestore.RefusedSchema(cmd.Context(), path); err != nil {
					return fail(fmt.Errorf("open store: %w", err))
				}
			}
			scheme := "http"
			if withoutSecurity.Security.TLSCertFile != "" {
				scheme = "https"
			}
			sec, gen, err := secFlags.resolve(cfg.DataDir)
			if err != nil {
				// What it made before failing is kept, the admin key as a
				// hash only: shown now, or never.
				announce(stdout, gen, scheme, cfg.HTTPAddr)
				return fail(err)
			}
			cfg.Security = sec
			for _, file := range secFlags.looseSecretFiles(cfg.DataDir) {
				log.Warn("a file of secrets may be read or written by other users: chmod 600 it", "file", file)
			}
			srv, err := server.New(cmd.Context(), cfg)
			if err != nil {
				// The credentials are kept already, the admin key as a
				// hash only: shown now, or never.
				announce(stdout, gen, scheme, cfg.HTTPAddr)
				return fail(err)
			}
			announce(stdout, gen, scheme, srv.HTTPAddr().String())
			if err := srv.Run(cmd.Context()); err != nil {
				return fail(err)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.GRPCAddr, "grpc-addr", cfg.GRPCAddr, "gRPC listen address")
	f.StringVar(&cfg.HTTPAddr, "http-addr", cfg.HTTPAddr, "HTTP gateway listen address (webhooks and JSON API)")
	f.StringVar(&cfg.DataDir, "data-dir", cfg.DataDir, "directory for the embedded database and first-start credentials")
	f.StringVar(&cfg.Store, "store", cfg.Store, "store DSN: sqlite://PATH, a file path, or postgres://… for PostgreSQL shared by several replicas (default: SQLite in --data-dir)")
	f.DurationVar(&cfg.HealthInterval, "health-interval", cfg.HealthInterval, "how often the store is pinged (at least 10ms); not ready while that fails")
	f.DurationVar(&cfg.WatchHeartbeat, "watch-heartbeat", cfg.WatchHeartbeat, "interval of the heartbeats of watch streams, sent whether they changed or not")
	f.DurationVar(&cfg.MaxWatchDuration, "max-watch-duration", cfg.MaxWatchDuration, "watch streams end with RECONNECT after this long (at most 1h)")
	f.IntVar(&cfg.WriteQueue, "write-queue", cfg.WriteQueue, "webhooks waiting for commit before ingest answers 503")
	f.IntVar(&cfg.MaxBatch, "max-batch", cfg.MaxBatch, "webhooks committed in one transaction at most (up to 2048)")
	f.Int64Var(&cfg.MaxBodyBytes, "max-body-bytes", cfg.MaxBodyBytes, "largest webhook body accepted (larger: 413)")
	f.DurationVar(&cfg.ShutdownGrace, "shutdown-grace", cfg.ShutdownGrace, "how long each step of shutdown waits: in-flight calls, committing what is queued, closing the store")
	f.DurationVar(&cfg.HTTPReadHeaderTimeout, "http-read-header-timeout", cfg.HTTPReadHeaderTimeout, "time allowed to read an HTTP request's headers, for a gRPC connection's handshake, and for a health Check's or List's request message to come")
	f.DurationVar(&cfg.HTTPReadTimeout, "http-read-timeout", cfg.HTTPReadTimeout, "time allowed to read a whole HTTP request, and for any other gRPC call's request message to come")
	f.DurationVar(&cfg.HTTPIdleTimeout, "http-idle-timeout", cfg.HTTPIdleTimeout, "idle HTTP keep-alive connections, and gRPC connections with no call in flight, are closed after this")
	f.DurationVar(&cfg.GRPCKeepalive, "grpc-keepalive", cfg.GRPCKeepalive, "a gRPC connection silent this long (at least 1s) is pinged, and closed (with its watches) when the ping goes unanswered as long again; clients may ping every 10 s or more")
	f.DurationVar(&cfg.PIIRetention, "pii-retention", cfg.PIIRetention, "how long raw bodies and personal data are kept (the status history stays)")
	f.DurationVar(&cfg.RetentionInterval, "retention-interval", cfg.RetentionInterval, "how often data past --pii-retention is purged (at least 10ms; a failed run is tried again after 5s, doubling up to this)")
	f.StringSliceVar(&cfg.CORSOrigins, "cors-origins", cfg.CORSOrigins, "comma-separated origins (scheme://host[:port], or *) whose pages may use the watch route")
	f.StringVar(&cfg.MetricsAddr, "metrics-addr", cfg.MetricsAddr, `Prometheus /metrics and /debug/pprof/ listen address, to keep private ("" disables)`)
	f.Var(checkedString{&logFormat, checkLogFormat}, "log-format", "log format: text or json")
	f.Var(checkedString{&logLevel, func(s string) error { _, err := parseLogLevel(s); return err }}, "log-level", "log level: debug, info, warn or error")
	secFlags.register(f)
	documentEnv(f)
	return cmd
}

// settingFlags are the flags of the Config fields that Validate names in
// its errors (server.SettingError).
var settingFlags = map[string]string{
	"GRPCAddr": "grpc-addr", "HTTPAddr": "http-addr", "MetricsAddr": "metrics-addr",
	"Store": "store", "DataDir": "data-dir", "CORSOrigins": "cors-origins",
	"WatchHeartbeat": "watch-heartbeat", "MaxWatchDuration": "max-watch-duration", "ShutdownGrace": "shutdown-grace",
	"HealthInterval": "health-interval", "PIIRetention": "pii-retention", "RetentionInterval": "retention-interval",
	"HTTPReadHeaderTimeout": "http-read-header-timeout", "HTTPReadTimeout": "http-read-timeout",
	"HTTPIdleTimeout": "http-idle-timeout", "GRPCKeepalive": "grpc-keepalive",
	"WriteQueue": "write-queue", "MaxBatch": "max-batch", "MaxBodyBytes": "max-body-bytes",
	"Security.TLSCertFile": "tls-cert", "Security.TLSKeyFile": "tls-key", "Security.ClientCAFile": "grpc-client-ca",
	"Security.MaxWatchesPerCredential": "max-watches-per-credential", "Security.MaxWatchesPerToken": "max-watches-per-token",
	"Security.MaxWatchesPerRequest": "max-watches-per-request", "Security.MaxWatches": "max-watches",
	"Security.Webhook.RatePerSecond": "webhook-rate", "Security.Webhook.Burst": "webhook-burst",
	"Security.Webhook.FailureRatePerSecond": "webhook-failure-rate", "Security.Webhook.FailureBurst": "webhook-failure-burst",
}

// namedSettings begins each of Validate's errors with where the values it
// refuses came from: the environment variable or the flag of each setting
// given one (of all its settings when none was given, as with two
// defaults that clash).
func namedSettings(flags *pflag.FlagSet, err error) error {
	errs := []error{err}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		errs = j.Unwrap()
	}
	for i, e := range errs {
		var se *server.SettingError
		if !errors.As(e, &se) {
			continue
		}
		var given, all []string
		for _, field := range se.Fields {
			name, ok := settingFlags[field]
			if !ok {
				continue
			}
			all = append(all, source(flags, name))
			if flags.Changed(name) {
				given = append(given, source(flags, name))
			}
		}
		if len(given) == 0 {
			given = all
		}
		if len(given) > 0 {
			errs[i] = fmt.Errorf("%s: %w", strings.Join(given, ", "), e)
		}
	}
	return errors.Join(errs...)
}

// atLeastTwoProcs gives the Go scheduler two Ps on a machine with one CPU,
// unless $GOMAXPROCS says otherwise. With one P, the store's single writer,
// which blocks in WAL writes and fsync, takes turns with the HTTP handlers
// and ingest collapses: on one CPU, serve took 1,280–1,340 webhooks/s with
// a p99 of 3.5–4.1 s with one P, and 4,950/s with 64 ms with two. (Go itself
// never chooses fewer than two for a container's CPU limit; it does for a
// one-CPU machine.)
func atLeastTwoProcs(log *slog.Logger) {
	if n := runtime.GOMAXPROCS(0); n < 2 && os.Getenv("GOMAXPROCS") == "" {
		runtime.GOMAXPROCS(2)
		log.Info("one CPU: running with GOMAXPROCS=2 so that the store's writer cannot stall the server", "was", n)
	}
}

// grpcLog is where grpclog's errors go once serve has its log; before,
// standard error.
var grpcLog atomic.Pointer[slog.Logger]

// GRPCLogger is grpclog's logger, for main to install before anything uses
// gRPC (grpclog.SetLoggerV2 must come first): grpc-go's and grpc-gateway's
// own errors (a client gone during an answer) then go through serve's log,
// masked, not straight to a standard error that may be stuck.
func GRPCLogger() grpclog.LoggerV2 {
	return grpclog.NewLoggerV2(io.Discard, io.Discard, grpcErrors{grpcLog.Load})
}

// grpcErrors writes what grpclog logs as errors as lines of the log that
// to gives, at warn (grpc-go's own judgment of an error is not the
// server's), or to standard error when there is none. The line's message
// is grpc-go's text, masked as the attributes of every line are.
type grpcErrors struct{ to func() *slog.Logger }

func (g grpcErrors) Write(p []byte) (int, error) {
	log := g.to()
	if log == nil {
		return os.Stderr.Write(p)
	}
	log.Warn(observe.LoggedText(strings.TrimSpace(string(p))), "component", "grpc")
	return len(p), nil
}

// dropNotice makes the line the log writes after it dropped lines: a
// warning, or an error where the level leaves warnings out (the dropped
// lines were errors then).
func dropNotice(format, level string) func(dropped int) []byte {
	return func(dropped int) []byte {
		var line bytes.Buffer
		notice, _ := newLogger(&line, format, level)
		lvl := slog.LevelWarn
		if !notice.Enabled(context.Background(), lvl) {
			lvl = slog.LevelError
		}
		notice.Log(context.Background(), lvl, "log lines dropped: a write to standard error lasted over "+observe.StuckAfter.String(), "dropped", dropped)
		return line.Bytes()
	}
}
