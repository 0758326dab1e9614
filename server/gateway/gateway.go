// Package gateway is the HTTP face of the service: grpc-gateway routes for
// RequestService (proxied over a client connection to our own gRPC server,
// since the in-process registration cannot stream) and the OTPLESS webhook
// route, which reads the body once so the original bytes can be stored.
// For browsers it adds Server-Sent Events and CORS on the watch route
// (sse.go, cors.go; the event stream calls WatchRequest in process,
// inprocess.go) and the status page at /ui/ (package ui).
//
// It may import the generated API, server/api, server/auth,
// server/normalize and server/gateway/ui.
package gateway

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"math"
	"net"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
	"unicode/utf8"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"github.com/grpc-ecosystem/grpc-gateway/v2/utilities"
	"google.golang.org/genproto/googleapis/api/annotations"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	eventsv1 "github.com/otpless-events/otpless-events/gen/otpless/events/v1"
	"github.com/otpless-events/otpless-events/server/api"
	"github.com/otpless-events/otpless-events/server/auth"
	"github.com/otpless-events/otpless-events/server/normalize"
)

// DefaultMaxBodyBytes is the largest webhook body accepted.
const DefaultMaxBodyBytes = 1 << 20

// DefaultMaxUnauthenticatedReads bounds the webhook bodies read at once
// before their sender is known (signing secrets the only credential). Each
// holds a goroutine and up to 64 KiB for up to --http-read-timeout;
// OTPLESS's bodies arrive with their headers and are read in well under a
// millisecond, so that even thousands a second hold a few at a time.
const DefaultMaxUnauthenticatedReads = 1024

// unauthenticatedShare is the share of MaxUnauthenticatedReads one client
// address (an IPv6 /64, as under the webhook rates: auth.ClientKey) may
// hold (64 of the default 1,024), so that one sender cannot take them all
// from OTPLESS.
const unauthenticatedShare = 16

// WebhookPath is the route OTPLESS posts to.
const WebhookPath = "/v1/webhooks/otpless"

// Options configure the gateway.
type Options struct {
	// MaxBodyBytes bounds webhook bodies; larger ones get 413.
	MaxBodyBytes int64
	// Guard authenticates and limits webhook senders; nil accepts every
	// sender (authentication disabled).
	Guard *auth.WebhookGuard
	// Keyring authenticates API requests that carry a body before it is
	// read; nil reads them all (authentication disabled).
	Keyring *auth.Keyring
	// MaxUnauthenticatedReads bounds the webhook bodies read at once whose
	// signature alone can authenticate them (DefaultMaxUnauthenticatedReads
	// when 0), and a sixteenth of it those from one client address; past
	// either, 503 with Retry-After, the body unread.
	MaxUnauthenticatedReads int
	// CORSOrigins may use the watch route from a browser: origins
	// (scheme://host[:port]) or "*"; empty allows same-origin pages only.
	CORSOrigins []string
	// SSEHeartbeat is the watch's heartbeat interval (DefaultSSEHeartbeat
	// when 0): a Server-Sent Events stream silent for one and a half of it
	// gets a comment, for streams whose watch sends no heartbeats.
	SSEHeartbeat time.Duration
	// Watch runs WatchRequest for the watch route, as Server-Sent Events
	// or newline-delimited JSON (usually InProcess); nil answers the route
	// with UNIMPLEMENTED.
	Watch WatchFunc
	// Streams, when set, lets HTTP/1.1 watch streams leave their handlers
	// once begun: the stream then holds its connection and its watch's
	// goroutine, and Streams.Shutdown waits for it. Nil keeps each stream
	// on its handler's goroutine.
	Streams *Streams
	// Panicked, when set, is told of each panic a watch stream's own
	// goroutine recovers: one outside the interceptors Watch runs
	// through, which would otherwise be logged but not counted.
	Panicked func()
	// Cut, when set, is closed once the server closes the connections of
	// the requests that outlasted its shutdown grace (before it closes
	// them): a webhook body whose read fails after that was cut by the
	// server, not abandoned by its sender. Unanswered, when set, is told
	// of each such request, which its client gets no answer to.
	Cut        <-chan struct{}
	Unanswered func(context.Context)
	// Refused, when set, is told the message of each error a webhook is
	// answered with (the text its sender gets), for the request's log
	// line: unlike the API's, a webhook makes no gRPC call whose line
	// says it. FailuresSpent, when set, is told of each webhook answered
	// 429 because its address has spent its budget of failed credentials
	// (auth.WebhookGuard.FailuresLeft), not that of authenticated ones.
	Refused       func(ctx context.Context, msg string)
	FailuresSpent func(context.Context)
	Logger        *slog.Logger
}

