// Package server wires the service together: configuration, the store chosen
// by DSN, the group-commit writer, the broker, the gRPC server (with health
// and reflection), the HTTP gateway, and the lifecycle that starts and stops
// them in order. It holds no domain logic.
package server

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	// Registers gzip, which gRPC clients may compress their messages with
	// (grpc-go bounds what a message decompresses to by MaxRecvMsgSize).
	_ "google.golang.org/grpc/encoding/gzip"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/reflection"
	"google.golang.org/grpc/stats"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/tap"
	"google.golang.org/grpc/test/bufconn"

	eventsv1 "github.com/otpless-events/otpless-events/gen/otpless/events/v1"
	"github.com/otpless-events/otpless-events/server/api"
	"github.com/otpless-events/otpless-events/server/auth"
	"github.com/otpless-events/otpless-events/server/broker"
	"github.com/otpless-events/otpless-events/server/broker/pgnotify"
	"github.com/otpless-events/otpless-events/server/gateway"
	"github.com/otpless-events/otpless-events/server/observe"
	"github.com/otpless-events/otpless-events/server/store"
	"github.com/otpless-events/otpless-events/server/store/groupcommit"
	"github.com/otpless-events/otpless-events/server/store/pgstore"
	"github.com/otpless-events/otpless-events/server/store/sqlitestore"
)

// Config is everything serve can be told.
type Config struct {
	// GRPCAddr is where gRPC listens.
	GRPCAddr string
	// HTTPAddr is where the HTTP gateway (webhooks, JSON API) listens.
	HTTPAddr string
	// DataDir holds the embedded database when Store is empty.
	DataDir string
	// Store selects the backend: "" (SQLite in DataDir), "sqlite://PATH", a
	// plain file path, or "postgres://…" (also postgresql://) for PostgreSQL,
	// which several replicas can share; its search_path parameter picks the
	// schema.
	Store string
	// HealthInterval is how often the store is pinged; readiness is
	// NOT_SERVING while that fails.
	HealthInterval time.Duration
	// WatchHeartbeat is the interval of watch streams' heartbeats, sent
	// whether the stream changed or not.
	WatchHeartbeat time.Duration
	// MaxWatchDuration ends a watch stream with RECONNECT after this long.
	MaxWatchDuration time.Duration
	// WriteQueue bounds webhooks waiting to be committed; past it, 503.
	WriteQueue int
	// MaxBatch bounds webhooks committed in one transaction.
	MaxBatch int
	// MaxBodyBytes bounds webhook bodies; past it, 413.
	MaxBodyBytes int64
	// ShutdownGrace bounds how long shutdown waits for in-flight calls.
	ShutdownGrace time.Duration
	// HTTPReadHeaderTimeout, HTTPReadTimeout and HTTPIdleTimeout bound slow
	// HTTP clients, on the HTTP and metrics ports: reading a request's
	// headers, reading a whole request, and keeping an idle connection.
	// HTTPReadTimeout also bounds the wait for a gRPC call's message, and
	// HTTPReadHeaderTimeout (the lesser of the two) a health Check's or List's.
	HTTPReadHeaderTimeout, HTTPReadTimeout, HTTPIdleTimeout time.Duration
	// GRPCKeepalive is how long a gRPC connection may send nothing before
	// the server pings it; one that does not answer within as long again
	// is closed, and its watches with it (a peer gone without a word would
	// otherwise hold them until TCP gives up, about 15 minutes). Clients
	// may ping as often as every 10 s.
	GRPCKeepalive time.Duration
	// PIIRetention is how long raw bodies and personal data are kept; the
	// status history stays. Checked every RetentionInterval.
	PIIRetention, RetentionInterval time.Duration
	// CORSOrigins may follow requests from a browser page on another origin
	// (the watch route only): scheme://host[:port] entries or "*".
	CORSOrigins []string
	// Security says who may call what.
	Security Security
	// MetricsAddr is where /metrics and /debug/pprof/ listen; "" serves
	// neither (the default; serve uses DefaultMetricsAddr).
	MetricsAddr string
	// Logger receives the server's logs, personal data masked; nil discards
	// them.
	Logger *slog.Logger

	// relayPing, set by tests, is the PostgreSQL relay's Options.Ping (zero:
	// its default).
	relayPing time.Duration
	// sendWait, set by tests, is how long a gRPC stream's message may wait
	// for its client before boundedSends closes the connection (zero:
	// gateway.StreamWriteTimeout).
	sendWait time.Duration
	// certCheck, set by tests, is how often at most the TLS files are read
	// again (zero: certCheckInterval).
	certCheck time.Duration
}

// MaxMaxBodyBytes bounds MaxBodyBytes: the gRPC message limits are sized
// from twice it and a page of events, and must fit an int of 32 bits.
const MaxMaxBodyBytes = 512 << 20

// DefaultMaxWatches is serve's bound of concurrent watch streams in all.
// A stream costs about 17 KiB over gRPC and up to 27 KiB as Server-Sent
// Events over HTTP/1.1, so 20,000 hold 330–530 MiB, and a garbage
// collection lengthens with their stacks (130–290 ms with 10,000): what a
// replica of two CPUs and a few GiB carries beside its store, where
// streams without a bound (a token per login, a surge of browsers) would
// take it out of memory. It is twice the 10,000 watchers the benchmarks
// run, so that they need no flag for it.
const DefaultMaxWatches = 20000

// Security configures authentication and transport security.
type Security struct {
	// Disabled turns authentication off: every caller may do everything and
	// sees personal data. For tests and embedding; serve never sets it.
	Disabled bool
	// APIKeys authenticate the internal API (by hash).
	APIKeys []auth.APIKey
	// WatchTokenKeys sign watch tokens (the first) and verify them (any).
	WatchTokenKeys [][]byte
	// Webhook says how webhook senders are authenticated and limited.
	Webhook auth.WebhookConfig
	// MaxWatchesPerCredential, MaxWatchesPerToken (of one watch token) and
	// MaxWatchesPerRequest bound concurrent watch streams (0: unbounded).
	MaxWatchesPerCredential, MaxWatchesPerToken, MaxWatchesPerRequest int
	// MaxWatches bounds concurrent watch streams in all, over gRPC and
	// through the gateway alike (0: unbounded; serve's default is
	// DefaultMaxWatches).
	MaxWatches int
	// TLSCertFile and TLSKeyFile, when set, serve both listeners over TLS.
	TLSCertFile, TLSKeyFile string
	// ClientCAFile, when set, requires gRPC clients to present a certificate
	// signed by one of its CAs (mutual TLS).
	ClientCAFile string
}

