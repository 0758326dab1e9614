package api

import (
	"context"
	"log/slog"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	eventsv1 "github.com/otpless-events/otpless-events/gen/otpless/events/v1"
	"github.com/otpless-events/otpless-events/server/normalize"
	"github.com/otpless-events/otpless-events/server/store"
)

// Ingester stores a webhook durably and answers after the commit; the
// group-commit writer implements it.
type Ingester interface {
	Submit(ctx context.Context, w store.Webhook) (store.Result, error)
}

// WebhookServer implements otpless.events.v1.WebhookService.
type WebhookServer struct {
	eventsv1.UnimplementedWebhookServiceServer

	ingester Ingester
	log      *slog.Logger
	now      func() time.Time
	observer IngestObserver
	maxBody  int64 // 0: no bound
}

// IngestObserver is told the outcome of every webhook IngestBody handles:
// its events and the store's result, or the error it failed with (before
// it became a gRPC status; when normalization failed, events is the one
// normalize.Named gives, with only the ids the body names). It is told of
// a message Ingest refuses before IngestBody too, with that event and the
// gRPC status. It runs on the caller's goroutine, with the caller's ctx,
// and must be quick.
type IngestObserver interface {
	ObserveIngest(ctx context.Context, events []*eventsv1.Event, res store.Result, err error)
}

// SetObserver makes o the IngestObserver. Call it before serving.
func (s *WebhookServer) SetObserver(o IngestObserver) { s.observer = o }

// SetMaxBodyBytes bounds what Ingest takes from a gRPC caller at n bytes,
// as the webhook route bounds the bodies it reads: its message, and the
// body kept, its message as JSON (a message under the bound as protobuf
// can be several times as large as JSON, where a control character takes
// six bytes), since what is kept must fit the reads of a request's
// events. Call it before serving.
func (s *WebhookServer) SetMaxBodyBytes(n int64) { s.maxBody = n }

// NewWebhookServer returns a WebhookServer that stores through ingester.
func NewWebhookServer(ingester Ingester, log *slog.Logger) *WebhookServer {
	return &WebhookServer{ingester: ingester, log: log, now: time.Now}
}

// Ingest serves gRPC callers, who send the decoded message: the body kept is
// its canonical JSON. The HTTP route calls IngestBody with the original bytes.
// A message refused before IngestBody is a rejection too, named by the ids
// it has.
func (s *WebhookServer) Ingest(ctx context.Context, req *eventsv1.IngestRequest) (*eventsv1.IngestResponse, error) {
	if s.maxBody > 0 && int64(proto.Size(req)) > s.maxBody {
		return nil, s.refuse(ctx, req, status.Error(codes.ResourceExhausted, "webhook is larger than "+Size(s.maxBody)))
	}
	body, err := protojson.Marshal(req)
	if err != nil { // e.g. NaN in a google.protobuf.Value: not JSON
		return nil, s.refuse(ctx, req, status.Error(codes.InvalidArgument, "the request cannot be kept as JSON: "+err.Error()))
	}
	if s.maxBody > 0 && int64(len(body)) > s.maxBody {
		return nil, s.refuse(ctx, req, status.Error(codes.ResourceExhausted, "webhook is larger than "+Size(s.maxBody)+" as JSON, the form it is kept in"))
	}
	return s.IngestBody(ctx, req, body)
}

// refuse records req, refused with st before IngestBody, and returns st.
func (s *WebhookServer) refuse(ctx context.Context, req *eventsv1.IngestRequest, st error) error {
	s.observe(ctx, []*eventsv1.Event{normalize.Named(req)}, store.Result{}, st)
	return st
}

// IngestBody normalizes req, stores it with body (the webhook as received) and
// answers once both are committed.
func (s *WebhookServer) IngestBody(ctx context.Context, req *eventsv1.IngestRequest, body []byte) (*eventsv1.IngestResponse, error) {
	received := s.now()
	events, err := normalize.Events(req, received)
	if err != nil {
		s.observe(ctx, []*eventsv1.Event{normalize.Named(req)}, store.Result{}, err)
		return nil, Status(err)
	}
	res, err := s.ingester.Submit(ctx, store.Webhook{Body: body, Received: received, Events: events})
	s.observe(ctx, events, res, err)
	if err != nil {
		st := Status(err)
		// A refusal (the store unavailable, closed or overloaded, or the
		// caller gone) is said by the request's own log line, with its
		// reason; its cause is logged where it arises: failed commits by
		// the writer, every 10 s at most with a count, and a database not
		// reached yet by the server, per attempt. Only a fault nothing else explains
		// gets a line here.
		if status.Code(st) == codes.Internal {
			s.log.LogAttrs(ctx, slog.LevelWarn, "webhook not stored", slog.Any("error", err))
		}
		return nil, st
	}
	resp := &eventsv1.IngestResponse{Events: make([]*eventsv1.IngestedEvent, len(events))}
	for i, e := range events {
		r := res.Events[i]
		resp.Events[i] = &eventsv1.IngestedEvent{
			EventId:   e.GetEventId(),
			RequestId: e.GetRequestId(),
			Duplicate: r.Duplicate,
			Revision:  r.Revision,
			Status:    e.GetStatus(),
			Kind:      e.GetKind(),
		}
		if r.Duplicate {
			resp.Duplicates++
		} else {
			resp.Stored++
		}
	}
	return resp, nil
}

// Refused records a webhook whose body did not decode (err, from
// normalize.Decode): a rejection, named by the ids the body has.
func (s *WebhookServer) Refused(ctx context.Context, body []byte, err error) {
	s.observe(ctx, []*eventsv1.Event{normalize.NamedBody(body)}, store.Result{}, err)
}

func (s *WebhookServer) observe(ctx context.Context, events []*eventsv1.Event, res store.Result, err error) {
	if s.observer != nil {
		s.observer.ObserveIngest(ctx, events, res, err)
	}
}