// New returns the HTTP handler. conn reaches our gRPC server; webhooks are
// served in process by ingest.
func New(ctx context.Context, conn *grpc.ClientConn, ingest *api.WebhookServer, opts Options) (http.Handler, error) {
	if opts.MaxBodyBytes <= 0 {
		opts.MaxBodyBytes = DefaultMaxBodyBytes
	}
	// Without grpc-gateway's path-length fallback (a form POST served as a
	// GET), which the 405s of registerNotAllowed would answer anyway. Of
	// the request's headers only Authorization, which grpc-gateway always
	// forwards, becomes gRPC metadata: no handler reads another, and
	// cookies and client-chosen metadata have no business there.
	mux := runtime.NewServeMux(runtime.WithErrorHandler(errorHandler), runtime.WithRoutingErrorHandler(routingErrorHandler),
		runtime.WithDisablePathLengthFallback(),
		// Answers say their length (net/http does only for small ones), a
		// HEAD's too.
		runtime.WithWriteContentLength(),
		// Routes match the path as sent, and path parameters are then
		// unescaped whole: an escaped ":" (%3A) is part of a request id. A
		// "/" cannot be: the mux splits the path at %2F too.
		runtime.WithUnescapingMode(runtime.UnescapingModeAllCharacters),
		runtime.WithIncomingHeaderMatcher(func(string) (string, bool) { return "", false }),
		// As grpc-gateway's default, but a body's unknown field is refused
		// (400 naming it) rather than dropped: {"ttl_seconds": 60} was a
		// token of the default life.
		runtime.WithMarshalerOption(runtime.MIMEWildcard, &runtime.HTTPBodyMarshaler{Marshaler: bodyJSON{gatewayJSON}}),
		// Nor does gRPC metadata become HTTP headers (Grpc-Metadata-*): the
		// server's are its content type and the request id, which the HTTP
		// answer has already.
		runtime.WithOutgoingHeaderMatcher(func(string) (string, bool) { return "", false }),
		runtime.WithOutgoingTrailerMatcher(func(string) (string, bool) { return "", false }))
	// First, so that every route registered after takes precedence: HEAD
	// on /v1/requests/{request_id} would take "x:watch" for an id.
	if err := registerHead(mux); err != nil {
		return nil, err
	}
	if err := registerNotAllowed(mux, func(string) bool { return true }); err != nil {
		return nil, err
	}
	if err := eventsv1.RegisterRequestServiceHandler(ctx, mux, conn); err != nil {
		return nil, fmt.Errorf("gateway: register RequestService: %w", err)
	}
	// Again for the routes with a verb, over RequestService's: GET on
	// "x:watchToken" is the token route's 405, not GetRequest of an id with
	// a colon (which is sent as %3A).
	if err := registerNotAllowed(mux, func(path string) bool { return strings.Contains(path, "}:") }); err != nil {
		return nil, err
	}
	if opts.MaxUnauthenticatedReads <= 0 {
		opts.MaxUnauthenticatedReads = DefaultMaxUnauthenticatedReads
	}
	wh := &webhookHandler{mux: mux, ingest: ingest, maxBody: opts.MaxBodyBytes, guard: opts.Guard, log: opts.Logger,
		unauthenticated:       make(chan struct{}, opts.MaxUnauthenticatedReads),
		unauthenticatedByAddr: api.NewSlots(max(1, opts.MaxUnauthenticatedReads/unauthenticatedShare)),
		closed:                opts.Cut, unanswered: opts.Unanswered,
		refused: opts.Refused, failuresSpent: opts.FailuresSpent}
	if err := wh.register(); err != nil {
		return nil, err
	}
	cors := newCORSPolicy(opts.CORSOrigins)
	return validURL(accessTokenFromQuery(opts.Keyring != nil, cors, apiRequests(opts.Keyring, frontend(mux, webhooksFirst(mux, wh), cors, opts)))), nil
}

// maxAPIBodyBytes bounds the body of a request to the API (not a webhook):
// grpc-gateway reads and decodes it whole before the gRPC server checks
// credentials, so without a bound anyone could make the server hold any
// amount. The API's bodies are a few hundred bytes.
const maxAPIBodyBytes = 64 << 10

// apiRequests answers 413 to an API request (under /v1/requests/, where
// RequestService's routes are) whose body is over maxAPIBodyBytes: at once
// when its length is announced, unread and closing the connection as the
// webhook route does (announcedOver), else once that much has been read (the
// body is read here, whole, and only once its Authorization header holds a
// valid credential: 401 without reading it otherwise, when keyring is set).
// Webhooks have their own credentials and bound; no other route reads a
// body, so that a path of none (a mistyped webhook URL) is a 404 with a
// body as without. Answers about requests, which may hold personal data,
// are not to be cached.
func apiRequests(keyring *auth.Keyring, next http.Handler) http.Handler {
	tooLarge := status.New(codes.ResourceExhausted, "request body is larger than "+api.Size(maxAPIBodyBytes)) // as on the webhook route
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !strings.HasPrefix(r.URL.Path, "/v1/requests/") {
			next.ServeHTTP(w, r)
			return
		}
		w.Header().Set("Cache-Control", "no-store")
		if r.Body != nil && r.Body != http.NoBody {
			if announcedOver(w, r, maxAPIBodyBytes) {
				writeStatus(w, gatewayJSON, http.StatusRequestEntityTooLarge, tooLarge)
				return
			}
			if keyring != nil {
				// The gRPC server would refuse the call all the same, but
				// only once the gateway had read its body: up to 64 KiB
				// held per connection for anyone.
				if _, err := keyring.AuthenticateHeader(r.Header); err != nil {
					w.Header().Set("WWW-Authenticate", bearerChallenge)
					w.Header().Set("Connection", "close") // else net/http reads on, to reuse it
					writeStatus(w, gatewayJSON, http.StatusUnauthorized, status.New(codes.Unauthenticated, err.Error()))
					return
				}
			}
			body, err := readBody(w, r, maxAPIBodyBytes)
			var tooBig *http.MaxBytesError
			switch {
			case errors.As(err, &tooBig):
				writeStatus(w, gatewayJSON, http.StatusRequestEntityTooLarge, tooLarge)
				return
			case err != nil:
				writeStatus(w, gatewayJSON, http.StatusBadRequest, status.New(codes.InvalidArgument, "reading the request body: "+err.Error()))
				return
			}
			r.Body = io.NopCloser(bytes.NewReader(body))
		}
		next.ServeHTTP(w, r)
	})
}