func (s *Security) validate() []error {
	var errs []error
	refuse := func(err error, fields ...string) {
		if err != nil {
			errs = append(errs, &SettingError{Fields: fields, Err: err})
		}
	}
	if (s.TLSCertFile == "") != (s.TLSKeyFile == "") {
		refuse(errors.New("TLS needs both a certificate and a key"), "Security.TLSCertFile", "Security.TLSKeyFile")
	}
	if s.ClientCAFile != "" && s.TLSCertFile == "" {
		refuse(errors.New("mutual TLS needs a TLS certificate and key"), "Security.ClientCAFile", "Security.TLSCertFile", "Security.TLSKeyFile")
	}
	if s.TLSCertFile != "" && s.TLSKeyFile != "" {
		// The files are read now too, so that a start refuses what it
		// cannot read before it makes credentials.
		refuse(new(security).loadTLS(*s, 0, nil), "Security.TLSCertFile", "Security.TLSKeyFile", "Security.ClientCAFile")
	}
	for _, n := range []struct {
		name, field string
		v           int
	}{{"max watches per credential", "MaxWatchesPerCredential", s.MaxWatchesPerCredential}, {"max watches per token", "MaxWatchesPerToken", s.MaxWatchesPerToken},
		{"max watches per request", "MaxWatchesPerRequest", s.MaxWatchesPerRequest}, {"max watches", "MaxWatches", s.MaxWatches}} {
		if n.v < 0 {
			refuse(fmt.Errorf("%s must not be negative, got %d", n.name, n.v), "Security."+n.field)
		}
	}
	// Each limit checked alone, to name its fields.
	w := s.Webhook
	refuse((&auth.WebhookConfig{RatePerSecond: w.RatePerSecond, Burst: w.Burst}).CheckLimits(),
		"Security.Webhook.RatePerSecond", "Security.Webhook.Burst")
	refuse((&auth.WebhookConfig{FailureRatePerSecond: w.FailureRatePerSecond, FailureBurst: w.FailureBurst}).CheckLimits(),
		"Security.Webhook.FailureRatePerSecond", "Security.Webhook.FailureBurst")
	if s.Disabled {
		return errs
	}
	if len(s.APIKeys) == 0 {
		errs = append(errs, errors.New("no API key configured"))
	}
	if len(s.WatchTokenKeys) == 0 {
		errs = append(errs, errors.New("no watch-token signing key configured"))
	}
	if !s.Webhook.Configured() {
		errs = append(errs, errors.New("no webhook key, basic credential or signing secret configured, and unauthenticated webhooks not allowed"))
	}
	return errs
}

// DefaultConfig returns the configuration serve starts from.
func DefaultConfig() Config {
	return Config{
		GRPCAddr:              "127.0.0.1:9090",
		HTTPAddr:              "127.0.0.1:8080",
		DataDir:               "otpless-data",
		WatchHeartbeat:        15 * time.Second,
		MaxWatchDuration:      time.Hour,
		WriteQueue:            4096,
		MaxBatch:              256,
		MaxBodyBytes:          gateway.DefaultMaxBodyBytes,
		ShutdownGrace:         10 * time.Second,
		HealthInterval:        time.Second,
		PIIRetention:          7 * 24 * time.Hour,
		RetentionInterval:     time.Hour,
		HTTPReadHeaderTimeout: 10 * time.Second,
		HTTPReadTimeout:       30 * time.Second,
		HTTPIdleTimeout:       2 * time.Minute,
		GRPCKeepalive:         time.Minute,
	}
}

// Validate reports every setting that cannot work, joined (errors.Join),
// so that a start names them all at once. Each is a *SettingError naming
// the fields it is about.
func (c *Config) Validate() error {
	var errs []error
	refuse := func(err error, fields ...string) {
		if err != nil {
			errs = append(errs, &SettingError{Fields: fields, Err: err})
		}
	}
	if c.GRPCAddr == "" {
		refuse(errors.New("grpc address is empty"), "GRPCAddr")
	}
	if c.HTTPAddr == "" {
		refuse(errors.New("http address is empty"), "HTTPAddr")
	}
	listens := []listenAddr{{"grpc", c.GRPCAddr, "GRPCAddr"}, {"http", c.HTTPAddr, "HTTPAddr"}, {"metrics", c.MetricsAddr, "MetricsAddr"}}
	for _, a := range listens {
		if err := checkListenAddr(a.addr); a.addr != "" && err != nil {
			refuse(fmt.Errorf("%s address %q: %w", a.name, a.addr, err), a.field)
		}
	}
	if a, b, err := checkListenClash(listens); err != nil {
		refuse(err, a, b)
	}
	if c.Store == "" && c.DataDir == "" {
		refuse(errors.New("neither a store DSN nor a data directory is set"), "Store", "DataDir")
	}
	if backend, dsn, err := parseStore(c.Store); err != nil {
		refuse(err, "Store")
	} else if backend == "postgres" {
		refuse(pgstore.CheckDSN(dsn), "Store") // its text hides the password
	}
	for _, d := range []struct {
		name, field string
		v           time.Duration
	}{{"watch heartbeat", "WatchHeartbeat", c.WatchHeartbeat}, {"max watch duration", "MaxWatchDuration", c.MaxWatchDuration},
		{"shutdown grace", "ShutdownGrace", c.ShutdownGrace}, {"health interval", "HealthInterval", c.HealthInterval},
		{"PII retention", "PIIRetention", c.PIIRetention}, {"retention interval", "RetentionInterval", c.RetentionInterval},
		{"HTTP read-header timeout", "HTTPReadHeaderTimeout", c.HTTPReadHeaderTimeout}, {"HTTP read timeout", "HTTPReadTimeout", c.HTTPReadTimeout},
		{"HTTP idle timeout", "HTTPIdleTimeout", c.HTTPIdleTimeout}, {"gRPC keepalive", "GRPCKeepalive", c.GRPCKeepalive}} {
		if d.v <= 0 {
			refuse(fmt.Errorf("%s must be positive, got %s", d.name, d.v), d.field)
		}
	}
	// Below that, a loop of purges or pings that mostly find nothing to do
	// would take a CPU (1ns: 133% of an idle server's).
	const minInterval = 10 * time.Millisecond
	for _, d := range []struct {
		name, field string
		v           time.Duration
	}{{"health interval", "HealthInterval", c.HealthInterval}, {"retention interval", "RetentionInterval", c.RetentionInterval}} {
		if d.v > 0 && d.v < minInterval {
			refuse(fmt.Errorf("%s must be at least %s, got %s", d.name, minInterval, d.v), d.field)
		}
	}
	// grpc-go pings a silent connection a second after at the soonest,
	// whatever it is given (a warning to its own log says so), so a shorter
	// keepalive would be taken and not kept.
	const minKeepalive = time.Second
	if c.GRPCKeepalive > 0 && c.GRPCKeepalive < minKeepalive {
		refuse(fmt.Errorf("gRPC keepalive must be at least %s, got %s", minKeepalive, c.GRPCKeepalive), "GRPCKeepalive")
	}
	refuse(gateway.CheckCORSOrigins(c.CORSOrigins), "CORSOrigins")
	for _, n := range []struct {
		name, field string
		v           int64
	}{{"write queue", "WriteQueue", int64(c.WriteQueue)}, {"max batch", "MaxBatch", int64(c.MaxBatch)}, {"max body bytes", "MaxBodyBytes", c.MaxBodyBytes}} {
		if n.v <= 0 {
			refuse(fmt.Errorf("%s must be positive, got %d", n.name, n.v), n.field)
		}
	}
	// Past the last bucket of their histograms, a batch's size and a
	// watch stream's duration would be read as that bucket's.
	if c.MaxBatch > observe.MaxCommitWebhooks {
		refuse(fmt.Errorf("max batch must be at most %d webhooks, got %d", observe.MaxCommitWebhooks, c.MaxBatch), "MaxBatch")
	}
	if c.MaxWatchDuration > observe.MaxCallDuration {
		refuse(fmt.Errorf("max watch duration must be at most %s, got %s", observe.MaxCallDuration, c.MaxWatchDuration), "MaxWatchDuration")
	}
	if c.MaxBodyBytes > MaxMaxBodyBytes {
		refuse(fmt.Errorf("max body bytes must be at most %s, got %d", api.Size(MaxMaxBodyBytes), c.MaxBodyBytes), "MaxBodyBytes")
	}
	errs = append(errs, c.Security.validate()...)
	return errors.Join(errs...)
}

