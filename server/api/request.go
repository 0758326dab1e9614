package api

import (
	"context"
	"errors"
	"fmt"
	"runtime/debug"
	"slices"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	eventsv1 "github.com/otpless-events/otpless-events/gen/otpless/events/v1"
	"github.com/otpless-events/otpless-events/server/auth"
	"github.com/otpless-events/otpless-events/server/broker"
	"github.com/otpless-events/otpless-events/server/normalize"
	"github.com/otpless-events/otpless-events/server/pii"
	"github.com/otpless-events/otpless-events/server/state"
	"github.com/otpless-events/otpless-events/server/store"
)

// Reader is the read side of the store.
type Reader interface {
	GetRequest(ctx context.Context, requestID string) (*eventsv1.AuthRequest, error)
	ListEvents(ctx context.Context, requestID string, page store.Page) ([]*eventsv1.Event, string, error)
}

// WatchOptions bound watch streams.
type WatchOptions struct {
	// Heartbeat is the interval of HEARTBEAT messages, changes or not.
	Heartbeat time.Duration
	// MaxDuration ends a stream with RECONNECT once it has lasted this long.
	MaxDuration time.Duration
	// MaxPerCredential, MaxPerToken (of a watch token), MaxPerRequest and
	// MaxInAll (every stream of this server, whatever its transport) bound
	// concurrent streams (0: no bound).
	MaxPerCredential, MaxPerToken, MaxPerRequest, MaxInAll int
	// Tokens mints watch tokens; nil disables CreateWatchToken.
	Tokens *auth.TokenSigner
}

// RequestServer implements otpless.events.v1.RequestService.
type RequestServer struct {
	eventsv1.UnimplementedRequestServiceServer

	store   Reader
	broker  *broker.Broker
	opts    WatchOptions
	streams *streamLimiter
}

// NewRequestServer returns a RequestServer reading from r and following
// changes through b.
func NewRequestServer(r Reader, b *broker.Broker, opts WatchOptions) *RequestServer {
	return &RequestServer{store: r, broker: b, opts: opts, streams: newStreamLimiter(opts)}
}

// GetRequest returns the request's current snapshot.
func (s *RequestServer) GetRequest(ctx context.Context, req *eventsv1.GetRequestRequest) (*eventsv1.GetRequestResponse, error) {
	if err := validateRequestID(req.GetRequestId()); err != nil {
		return nil, err
	}
	r, err := s.store.GetRequest(ctx, req.GetRequestId())
	if err != nil {
		return nil, Status(err)
	}
	if !auth.MaySeePII(ctx) {
		r = pii.Request(r)
	}
	return &eventsv1.GetRequestResponse{Request: r}, nil
}

// ListRequestEvents returns a page of the request's events.
func (s *RequestServer) ListRequestEvents(ctx context.Context, req *eventsv1.ListRequestEventsRequest) (*eventsv1.ListRequestEventsResponse, error) {
	if err := validateRequestID(req.GetRequestId()); err != nil {
		return nil, err
	}
	if req.GetPageSize() < 0 {
		return nil, status.Error(codes.InvalidArgument, "page_size must not be negative")
	}
	page := store.Page{Size: int(req.GetPageSize()), Token: req.GetPageToken()}
	events, next, err := s.store.ListEvents(ctx, req.GetRequestId(), page)
	if err != nil {
		return nil, Status(err)
	}
	if !auth.MaySeePII(ctx) {
		events = pii.Events(events)
	}
	events, next = fitPage(events, next)
	return &eventsv1.ListRequestEventsResponse{Events: events, NextPageToken: next}, nil
}

// MaxPageBytes bounds the encoded size of a page of events below the
// 4 MiB that gRPC clients accept by default; a page of one event can be
// larger where --max-body-bytes lets a body near that (the gateway's own
// connection takes it).
const MaxPageBytes = 3 << 20

// fitPage cuts a page of events, whose raw bodies may be large, at
// MaxPageBytes; the next page then starts after the last one kept. A
// page keeps its first event whatever its size.
func fitPage(events []*eventsv1.Event, next string) ([]*eventsv1.Event, string) {
	size := 0
	for i, e := range events {
		size += protowire.SizeTag(1) + protowire.SizeBytes(proto.Size(e))
		if i > 0 && size > MaxPageBytes {
			return events[:i], store.CursorAfter(events[i-1]).Token()
		}
	}
	return events, next
}

