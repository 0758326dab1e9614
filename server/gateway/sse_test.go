package gateway_test

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	eventsv1 "github.com/otpless-events/otpless-events/gen/otpless/events/v1"
	"github.com/otpless-events/otpless-events/internal/testlog"
	"github.com/otpless-events/otpless-events/server/api"
	"github.com/otpless-events/otpless-events/server/gateway"
)

type watchFunc func(*eventsv1.WatchRequestRequest, grpc.ServerStreamingServer[eventsv1.WatchRequestResponse]) error

// fakeRequests is a RequestService whose WatchRequest the test scripts.
type fakeRequests struct {
	eventsv1.UnimplementedRequestServiceServer
	watch watchFunc
}

func (f *fakeRequests) WatchRequest(req *eventsv1.WatchRequestRequest, s grpc.ServerStreamingServer[eventsv1.WatchRequestResponse]) error {
	return f.watch(req, s)
}

// startGateway serves the gateway in front of a real gRPC server running
// watch (the event stream runs it in process), and returns the gateway's
// base URL.
func startGateway(t *testing.T, watch watchFunc, opts gateway.Options) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	fake := &fakeRequests{watch: watch}
	gs := grpc.NewServer()
	eventsv1.RegisterRequestServiceServer(gs, fake)
	go gs.Serve(lis)
	t.Cleanup(gs.Stop)
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn}))
	}
	log := opts.Logger
	opts.Watch = gateway.InProcess(fake)
	h, err := gateway.New(t.Context(), conn, api.NewWebhookServer(failingIngester{}, log), opts)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv.URL
}

func msg(typ eventsv1.WatchMessageType, rev int64, status eventsv1.RequestStatus) *eventsv1.WatchRequestResponse {
	m := &eventsv1.WatchRequestResponse{Type: typ, Revision: rev}
	if typ == eventsv1.WatchMessageType_WATCH_MESSAGE_TYPE_SNAPSHOT || typ == eventsv1.WatchMessageType_WATCH_MESSAGE_TYPE_UPDATE {
		m.Request = &eventsv1.AuthRequest{RequestId: "r1", Revision: rev, Status: status}
	}
	if typ == eventsv1.WatchMessageType_WATCH_MESSAGE_TYPE_UPDATE {
		m.Events = []*eventsv1.Event{{EventId: "e1", RequestId: "r1", Status: "SENT", Channel: "SMS"}}
	}
	return m
}

// One event per message, named after its type, id the revision, data the
// gateway's JSON; a retry hint first; comment heartbeats while quiet; every
// event flushed as written (the test reads each before the next is made).
//
// Both ways a stream is served: on its handler's goroutine, and detached
// from it (HTTP/1.1 with Streams), where the gateway writes the chunks.
func TestSSEFraming(t *testing.T) {
	t.Parallel()
	for name, streams := range map[string]*gateway.Streams{"attached": nil, "detached": {}} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			testSSEFraming(t, streams)
		})
	}
}