// A SettingError is Validate's refusal of the value of a setting, or of
// settings together, named by their fields in Config ("MaxBatch",
// "Security.TLSCertFile"), so that a caller can say where the values came
// from: serve names the flag or the environment variable.
type SettingError struct {
	Fields []string
	Err    error
}

func (e *SettingError) Error() string { return e.Err.Error() }
func (e *SettingError) Unwrap() error { return e.Err }

// checkListenAddr refuses what no listener could take, whatever the
// machine: an address without a port, or one whose port is neither a
// number up to 65535 nor a service name. Found before the store is opened
// and the first start's credentials are made, rather than at the listen.
func checkListenAddr(addr string) error {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		var ae *net.AddrError
		if errors.As(err, &ae) {
			return errors.New(ae.Err + " (want host:port, :port for every interface)")
		}
		return err
	}
	if _, err := net.LookupPort("tcp", port); err != nil {
		return fmt.Errorf("port %q is neither a number up to 65535 nor a service name", port)
	}
	return nil
}

// checkListenClash refuses two listeners on one port whose hosts overlap
// (the same host, or a wildcard, which on Linux takes the port on every
// address), which failed at the listen, after the first start had made and
// printed its credentials. Port 0 is a new port each time.
func checkListenClash(addrs []listenAddr) (field1, field2 string, err error) {
	type listen struct {
		listenAddr
		host string
		port int
	}
	var ls []listen
	for _, a := range addrs {
		host, port, err := net.SplitHostPort(a.addr)
		if err != nil {
			continue // checkListenAddr says why
		}
		if n, err := net.LookupPort("tcp", port); err == nil && n != 0 {
			ls = append(ls, listen{a, listenHost(host), n})
		}
	}
	wildcard := func(h string) bool { return h == "" || h == "0.0.0.0" || h == "::" }
	for i, a := range ls {
		for _, b := range ls[i+1:] {
			if a.port == b.port && (a.host == b.host || wildcard(a.host) || wildcard(b.host)) {
				return a.field, b.field, fmt.Errorf("%s address %q and %s address %q listen on the same port", a.name, a.addr, b.name, b.addr)
			}
		}
	}
	return "", "", nil
}

// listenAddr is a listener's address, the field of Config it is in, and
// the name of the listener.
type listenAddr struct{ name, addr, field string }

// listenHost is the address net.Listen takes host for, so that one host
// written two ways is seen as one: an IP as its canonical text (an
// IPv4-mapped address as its IPv4 one), and localhost, in any case, as
// 127.0.0.1, which Listen takes first. Other names are left as they are.
func listenHost(host string) string {
	if ip := net.ParseIP(host); ip != nil {
		return ip.String()
	}
	host = strings.ToLower(host)
	if host == "localhost" {
		return "127.0.0.1"
	}
	return host
}

// parseStore splits a store DSN into backend and location.
func parseStore(dsn string) (backend, location string, err error) {
	switch {
	case dsn == "":
		return "sqlite", "", nil
	case strings.HasPrefix(dsn, "sqlite://"):
		return "sqlite", strings.TrimPrefix(dsn, "sqlite://"), nil
	case strings.HasPrefix(dsn, "postgres://"), strings.HasPrefix(dsn, "postgresql://"):
		return "postgres", dsn, nil
	case strings.Contains(dsn, "://"):
		scheme, _, _ := strings.Cut(dsn, "://") // not the whole DSN: it may hold a password
		return "", "", fmt.Errorf("store scheme %q is not supported (want sqlite://, postgres:// or a file path)", scheme)
	case isKeywordValueDSN(dsn):
		// Not quoted either. Taken for a path, it named a SQLite file, and
		// every log line about that file held the password.
		return "", "", errors.New("the store looks like a PostgreSQL connection string in keyword/value form (host=… password=…): write it as postgres://USER:PASSWORD@HOST/DB?…, or, for a file of that name, sqlite://PATH")
	default:
		return "sqlite", dsn, nil
	}
}

// isKeywordValueDSN reports whether dsn has a field that starts as one of
// the connection parameters of libpq's keyword/value form ("host=…
// password=…"), which no file path is meant to.
func isKeywordValueDSN(dsn string) bool {
	for _, f := range strings.Fields(dsn) {
		key, _, ok := strings.Cut(f, "=")
		if !ok {
			continue
		}
		switch key {
		case "host", "hostaddr", "port", "dbname", "user", "password", "passfile", "sslmode", "service":
			return true
		}
	}
	return false
}

// Server is a configured, listening service; Run serves it.
type Server struct {
	cfg    Config
	log    *slog.Logger
	store  store.Store
	writer *groupcommit.Writer
	broker *broker.Broker
	purge  *retention      // nil when the store cannot purge
	relay  *pgnotify.Relay // nil unless the store is shared (PostgreSQL)
	// pending is the PostgreSQL store when New could not reach its
	// database: Run connects it, and is not ready until then. While
	// waiting, ingest answers 503 without queueing for the writer.
	pending *pgstore.Store
	// connecting is New's first attempt to connect pending when New
	// returned before it ended (connectWait); Run takes its outcome.
	connecting *connectAttempt
	waiting    atomic.Bool
	health     *health.Server
	grpc       *grpc.Server
	peers      peerConns // the gRPC listener's connections (boundedSends)
	http       *http.Server
	conn       *grpc.ClientConn
	// streams are the HTTP/1.1 event streams that left their handlers,
	// which http.Server.Shutdown does not wait for.
	streams gateway.Streams

	// shuttingDown is canceled, by startShutdown, when shutdown begins.
	shuttingDown  context.Context
	startShutdown context.CancelFunc
	// httpCut is closed when shutdown, its grace over, closes the HTTP
	// connections still in use (gateway.Options.Cut).
	httpCut chan struct{}
	// stopHealth ends the loop that pings the store; nil before Run.
	stopHealth func()
	// ran is set by the first Run: a server runs once.
	ran atomic.Bool

	obs        *observe.Observer
	metrics    *http.Server // nil without Config.MetricsAddr
	metricsLis net.Listener

	grpcLis, httpLis net.Listener
	certs            *certReloader // nil: no TLS
	inproc           *bufconn.Listener
}

