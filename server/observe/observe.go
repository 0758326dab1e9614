// Package observe is how the service is watched from outside: Prometheus
// metrics on a registry of its own (never the global one), one structured
// log line per gRPC call and HTTP request with a request id and personal
// data masked, panic recovery for HTTP (gRPC uses the grpc-ecosystem
// recovery interceptor, with RecoverGRPC), and the hooks the ingest path,
// the group-commit writer and watch streams report to.
//
// It may import the generated API, server/store, server/normalize and
// server/store/groupcommit (for their errors and types), and server/auth
// (for PeerAddr); nothing from the servers, which call into it.
package observe

import (
	"context"
	"errors"
	"log/slog"
	"math/bits"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"time"

	grpcprom "github.com/grpc-ecosystem/go-grpc-middleware/providers/prometheus"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	eventsv1 "github.com/otpless-events/otpless-events/gen/otpless/events/v1"
	"github.com/otpless-events/otpless-events/server/normalize"
	"github.com/otpless-events/otpless-events/server/store"
	"github.com/otpless-events/otpless-events/server/store/groupcommit"
)

const namespace = "otpless_events"

// Rejection reasons, the values of the reason label of
// otpless_events_webhooks_rejected_total.
const (
	ReasonInvalidBody     = "invalid_body"    // not a JSON object readable as a webhook, or compressed
	ReasonUnrecognized    = "unrecognized"    // no eventType, status or notificationType
	ReasonTooLarge        = "too_large"       // over --max-body-bytes
	ReasonOverloaded      = "overloaded"      // write queue full
	ReasonUnavailable     = "unavailable"     // store failing, shutting down, or too many unsigned bodies being read
	ReasonUnauthenticated = "unauthenticated" // missing or wrong credentials, or address not allowed
	ReasonRateLimited     = "rate_limited"    // the sender's rate budget (--webhook-rate) is spent
	ReasonCanceled        = "canceled"        // the sender gave up first
	ReasonInternal        = "internal"        // anything else

	// ReasonFailureRateLimited: the sender's address has spent its budget
	// of failed credentials (--webhook-failure-rate).
	ReasonFailureRateLimited = "failure_rate_limited"
)

// latencyBuckets (seconds) span 100µs to a minute: a webhook's body may
// take the whole --http-read-timeout (30 s) to come, and one queued behind
// a stalled store waits until its sender gives up, so that a p99 of such
// a moment is read rather than lost in +Inf.
var latencyBuckets = []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60}

// MaxCallDuration is the longest --max-watch-duration, and a bucket of the
// call durations: a watch stream's duration is its life.
const MaxCallDuration = time.Hour

// callBuckets are latencyBuckets on to MaxCallDuration, and a minute past
// it, for call durations. A stream that runs its whole
// --max-watch-duration ends a little past it (its timer starts once its
// snapshot is read, and its RECONNECT is sent after): with MaxCallDuration
// the last bucket, one run to an hour fell in +Inf.
var callBuckets = append(slices.Clip(latencyBuckets), 300, 900, 1800, MaxCallDuration.Seconds(), (MaxCallDuration + time.Minute).Seconds())

// MaxCommitWebhooks is the last bucket of store_commit_webhooks, and the
// largest --max-batch: a larger batch would fall in +Inf.
const MaxCommitWebhooks = 2048

// commitBuckets are powers of two up to MaxCommitWebhooks.
var commitBuckets = prometheus.ExponentialBuckets(1, 2, bits.Len(MaxCommitWebhooks))