func testSSEFraming(t *testing.T, streams *gateway.Streams) {
	sent := []*eventsv1.WatchRequestResponse{
		msg(eventsv1.WatchMessageType_WATCH_MESSAGE_TYPE_SNAPSHOT, 0, eventsv1.RequestStatus_REQUEST_STATUS_UNSPECIFIED),
		msg(eventsv1.WatchMessageType_WATCH_MESSAGE_TYPE_UPDATE, 1, eventsv1.RequestStatus_REQUEST_STATUS_IN_PROGRESS),
		msg(eventsv1.WatchMessageType_WATCH_MESSAGE_TYPE_HEARTBEAT, 1, 0),
		msg(eventsv1.WatchMessageType_WATCH_MESSAGE_TYPE_RECONNECT, 1, 0),
	}
	quietSeen := make(chan struct{})
	url := startGateway(t, func(req *eventsv1.WatchRequestRequest, s grpc.ServerStreamingServer[eventsv1.WatchRequestResponse]) error {
		if err := s.Send(sent[0]); err != nil {
			return err
		}
		select { // stay quiet until the client has seen a comment heartbeat
		case <-quietSeen:
		case <-s.Context().Done():
			return s.Context().Err()
		}
		for _, m := range sent[1:] {
			if err := s.Send(m); err != nil {
				return err
			}
		}
		return nil
	}, gateway.Options{SSEHeartbeat: 10 * time.Millisecond, Streams: streams})

	st := openSSE(t, testContext(t), url+"/v1/requests/r1:watch", nil)
	if st.resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d", st.resp.StatusCode)
	}
	for k, want := range map[string]string{
		"Content-Type":      "text/event-stream; charset=utf-8",
		"Cache-Control":     "no-store",
		"X-Accel-Buffering": "no",
	} {
		if got := st.resp.Header.Get(k); got != want {
			t.Errorf("%s: %q, want %q", k, got, want)
		}
	}
	first, err := st.next()
	if err != nil || first.Retry != "2000" {
		t.Fatalf("first block %+v (%v), want a retry hint of 2000 ms", first, err)
	}

	names := []string{"snapshot", "update", "heartbeat", "reconnect"}
	for i, want := range sent {
		ev := st.nextEvent(t)
		if ev.Event != names[i] || ev.ID != []string{"0", "1", "1", "1"}[i] {
			t.Errorf("event %d: %q id %q, want %q id %d", i, ev.Event, ev.ID, names[i], want.GetRevision())
		}
		if got := message(t, ev); !proto.Equal(got, want) {
			t.Errorf("event %d data %s, want %v", i, ev.Data, want)
		}
		// The gateway's marshaler emits unpopulated fields too.
		if i == 0 && !strings.Contains(ev.Data, `"events":[]`) {
			t.Errorf("snapshot data %s is not the gateway's JSON", ev.Data)
		}
		if i == 0 {
			for {
				c, err := st.next()
				if err != nil {
					t.Fatal(err)
				}
				if slices.Contains(c.Comments, "heartbeat") && c.Event == "" {
					break
				}
			}
			close(quietSeen)
		}
	}
	if ev, err := st.next(); err != io.EOF {
		t.Fatalf("after RECONNECT: %+v, %v; want the end of the stream", ev, err)
	}
}

// Resume: Last-Event-ID (a reconnecting EventSource) or ?after_revision=
// becomes WatchRequest's after_revision; Last-Event-ID wins.
func TestSSEResumeRevision(t *testing.T) {
	t.Parallel()
	got := make(chan int64, 1)
	url := startGateway(t, func(req *eventsv1.WatchRequestRequest, s grpc.ServerStreamingServer[eventsv1.WatchRequestResponse]) error {
		got <- req.GetAfterRevision()
		return s.Send(msg(eventsv1.WatchMessageType_WATCH_MESSAGE_TYPE_HEARTBEAT, req.GetAfterRevision(), 0))
	}, gateway.Options{})
	tests := []struct {
		name, query, lastEventID string
		want                     int64
		code                     int
	}{
		{"from the start", "", "", 0, http.StatusOK},
		{"after_revision", "?after_revision=5", "", 5, http.StatusOK},
		{"Last-Event-ID", "", "7", 7, http.StatusOK},
		{"Last-Event-ID wins", "?after_revision=5", "7", 7, http.StatusOK},
		{"bad Last-Event-ID", "", "seven", 0, http.StatusBadRequest},
		{"negative Last-Event-ID", "", "-1", 0, http.StatusBadRequest},
		{"negative after_revision", "?after_revision=-1", "", 0, http.StatusBadRequest},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := http.Header{}
			if tt.lastEventID != "" {
				h.Set("Last-Event-ID", tt.lastEventID)
			}
			st := openSSE(t, testContext(t), url+"/v1/requests/r1:watch"+tt.query, h)
			if st.resp.StatusCode != tt.code {
				t.Fatalf("status %d, want %d", st.resp.StatusCode, tt.code)
			}
			if tt.code != http.StatusOK {
				return
			}
			if ev := st.nextEvent(t); ev.Event != "heartbeat" {
				t.Fatalf("event %+v, want the heartbeat", ev)
			}
			if rev := <-got; rev != tt.want {
				t.Errorf("after_revision %d, want %d", rev, tt.want)
			}
		})
	}
}