// routes returns the gateway's routes: each path template, with the methods
// it serves. RequestService's come from its google.api.http options.
func routes() map[string][]string {
	r := map[string][]string{WebhookPath: {http.MethodPost}, WebhookPath + "/{key}": {http.MethodPost}}
	methods := eventsv1.File_otpless_events_v1_request_proto.Services().ByName("RequestService").Methods()
	for i := range methods.Len() {
		rule, _ := proto.GetExtension(methods.Get(i).Options(), annotations.E_Http).(*annotations.HttpRule)
		for _, b := range append([]*annotations.HttpRule{rule}, rule.GetAdditionalBindings()...) {
			switch p := b.GetPattern().(type) {
			case *annotations.HttpRule_Get:
				r[p.Get] = append(r[p.Get], http.MethodGet)
				if !methods.Get(i).IsStreamingServer() {
					r[p.Get] = append(r[p.Get], http.MethodHead) // see registerHead
				}
			case *annotations.HttpRule_Post:
				r[p.Post] = append(r[p.Post], http.MethodPost)
			case *annotations.HttpRule_Put:
				r[p.Put] = append(r[p.Put], http.MethodPut)
			case *annotations.HttpRule_Patch:
				r[p.Patch] = append(r[p.Patch], http.MethodPatch)
			case *annotations.HttpRule_Delete:
				r[p.Delete] = append(r[p.Delete], http.MethodDelete)
			}
		}
	}
	return r
}

// registerNotAllowed answers, on every route, the methods it does not serve
// with 405 and Allow. Without it the mux answers them 501: gRPC's
// Unimplemented, which is not the client's mistake.
func registerNotAllowed(mux *runtime.ServeMux, of func(path string) bool) error {
	rs := routes()
	// In order, so that the more specific of two templates that both match
	// a path ("/v1/requests/{request_id}:watch" after
	// "/v1/requests/{request_id}") is registered later, and tried first.
	for _, path := range slices.Sorted(maps.Keys(rs)) {
		if !of(path) {
			continue
		}
		served := rs[path]
		allow := strings.Join(served, ", ")
		for _, m := range []string{http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete, http.MethodOptions} {
			if slices.Contains(served, m) {
				continue
			}
			err := mux.HandlePath(m, path, func(w http.ResponseWriter, r *http.Request, _ map[string]string) {
				w.Header().Set("Allow", allow)
				routingErrorHandler(r.Context(), mux, nil, w, r, http.StatusMethodNotAllowed)
			})
			if err != nil {
				return fmt.Errorf("gateway: register %s %s: %w", m, path, err)
			}
		}
	}
	return nil
}

// registerHead serves HEAD on every route that serves GET with HEAD in its
// methods (routes: not the watch route, whose stream is no document to
// describe): as GET, whose body net/http drops from a HEAD's answer. It
// goes first, under the 405s of registerNotAllowed, so that HEAD on the
// watch route is refused rather than taken for a request id with a colon.
func registerHead(mux *runtime.ServeMux) error {
	for path, methods := range routes() {
		if !slices.Contains(methods, http.MethodHead) {
			continue
		}
		err := mux.HandlePath(http.MethodHead, path, func(w http.ResponseWriter, r *http.Request, _ map[string]string) {
			get := r.Clone(r.Context())
			get.Method = http.MethodGet
			mux.ServeHTTP(w, get)
		})
		if err != nil {
			return fmt.Errorf("gateway: register HEAD %s: %w", path, err)
		}
	}
	return nil
}