// New opens the store and binds both listeners, so configuration and bind
// errors surface before anything is served. A PostgreSQL database that
// cannot be reached yet is not an error: Run waits for it.
func New(ctx context.Context, cfg Config) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = slog.New(observe.MaskingHandler(observe.RequestIDHandler(log.Handler())))
	s := &Server{cfg: cfg, log: log, obs: observe.New(log.With("component", "access")), httpCut: make(chan struct{})}
	ok := false
	defer func() {
		if !ok {
			s.closeAll()
		}
	}()

	var err error
	if s.store, err = openStore(ctx, cfg, log); err != nil {
		return nil, err
	}
	s.broker = broker.New(0)
	publish := s.broker.Publish
	if pg, ok := s.store.(*pgstore.Store); ok {
		// Replicas share the database: watchers here follow every
		// replica's commits, this one's included, through the relay.
		s.relay = pgnotify.New(pg, s.broker, pgnotify.Options{Logger: log, Ping: cfg.relayPing})
		publish = s.relay.OnCommit
	}
	if p, ok := s.store.(store.Purger); ok {
		s.purge = &retention{purger: p, keep: cfg.PIIRetention, interval: cfg.RetentionInterval, log: log.With("component", "retention"),
			publish: publish, observe: s.obs.ObservePurge}
	} else {
		log.Warn("the store cannot purge personal data; it is kept indefinitely")
	}
	s.writer = groupcommit.New(s.store, groupcommit.Options{
		QueueSize: cfg.WriteQueue,
		MaxBatch:  cfg.MaxBatch,
		OnCommit:  publish,
		Observe:   s.obs.ObserveCommit,
		Logger:    log,
	})

	sec, err := newSecurity(cfg.Security, cfg.certCheck, log)
	if err != nil {
		return nil, err
	}
	if sec.certs != nil {
		warnOutOfDate(log, cfg.Security.TLSCertFile, sec.certs.current().cert.Leaf, time.Now())
		s.certs = sec.certs
	}
	webhooks := api.NewWebhookServer(untilConnected{s.writer, &s.waiting}, log.With("component", "ingest"))
	webhooks.SetObserver(s.obs)
	webhooks.SetMaxBodyBytes(cfg.MaxBodyBytes)
	requests := api.NewRequestServer(s.store, s.broker, api.WatchOptions{
		Heartbeat:        cfg.WatchHeartbeat,
		MaxDuration:      cfg.MaxWatchDuration,
		MaxPerCredential: cfg.Security.MaxWatchesPerCredential,
		MaxPerToken:      cfg.Security.MaxWatchesPerToken,
		MaxPerRequest:    cfg.Security.MaxWatchesPerRequest,
		MaxInAll:         cfg.Security.MaxWatches,
		Tokens:           sec.tokens,
	})
	s.health = health.NewServer()
	s.shuttingDown, s.startShutdown = context.WithCancel(context.Background())
	s.health.SetServingStatus("", healthpb.HealthCheckResponse_NOT_SERVING)
	servedMethods := sync.OnceValue(func() map[string]bool { // asked once the server runs
		served := make(map[string]bool)
		for name, info := range s.grpc.GetServiceInfo() {
			for _, m := range info.Methods {
				served["/"+name+"/"+m.Name] = true
			}
		}
		return served
	})
	opts := []grpc.ServerOption{
		grpc.StatsHandler(s.obs.StatsHandler(func(method string) bool { return servedMethods()[method] })),
	}
	// The tap authenticates calls (when security is on), bounds those
	// that need no credential, and bounds the wait for every call's
	// message. A call refused there has no stats and meets no
	// interceptor: it is logged and counted here.
	public := publicCallLimit(MaxPublicCalls, MaxPublicCallsInAll)
	opts = append(opts, grpc.InTapHandle(func(ctx context.Context, info *tap.Info) (context.Context, error) {
		var err error
		if sec.tap != nil {
			ctx, err = sec.tap(ctx, info)
		}
		if err == nil {
			err = public(ctx, info.FullMethodName)
		}
		if err != nil {
			s.obs.Refused(ctx, info.FullMethodName, err)
			return ctx, err
		}
		wait := cfg.HTTPReadTimeout
		if unaryPublic(info.FullMethodName) {
			// Its message is sent with its headers: one held back
			// holds a place of the unary public calls, which
			// liveness probes need, only briefly.
			wait = min(wait, cfg.HTTPReadHeaderTimeout)
		}
		return awaitMessage(ctx, wait), nil
	}), grpc.StatsHandler(messageArrival{}))
	sendWait := gateway.StreamWriteTimeout
	if cfg.sendWait > 0 {
		sendWait = cfg.sendWait
	}
	s.grpc = grpc.NewServer(append(opts,
		// gRPC Ingest messages are bounded like the webhook route's bodies
		// (the protobuf form of a body is smaller than its JSON) by
		// Ingest itself (SetMaxBodyBytes), where they are counted and
		// logged with the ids they name; grpc-go's own limit, which
		// refuses a message before any interceptor, is only for the far
		// larger.
		grpc.MaxRecvMsgSize(int(2*cfg.MaxBodyBytes)),
		// A call's headers: grpc-go's default is 16 MiB, held for each
		// call as it is read. Twice the HTTP port's 1 MiB, so that every
		// header that port reads and the gateway passes on (Authorization)
		// reaches the credential check.
		grpc.MaxHeaderListSize(2*http.DefaultMaxHeaderBytes),
		// A connection with no call in flight is closed (GOAWAY, which
		// clients answer by dialling again for their next call) after
		// the HTTP port's idle timeout: grpc-go keeps it for good while
		// its client answers pings, which needs no credential.
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: cfg.GRPCKeepalive, Timeout: cfg.GRPCKeepalive, MaxConnectionIdle: cfg.HTTPIdleTimeout}),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 10 * time.Second, PermitWithoutStream: true}),
		// A connection has the HTTP port's header timeout to finish its
		// handshake (TLS, HTTP/2's preface and settings): grpc-go's own
		// bound is 120 s.
		grpc.ConnectionTimeout(cfg.HTTPReadHeaderTimeout),
		grpc.ChainUnaryInterceptor(s.unaryInterceptors(sec.unary...)...),
		grpc.ChainStreamInterceptor(s.streamInterceptors(append(slices.Clip(sec.stream), healthWatchesEnd(s.shuttingDown),
			reflectionEnds(s.shuttingDown), boundedSends(sendWait, s.peers.close))...)...),
	)...)
	eventsv1.RegisterWebhookServiceServer(s.grpc, webhooks)
	eventsv1.RegisterRequestServiceServer(s.grpc, requests)
	healthpb.RegisterHealthServer(s.grpc, s.health)
	reflection.Register(s.grpc)
	s.observeServer()

	// The gateway reaches gRPC through an in-process listener, so that its
	// calls pass the server's interceptors (credentials, limits, logs and
	// metrics) as a client's do; this connection never leaves memory. Its
	// watch route needs none (watchInProcess).
	s.inproc = bufconn.Listen(1 << 20)
	s.conn, err = grpc.NewClient("passthrough:///in-process",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return s.inproc.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		// A page of events holds at least one, whose raw body can be as
		// large as --max-body-bytes allows.
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(api.MaxPageBytes+2*int(cfg.MaxBodyBytes))),
		grpc.WithChainUnaryInterceptor(s.obs.UnaryClientInterceptor()),
		grpc.WithChainStreamInterceptor(s.obs.StreamClientInterceptor()))
	if err != nil {
		return nil, fmt.Errorf("gateway connection: %w", err)
	}
	if sec.guard != nil && len(cfg.Security.Webhook.TrustedProxies) > 0 {
		s.obs.SetClientAddr(sec.guard.ClientAddr)
	}
	handler, err := gateway.New(ctx, s.conn, webhooks, gateway.Options{
		MaxBodyBytes:  cfg.MaxBodyBytes,
		Guard:         sec.guard,
		Keyring:       sec.keyring,
		CORSOrigins:   cfg.CORSOrigins,
		SSEHeartbeat:  cfg.WatchHeartbeat,
		Watch:         s.watchInProcess(requests, sec.stream),
		Streams:       &s.streams,
		Panicked:      s.obs.WatchPanicked,
		Cut:           s.httpCut,
		Unanswered:    s.obs.Unanswered,
		Refused:       s.obs.WebhookRefused,
		FailuresSpent: s.obs.FailuresSpent,
		Logger:        log.With("component", "gateway"),
	})
	if err != nil {
		return nil, err
	}
	s.http = &http.Server{
		Handler:           s.httpHandler(handler),
		ReadHeaderTimeout: cfg.HTTPReadHeaderTimeout,
		ReadTimeout:       cfg.HTTPReadTimeout,
		IdleTimeout:       cfg.HTTPIdleTimeout,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
		TLSConfig:         sec.httpTLS,
	}

	lc := net.ListenConfig{Control: closeDeadPeers}
	// Plain TCP: Go listens with MPTCP where the kernel has it, and an MPTCP
	// socket refuses TCP_USER_TIMEOUT.
	lc.SetMultipathTCP(false)
	if s.grpcLis, err = lc.Listen(ctx, "tcp", cfg.GRPCAddr); err != nil {
		return nil, fmt.Errorf("grpc listener: %w", err)
	}
	if sec.grpcTLS != nil {
		// TLS ends at the listener, so the gateway's in-process connection
		// stays plain and client certificates are checked in the handshake.
		s.grpcLis = tls.NewListener(s.grpcLis, sec.grpcTLS)
	}
	s.grpcLis = s.peers.listen(s.grpcLis)
	if s.httpLis, err = lc.Listen(ctx, "tcp", cfg.HTTPAddr); err != nil {
		return nil, fmt.Errorf("http listener: %w", err)
	}
	if err := s.listenMetrics(ctx, &lc); err != nil {
		return nil, err
	}
	// PostgreSQL is reached, and migrated, once the ports are bound, so
	// that their errors come first and a silent database delays nothing
	// else. One that cannot be reached yet is left to Run, and so is a
	// first attempt that outlasts connectWait (a migration, or the wait for
	// another replica's), so that the ports answer meanwhile, not ready.
	if pg, isPG := s.store.(*pgstore.Store); isPG {
		attempt := connectInBackground(ctx, pg)
		select {
		case <-attempt.done:
		case <-time.After(connectWait):
			log.Info("PostgreSQL still connecting or migrating; the server will listen, not ready, meanwhile")
			s.pending, s.connecting = pg, attempt
			s.waiting.Store(true)
			ok = true
			return s, nil
		}
		if err := attempt.err; err != nil {
			if !pgstore.Unreachable(err) && ctx.Err() == nil {
				return nil, fmt.Errorf("open store: %w", err)
			}
			if ctx.Err() == nil {
				log.Warn(waitingFor(err)+"; the server will listen, not ready, and connect again", "error", err)
			}
			s.pending = pg
			s.waiting.Store(true)
		}
	}
	ok = true
	return s, nil
}