// A watch that ends OK without a message, as WatchRequest does for an event
// stream that resumes at the last revision of a finished request
// (api.EndQuietlyWhenFinished), is answered 204 No Content, with the
// route's headers; on a watch not resumed, or not an event stream, it is
// still an internal error.
func TestWatchEndedWithoutAMessage(t *testing.T) {
	t.Parallel()
	const origin = "https://shop.example"
	url := startGateway(t, func(*eventsv1.WatchRequestRequest, grpc.ServerStreamingServer[eventsv1.WatchRequestResponse]) error {
		return nil
	}, gateway.Options{CORSOrigins: []string{origin}})
	tests := []struct {
		name, accept, query, lastEventID string
		code                             int
	}{
		{"event stream resumed by Last-Event-ID", "text/event-stream", "", "3", http.StatusNoContent},
		{"event stream resumed by after_revision", "text/event-stream", "?after_revision=3", "", http.StatusNoContent},
		{"event stream from the start", "text/event-stream", "", "", http.StatusInternalServerError},
		{"NDJSON resumed", "", "?after_revision=3", "", http.StatusInternalServerError},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			req, err := http.NewRequestWithContext(testContext(t), http.MethodGet, url+"/v1/requests/r1:watch"+tt.query, nil)
			if err != nil {
				t.Fatal(err)
			}
			req.Header.Set("Origin", origin)
			if tt.accept != "" {
				req.Header.Set("Accept", tt.accept)
			}
			if tt.lastEventID != "" {
				req.Header.Set("Last-Event-ID", tt.lastEventID)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil || resp.StatusCode != tt.code {
				t.Fatalf("%d %s (%v), want %d", resp.StatusCode, body, err, tt.code)
			}
			if resp.Header.Get("Access-Control-Allow-Origin") != origin || resp.Header.Get("Cache-Control") != "no-store" {
				t.Errorf("headers %v, want Access-Control-Allow-Origin %s and Cache-Control no-store", resp.Header, origin)
			}
			if tt.code == http.StatusNoContent && len(body) != 0 {
				t.Errorf("204 with a body %q", body)
			}
		})
	}
}

// An error before the first message is an HTTP error (EventSource stops);
// one after it ends the stream with an "error" event carrying the status.
func TestSSEErrors(t *testing.T) {
	t.Parallel()
	t.Run("before the first message", func(t *testing.T) {
		t.Parallel()
		url := startGateway(t, func(*eventsv1.WatchRequestRequest, grpc.ServerStreamingServer[eventsv1.WatchRequestResponse]) error {
			return status.Error(codes.PermissionDenied, "watch token is for another request")
		}, gateway.Options{})
		st := openSSE(t, testContext(t), url+"/v1/requests/r1:watch", nil)
		body, _ := io.ReadAll(st.resp.Body)
		if st.resp.StatusCode != http.StatusForbidden || strings.HasPrefix(st.resp.Header.Get("Content-Type"), "text/event-stream") {
			t.Fatalf("%d %s %s, want a 403 error body", st.resp.StatusCode, st.resp.Header.Get("Content-Type"), body)
		}
		var e struct {
			Code    int
			Message string
		}
		if err := json.Unmarshal(body, &e); err != nil || e.Code != int(codes.PermissionDenied) || !strings.Contains(e.Message, "another request") {
			t.Errorf("error body %s (%v)", body, err)
		}
	})
	t.Run("mid-stream", func(t *testing.T) {
		t.Parallel()
		url := startGateway(t, func(_ *eventsv1.WatchRequestRequest, s grpc.ServerStreamingServer[eventsv1.WatchRequestResponse]) error {
			if err := s.Send(msg(eventsv1.WatchMessageType_WATCH_MESSAGE_TYPE_SNAPSHOT, 3, eventsv1.RequestStatus_REQUEST_STATUS_IN_PROGRESS)); err != nil {
				return err
			}
			return status.Error(codes.Unavailable, "store unavailable, retry later")
		}, gateway.Options{Streams: &gateway.Streams{}})
		st := openSSE(t, testContext(t), url+"/v1/requests/r1:watch", nil)
		if ev := st.nextEvent(t); ev.Event != "snapshot" || ev.ID != "3" {
			t.Fatalf("first event %+v", ev)
		}
		ev := st.nextEvent(t)
		if ev.Event != "error" || ev.HasID {
			t.Fatalf("event %+v, want an error event without an id (resume stays at the last revision)", ev)
		}
		var e struct {
			Code    int
			Message string
			Details []any
		}
		if err := json.Unmarshal([]byte(ev.Data), &e); err != nil || e.Code != int(codes.Unavailable) || e.Message != "store unavailable, retry later" || e.Details == nil {
			t.Errorf("error data %s (%v), want the gRPC status as the gateway writes it", ev.Data, err)
		}
		if ev, err := st.next(); err != io.EOF {
			t.Fatalf("after the error: %+v, %v; want the end of the stream", ev, err)
		}
	})
}