// routingErrorHandler answers a request no route takes: as grpc-gateway's
// default does, but a method a route does not serve is 405, not 501, and
// names the methods it does in Allow, and a path under the webhook route
// with more than a key (a webhook URL pasted with a trailing "/") is a 404
// that says what a webhook URL is.
func routingErrorHandler(ctx context.Context, mux *runtime.ServeMux, m runtime.Marshaler, w http.ResponseWriter, r *http.Request, httpStatus int) {
	if httpStatus == http.StatusNotFound && strings.HasPrefix(r.URL.Path, WebhookPath+"/") {
		_, out := runtime.MarshalerForRequest(mux, r)
		writeStatus(w, out, http.StatusNotFound, pastTheKey)
		return
	}
	if httpStatus != http.StatusMethodNotAllowed {
		runtime.DefaultRoutingErrorHandler(ctx, mux, m, w, r, httpStatus)
		return
	}
	if w.Header().Get("Allow") == "" && r.Method != http.MethodOptions { // OPTIONS: allowOf's own probe
		// A method registerNotAllowed has no handler for (TRACE, a
		// WebDAV method, "get"), which the mux refused by itself.
		if allow := allowOf(mux, r); allow != "" {
			w.Header().Set("Allow", allow)
		}
	}
	_, out := runtime.MarshalerForRequest(mux, r)
	msg := fmt.Sprintf("method %s is not allowed here", r.Method)
	if allow := w.Header().Get("Allow"); allow != "" {
		msg += "; allowed: " + allow
	}
	writeStatus(w, out, http.StatusMethodNotAllowed, status.New(codes.Unimplemented, msg))
}

// pastTheKey answers a path that goes on after the webhook key; it does not
// repeat the path, which holds the key.
var pastTheKey = status.New(codes.NotFound, `no route: a webhook URL ends in `+WebhookPath+` or `+WebhookPath+
	`/{key}, with nothing after the key (a trailing "/"?)`)

// allowOf is the Allow header of the route r's path takes: that of its
// answer to OPTIONS, which no route serves, so that registerNotAllowed
// answers it on every route, with the mux's precedence.
func allowOf(mux *runtime.ServeMux, r *http.Request) string {
	probe := r.Clone(r.Context())
	probe.Method = http.MethodOptions
	w := headerOnly{http.Header{}}
	mux.ServeHTTP(w, probe)
	return w.h.Get("Allow")
}

// headerOnly is a ResponseWriter that keeps the header and drops the rest.
type headerOnly struct{ h http.Header }

func (w headerOnly) Header() http.Header         { return w.h }
func (w headerOnly) Write(b []byte) (int, error) { return len(b), nil }
func (w headerOnly) WriteHeader(int)             {}

// register adds the webhook routes, with and without a key in the path,
// to wh's mux.
func (wh *webhookHandler) register() error {
	for _, path := range []string{WebhookPath, WebhookPath + "/{key}"} {
		if err := wh.mux.HandlePath(http.MethodPost, path, wh.serve); err != nil {
			return fmt.Errorf("gateway: register webhook route: %w", err)
		}
	}
	return nil
}

// webhooksFirst serves a webhook POST without the gateway mux's routing,
// which allocated a tenth of what an ingested webhook allocates outside
// the store (its path parameters, a pattern in a copy of the request's
// context). The mux keeps the webhook routes, and everything else that
// reaches them: other methods, and a key that needed escaping in the URL.
func webhooksFirst(mux *runtime.ServeMux, wh *webhookHandler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost && r.URL.RawPath == "" {
			if r.URL.Path == WebhookPath {
				wh.serve(w, r, nil)
				return
			}
			if key, ok := strings.CutPrefix(r.URL.Path, WebhookPath+"/"); ok && !strings.Contains(key, "/") { // an empty key too, as the mux takes it
				wh.serve(w, r, map[string]string{"key": key})
				return
			}
		}
		mux.ServeHTTP(w, r)
	})
}

// strictQuery is grpc-gateway's query parser, but a parameter that names
// no field of the request is refused (400, naming it) rather than ignored:
// a misspelt ?after_revison=5 resumed a watch from the start. So is one
// naming a field the path sets (filter), which grpc-gateway skips: with
// ?request_id=b, the events of the path's request were answered. The watch
// route's access_token, read before, may be left empty; other routes take
// credentials in the header only, and refuse it as they refuse any other.
type strictQuery struct{ runtime.DefaultQueryParser }

// The query parser is grpc-gateway's global, which its mux option sets as
// each mux is made: set here once, before any server reads a query with it
// (several servers run in one test process).
func init() { runtime.NewServeMux(runtime.SetQueryParameterParser(strictQuery{})) }

func (p strictQuery) Parse(msg proto.Message, values url.Values, filter *utilities.DoubleArray) error {
	_, watch := msg.(*eventsv1.WatchRequestRequest)
	for key := range values {
		if key == "access_token" && watch {
			continue
		}
		path, ok := fieldPath(msg.ProtoReflect().Descriptor(), key)
		switch {
		case !ok:
			return fmt.Errorf("unknown query parameter %.100q", key)
		case filter != nil && filter.HasCommonPrefix(path):
			return fmt.Errorf("query parameter %.100q sets what the path names: the path alone says which request", key)
		}
	}
	return p.DefaultQueryParser.Parse(msg, values, filter)
}