// connectWait is how long New waits for its first attempt to connect
// PostgreSQL, and migrate, before it leaves the attempt to Run: a
// migration can take minutes (an index over a large table), and a
// liveness probe's patience is about 30 s (Kubernetes' defaults).
var connectWait = 5 * time.Second

// connectAttempt is a Connect running on a goroutine of its own: done is
// closed once it has returned err; cancel ends it. Its context ends with
// it, whoever waits for it or not: derived from New's, it would otherwise
// stay with New's context for as long as that lasts.
type connectAttempt struct {
	done   chan struct{}
	err    error
	cancel context.CancelFunc
}

func connectInBackground(ctx context.Context, pg *pgstore.Store) *connectAttempt {
	ctx, cancel := context.WithCancel(ctx)
	a := &connectAttempt{done: make(chan struct{}), cancel: cancel}
	go func() {
		defer close(a.done)
		defer cancel()
		a.err = pg.Connect(ctx)
	}()
	return a
}

// SQLitePath returns the file of the embedded database that Store and
// DataDir name, as serve opens it; an error when Store names another
// backend.
func (c *Config) SQLitePath() (string, error) {
	backend, path, err := parseStore(c.Store)
	if err != nil {
		return "", err
	}
	if backend != "sqlite" {
		return "", fmt.Errorf("the store is %s", backend)
	}
	return c.sqliteFileAt(path)
}

// sqliteFileAt is the embedded database's file: location, the path a
// sqlite store DSN gives, or the default file in DataDir.
func (c *Config) sqliteFileAt(location string) (string, error) {
	if location != "" {
		return location, nil
	}
	if c.DataDir == "" {
		return "", errors.New("neither a store DSN nor a data directory is set")
	}
	return filepath.Join(c.DataDir, sqliteFile), nil
}

// sqliteFile is the embedded database's file in DataDir.
const sqliteFile = "otpless-events.db"

func openStore(ctx context.Context, cfg Config, log *slog.Logger) (store.Store, error) {
	backend, path, err := parseStore(cfg.Store)
	if err != nil {
		return nil, err
	}
	if backend == "postgres" {
		st, err := pgstore.New(path, pgstore.WithLogger(log)) // connected at the end of New
		if err != nil {
			return nil, fmt.Errorf("open store: %w", err)
		}
		return st, nil
	}
	inDataDir := path == ""
	if path, err = cfg.sqliteFileAt(path); err != nil {
		return nil, err
	}
	if inDataDir {
		if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
			return nil, fmt.Errorf("data directory: %w", err)
		}
	}
	st, err := sqlitestore.Open(ctx, path, sqlitestore.WithLogger(log), sqlitestore.WithProcessLock())
	if err != nil {
		return nil, fmt.Errorf("open store: %w", err) // its errors name the file
	}
	return st, nil
}

// GRPCAddr is the address gRPC listens on.
func (s *Server) GRPCAddr() net.Addr { return s.grpcLis.Addr() }

// HTTPAddr is the address the HTTP gateway listens on.
func (s *Server) HTTPAddr() net.Addr { return s.httpLis.Addr() }