// A Grpc-Timeout header bounds the watch as it bounds a call on the other
// routes: at its deadline the stream ends with DEADLINE_EXCEEDED, as an
// error event or line (and before the first message as the HTTP error).
func TestWatchHonoursGrpcTimeout(t *testing.T) {
	t.Parallel()
	url := startGateway(t, func(_ *eventsv1.WatchRequestRequest, s grpc.ServerStreamingServer[eventsv1.WatchRequestResponse]) error {
		if err := s.Send(msg(eventsv1.WatchMessageType_WATCH_MESSAGE_TYPE_SNAPSHOT, 3, eventsv1.RequestStatus_REQUEST_STATUS_IN_PROGRESS)); err != nil {
			return err
		}
		<-s.Context().Done()
		return status.FromContextError(s.Context().Err()).Err()
	}, gateway.Options{Streams: &gateway.Streams{}})
	timeout := http.Header{"Grpc-Timeout": {"300m"}}
	// Without the deadline, the watch would wait for the client to leave.
	bounded := func(t *testing.T) context.Context {
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
		t.Cleanup(cancel)
		return ctx
	}

	t.Run("sse", func(t *testing.T) {
		t.Parallel()
		st := openSSE(t, bounded(t), url+"/v1/requests/r1:watch", timeout)
		if ev := st.nextEvent(t); ev.Event != "snapshot" {
			t.Fatalf("first event %+v", ev)
		}
		ev := st.nextEvent(t)
		var e struct{ Code int }
		if err := json.Unmarshal([]byte(ev.Data), &e); ev.Event != "error" || err != nil || e.Code != int(codes.DeadlineExceeded) {
			t.Fatalf("event %+v, want an error event of code %d", ev, codes.DeadlineExceeded)
		}
		if ev, err := st.next(); err != io.EOF {
			t.Fatalf("after the error: %+v, %v; want the end of the stream", ev, err)
		}
	})
	t.Run("ndjson", func(t *testing.T) {
		t.Parallel()
		req, _ := http.NewRequestWithContext(bounded(t), http.MethodGet, url+"/v1/requests/r1:watch", nil)
		req.Header = timeout.Clone()
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatalf("reading the stream: %v (so far %s)", err, body)
		}
		lines := strings.Split(strings.TrimSpace(string(body)), "\n")
		var last struct{ Error struct{ Code int } }
		if len(lines) != 2 || json.Unmarshal([]byte(lines[1]), &last) != nil || last.Error.Code != int(codes.DeadlineExceeded) {
			t.Fatalf("stream %q, want a result line, then an error line of code %d", body, codes.DeadlineExceeded)
		}
	})
	t.Run("before the first message", func(t *testing.T) {
		t.Parallel()
		slow := startGateway(t, func(_ *eventsv1.WatchRequestRequest, s grpc.ServerStreamingServer[eventsv1.WatchRequestResponse]) error {
			<-s.Context().Done()
			return status.FromContextError(s.Context().Err()).Err()
		}, gateway.Options{})
		st := openSSE(t, bounded(t), slow+"/v1/requests/r1:watch", timeout)
		if st.resp.StatusCode != http.StatusGatewayTimeout {
			t.Fatalf("%d, want 504", st.resp.StatusCode)
		}
	})
}