// Observer holds the service's metrics and its request logger. Its methods
// are safe for concurrent use.
type Observer struct {
	// Registry holds every metric of the service, including the Go and
	// process collectors.
	Registry *prometheus.Registry
	// GRPC is the grpc-ecosystem server metrics; its interceptors go first
	// in the chain.
	GRPC *grpcprom.ServerMetrics

	log *slog.Logger
	ids *idSource
	// client, when set, is the address a request came from behind the
	// proxies trusted (see SetClientAddr).
	client func(*http.Request) netip.Addr

	events        *prometheus.CounterVec
	duplicates    *prometheus.CounterVec
	rejected      *prometheus.CounterVec
	ingestSeconds *prometheus.HistogramVec
	commitSize    prometheus.Histogram
	commitSeconds prometheus.Histogram
	commitErrors  prometheus.Counter
	watchStreams  *prometheus.GaugeVec
	deliverySecs  prometheus.Histogram
	httpRequests  *prometheus.CounterVec
	httpSeconds   *prometheus.HistogramVec
	panics        *prometheus.CounterVec
	grpcRefused   *prometheus.CounterVec
	purged        prometheus.Counter
	purgeFailures prometheus.Counter
	purgedAt      prometheus.Gauge
}

// SetClientAddr makes the HTTP lines name, as client, the address f gives
// for a request when it is not the peer's: the sender behind a trusted
// proxy. Call it before serving.
func (o *Observer) SetClientAddr(f func(*http.Request) netip.Addr) { o.client = f }

// New returns an Observer logging requests to log (nil: discard) and
// registering its metrics on a new registry.
func New(log *slog.Logger) *Observer {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	o := &Observer{
		Registry: prometheus.NewRegistry(),
		GRPC: grpcprom.NewServerMetrics(grpcprom.WithServerHandlingTimeHistogram(
			grpcprom.WithHistogramBuckets(callBuckets))),
		log: log,
		ids: newIDSource(),
		events: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "events_received_total",
			Help: "Webhook events accepted (committed), duplicates included, by kind, status and channel.",
		}, []string{"kind", "status", "channel"}),
		duplicates: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "events_duplicate_total",
			Help: "Accepted webhook events that had been stored before (retries), by kind, status and channel.",
		}, []string{"kind", "status", "channel"}),
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "webhooks_rejected_total",
			Help: "Webhooks answered with an error, by reason.",
		}, []string{"reason"}),
		ingestSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: namespace, Name: "ingest_duration_seconds",
			Help:    "Time from a webhook's arrival to its answer, by transport (http, grpc) and result (accepted, rejected).",
			Buckets: latencyBuckets,
		}, []string{"transport", "result"}),
		commitSize: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: namespace, Name: "store_commit_webhooks",
			Help:    "Webhooks per store commit (group commit batch size).",
			Buckets: commitBuckets,
		}),
		commitSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: namespace, Name: "store_commit_duration_seconds",
			Help:    "Duration of one store commit (one transaction).",
			Buckets: latencyBuckets,
		}),
		commitErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: namespace, Name: "store_commit_errors_total",
			Help: "Store commits that failed.",
		}),
		watchStreams: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: namespace, Name: "watch_streams",
			Help: "Open WatchRequest streams, by transport: grpc (direct clients), or through the HTTP gateway sse (Server-Sent Events) or ndjson (newline-delimited JSON).",
		}, []string{"transport"}),
		deliverySecs: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: namespace, Name: "watch_delivery_seconds",
			Help:    "Time from the arrival of the webhook that changed a request (its update_time) to the watch UPDATE being sent.",
			Buckets: latencyBuckets,
		}),
		httpRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "http_requests_total",
			Help: "HTTP requests, by route and status code.",
		}, []string{"route", "code"}),
		httpSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: namespace, Name: "http_request_duration_seconds",
			Help:    "HTTP request duration, by route (a watch stream's until its first message over HTTP/1.1, whole over HTTP/2).",
			Buckets: callBuckets,
		}, []string{"route"}),
		panics: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "panics_recovered_total",
			Help: "Panics recovered in handlers, by transport.",
		}, []string{"transport"}),
		purged: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: namespace, Name: "retention_purged_webhooks_total",
			Help: "Webhooks whose personal data retention removed.",
		}),
		purgeFailures: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: namespace, Name: "retention_failures_total",
			Help: "Retention runs that failed (each also a warning in the log).",
		}),
		purgedAt: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: namespace, Name: "retention_last_success_timestamp_seconds",
			Help: "When a retention run last ended without error (Unix time; 0: none yet).",
		}),
		grpcRefused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "grpc_refused_total",
			Help: "gRPC calls answered before any interceptor, by code: a message grpc-go cannot decode (Internal) or over its size limit (ResourceExhausted), an unknown method or compression (Unimplemented), a call without a valid credential (Unauthenticated) or with one that may not call its method (PermissionDenied), a health or reflection call over their bounds (ResourceExhausted), a unary call ended before its message came (Canceled, DeadlineExceeded).",
		}, []string{"code"}),
	}
	o.Registry.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		o.GRPC, o.events, o.duplicates, o.rejected, o.ingestSeconds,
		o.commitSize, o.commitSeconds, o.commitErrors,
		o.watchStreams, o.deliverySecs, o.httpRequests, o.httpSeconds, o.panics, o.grpcRefused,
		o.purged, o.purgeFailures, o.purgedAt,
	)
	// Series of fixed label values start at zero, so that an alert on
	// their rate has something to read before the first one happens.
	for _, t := range []string{transportGRPC, streamSSE, streamNDJSON} {
		o.watchStreams.WithLabelValues(t)
	}
	for _, t := range []string{transportGRPC, transportHTTP} {
		o.panics.WithLabelValues(t)
		for _, result := range []string{"accepted", "rejected"} {
			o.ingestSeconds.WithLabelValues(t, result)
		}
	}
	for _, c := range []codes.Code{codes.Internal, codes.ResourceExhausted, codes.Unimplemented, codes.Unauthenticated, codes.PermissionDenied} {
		o.grpcRefused.WithLabelValues(c.String())
	}
	for _, reason := range []string{ReasonInvalidBody, ReasonUnrecognized, ReasonTooLarge, ReasonOverloaded, ReasonUnavailable,
		ReasonUnauthenticated, ReasonRateLimited, ReasonFailureRateLimited, ReasonCanceled, ReasonInternal} {
		o.rejected.WithLabelValues(reason)
	}
	return o
}