// fieldPath is the field of md that key names as grpc-gateway reads query
// parameters (a dotted path, each step by its proto or JSON name), by its
// proto names; ok is false when key names none.
func fieldPath(md protoreflect.MessageDescriptor, key string) (path []string, ok bool) {
	for name := range strings.SplitSeq(key, ".") {
		if md == nil {
			return nil, false
		}
		f := md.Fields().ByName(protoreflect.Name(name))
		if f == nil {
			f = md.Fields().ByJSONName(name)
		}
		if f == nil {
			return nil, false
		}
		path = append(path, string(f.Name()))
		md = f.Message()
	}
	return path, true
}

// validURL answers 400 for a path or query that is not valid UTF-8: such a
// request id could not even be sent to the gRPC server, and a client's typo
// must not read as a server fault. A request route's path with an escaped
// "/" gets 404, saying why.
func validURL(next http.Handler) http.Handler {
	slashInID := status.New(codes.NotFound, `a request id holding "/" (%2F) cannot be named over HTTP, only over gRPC`)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !utf8.ValidString(r.URL.Path) || !validQuery(r.URL.Query()) {
			writeStatus(w, gatewayJSON, http.StatusBadRequest, status.New(codes.InvalidArgument, "the URL's path or query is not valid UTF-8"))
			return
		}
		// The mux splits the path at %2F as at "/", and would take
		// "e%2Fevents" for the events of "e".
		if strings.HasPrefix(r.URL.Path, "/v1/requests/") && strings.Contains(strings.ToUpper(r.URL.EscapedPath()), "%2F") {
			writeStatus(w, gatewayJSON, http.StatusNotFound, slashInID)
			return
		}
		next.ServeHTTP(w, r)
	})
}

func validQuery(q url.Values) bool {
	for k, vs := range q {
		if !utf8.ValidString(k) {
			return false
		}
		for _, v := range vs {
			if !utf8.ValidString(v) {
				return false
			}
		}
	}
	return true
}

// accessTokenFromQuery moves ?access_token= on the watch route into the
// Authorization header, for browsers' EventSource, which cannot set headers.
// The parameter is removed so that it never reaches a request message. Other
// routes take credentials in the header only.
//
// With authentication on (checked), the parameter takes only a watch token:
// a URL ends up in proxies' logs and browsers' histories, where a token
// bound to one request that expires within the hour may be, and an API key
// may not. Anything else is refused (401, saying why) before it is used.
func accessTokenFromQuery(checked bool, cors corsPolicy, next http.Handler) http.Handler {
	notWatchToken := status.New(codes.Unauthenticated,
		"?access_token= takes only a watch token (CreateWatchToken); send an API key in the Authorization header, never in a URL")
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, isWatch := watchRequestID(r.URL); r.Method != http.MethodGet || !isWatch {
			next.ServeHTTP(w, r)
			return
		}
		q := r.URL.Query()
		tok := ""
		for _, v := range q["access_token"] { // each: a key behind an empty one is in the URL too
			if v != "" && checked && !auth.IsWatchToken(v) {
				cors.handle(w, r) // so that a page on an allowed origin can read why
				w.Header().Set("WWW-Authenticate", bearerChallenge)
				w.Header().Set("Cache-Control", "no-store")
				writeStatus(w, gatewayJSON, http.StatusUnauthorized, notWatchToken)
				return
			}
			if tok == "" {
				tok = v
			}
		}
		if tok != "" {
			q.Del("access_token")
			r = r.Clone(r.Context())
			r.URL.RawQuery = q.Encode()
			r.Header.Set("Authorization", "Bearer "+tok)
		}
		next.ServeHTTP(w, r)
	})
}

// errorHandler is the gateway's default, plus Retry-After so that clients
// back off and retry: on UNAVAILABLE, and where the status says when in a
// google.rpc.RetryInfo (a watch refused for a watch limit).
func errorHandler(ctx context.Context, mux *runtime.ServeMux, m runtime.Marshaler, w http.ResponseWriter, r *http.Request, err error) {
	switch status.Code(err) {
	case codes.Unavailable:
		w.Header().Set("Retry-After", "1")
	case codes.Unauthenticated:
		w = challenge{w}
	}
	if d, ok := api.RetryDelay(err); ok {
		w.Header().Set("Retry-After", strconv.FormatInt(int64(math.Ceil(d.Seconds())), 10))
	}
	runtime.DefaultHTTPErrorHandler(ctx, mux, m, w, r, err)
}

// bearerChallenge is the API's WWW-Authenticate challenge.
const bearerChallenge = `Bearer realm="otpless-events"`

// challenge gives a 401 the API's WWW-Authenticate challenge, in place of
// the status message grpc-gateway puts there.
type challenge struct{ http.ResponseWriter }

func (c challenge) WriteHeader(code int) {
	if code == http.StatusUnauthorized {
		c.Header().Set("WWW-Authenticate", bearerChallenge)
	}
	c.ResponseWriter.WriteHeader(code)
}