// ?access_token= reaches gRPC as the bearer credential, on the event stream
// as on every gateway route.
func TestSSEForwardsAccessToken(t *testing.T) {
	t.Parallel()
	auth := make(chan []string, 1)
	url := startGateway(t, func(req *eventsv1.WatchRequestRequest, s grpc.ServerStreamingServer[eventsv1.WatchRequestResponse]) error {
		md, _ := metadata.FromIncomingContext(s.Context())
		auth <- md.Get("authorization")
		return s.Send(msg(eventsv1.WatchMessageType_WATCH_MESSAGE_TYPE_SNAPSHOT, 0, 0))
	}, gateway.Options{})
	st := openSSE(t, testContext(t), url+"/v1/requests/r1:watch?access_token=owt1.abc", nil)
	if ev := st.nextEvent(t); ev.Event != "snapshot" {
		t.Fatalf("event %+v", ev)
	}
	if got := <-auth; !slices.Equal(got, []string{"Bearer owt1.abc"}) {
		t.Fatalf("authorization metadata %q, want the access token as a bearer credential", got)
	}
}

// Of the HTTP request's headers only the credential reaches gRPC: not the
// browser's cookies nor metadata a client chose (Grpc-Metadata-*), on the
// event stream and on the gateway's own routes alike.
func TestGatewayForwardsOnlyTheCredential(t *testing.T) {
	t.Parallel()
	got := make(chan metadata.MD, 2)
	url := startGateway(t, func(req *eventsv1.WatchRequestRequest, s grpc.ServerStreamingServer[eventsv1.WatchRequestResponse]) error {
		md, _ := metadata.FromIncomingContext(s.Context())
		got <- md
		return s.Send(msg(eventsv1.WatchMessageType_WATCH_MESSAGE_TYPE_SNAPSHOT, 0, eventsv1.RequestStatus_REQUEST_STATUS_SUCCESS))
	}, gateway.Options{})
	for _, accept := range []string{"text/event-stream", "application/json"} {
		req, _ := http.NewRequestWithContext(testContext(t), http.MethodGet, url+"/v1/requests/r1:watch", nil)
		req.Header.Set("Accept", accept)
		req.Header.Set("Authorization", "Bearer k1")
		req.Header.Set("Cookie", "session=secret")
		req.Header.Set("Grpc-Metadata-X-Chosen", "by the client")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		md := <-got
		if a := md.Get("authorization"); !slices.Equal(a, []string{"Bearer k1"}) {
			t.Errorf("%s: authorization %q, want the bearer credential", accept, a)
		}
		for k := range md {
			if strings.Contains(k, "cookie") || strings.Contains(k, "chosen") {
				t.Errorf("%s: metadata %s = %q reached gRPC", accept, k, md[k])
			}
		}
	}
}

// Without Accept: text/event-stream the watch route stays newline-delimited
// JSON.
func TestWatchWithoutEventStreamIsNDJSON(t *testing.T) {
	t.Parallel()
	url := startGateway(t, func(_ *eventsv1.WatchRequestRequest, s grpc.ServerStreamingServer[eventsv1.WatchRequestResponse]) error {
		return s.Send(msg(eventsv1.WatchMessageType_WATCH_MESSAGE_TYPE_SNAPSHOT, 0, 0))
	}, gateway.Options{})
	resp, err := http.Get(url + "/v1/requests/r1:watch")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var line struct{ Result struct{ Type string } }
	if err := json.NewDecoder(resp.Body).Decode(&line); err != nil || line.Result.Type != "WATCH_MESSAGE_TYPE_SNAPSHOT" {
		t.Fatalf("%s: %+v (%v), want an NDJSON result line", resp.Header.Get("Content-Type"), line, err)
	}
}