// Handler serves the registry in the Prometheus exposition formats.
func (o *Observer) Handler() http.Handler {
	return promhttp.HandlerFor(o.Registry, promhttp.HandlerOpts{
		ErrorLog: slog.NewLogLogger(o.log.Handler(), slog.LevelWarn),
		Registry: o.Registry,
	})
}

// GaugeFunc registers a gauge read from f at every scrape.
func (o *Observer) GaugeFunc(name, help string, f func() float64) {
	o.Registry.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: namespace, Name: name, Help: help}, f))
}

// CounterFunc registers a counter read from f at every scrape.
func (o *Observer) CounterFunc(name, help string, f func() float64) {
	o.Registry.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Namespace: namespace, Name: name, Help: help}, f))
}

// ObserveCommit records one group commit; it fits groupcommit.Options.Observe.
func (o *Observer) ObserveCommit(b groupcommit.Batch) {
	o.commitSize.Observe(float64(b.Webhooks))
	o.commitSeconds.Observe(b.Took.Seconds())
	if b.Err != nil {
		o.commitErrors.Inc()
	}
}

// ObservePurge records one retention run: the webhooks it purged, and err
// when it failed.
func (o *Observer) ObservePurge(purged int, err error) {
	o.purged.Add(float64(purged))
	if err != nil {
		o.purgeFailures.Inc()
		return
	}
	o.purgedAt.SetToCurrentTime()
}

// ObserveIngest records the outcome of one webhook handed to the ingest
// service: its events and the store's result, or the error it was rejected
// with. It implements api.IngestObserver. The call's log line (when ctx
// comes through the interceptor or middleware) gets the OTPLESS request and
// trace ids.
func (o *Observer) ObserveIngest(ctx context.Context, events []*eventsv1.Event, res store.Result, err error) {
	c := callFrom(ctx)
	if c != nil {
		c.ingested = true
		if len(events) > 0 {
			c.otplessRequestID = events[0].GetRequestId()
			c.otplessTraceID = events[0].GetTraceId()
		}
	}
	if err != nil {
		reason := RejectReason(err)
		o.rejected.WithLabelValues(reason).Inc()
		if c != nil {
			c.rejectReason = reason
		}
		return
	}
	for i, e := range events {
		kind, st, ch := eventLabels(e)
		o.events.WithLabelValues(kind, st, ch).Inc()
		if i < len(res.Events) && res.Events[i].Duplicate {
			o.duplicates.WithLabelValues(kind, st, ch).Inc()
		}
	}
}