type webhookHandler struct {
	mux     *runtime.ServeMux
	ingest  *api.WebhookServer
	maxBody int64
	guard   *auth.WebhookGuard
	log     *slog.Logger
	// unauthenticated holds a place for each body being read whose
	// sender only its signature can tell (admit takes it, serve gives it
	// back once the body is read): without a bound, anyone could hold
	// any number, each for up to the server's read timeout. One client
	// address holds at most its share of them, in unauthenticatedByAddr.
	unauthenticated       chan struct{}
	unauthenticatedByAddr *api.Slots
	// closed, unanswered, refused and failuresSpent are Options.Cut,
	// Unanswered, Refused and FailuresSpent.
	closed        <-chan struct{}
	unanswered    func(context.Context)
	refused       func(context.Context, string)
	failuresSpent func(context.Context)
}

// fail answers a webhook st with httpStatus, and tells refused its
// message. Every error answer of the webhook route goes through fail or
// failErr.
func (h *webhookHandler) fail(w http.ResponseWriter, r *http.Request, out runtime.Marshaler, httpStatus int, st *status.Status) {
	if h.refused != nil {
		h.refused(r.Context(), st.Message())
	}
	writeStatus(w, out, httpStatus, st)
}

// failErr is fail for an error errorHandler answers, with the HTTP status
// of its gRPC code.
func (h *webhookHandler) failErr(w http.ResponseWriter, r *http.Request, out runtime.Marshaler, err error) {
	if h.refused != nil {
		h.refused(r.Context(), status.Convert(err).Message())
	}
	errorHandler(r.Context(), h.mux, out, w, r, err)
}

// cut reports whether the server has closed the connections of the
// requests that outlasted its shutdown grace.
func (h *webhookHandler) cut() bool {
	select {
	case <-h.closed:
		return true
	default:
		return false
	}
}

func (h *webhookHandler) serve(w http.ResponseWriter, r *http.Request, params map[string]string) {
	ctx := r.Context()
	_, out := runtime.MarshalerForRequest(h.mux, r)
	admitted, pending := h.admit(w, r, out, params)
	if !admitted {
		return
	}
	var (
		body []byte
		err  error
	)
	if pending {
		body, err = h.readUnauthenticated(w, r)
	} else {
		body, err = h.readWebhook(w, r)
	}
	if err != nil {
		if pending { // a sender that sent no body it could sign failed
			h.guard.Spend(h.guard.ClientAddr(r), true)
		}
		var (
			tooLarge   *http.MaxBytesError
			compressed compressedError
		)
		switch {
		case errors.As(err, &compressed):
			h.fail(w, r, out, http.StatusUnsupportedMediaType, status.New(codes.InvalidArgument, err.Error()))
			return
		case errors.As(err, &tooLarge): // RESOURCE_EXHAUSTED, as gRPC Ingest answers a message over the bound
			h.fail(w, r, out, http.StatusRequestEntityTooLarge,
				status.New(codes.ResourceExhausted, "webhook body is larger than "+api.Size(h.maxBody)))
			return
		}
		if (senderGone(err) || ctx.Err() != nil) && h.cut() {
			// The server closed the connection itself, shutdown's grace
			// over: 503, as for the store shutting down, which no client
			// reads.
			if h.unanswered != nil {
				h.unanswered(ctx)
			}
			h.fail(w, r, out, http.StatusServiceUnavailable, status.New(codes.Unavailable, "server is shutting down: reading webhook body: "+err.Error()))
			return
		}
		if senderGone(err) || ctx.Err() != nil { // HTTP/2 says so by canceling the stream
			// Nobody may read this answer; 408 tells the metrics and the
			// log that the sender stopped, not that it sent a bad body.
			h.fail(w, r, out, http.StatusRequestTimeout, status.New(codes.Canceled, "reading webhook body: "+err.Error()))
			return
		}
		h.failErr(w, r, out, status.Error(codes.InvalidArgument, "reading webhook body: "+err.Error()))
		return
	}
	if h.guard != nil {
		err := h.guard.CheckSignature(r.Header, body)
		// A pending webhook spends the budget of its signature's outcome;
		// any other spent the authenticated one in admit, and a forged
		// signature spends a failure besides.
		if (pending || err != nil) && !h.spend(w, r, out, err != nil) {
			return
		}
		if err != nil {
			h.unauthorized(w, r, out, err)
			return
		}
	}
	body = bytes.TrimPrefix(body, utf8BOM) // which RFC 8259 lets a reader ignore; after the signature, which covers it
	req, err := normalize.Decode(body)
	if err != nil {
		h.ingest.Refused(ctx, body, err)
		h.failErr(w, r, out, api.Status(err))
		return
	}
	resp, err := h.ingest.IngestBody(ctx, req, body)
	if err != nil {
		h.failErr(w, r, out, err)
		return
	}
	buf, err := appendIngestResponse(make([]byte, 0, 256), resp)
	if err != nil {
		h.failErr(w, r, out, status.Error(codes.Internal, "encoding response"))
		return
	}
	w.Header().Set("Content-Type", "application/json")
	if _, err := w.Write(buf); err != nil && h.log != nil {
		h.log.LogAttrs(ctx, slog.LevelDebug, "writing webhook response", slog.Any("error", err))
	}
}