func TestWatchCORS(t *testing.T) {
	t.Parallel()
	snapshot := func(_ *eventsv1.WatchRequestRequest, s grpc.ServerStreamingServer[eventsv1.WatchRequestResponse]) error {
		return s.Send(msg(eventsv1.WatchMessageType_WATCH_MESSAGE_TYPE_SNAPSHOT, 0, 0))
	}
	// As "https://shop.example, https://login.example.com" splits.
	listed := startGateway(t, snapshot, gateway.Options{CORSOrigins: []string{"https://shop.example", " https://login.example.com", "https://Pay.example:443", "http://dev.example:80/"}})
	anyOrigin := startGateway(t, snapshot, gateway.Options{CORSOrigins: []string{"*"}})
	none := startGateway(t, snapshot, gateway.Options{})

	tests := []struct {
		name, base, method, path, origin, accept string
		code                                     int
		allowOrigin                              string
	}{
		{"preflight from a listed origin", listed, http.MethodOptions, "/v1/requests/r1:watch", "https://login.example.com", "", http.StatusNoContent, "https://login.example.com"},
		{"preflight from an origin listed with its default port", listed, http.MethodOptions, "/v1/requests/r1:watch", "https://pay.example", "", http.StatusNoContent, "https://pay.example"},
		{"event stream from an origin listed with its default port", listed, http.MethodGet, "/v1/requests/r1:watch", "http://dev.example", "text/event-stream", http.StatusOK, "http://dev.example"},
		{"preflight from another origin", listed, http.MethodOptions, "/v1/requests/r1:watch", "https://evil.example", "", http.StatusForbidden, ""},
		{"event stream from a listed origin", listed, http.MethodGet, "/v1/requests/r1:watch", "https://login.example.com", "text/event-stream", http.StatusOK, "https://login.example.com"},
		{"NDJSON from a listed origin", listed, http.MethodGet, "/v1/requests/r1:watch", "https://login.example.com", "", http.StatusOK, "https://login.example.com"},
		{"event stream from another origin", listed, http.MethodGet, "/v1/requests/r1:watch", "https://evil.example", "text/event-stream", http.StatusOK, ""},
		{"other routes get no CORS", listed, http.MethodGet, "/v1/requests/r1", "https://login.example.com", "", http.StatusNotImplemented, ""},
		{"any origin", anyOrigin, http.MethodOptions, "/v1/requests/r1:watch", "https://anywhere.example", "", http.StatusNoContent, "*"},
		{"not configured", none, http.MethodGet, "/v1/requests/r1:watch", "https://login.example.com", "text/event-stream", http.StatusOK, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			req, err := http.NewRequestWithContext(testContext(t), tt.method, tt.base+tt.path, nil)
			if err != nil {
				t.Fatal(err)
			}
			req.Header.Set("Origin", tt.origin)
			if tt.method == http.MethodOptions {
				req.Header.Set("Access-Control-Request-Method", "GET")
				req.Header.Set("Access-Control-Request-Headers", "last-event-id")
			}
			if tt.accept != "" {
				req.Header.Set("Accept", tt.accept)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			if resp.StatusCode != tt.code {
				t.Errorf("status %d, want %d", resp.StatusCode, tt.code)
			}
			if ct := resp.Header.Get("Content-Type"); tt.code == http.StatusForbidden && ct != "application/json" {
				t.Errorf("refusal in %q, want JSON as the API's", ct)
			}
			if got := resp.Header.Get("Access-Control-Allow-Origin"); got != tt.allowOrigin {
				t.Errorf("Access-Control-Allow-Origin %q, want %q", got, tt.allowOrigin)
			}
			if tt.code == http.StatusNoContent && !strings.Contains(resp.Header.Get("Access-Control-Allow-Headers"), "Last-Event-ID") {
				t.Errorf("preflight allows headers %q, want Last-Event-ID among them", resp.Header.Get("Access-Control-Allow-Headers"))
			}
		})
	}
}