// WatchRequest streams the request's snapshot and its changes. The
// subscription is taken before the snapshot is read, so no change falls into
// the gap; changes at or below the last revision sent are skipped. A call
// may end without a message: see EndQuietlyWhenFinished.
func (s *RequestServer) WatchRequest(req *eventsv1.WatchRequestRequest, stream grpc.ServerStreamingServer[eventsv1.WatchRequestResponse]) error {
	id := req.GetRequestId()
	if err := validateRequestID(id); err != nil {
		return err
	}
	if req.GetAfterRevision() < 0 {
		return status.Error(codes.InvalidArgument, "after_revision must not be negative")
	}
	ctx := stream.Context()
	var credential, token string
	if p := auth.FromContext(ctx); p != nil {
		credential, token = p.Name, p.Token
	}
	release, err := s.streams.acquire(credential, token, id)
	if err != nil {
		return err
	}
	defer release()
	send := stream.Send
	if !auth.MaySeePII(ctx) {
		// The messages sent are this call's own, their request and events
		// shared: masking replaces those in them.
		send = func(m *eventsv1.WatchRequestResponse) error {
			m.Request = pii.Request(m.Request)
			if len(m.Events) > 0 {
				m.Events = pii.Events(m.Events)
			}
			return stream.Send(m)
		}
	}
	sub := s.broker.Subscribe(id)
	defer sub.Close()
	select {
	case <-sub.Done(): // shutting down: refuse rather than answer RECONNECT at once
		return status.Error(codes.Unavailable, "server is shutting down, reconnect to another replica or retry later")
	default:
	}

	snap, err := s.snapshot(ctx, id)
	switch {
	case errors.Is(err, store.ErrNotFound):
		snap = &eventsv1.AuthRequest{RequestId: id}
	case err != nil:
		return Status(err)
	}

	// A client ahead of the store (which lost or never had what the client
	// saw) starts over: waiting for the revision it names would hide every
	// change up to it, SUCCESS included.
	last := req.GetAfterRevision()
	first := &eventsv1.WatchRequestResponse{Type: eventsv1.WatchMessageType_WATCH_MESSAGE_TYPE_HEARTBEAT, Revision: snap.GetRevision()}
	switch {
	case last == 0 || snap.GetRevision() != last:
		first = &eventsv1.WatchRequestResponse{Type: eventsv1.WatchMessageType_WATCH_MESSAGE_TYPE_SNAPSHOT, Revision: snap.GetRevision(), Request: snap}
		last = snap.GetRevision()
	case state.Terminal(snap) && ctx.Value(quietEndKey{}) != nil:
		return nil // nothing new, and nothing to come: the caller says so its own way
	}
	if err := send(first); err != nil {
		return err
	}
	if state.Terminal(snap) {
		return nil
	}

	heartbeat := time.NewTicker(s.opts.Heartbeat)
	defer heartbeat.Stop()
	deadline := time.NewTimer(s.opts.MaxDuration)
	defer deadline.Stop()
	for {
		select {
		case <-ctx.Done():
			return Status(ctx.Err())
		case <-sub.Done():
			return sendReconnect(send, last)
		case <-deadline.C:
			return sendReconnect(send, last)
		case <-heartbeat.C:
			if err := send(&eventsv1.WatchRequestResponse{Type: eventsv1.WatchMessageType_WATCH_MESSAGE_TYPE_HEARTBEAT, Revision: last}); err != nil {
				return err
			}
		case <-sub.Ready():
			msg := update(sub, last)
			if msg == nil {
				continue
			}
			if err := send(msg); err != nil {
				return err
			}
			last = msg.GetRevision()
			if state.Terminal(msg.GetRequest()) {
				return nil
			}
		}
	}
}

// quietEndKey marks the context of a watch that would rather end without a
// message than with the lone HEARTBEAT of a resume at the revision of a
// finished request.
type quietEndKey struct{}

// EndQuietlyWhenFinished returns ctx for a WatchRequest call made in process
// whose caller has a better answer than the HEARTBEAT and OK end that a
// resume at the revision of a finished request (one in a terminal state)
// gets: with it, such a call sends no message and ends OK, after giving
// back its place under the watch limits. The gateway's event stream, which
// marks only watches that resume, answers 204 No Content, which stops an
// EventSource from reconnecting.
func EndQuietlyWhenFinished(ctx context.Context) context.Context {
	return context.WithValue(ctx, quietEndKey{}, true)
}