// Run serves until ctx is done or a listener fails, then shuts down in order:
// readiness off, watch streams ended (with RECONNECT), HTTP and gRPC drained
// within the grace period, queued webhooks committed, store closed. A
// PostgreSQL store New could not reach is connected first, while serving
// not ready (see connectStore); an error that waiting cannot mend ends Run
// with it. A Server runs once: a second Run returns an error and leaves it
// alone.
func (s *Server) Run(ctx context.Context) error {
	if s.ran.Swap(true) {
		return errors.New("server: Run called twice")
	}
	if err := s.writer.Start(context.WithoutCancel(ctx)); err != nil {
		s.closeAll()
		return fmt.Errorf("start writer: %w", err)
	}
	// A place for each goroutine that sends on it (gRPC twice, HTTP,
	// metrics): Run reads it once at most, or not at all.
	errc := make(chan error, 4)
	s.serveMetrics(errc)
	go func() { errc <- s.grpc.Serve(s.grpcLis) }()
	go func() { errc <- s.grpc.Serve(s.inproc) }()
	go func() {
		if s.http.TLSConfig != nil {
			errc <- s.http.ServeTLS(s.httpLis, "", "")
			return
		}
		errc <- s.http.Serve(s.httpLis)
	}()
	serving := []any{"grpc", s.GRPCAddr().String(), "http", s.HTTPAddr().String(), "metrics", addrString(s.MetricsAddr()),
		"gomaxprocs", runtime.GOMAXPROCS(0)}

	var serveErr error
	if s.pending != nil {
		s.log.Info("serving", append(serving, "ready", false)...)
		serveErr = s.awaitStore(ctx, errc)
	}
	if serveErr == nil && ctx.Err() == nil {
		if err := s.becomeReady(ctx); err != nil {
			serveErr = err
		} else if s.pending == nil {
			s.log.Info("serving", serving...)
		}
	}
	if serveErr == nil {
		select {
		case <-ctx.Done():
		case serveErr = <-errc:
			serveErr = fmt.Errorf("serve: %w", serveErr)
		}
	}
	s.log.Info("shutting down")
	return errors.Join(serveErr, s.shutdown())
}

// becomeReady starts what needs the store connected (the relay, the
// retention purge and the loop that pings the store) and reports SERVING.
func (s *Server) becomeReady(ctx context.Context) error {
	if s.relay != nil {
		if err := s.relay.Start(context.WithoutCancel(ctx)); err != nil {
			return fmt.Errorf("start relay: %w", err)
		}
	}
	if s.purge != nil {
		s.purge.start()
	}
	// Ready only once the store answers a first ping: a role lacking a
	// privilege, or a disk already full, is not ready from the start.
	pctx, cancel := context.WithTimeout(ctx, max(s.cfg.HealthInterval, time.Second))
	err := s.store.Ping(pctx)
	cancel()
	if err == nil {
		s.health.SetServingStatus(ReadinessService, healthpb.HealthCheckResponse_SERVING)
	} else if ctx.Err() == nil {
		s.log.Warn("store ping failed; not ready", "error", err)
	}
	s.stopHealth = s.watchStore(err == nil)
	return nil
}

// Bounds of the wait between attempts to reach a PostgreSQL database that
// could not be reached at start: doubled after each failure, from the
// first to the second.
var (
	connectMinBackoff = 250 * time.Millisecond
	connectMaxBackoff = 10 * time.Second
)

// awaitStore runs connectStore until it ends, or a listener fails (its
// error).
func (s *Server) awaitStore(ctx context.Context, errc <-chan error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	connected := make(chan error, 1)
	go func() { connected <- s.connectStore(ctx) }()
	select {
	case err := <-connected:
		return err
	case err := <-errc:
		cancel()
		<-connected
		return fmt.Errorf("serve: %w", err)
	}
}

// connectStore connects s.pending, attempt after attempt, each failure a
// warning with its reason, until it succeeds (nil), fails in a way that
// waiting cannot mend (its error), or ctx is done (nil).
func (s *Server) connectStore(ctx context.Context) error {
	wait := connectMinBackoff
	if a := s.connecting; a != nil { // New's attempt, still running then
		select {
		case <-ctx.Done():
			return nil
		case <-a.done:
		}
		if done, err := s.connected(ctx, a.err, 1, wait); done {
			return err
		}
	}
	for attempt := 2; ; attempt++ { // New made the first
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(wait):
		}
		wait = min(2*wait, connectMaxBackoff)
		if done, err := s.connected(ctx, s.pending.Connect(ctx), attempt, wait); done {
			return err
		}
	}
}

// connected reports whether connectStore is done after an attempt that
// ended with err, and with what: ready (nil), stopped (nil), or an error
// that waiting cannot mend. Otherwise it warns, saying when the next
// attempt comes.
func (s *Server) connected(ctx context.Context, err error, attempt int, retryIn time.Duration) (bool, error) {
	switch {
	case ctx.Err() != nil:
		return true, nil
	case err == nil:
		s.waiting.Store(false)
		s.log.Info("PostgreSQL reached; ready", "attempts", attempt)
		return true, nil
	case !pgstore.Unreachable(err):
		return true, fmt.Errorf("open store: %w", err)
	}
	s.log.Warn(waitingFor(err)+"; not ready", "error", err, "attempts", attempt, "retry_in", retryIn)
	return false, nil
}

// waitingFor says what a start waits for after a Connect that failed with
// err, which waiting may mend (pgstore.Unreachable).
func waitingFor(err error) string {
	if errors.Is(err, pgstore.ErrReadOnly) {
		return "PostgreSQL read-only"
	}
	return "PostgreSQL not reachable"
}

// untilConnected is the writer, refusing webhooks as the store would
// (store.ErrUnavailable: 503 with Retry-After) while waiting is set. The
// store refuses them too; this keeps them out of the write queue, where
// each would wait for a commit that fails.
type untilConnected struct {
	api.Ingester
	waiting *atomic.Bool
}

func (u untilConnected) Submit(ctx context.Context, w store.Webhook) (store.Result, error) {
	if u.waiting.Load() {
		return store.Result{}, fmt.Errorf("server: ingest: %w: the database has not been reached yet", store.ErrUnavailable)
	}
	return u.Ingester.Submit(ctx, w)
}