// A page of another origin reads the headers that tell it when to try
// again (Retry-After, on a watch refused for a limit) and which request to
// name when it reports a problem (X-Request-Id): a browser hides every
// header but a few from it unless the answer exposes them.
func TestWatchCORSExposesHeaders(t *testing.T) {
	t.Parallel()
	const origin = "https://shop.example"
	url := startGateway(t, func(*eventsv1.WatchRequestRequest, grpc.ServerStreamingServer[eventsv1.WatchRequestResponse]) error {
		return api.Exhausted("too many watch streams of this request")
	}, gateway.Options{CORSOrigins: []string{origin}})
	req, err := http.NewRequestWithContext(testContext(t), http.MethodGet, url+"/v1/requests/r1:watch", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Origin", origin)
	req.Header.Set("Accept", "text/event-stream")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") != "5" {
		t.Fatalf("%d, Retry-After %q; want 429 with Retry-After 5", resp.StatusCode, resp.Header.Get("Retry-After"))
	}
	exposed := map[string]bool{}
	for _, v := range resp.Header.Values("Access-Control-Expose-Headers") {
		for h := range strings.SplitSeq(v, ",") {
			exposed[http.CanonicalHeaderKey(strings.TrimSpace(h))] = true
		}
	}
	for _, h := range []string{"Retry-After", "X-Request-Id"} {
		if !exposed[h] {
			t.Errorf("Access-Control-Expose-Headers %q: %s is hidden from the page", resp.Header.Values("Access-Control-Expose-Headers"), h)
		}
	}
}