// update builds one message from the pending changes newer than last: an
// UPDATE with the newest snapshot and the events added after last, or,
// when the watcher fell so far behind that changes newer than last were
// dropped, or a retention refold came before the commit of the revision
// before it, or their events would make a message over maxUpdateBytes, a
// SNAPSHOT without events, so the client knows events are missing. Nil
// when nothing is newer.
func update(sub *broker.Subscription, last int64) *eventsv1.WatchRequestResponse {
	changes, droppedUpTo := sub.Next()
	dropped := droppedUpTo > last
	var msg *eventsv1.WatchRequestResponse
	for _, c := range changes {
		if c.Request.GetRevision() <= last {
			continue
		}
		if c.Refold && c.Request.GetRevision()-1 > last {
			dropped = true // the commit before it is still on its way
		}
		if msg == nil {
			msg = &eventsv1.WatchRequestResponse{Type: eventsv1.WatchMessageType_WATCH_MESSAGE_TYPE_UPDATE}
		}
		events := c.EventsAfter(last)
		if msg.Events == nil {
			// Shared with the other watchers: clipped, so that the append
			// of a later change copies it rather than writing past it.
			msg.Events = slices.Clip(events)
		} else {
			msg.Events = append(msg.Events, events...)
		}
		msg.Request = c.Request
		msg.Revision = c.Request.GetRevision()
		last = msg.Revision
	}
	// The snapshot counts too: one a sender filled can take half of it.
	if msg != nil && (dropped || proto.Size(msg) > maxUpdateBytes) {
		msg.Type, msg.Events = eventsv1.WatchMessageType_WATCH_MESSAGE_TYPE_SNAPSHOT, nil
	}
	return msg
}

// maxUpdateBytes bounds an UPDATE, its snapshot and events together, so
// that it stays under the 4 MiB a gRPC client takes by default: a sender
// can make events of up to a few hundred KiB (64 channels of 4 KiB), many
// can land in one commit, and a snapshot whose lists (bounded by
// state.MaxListed) it filled with such texts takes over 2 MiB alone.
const maxUpdateBytes = 2 << 20

// snapshot reads the request for a new watch on a goroutine of its own.
// The store's read runs deep (SQLite's is C translated to Go), and the
// stack it grows would stay with the stream's goroutine for as long as the
// watch lasts: 10,000 idle watchers took 262–264 MiB with the read on the
// stream's goroutine and 183–199 MiB without.
//
// A panic there is raised again on the caller's goroutine, where the
// recovery interceptor takes it, with the stack it came from; left on the
// reading goroutine it would end the process.
func (s *RequestServer) snapshot(ctx context.Context, id string) (*eventsv1.AuthRequest, error) {
	type result struct {
		snap     *eventsv1.AuthRequest
		err      error
		panicked any
		stack    []byte
	}
	done := make(chan result, 1)
	go func() {
		defer func() {
			if p := recover(); p != nil {
				done <- result{panicked: p, stack: debug.Stack()}
			}
		}()
		snap, err := s.store.GetRequest(ctx, id)
		done <- result{snap: snap, err: err}
	}()
	r := <-done
	if r.panicked != nil {
		panic(fmt.Sprintf("%v (reading the snapshot, on a goroutine of its own: %s)", r.panicked, r.stack))
	}
	return r.snap, r.err
}

func sendReconnect(send func(*eventsv1.WatchRequestResponse) error, last int64) error {
	return send(&eventsv1.WatchRequestResponse{Type: eventsv1.WatchMessageType_WATCH_MESSAGE_TYPE_RECONNECT, Revision: last})
}

// CreateWatchToken mints a watch token bound to one request.
func (s *RequestServer) CreateWatchToken(ctx context.Context, req *eventsv1.CreateWatchTokenRequest) (*eventsv1.CreateWatchTokenResponse, error) {
	if err := validateRequestID(req.GetRequestId()); err != nil {
		return nil, err
	}
	if s.opts.Tokens == nil {
		return nil, status.Error(codes.FailedPrecondition, "watch tokens are not configured")
	}
	ttl := auth.DefaultWatchTokenTTL
	if req.GetTtl() != nil {
		if err := req.GetTtl().CheckValid(); err != nil || req.GetTtl().AsDuration() <= 0 {
			return nil, status.Error(codes.InvalidArgument, "ttl must be a positive duration")
		}
		ttl = min(req.GetTtl().AsDuration(), auth.MaxWatchTokenTTL)
	}
	token, exp := s.opts.Tokens.Mint(req.GetRequestId(), ttl)
	return &eventsv1.CreateWatchTokenResponse{Token: token, ExpireTime: timestamppb.New(exp)}, nil
}

func validateRequestID(id string) error {
	if id == "" {
		return status.Error(codes.InvalidArgument, "request_id is required")
	}
	if err := normalize.CheckRequestID(id); err != nil {
		return status.Error(codes.InvalidArgument, err.Error())
	}
	return nil
}