func (s *Server) shutdown() error {
	grace, cancel := context.WithTimeout(context.Background(), s.cfg.ShutdownGrace)
	defer cancel()
	if s.stopHealth != nil {
		s.stopHealth()
	}
	s.startShutdown()
	s.health.Shutdown()
	s.broker.Close()
	var errs []error
	if err := s.http.Shutdown(grace); err != nil {
		// What outlasted the grace (a body still coming) is cut, rather
		// than left to the read timeout after Run has returned; the
		// gateway is told first, so that a body read failing then is
		// known for the server's doing, not its sender's.
		close(s.httpCut)
		s.http.Close()
		errs = append(errs, fmt.Errorf("http shutdown: %w", err))
	}
	if err := s.streams.Shutdown(grace); err != nil {
		errs = append(errs, fmt.Errorf("event streams shutdown: %w", err))
	}
	stopped := make(chan struct{})
	go func() { s.grpc.GracefulStop(); close(stopped) }()
	select {
	case <-stopped:
	case <-grace.Done():
		s.grpc.Stop()
		<-stopped
	}
	// The writer gets a grace period of its own: a stream that held gRPC to
	// the end of the first (a client's Health.Watch) must not cost the
	// queued webhooks their commit.
	drain, cancelDrain := context.WithTimeout(context.Background(), s.cfg.ShutdownGrace)
	defer cancelDrain()
	if err := s.writer.Stop(drain); err != nil {
		errs = append(errs, fmt.Errorf("writer stop: %w", err))
	}
	// And the rest one more: closing PostgreSQL connections that were busy
	// waits on a database that may not answer (15 s and more for a
	// partition). What is still open then ends with the process.
	closed := make(chan struct{})
	go func() {
		defer close(closed)
		if s.purge != nil {
			s.purge.stop()
		}
		if s.relay != nil {
			s.relay.Stop()
		}
		s.closeAll()
	}()
	closing := time.NewTimer(s.cfg.ShutdownGrace)
	defer closing.Stop()
	select {
	case <-closed:
		s.log.Info("stopped")
	case <-closing.C:
		errs = append(errs, fmt.Errorf("closing the store: not done after %s, left open", s.cfg.ShutdownGrace))
	}
	return errors.Join(errs...)
}

// watchStore pings the store every HealthInterval and sets readiness from
// it: NOT_SERVING while the ping fails, SERVING again once it succeeds. A
// ping may take the interval, and at least a second, so that a short
// interval on a loaded machine does not flap. When the store answers again,
// the relay re-reads every watched request: its listening connection may
// be silent for good (a failover behind the same address), which its own
// ping finds out only later. healthy is the outcome of the ping before
// the loop. It returns a function that stops the loop and waits for it.
func (s *Server) watchStore(healthy bool) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		tick := time.NewTicker(s.cfg.HealthInterval)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			pctx, cancel := context.WithTimeout(ctx, max(s.cfg.HealthInterval, time.Second))
			err := s.store.Ping(pctx)
			cancel()
			switch {
			case ctx.Err() != nil:
				return
			case err != nil && healthy:
				s.log.Warn("store ping failed; not ready", "error", err)
				s.health.SetServingStatus(ReadinessService, healthpb.HealthCheckResponse_NOT_SERVING)
			case err == nil && !healthy:
				s.log.Info("store reachable again; ready")
				if s.relay != nil {
					s.relay.Resync()
				}
				s.health.SetServingStatus(ReadinessService, healthpb.HealthCheckResponse_SERVING)
			}
			healthy = err == nil
		}
	}()
	return func() { cancel(); <-done }
}

// closeAll releases what New opened.
func (s *Server) closeAll() {
	if a := s.connecting; a != nil { // the store's Close waits for its connections
		a.cancel()
		<-a.done
	}
	for _, l := range []net.Listener{s.grpcLis, s.httpLis} {
		if l != nil {
			l.Close()
		}
	}
	if s.conn != nil {
		s.conn.Close()
	}
	if s.store != nil {
		if err := s.store.Close(); err != nil {
			s.log.Warn("closing store", "error", err)
		}
	}
	s.closeMetrics()
}

// DeadPeerTimeout is how long data the server sent on a connection may go
// unacknowledged before the connection is closed (TCP_USER_TIMEOUT, on
// Linux). A client whose network vanished without a word, a phone gone out
// of coverage, then loses its watch streams, and their places under the
// watch limits, within a heartbeat and this. Without it, a gRPC client
// goes after two --grpc-keepalive intervals, but an HTTP one only once
// TCP's retransmissions give up, about 15 minutes later.
const DeadPeerTimeout = time.Minute

// MaxPublicCalls bounds the calls that need no credential in flight at
// once from one client address, and MaxPublicCallsInAll from all, for each
// of two kinds apart: the unary calls (health's Check and List), and the
// streams (health's Watch, reflection), which last as long as their clients
// keep them, so that streams never take a Check's place (a gRPC liveness
// probe's). A health checker or a schema browser needs a handful. The first
// keeps one client from taking every place. (Grouping IPv6 clients by /64
// would join whole cloud subnets and pod ranges.)
const (
	MaxPublicCalls      = 100
	MaxPublicCallsInAll = 1000
)

// unaryPublic reports whether method is a call that needs no credential and
// is answered as soon as its request message comes.
func unaryPublic(method string) bool {
	return method == healthpb.Health_Check_FullMethodName || method == healthpb.Health_List_FullMethodName
}

// publicCallLimit, called by the tap as each call's stream opens, refuses a
// call that needs no credential beyond perAddr of its kind (unaryPublic or
// not) in flight from its peer's address, or inAll from all, with
// RESOURCE_EXHAUSTED: each holds a goroutine and buffers for as long as its
// client keeps it, a Health/Watch stream for its whole life, a Check until
// its request message comes (which its client need never send; the tap
// bounds that wait). A place is given back when the call's stream ends,
// however it ends (ctx is the stream's).
func publicCallLimit(perAddr, inAll int) func(ctx context.Context, method string) error {
	type kind struct {
		byAddr, all *api.Slots
		exhausted   error
	}
	newKind := func(what string) kind {
		return kind{api.NewSlots(perAddr), api.NewSlots(inAll),
			api.Exhausted(fmt.Sprintf("too many %s in flight (%d from one address, %d in all)", what, perAddr, inAll))}
	}
	unary, streams := newKind("health checks"), newKind("health watch and reflection streams")
	return func(ctx context.Context, method string) error {
		if !auth.Public(method) {
			return nil
		}
		k := streams
		if unaryPublic(method) {
			k = unary
		}
		var addr string
		if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
			addr = p.Addr.String()
			if a := auth.PeerAddr(addr); a.IsValid() {
				addr = a.String()
			}
		}
		places := []api.Place{{Slots: k.byAddr, Key: addr}, {Slots: k.all}}
		if api.TakeAll(places) >= 0 {
			return k.exhausted
		}
		context.AfterFunc(ctx, func() { api.GiveAll(places) })
		return nil
	}
}

// awaitMessage returns the context of a call's stream (ctx), canceled
// unless the call's first request message arrives within wait: grpc-go
// waits for it as long as the client keeps the stream, so any client with
// a credential (a watch token in a browser's URL) could otherwise hold any
// number of streams, each with its goroutine, by sending nothing.
// messageArrival disarms it.
func awaitMessage(ctx context.Context, wait time.Duration) context.Context {
	ctx, cancel := context.WithCancel(ctx)
	timer := time.AfterFunc(wait, cancel)
	context.AfterFunc(ctx, func() { timer.Stop() })
	return context.WithValue(ctx, messageTimerKey{}, timer)
}

type messageTimerKey struct{}

// messageArrival is the stats handler that stops awaitMessage's timer once
// a call's first request message has arrived.
type messageArrival struct{}