var utf8BOM = []byte("\ufeff")

// compressedError is readWebhook's for a body sent with a Content-Encoding.
type compressedError struct{ encoding string }

func (e compressedError) Error() string {
	return fmt.Sprintf("Content-Encoding %.40q is not accepted: send the body uncompressed", e.encoding)
}

// readWebhook reads a webhook's body, at most maxBody bytes, refusing one
// that is compressed before reading it.
func (h *webhookHandler) readWebhook(w http.ResponseWriter, r *http.Request) ([]byte, error) {
	for _, ce := range r.Header.Values("Content-Encoding") { // each line, each coding of a list
		for c := range strings.SplitSeq(ce, ",") {
			if c = strings.TrimSpace(c); c != "" && !strings.EqualFold(c, "identity") {
				return nil, compressedError{ce}
			}
		}
	}
	return readBody(w, r, h.maxBody)
}

// readUnauthenticated is readWebhook for a pending webhook, giving back
// the place admit took for it once the body is read.
func (h *webhookHandler) readUnauthenticated(w http.ResponseWriter, r *http.Request) ([]byte, error) {
	defer func() {
		h.unauthenticatedByAddr.Give(auth.ClientKey(h.guard.ClientAddr(r)).String())
		<-h.unauthenticated
	}()
	return h.readWebhook(w, r)
}

// readBody reads a request body of at most max bytes. One announced as
// larger fails before any of it is read (nor is a 100 Continue sent for
// it), and the connection is closed after the answer. A body whose length
// is announced, up to readUpfront, is read into a slice of that size, in
// one piece; a larger or chunked one grows as it comes, and one that is too
// large fails when it passes max (which also tells net/http to close the
// connection).
func readBody(w http.ResponseWriter, r *http.Request, max int64) ([]byte, error) {
	if announcedOver(w, r, max) {
		return nil, &http.MaxBytesError{Limit: max}
	}
	body := http.MaxBytesReader(w, r.Body, max)
	if r.ContentLength < 0 {
		return io.ReadAll(body)
	}
	if r.ContentLength > readUpfront {
		// Read as it comes: announcing a length, before any credential is
		// checked, must not make the server hold that much for a sender
		// who sends nothing.
		b, err := io.ReadAll(io.LimitReader(body, r.ContentLength))
		if err == nil && int64(len(b)) < r.ContentLength {
			err = io.ErrUnexpectedEOF
		}
		return b, err
	}
	b := make([]byte, r.ContentLength)
	if _, err := io.ReadFull(body, b); err != nil {
		return nil, err
	}
	return b, nil
}

// announcedOver reports whether r's Content-Length announces a body of
// more than max bytes, which is then to be refused unread: the answer
// closes the connection, else net/http reads on (up to 256 KiB) to reuse
// it. Over HTTP/2 net/http takes the same header to end the connection
// gracefully (GOAWAY, the streams already begun served to their end).
func announcedOver(w http.ResponseWriter, r *http.Request, max int64) bool {
	if r.ContentLength <= max {
		return false
	}
	w.Header().Set("Connection", "close")
	return true
}

// readUpfront is the largest announced body readBody allocates before it
// arrives; OTPLESS's are a few KiB.
const readUpfront = 64 << 10

// senderGone reports whether a body read failed because the sender
// stopped sending (closed or reset the connection, or let the read time
// out) rather than sent something malformed.
func senderGone(err error) bool {
	return errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, os.ErrDeadlineExceeded) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, net.ErrClosed)
}

// admit applies the guard before the body is read: client address (403),
// rate (429 with Retry-After), then credentials (401). A rejection has no
// log line of its own: the request's line says it, with the reason.
//
// A webhook that only its signature can authenticate is pending: whose
// budget it spends is known once the signature is checked (spend), so that
// unsigned requests cannot take the places of signed ones. Until then its
// address must have failure budget left; one whose signature's headers are
// missing or out of date fails at once.
func (h *webhookHandler) admit(w http.ResponseWriter, r *http.Request, out runtime.Marshaler, params map[string]string) (admitted, pending bool) {
	if h.guard == nil {
		return true, false
	}
	addr := h.guard.ClientAddr(r)
	if err := h.guard.CheckAddr(addr); err != nil {
		h.fail(w, r, out, http.StatusForbidden, status.New(codes.PermissionDenied, err.Error()))
		return false, false
	}
	// Credentials first, then the rate budget of their outcome: a sender
	// without them takes no place among those with them.
	// An empty key is none: the keyless route written with a trailing
	// slash, whose sender may well hold Basic credentials.
	key := params["key"]
	credErr := h.guard.CheckCredentials(r, key, key != "")
	if credErr == nil && h.guard.SignatureDecides() {
		if credErr = h.guard.CheckSignatureHeaders(r.Header); credErr == nil {
			if ok, wait := h.guard.FailuresLeft(addr); !ok {
				h.tooMany(w, r, out, wait, true)
				return false, false
			}
			select {
			case h.unauthenticated <- struct{}{}:
				if h.unauthenticatedByAddr.Take(auth.ClientKey(addr).String()) {
					return true, true
				}
				<-h.unauthenticated
				h.unreadRetry(w, r, out, "too many webhooks from this address being read before their signatures are checked, retry later")
			default:
				h.unreadRetry(w, r, out, "too many webhooks being read before their signatures are checked, retry later")
			}
			return false, false
		}
	}
	if credErr == nil && h.guard.SignatureRequired() {
		// Its signature, checked once the body is read, may still fail
		// and spend a failure (serve): as for a pending webhook, its
		// address must have one left.
		if ok, wait := h.guard.FailuresLeft(addr); !ok {
			h.tooMany(w, r, out, wait, true)
			return false, false
		}
	}
	if ok, wait := h.guard.Spend(addr, credErr != nil); !ok {
		h.tooMany(w, r, out, wait, credErr != nil)
		return false, false
	}
	if credErr != nil {
		h.unauthorized(w, r, out, credErr)
		return false, false
	}
	return true, false
}