// RejectReason classifies an ingest error by the sentinel it wraps (or the
// gRPC code it carries).
func RejectReason(err error) string {
	switch {
	case errors.Is(err, normalize.ErrInvalidBody):
		return ReasonInvalidBody
	case errors.Is(err, normalize.ErrUnrecognized):
		return ReasonUnrecognized
	case errors.Is(err, store.ErrOverloaded):
		return ReasonOverloaded
	case errors.Is(err, store.ErrUnavailable), errors.Is(err, store.ErrClosed):
		return ReasonUnavailable
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return ReasonCanceled
	}
	if st, ok := status.FromError(err); ok {
		return reasonForCode(st.Code())
	}
	return ReasonInternal
}

// reasonForCode classifies a rejection that only left a gRPC code behind:
// one the ingest service never saw (an interceptor or the HTTP layer
// refused it first).
func reasonForCode(c codes.Code) string {
	switch c {
	case codes.InvalidArgument:
		return ReasonInvalidBody
	case codes.Unauthenticated, codes.PermissionDenied:
		return ReasonUnauthenticated
	case codes.ResourceExhausted:
		// Of ingest, only the gRPC message limit answers it (the webhook
		// route's rate limit is HTTP 429).
		return ReasonTooLarge
	case codes.Unavailable:
		return ReasonUnavailable
	case codes.Canceled, codes.DeadlineExceeded:
		return ReasonCanceled
	}
	return ReasonInternal
}

// reasonForHTTP is reasonForCode for HTTP statuses of the webhook route.
func reasonForHTTP(code int) string {
	switch code {
	case http.StatusBadRequest, http.StatusUnsupportedMediaType:
		return ReasonInvalidBody
	case http.StatusRequestEntityTooLarge:
		return ReasonTooLarge
	case http.StatusUnauthorized, http.StatusForbidden:
		return ReasonUnauthenticated
	case http.StatusTooManyRequests:
		return ReasonRateLimited
	case http.StatusRequestTimeout:
		return ReasonCanceled
	case http.StatusServiceUnavailable:
		return ReasonUnavailable
	}
	return ReasonInternal
}

// Known label values; anything else is "other", so that what a sender puts
// in a body cannot grow the number of series.
var (
	knownStatuses = set("SENT", "DELIVERED", "READ", "CLICKED", "FAILED", "INITIATED", "FALLBACK", "SUCCESS", "UNREACHABLE")
	knownChannels = set("WHATSAPP", "SMS", "VIBER", "EMAIL", "SILENT_AUTH", "GOOGLE", "RCS", "TELEGRAM", "INSTAGRAM", "APPLE", "MICROSOFT", "FACEBOOK", "GITHUB", "TWITTER", "LINKEDIN", "SLACK", "DISCORD", "TRUECALLER")
)

func set(values ...string) map[string]bool {
	m := make(map[string]bool, len(values))
	for _, v := range values {
		m[v] = true
	}
	return m
}

// eventLabels are the bounded kind, status and channel labels of e. The
// channel is the delivery channel, else the fallback's target, else the
// first channel an auth event names; "none" when there is none.
func eventLabels(e *eventsv1.Event) (kind, st, channel string) {
	kind = strings.ToLower(strings.TrimPrefix(e.GetKind().String(), "EVENT_KIND_"))
	st = bounded(e.GetStatus(), knownStatuses)
	channel = e.GetChannel()
	if channel == "" {
		channel = e.GetToChannel()
	}
	if channel == "" && len(e.GetAuthChannels()) > 0 {
		channel = e.GetAuthChannels()[0]
	}
	if channel == "" {
		return kind, st, "none"
	}
	return kind, st, bounded(channel, knownChannels)
}

func bounded(v string, known map[string]bool) string {
	if known[v] {
		return v
	}
	return "other"
}

// since is time.Since in seconds.
func since(t time.Time) float64 { return time.Since(t).Seconds() }