func (messageArrival) TagRPC(ctx context.Context, _ *stats.RPCTagInfo) context.Context { return ctx }
func (messageArrival) TagConn(ctx context.Context, _ *stats.ConnTagInfo) context.Context {
	return ctx
}
func (messageArrival) HandleConn(context.Context, stats.ConnStats) {}
func (messageArrival) HandleRPC(ctx context.Context, s stats.RPCStats) {
	if _, ok := s.(*stats.InPayload); ok {
		if timer, ok := ctx.Value(messageTimerKey{}).(*time.Timer); ok {
			timer.Stop()
		}
	}
}

// healthWatchesEnd ends each Health/Watch stream with UNAVAILABLE once
// shutdown has begun and the stream has told its client that the status is
// not SERVING (health.Server.Shutdown sends NOT_SERVING): an open watch would
// otherwise hold GracefulStop for the whole grace.
func healthWatchesEnd(shutdown context.Context) grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		if info.FullMethod != healthpb.Health_Watch_FullMethodName {
			return handler(srv, ss)
		}
		ctx, end := context.WithCancel(ss.Context())
		defer end()
		w := &endingWatch{ServerStream: ss, ctx: ctx, end: end, shutdown: shutdown}
		defer context.AfterFunc(shutdown, w.endUnlessServing)()
		err := handler(srv, w)
		if shutdown.Err() != nil && ss.Context().Err() == nil {
			return status.Error(codes.Unavailable, "server is shutting down")
		}
		return err
	}
}

// endingWatch is a Health/Watch stream that healthWatchesEnd ends.
type endingWatch struct {
	grpc.ServerStream
	ctx      context.Context
	end      context.CancelFunc
	shutdown context.Context
	serving  atomic.Bool // the last status sent was SERVING
}

func (w *endingWatch) Context() context.Context { return w.ctx }

func (w *endingWatch) SendMsg(m any) error {
	err := w.ServerStream.SendMsg(m)
	r, _ := m.(*healthpb.HealthCheckResponse)
	w.serving.Store(r.GetStatus() == healthpb.HealthCheckResponse_SERVING)
	if w.shutdown.Err() != nil {
		w.endUnlessServing()
	}
	return err
}

func (w *endingWatch) endUnlessServing() {
	if !w.serving.Load() {
		w.end()
	}
}

// reflectionEnds ends each reflection stream with UNAVAILABLE once
// shutdown has begun: its client holds it open between questions (a schema
// browser, for as long as it runs), and the handler waits for the next one
// in RecvMsg, which nothing else ends; an open stream would hold
// GracefulStop for the whole grace.
func reflectionEnds(shutdown context.Context) grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		if !strings.HasPrefix(info.FullMethod, "/grpc.reflection.") {
			return handler(srv, ss)
		}
		return handler(srv, &endingRecv{ServerStream: ss, shutdown: shutdown})
	}
}

// endingRecv is a stream whose RecvMsg returns UNAVAILABLE once shutdown
// has begun. The receive it gave up on ends with the stream, once the
// handler has returned.
type endingRecv struct {
	grpc.ServerStream
	shutdown context.Context
}

func (s *endingRecv) RecvMsg(m any) error {
	if s.shutdown.Err() != nil {
		return status.Error(codes.Unavailable, "server is shutting down")
	}
	done := make(chan error, 1)
	go func() { done <- s.ServerStream.RecvMsg(m) }()
	select {
	case err := <-done:
		return err
	case <-s.shutdown.Done():
		return status.Error(codes.Unavailable, "server is shutting down")
	}
}

// boundedSends ends a server stream whose client has taken no message for
// d, as the gateway does with its own streams: with the client's flow
// control window full a Send waits, without limit, for a client that stopped
// reading, and the handler with it; a watch would hold its slot (and lock
// others out of the request) past --max-watch-duration and keepalive, which
// the client still answers. The Send runs on a goroutine of its own; when it
// has waited d, closeConn closes the client's connection (ending the Send,
// and the stream, whose last frames would otherwise wait in grpc-go for the
// client to read them: the stream limits would count it no more) and the
// handler gets DEADLINE_EXCEEDED.
func boundedSends(d time.Duration, closeConn func(net.Addr)) grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		if !info.IsServerStream {
			return handler(srv, ss)
		}
		return handler(srv, &boundedStream{ServerStream: ss, d: d, closeConn: closeConn})
	}
}

type boundedStream struct {
	grpc.ServerStream
	d         time.Duration
	closeConn func(net.Addr)

	// The timer and the channel a Send answers on are the stream's, made at
	// its first Send: a watch sends an UPDATE per change, and making them
	// for each was 5 of its 28 allocations and 420 of its 2,520 bytes
	// (BenchmarkWatchDelivery); each stream keeps about 400 bytes for them.
	timeout *time.Timer // stopped between Sends
	done    chan sent
}

// sent is how a Send on its goroutine ended: its error, or its panic.
type sent struct {
	err   error
	panic any
	stack []byte
}

func (s *boundedStream) SendMsg(m any) error {
	if s.done == nil {
		s.done = make(chan sent, 1)
	}
	done := s.done
	go func() {
		defer func() {
			if p := recover(); p != nil {
				done <- sent{panic: p, stack: debug.Stack()}
			}
		}()
		done <- sent{err: s.ServerStream.SendMsg(m)}
	}()
	if s.timeout == nil {
		s.timeout = time.NewTimer(s.d)
	} else {
		s.timeout.Reset(s.d)
	}
	defer s.timeout.Stop()
	select {
	case r := <-done:
		if r.panic != nil { // for the recovery interceptor, on the handler's goroutine
			panic(fmt.Sprintf("%v\n\nin the stream's Send:\n%s", r.panic, r.stack))
		}
		return r.err
	case <-s.timeout.C:
		s.done = nil // the Send still running answers on done
		if p, ok := peer.FromContext(s.Context()); ok && p.Addr != nil {
			s.closeConn(p.Addr)
		}
		return status.Errorf(codes.DeadlineExceeded, "the client took no message for %s: its connection was closed", s.d)
	}
}

// peerConns tracks the connections of a listener by their remote address.
type peerConns struct {
	mu sync.Mutex
	m  map[string]net.Conn
}

// listen returns l, with its connections tracked.
func (p *peerConns) listen(l net.Listener) net.Listener {
	return &trackingListener{Listener: l, peers: p}
}

// close closes the connection from addr, if there is one.
func (p *peerConns) close(addr net.Addr) {
	p.mu.Lock()
	c := p.m[addr.String()]
	p.mu.Unlock()
	if c != nil {
		c.Close()
	}
}

type trackingListener struct {
	net.Listener
	peers *peerConns
}

func (l *trackingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	tc := &trackedConn{Conn: c, peers: l.peers, key: c.RemoteAddr().String()}
	l.peers.mu.Lock()
	if l.peers.m == nil {
		l.peers.m = map[string]net.Conn{}
	}
	l.peers.m[tc.key] = tc
	l.peers.mu.Unlock()
	return tc, nil
}

type trackedConn struct {
	net.Conn
	peers *peerConns
	key   string
}

func (c *trackedConn) Close() error {
	c.peers.mu.Lock()
	if c.peers.m[c.key] == c {
		delete(c.peers.m, c.key)
	}
	c.peers.mu.Unlock()
	return c.Conn.Close()
}