// unauthorized answers 401 to a webhook whose credentials or signature
// failed, with the challenge HTTP requires of a 401 (RFC 9110, 15.5.2).
func (h *webhookHandler) unauthorized(w http.ResponseWriter, r *http.Request, out runtime.Marshaler, err error) {
	w.Header().Set("WWW-Authenticate", `Basic realm="otpless-events webhooks"`)
	h.fail(w, r, out, http.StatusUnauthorized, status.New(codes.Unauthenticated, err.Error()))
}

// unreadRetry answers 503 with Retry-After to a webhook whose body is left
// unread, closing its connection: else net/http reads on, to reuse it.
func (h *webhookHandler) unreadRetry(w http.ResponseWriter, r *http.Request, out runtime.Marshaler, msg string) {
	w.Header().Set("Retry-After", "1")
	w.Header().Set("Connection", "close")
	h.fail(w, r, out, http.StatusServiceUnavailable, status.New(codes.Unavailable, msg))
}

// spend takes a pending webhook's place from the budget of its signature's
// outcome, and reports whether there was one (else it answers 429).
func (h *webhookHandler) spend(w http.ResponseWriter, r *http.Request, out runtime.Marshaler, failed bool) bool {
	if ok, wait := h.guard.Spend(h.guard.ClientAddr(r), failed); !ok {
		h.tooMany(w, r, out, wait, failed)
		return false
	}
	return true
}

// tooMany answers 429, saying when to retry. failures: the budget spent
// is that of failed credentials, which the answer says, and failuresSpent
// is told.
func (h *webhookHandler) tooMany(w http.ResponseWriter, r *http.Request, out runtime.Marshaler, wait time.Duration, failures bool) {
	w.Header().Set("Retry-After", strconv.Itoa(int(math.Ceil(wait.Seconds()))))
	msg := "too many webhooks from this address, retry later"
	if failures {
		msg = "too many webhooks with failed credentials from this address, retry later"
		if h.failuresSpent != nil {
			h.failuresSpent(r.Context())
		}
	}
	h.fail(w, r, out, http.StatusTooManyRequests, status.New(codes.ResourceExhausted, msg))
}

// gatewayJSON is the mux's JSON, and that of the errors answered before a
// request reaches the mux, so that they have the mux's shape (details: []
// included). Every field is written, defaults too, but a message field
// that is unset, which is left out: the OpenAPI document gives it an
// object's (or a timestamp's, a string's) schema, which null does not
// match.
var gatewayJSON = &runtime.JSONPb{MarshalOptions: protojson.MarshalOptions{EmitDefaultValues: true}}

// bodyJSON is gatewayJSON, but a body that sets the request id is refused
// (400, naming it): the path alone says which request, and grpc-gateway
// overwrites the body's with it, so {"requestId": "b"} posted to
// /v1/requests/a:watchToken was a token for a, where the body's schema
// (ttl alone) has no such field.
type bodyJSON struct{ *runtime.JSONPb }

func (m bodyJSON) NewDecoder(r io.Reader) runtime.Decoder {
	d := m.JSONPb.NewDecoder(r)
	return runtime.DecoderFunc(func(v any) error {
		if err := d.Decode(v); err != nil {
			return err
		}
		if t, ok := v.(*eventsv1.CreateWatchTokenRequest); ok && t.GetRequestId() != "" {
			return errors.New(`the body sets "requestId", which the path names: the path alone says which request`)
		}
		return nil
	})
}

// writeStatus writes st as the gateway writes its errors, with an HTTP status
// the gRPC code cannot express.
func writeStatus(w http.ResponseWriter, m runtime.Marshaler, httpStatus int, st *status.Status) {
	buf, err := m.Marshal(st.Proto())
	if err != nil {
		http.Error(w, st.Message(), httpStatus)
		return
	}
	w.Header().Set("Content-Type", m.ContentType(st.Proto()))
	w.WriteHeader(httpStatus)
	_, _ = w.Write(buf)
}