// A preflight allows every request header the watch route reads, so that a
// page of another origin may send them: the credential, Last-Event-ID,
// Grpc-Timeout (a deadline, as on the other routes) and its own
// X-Request-Id. A header it does not allow makes the browser refuse the
// request before sending it.
func TestWatchCORSPreflightAllowsTheRouteHeaders(t *testing.T) {
	t.Parallel()
	const origin = "https://shop.example"
	url := startGateway(t, func(*eventsv1.WatchRequestRequest, grpc.ServerStreamingServer[eventsv1.WatchRequestResponse]) error {
		return nil
	}, gateway.Options{CORSOrigins: []string{origin}})
	asked := []string{"authorization", "last-event-id", "grpc-timeout", "x-request-id"}
	req, err := http.NewRequestWithContext(testContext(t), http.MethodOptions, url+"/v1/requests/r1:watch", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Origin", origin)
	req.Header.Set("Access-Control-Request-Method", "GET")
	req.Header.Set("Access-Control-Request-Headers", strings.Join(asked, ","))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent {
		t.Fatalf("preflight: %d, want 204", resp.StatusCode)
	}
	allowed := map[string]bool{}
	for _, v := range resp.Header.Values("Access-Control-Allow-Headers") {
		for h := range strings.SplitSeq(v, ",") {
			allowed[strings.ToLower(strings.TrimSpace(h))] = true
		}
	}
	for _, h := range asked {
		if !allowed[h] {
			t.Errorf("Access-Control-Allow-Headers %q: %s is not allowed", resp.Header.Values("Access-Control-Allow-Headers"), h)
		}
	}
}

func TestCheckCORSOrigins(t *testing.T) {
	t.Parallel()
	if err := gateway.CheckCORSOrigins([]string{"*", "https://a.example", "http://localhost:3000", " https://b.example ",
		"https://xn--bcher-kva.example", "http://127.0.0.1:8080", "http://[::1]:3000", "https://A.Example:443/",
		"http://[::ffff:7f00:1]", "http://[2001:DB8::1]:8443", "https://1password.example",
		"", " "}); err != nil { // "https://a.example," splits with an empty entry, skipped as in the other lists
		t.Fatalf("valid origins: %v", err)
	}
	// Each of these, accepted, would match no page: a browser sends an
	// internationalized name in punycode, a port in plain decimal, and a
	// host as it is, "*" included.
	for _, bad := range []string{"a.example", "https://a.example/path", "ftp://a.example", "https://user@a.example",
		"https://*.a.example", "https://bücher.example", "https://a.example:", "https://a.example:0443", "https://a.example:99999",
		"https://a.example?", "https://a.example#",
		// A browser sends an IP address in its canonical form.
		"http://127.1:8080", "http://2130706433", "http://0x7f.0.0.1", "http://127.0.0.01", "http://[0:0:0:0:0:0:0:1]:3000", "http://[::ffff:127.0.0.1]"} {
		if err := gateway.CheckCORSOrigins([]string{bad}); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestStatusPageIsServed(t *testing.T) {
	t.Parallel()
	url := startGateway(t, func(*eventsv1.WatchRequestRequest, grpc.ServerStreamingServer[eventsv1.WatchRequestResponse]) error {
		return nil
	}, gateway.Options{})
	noRedirect := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	tests := []struct {
		path, wantType, contains string
		code                     int
		location                 string
	}{
		{"/ui/", "text/html; charset=utf-8", "OTPLESS request status", http.StatusOK, ""},
		{"/ui/app.js", "text/javascript; charset=utf-8", "EventSource", http.StatusOK, ""},
		{"/ui/style.css", "text/css; charset=utf-8", ".step", http.StatusOK, ""},
		{"/ui?request_id=r1", "", "", http.StatusMovedPermanently, "/ui/?request_id=r1"},
		{"/", "", "", http.StatusFound, "/ui/"},
		{"/?request_id=r1&access_token=t", "", "", http.StatusFound, "/ui/?request_id=r1&access_token=t"},
		{"/ui/missing.js", "", "", http.StatusNotFound, ""},
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			resp, err := noRedirect.Get(url + tt.path)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			body, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != tt.code {
				t.Fatalf("status %d, want %d", resp.StatusCode, tt.code)
			}
			if tt.wantType != "" && resp.Header.Get("Content-Type") != tt.wantType {
				t.Errorf("Content-Type %q, want %q", resp.Header.Get("Content-Type"), tt.wantType)
			}
			if !strings.Contains(string(body), tt.contains) {
				t.Errorf("body does not contain %q", tt.contains)
			}
			if tt.location != "" && resp.Header.Get("Location") != tt.location {
				t.Errorf("Location %q, want %q", resp.Header.Get("Location"), tt.location)
			}
			if tt.code == http.StatusOK && (resp.Header.Get("Content-Security-Policy") == "" || resp.Header.Get("Referrer-Policy") != "no-referrer") {
				t.Errorf("page served without its CSP and referrer policy: %v", resp.Header)
			}
			// A redirect keeps the query, which may hold a watch token: as
			// the page, it is not kept, nor its URL sent on as a referrer.
			if tt.location != "" && (resp.Header.Get("Cache-Control") != "no-store" || resp.Header.Get("Referrer-Policy") != "no-referrer") {
				t.Errorf("redirect with Cache-Control %q, Referrer-Policy %q; want no-store, no-referrer",
					resp.Header.Get("Cache-Control"), resp.Header.Get("Referrer-Policy"))
			}
		})
	}
}

// The line a watch stream's end logs names the OTPLESS request id as the
// access log does (otpless_request_id: request_id is the HTTP request's),
// and has no error when it ended without one (it said error=<nil>).
func TestWatchStreamEndLogLine(t *testing.T) {
	t.Parallel()
	var logs testlog.Buffer
	url := startGateway(t, func(req *eventsv1.WatchRequestRequest, s grpc.ServerStreamingServer[eventsv1.WatchRequestResponse]) error {
		return s.Send(msg(eventsv1.WatchMessageType_WATCH_MESSAGE_TYPE_SNAPSHOT, 3, eventsv1.RequestStatus_REQUEST_STATUS_SUCCESS))
	}, gateway.Options{Logger: slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	st := openSSE(t, testContext(t), url+"/v1/requests/r1:watch", nil)
	if ev := st.nextEvent(t); ev.Event != "snapshot" {
		t.Fatalf("first event %q", ev.Event)
	}
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(logs.String(), "watch stream ended") {
		if time.Now().After(deadline) {
			t.Fatalf("no line for the stream's end in %s", logs.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	for line := range strings.Lines(logs.String()) {
		if !strings.Contains(line, "watch stream ended") {
			continue
		}
		var rec map[string]any
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatal(err)
		}
		if rec["otpless_request_id"] != "r1" || rec["request_id"] != nil || rec["error"] != nil {
			t.Errorf("line %s: want otpless_request_id r1, and neither request_id nor error", line)
		}
	}
}
