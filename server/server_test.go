package server_test

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"

	eventsv1 "github.com/otpless-events/otpless-events/gen/otpless/events/v1"
	"github.com/otpless-events/otpless-events/internal/fixtures"
	"github.com/otpless-events/otpless-events/internal/testlog"
	"github.com/otpless-events/otpless-events/internal/testserver"
	"github.com/otpless-events/otpless-events/server"
	"github.com/otpless-events/otpless-events/server/auth"
	"github.com/otpless-events/otpless-events/server/state"
)

// testServer is a real server on ephemeral loopback ports with real clients.
type testServer struct {
	httpURL     string
	webhookPath string
	conn        *grpc.ClientConn
	requests    eventsv1.RequestServiceClient
	webhooks    eventsv1.WebhookServiceClient
	stop        func()
}

// startServer runs a real server (authentication disabled unless mutate
// turns it on; security_test.go covers it) with clients that send the
// admin key of security_test.go.
func startServer(t *testing.T, mutate func(*server.Config)) *testServer {
	t.Helper()
	srv := testserver.Start(t, mutate)
	conn := srv.Dial(t, grpc.WithPerRPCCredentials(auth.BearerCredentials{Token: testAdminKey, Insecure: true}))
	return &testServer{
		httpURL:     srv.HTTPURL,
		webhookPath: srv.WebhookPath,
		conn:        conn,
		requests:    eventsv1.NewRequestServiceClient(conn),
		webhooks:    eventsv1.NewWebhookServiceClient(conn),
		stop:        func() { srv.Stop(t) },
	}
}

type httpResult struct {
	code   int
	header http.Header
	body   []byte
}

func (ts *testServer) post(t *testing.T, path string, body []byte) httpResult {
	t.Helper()
	return ts.do(t, http.MethodPost, path, "", body)
}

// do sends one HTTP request; bearer, when set, goes in Authorization, and
// header holds more headers as name and value pairs (an empty value sets
// none).
func (ts *testServer) do(t *testing.T, method, path, bearer string, body []byte, header ...string) httpResult {
	t.Helper()
	req, err := http.NewRequest(method, ts.httpURL+path, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	for i := 0; i+1 < len(header); i += 2 {
		if header[i+1] != "" {
			req.Header.Set(header[i], header[i+1])
		}
	}
	return send(t, req)
}

// send sends req and reads the whole answer, within 30 s (an answer that
// never ends, a watch stream say, fails the test).
func send(t *testing.T, req *http.Request) httpResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(req.Context(), 30*time.Second)
	defer cancel()
	resp, err := http.DefaultClient.Do(req.WithContext(ctx))
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL.Path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return httpResult{code: resp.StatusCode, header: resp.Header, body: b}
}

func (ts *testServer) get(t *testing.T, path string) httpResult {
	t.Helper()
	return ts.do(t, http.MethodGet, path, testAdminKey, nil)
}

func (ts *testServer) ingest(t *testing.T, body []byte) *eventsv1.IngestResponse {
	t.Helper()
	r := ts.post(t, ts.webhookPath, body)
	if r.code != http.StatusOK {
		t.Fatalf("POST webhook: %d %s", r.code, r.body)
	}
	resp := &eventsv1.IngestResponse{}
	if err := protojson.Unmarshal(r.body, resp); err != nil {
		t.Fatalf("decoding %s: %v", r.body, err)
	}
	return resp
}

// openWatch opens a WatchRequest stream and reads its first message, which
// proves the subscription is in place.
func openWatch(t *testing.T, ctx context.Context, c eventsv1.RequestServiceClient, req *eventsv1.WatchRequestRequest) (grpc.ServerStreamingClient[eventsv1.WatchRequestResponse], *eventsv1.WatchRequestResponse) {
	t.Helper()
	stream, err := c.WatchRequest(ctx, req)
	if err != nil {
		t.Fatalf("WatchRequest: %v", err)
	}
	first, err := stream.Recv()
	if err != nil {
		t.Fatalf("first watch message: %v", err)
	}
	return stream, first
}

// watch collects a WatchRequest stream until it ends.
type watch struct {
	msgs []*eventsv1.WatchRequestResponse
	err  error
	done chan struct{}
}

func startWatch(t *testing.T, ctx context.Context, c eventsv1.RequestServiceClient, req *eventsv1.WatchRequestRequest) *watch {
	t.Helper()
	stream, first := openWatch(t, ctx, c, req)
	w := &watch{msgs: []*eventsv1.WatchRequestResponse{first}, done: make(chan struct{})}
	go func() {
		defer close(w.done)
		for {
			m, err := stream.Recv()
			if err != nil {
				if !errors.Is(err, io.EOF) {
					w.err = err
				}
				return
			}
			w.msgs = append(w.msgs, m)
		}
	}()
	return w
}

func (w *watch) wait(t *testing.T) {
	t.Helper()
	select {
	case <-w.done:
	case <-time.After(20 * time.Second):
		t.Fatal("watch stream did not end")
	}
	if w.err != nil {
		t.Fatalf("watch ended with %v", w.err)
	}
}

// requestIDs returns the request ids a body's events belong to.
func requestIDs(t *testing.T, body []byte) []string {
	t.Helper()
	events := fixtures.Events(t, body)
	var ids []string
	for _, e := range events {
		ids = append(ids, e.GetRequestId())
	}
	return ids
}

// TestScenariosEndToEnd posts every scenario over HTTP while gRPC watchers
// follow each request, then checks the streams, GetRequest and the events.
func TestScenariosEndToEnd(t *testing.T) {
	t.Parallel()
	ts := startServer(t, nil)
	for _, sc := range fixtures.Scenarios(t) {
		t.Run(sc.Name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()

			// Every request of the scenario: all its distinct events, and
			// those a watcher sees: the ones up to the first SUCCESS, where
			// the stream ends.
			events := map[string]map[string]*eventsv1.Event{}
			streamed := map[string]map[string]*eventsv1.Event{}
			for _, body := range sc.Bodies {
				for _, e := range fixtures.Events(t, body) {
					id := e.GetRequestId()
					if events[id] == nil {
						events[id], streamed[id] = map[string]*eventsv1.Event{}, map[string]*eventsv1.Event{}
					}
					events[id][e.GetEventId()] = e
					if !state.Terminal(fold(id, streamed[id])) {
						streamed[id][e.GetEventId()] = e
					}
				}
			}
			watches := map[string]*watch{}
			for id := range events {
				w := startWatch(t, ctx, ts.requests, &eventsv1.WatchRequestRequest{RequestId: id})
				if m := w.msgs[0]; m.GetType() != eventsv1.WatchMessageType_WATCH_MESSAGE_TYPE_SNAPSHOT || m.GetRevision() != 0 {
					t.Fatalf("first message for unknown request %s = %v, want SNAPSHOT at revision 0", id, m)
				}
				watches[id] = w
			}

			var stored, duplicates int32
			for _, body := range sc.Bodies {
				resp := ts.ingest(t, body)
				stored += resp.GetStored()
				duplicates += resp.GetDuplicates()
			}
			distinct := 0
			for _, es := range events {
				distinct += len(es)
			}
			if int(stored) != distinct {
				t.Errorf("stored %d events, want %d distinct", stored, distinct)
			}

			for id, w := range watches {
				w.wait(t)
				checkStream(t, w.msgs, streamed[id])
				checkFold(t, w.msgs[len(w.msgs)-1].GetRequest(), streamed[id])

				got, err := ts.requests.GetRequest(ctx, &eventsv1.GetRequestRequest{RequestId: id})
				if err != nil {
					t.Fatalf("GetRequest(%s): %v", id, err)
				}
				if got.GetRequest().GetStatus() != eventsv1.RequestStatus_REQUEST_STATUS_SUCCESS {
					t.Errorf("request %s ended %v, want SUCCESS", id, got.GetRequest().GetStatus())
				}
				checkFold(t, got.GetRequest(), events[id])
				checkEvents(t, ts, id, events[id], sc.Bodies)
			}
		})
	}
}

func fold(id string, events map[string]*eventsv1.Event) *eventsv1.AuthRequest {
	list := make([]*eventsv1.Event, 0, len(events))
	for _, e := range events {
		list = append(list, e)
	}
	return state.Fold(id, list)
}

// checkStream: a SNAPSHOT, then UPDATEs at increasing revisions carrying
// every distinct event exactly once, the last one terminal.
func checkStream(t *testing.T, msgs []*eventsv1.WatchRequestResponse, want map[string]*eventsv1.Event) {
	t.Helper()
	seen := map[string]int{}
	var rev int64
	for i, m := range msgs[1:] {
		switch m.GetType() {
		case eventsv1.WatchMessageType_WATCH_MESSAGE_TYPE_HEARTBEAT:
			continue
		case eventsv1.WatchMessageType_WATCH_MESSAGE_TYPE_UPDATE:
		default:
			t.Fatalf("message %d has type %v", i+1, m.GetType())
		}
		if m.GetRevision() <= rev || m.GetRequest().GetRevision() != m.GetRevision() {
			t.Errorf("message %d at revision %d (snapshot %d) after %d", i+1, m.GetRevision(), m.GetRequest().GetRevision(), rev)
		}
		rev = m.GetRevision()
		if len(m.GetEvents()) == 0 {
			t.Errorf("UPDATE %d carries no events", i+1)
		}
		for _, e := range m.GetEvents() {
			seen[e.GetEventId()]++
		}
	}
	for id := range want {
		if seen[id] != 1 {
			t.Errorf("event %s (%s) seen %d times in the stream, want once", id, want[id].GetStatus(), seen[id])
		}
	}
	if len(seen) != len(want) {
		t.Errorf("stream carried %d distinct events, want %d", len(seen), len(want))
	}
	if last := msgs[len(msgs)-1]; !state.Terminal(last.GetRequest()) {
		t.Errorf("stream ended on a non-terminal message %v", last)
	}
}

// checkFold: the stored snapshot is the fold of the distinct events.
func checkFold(t *testing.T, got *eventsv1.AuthRequest, events map[string]*eventsv1.Event) {
	t.Helper()
	want := fold(got.GetRequestId(), events)
	g := proto.Clone(got).(*eventsv1.AuthRequest)
	g.Revision, g.UpdateTime = 0, nil
	if !proto.Equal(g, want) {
		t.Errorf("snapshot is not the fold of its events:\n got %v\nwant %v", g, want)
	}
}

// checkEvents: ListRequestEvents over HTTP returns each event once, in event
// time order, with the verbatim body it came from.
func checkEvents(t *testing.T, ts *testServer, id string, want map[string]*eventsv1.Event, bodies [][]byte) {
	t.Helper()
	var got []*eventsv1.Event
	token := ""
	for {
		r := ts.get(t, fmt.Sprintf("/v1/requests/%s/events?page_size=2&page_token=%s", id, token))
		if r.code != http.StatusOK {
			t.Fatalf("list events: %d %s", r.code, r.body)
		}
		page := &eventsv1.ListRequestEventsResponse{}
		if err := protojson.Unmarshal(r.body, page); err != nil {
			t.Fatal(err)
		}
		got = append(got, page.GetEvents()...)
		if token = page.GetNextPageToken(); token == "" {
			break
		}
	}
	if len(got) != len(want) {
		t.Fatalf("listed %d events, want %d", len(got), len(want))
	}
	for i, e := range got {
		if _, ok := want[e.GetEventId()]; !ok {
			t.Errorf("listed unknown event %s", e.GetEventId())
		}
		if i > 0 && e.GetEventTime().AsTime().Before(got[i-1].GetEventTime().AsTime()) {
			t.Errorf("event %d is earlier than event %d", i, i-1)
		}
		found := false
		for _, b := range bodies {
			if string(b) == e.GetRawBody() {
				found = true
			}
		}
		if !found {
			t.Errorf("event %s raw body is not one of the posted bodies: %q", e.GetEventId(), e.GetRawBody())
		}
	}
}

func TestIngestOverGRPC(t *testing.T) {
	t.Parallel()
	ts := startServer(t, nil)
	ctx := context.Background()
	req := &eventsv1.IngestRequest{
		EventType: "DLR",
		Data:      &eventsv1.WebhookData{RequestId: "grpc-req", Status: "SENT", Channel: "SMS"},
		Timestamp: structpb.NewNumberValue(1764153000400),
	}
	resp, err := ts.webhooks.Ingest(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	if resp.GetStored() != 1 || resp.GetEvents()[0].GetRevision() != 1 {
		t.Fatalf("Ingest = %v, want one stored event at revision 1", resp)
	}
	again, err := ts.webhooks.Ingest(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	if again.GetDuplicates() != 1 || again.GetEvents()[0].GetRevision() != 1 {
		t.Fatalf("retried Ingest = %v, want a duplicate at revision 1", again)
	}
	if _, err := ts.webhooks.Ingest(ctx, &eventsv1.IngestRequest{}); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("empty Ingest: %v, want InvalidArgument", err)
	}
}

func TestBadInput(t *testing.T) {
	t.Parallel()
	ts := startServer(t, func(c *server.Config) { c.MaxBodyBytes = 1 << 20 })
	valid := `{"data":{"requestId":"bad-input-req","status":"SENT","channel":"SMS"},"eventType":"DLR","timestamp":1764153000400}`
	huge := strings.Replace(valid, `"SMS"}`, `"SMS","metaData":{"pad":"`+strings.Repeat("x", 1<<20)+`"}}`, 1)
	tests := []struct {
		name     string
		body     string
		code     int
		mentions string
	}{
		{"not JSON", `{"data":`, http.StatusBadRequest, "JSON"},
		{"array", `[1,2]`, http.StatusBadRequest, "object"},
		{"string", `"hello"`, http.StatusBadRequest, "object"},
		{"empty", ``, http.StatusBadRequest, "empty"},
		{"nothing recognisable", `{"hello":"world"}`, http.StatusBadRequest, "eventType"},
		{"wrong type", `{"eventType":"DLR","data":{"requestId":5}}`, http.StatusBadRequest, "requestId"},
		{"too large", huge, http.StatusRequestEntityTooLarge, "larger"},
		{"timestamp not a time", strings.Replace(valid, `1764153000400`, `true`, 1), http.StatusBadRequest, "timestamp true is not a number"},
		{"timestamp years ahead", strings.Replace(valid, `1764153000400`, `4102444800000`, 1), http.StatusBadRequest, "timestamp 4102444800000 is more than a day after"},
	}
	// Each body is sent with its length, and chunked (no length announced).
	chunked := func(t *testing.T, body string) httpResult {
		t.Helper()
		req, err := http.NewRequest(http.MethodPost, ts.httpURL+"/v1/webhooks/otpless", io.MultiReader(strings.NewReader(body)))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", "application/json")
		return send(t, req)
	}
	for _, tt := range tests {
		for _, how := range []struct {
			name string
			post func(t *testing.T, body string) httpResult
		}{
			{"length", func(t *testing.T, body string) httpResult { return ts.post(t, "/v1/webhooks/otpless", []byte(body)) }},
			{"chunked", chunked},
		} {
			t.Run(tt.name+"/"+how.name, func(t *testing.T) {
				r := how.post(t, tt.body)
				if r.code != tt.code {
					t.Fatalf("status %d (%s), want %d", r.code, r.body, tt.code)
				}
				var e struct {
					Code    int    `json:"code"`
					Message string `json:"message"`
				}
				if err := json.Unmarshal(r.body, &e); err != nil {
					t.Fatalf("error body %q is not JSON: %v", r.body, err)
				}
				if !strings.Contains(e.Message, tt.mentions) {
					t.Errorf("message %q does not mention %q", e.Message, tt.mentions)
				}
			})
		}
	}
	// Nothing of the rejected bodies was stored.
	if r := ts.get(t, "/v1/requests/bad-input-req"); r.code != http.StatusNotFound {
		t.Fatalf("GET after rejected bodies: %d %s, want 404", r.code, r.body)
	}
	if r := ts.get(t, "/v1/requests/bad-input-req/events"); r.code != http.StatusNotFound {
		t.Fatalf("GET events after rejected bodies: %d %s, want 404", r.code, r.body)
	}
	// The valid body is then accepted, chunked too.
	if r := chunked(t, valid); r.code != http.StatusOK || !strings.Contains(string(r.body), `"stored":1`) {
		t.Fatalf("valid body, chunked: %d %s", r.code, r.body)
	}
	if resp := ts.ingest(t, []byte(valid)); resp.GetDuplicates() != 1 {
		t.Fatalf("valid body again: %v", resp)
	}
}

// TestWebhookEncodings: a compressed body is refused saying so (it was 400
// "not valid UTF-8"), and nothing of it is stored; a body that begins with
// a byte order mark is read without it.
func TestWebhookEncodings(t *testing.T) {
	t.Parallel()
	ts := startServer(t, nil)
	body := []byte(`{"data":{"requestId":"encoded-req","status":"SENT","channel":"SMS"},"eventType":"DLR","timestamp":1764153000400}`)
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write(body)
	zw.Close()
	r := ts.do(t, http.MethodPost, "/v1/webhooks/otpless", "", gz.Bytes(), "Content-Encoding", "gzip")
	if r.code != http.StatusUnsupportedMediaType || !strings.Contains(string(r.body), `Content-Encoding \"gzip\" is not accepted`) {
		t.Fatalf("gzip body: %d %s, want 415 naming the encoding", r.code, r.body)
	}
	// The codings of every Content-Encoding line count, not the first's.
	req, err := http.NewRequest(http.MethodPost, ts.httpURL+"/v1/webhooks/otpless", bytes.NewReader(gz.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Add("Content-Encoding", "identity")
	req.Header.Add("Content-Encoding", "gzip")
	if r := send(t, req); r.code != http.StatusUnsupportedMediaType {
		t.Fatalf("gzip body, its coding on a second Content-Encoding line: %d %s, want 415", r.code, r.body)
	}
	if r := ts.get(t, "/v1/requests/encoded-req"); r.code != http.StatusNotFound {
		t.Fatalf("GET after the gzip bodies: %d %s, want 404", r.code, r.body)
	}
	if r := ts.do(t, http.MethodPost, "/v1/webhooks/otpless", "", body, "Content-Encoding", "identity"); r.code != http.StatusOK {
		t.Fatalf("identity: %d %s", r.code, r.body)
	}
	bom := append([]byte("\ufeff"), strings.Replace(string(body), "SENT", "DELIVERED", 1)...)
	if r := ts.post(t, "/v1/webhooks/otpless", bom); r.code != http.StatusOK || !strings.Contains(string(r.body), `"stored":1`) {
		t.Fatalf("body with a byte order mark: %d %s", r.code, r.body)
	}
}

func TestNewFieldsDoNotBreakIngest(t *testing.T) {
	t.Parallel()
	ts := startServer(t, nil)
	body := []byte(`{"data":{"requestId":"future-req","status":"SENT","channel":"RCS","brandNew":{"x":[1,2]},"metaData":{"a":1}},"eventType":"DLR","timestamp":1764153000400,"version":3}`)
	resp := ts.ingest(t, body)
	if resp.GetStored() != 1 {
		t.Fatalf("Ingest = %v", resp)
	}
	r := ts.get(t, "/v1/requests/future-req/events")
	page := &eventsv1.ListRequestEventsResponse{}
	if err := protojson.Unmarshal(r.body, page); err != nil {
		t.Fatal(err)
	}
	if len(page.GetEvents()) != 1 || page.GetEvents()[0].GetRawBody() != string(body) {
		t.Fatalf("events = %v, want the body kept verbatim", page.GetEvents())
	}
	if ch := page.GetEvents()[0].GetChannel(); ch != "RCS" {
		t.Errorf("unknown channel kept as %q, want RCS", ch)
	}
}

func TestGetUnknownRequest(t *testing.T) {
	t.Parallel()
	ts := startServer(t, nil)
	_, err := ts.requests.GetRequest(context.Background(), &eventsv1.GetRequestRequest{RequestId: "nobody"})
	if status.Code(err) != codes.NotFound {
		t.Fatalf("GetRequest: %v, want NotFound", err)
	}
	if r := ts.get(t, "/v1/requests/nobody"); r.code != http.StatusNotFound {
		t.Fatalf("GET: %d, want 404", r.code)
	}
	if _, err := ts.requests.GetRequest(context.Background(), &eventsv1.GetRequestRequest{}); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("GetRequest without id: %v, want InvalidArgument", err)
	}
}

func dlr(id, st string, ms int64) []byte {
	return fmt.Appendf(nil, `{"data":{"requestId":%q,"status":%q,"channel":"WHATSAPP"},"eventType":"DLR","timestamp":%d}`, id, st, ms)
}

func TestWatchHeartbeatResumeAndMaxDuration(t *testing.T) {
	t.Parallel()
	ts := startServer(t, func(c *server.Config) {
		c.WatchHeartbeat = 20 * time.Millisecond
		// Long enough that a watch stalled for a while on a loaded machine
		// still has a heartbeat due before its end.
		c.MaxWatchDuration = time.Second
	})
	ctx := context.Background()
	ts.ingest(t, dlr("hb-req", "SENT", 1764153000000))
	ts.ingest(t, dlr("hb-req", "DELIVERED", 1764153001000))

	// Resume after revision 1: the first message is revision 2, nothing older.
	w := startWatch(t, ctx, ts.requests, &eventsv1.WatchRequestRequest{RequestId: "hb-req", AfterRevision: 1})
	w.wait(t)
	if m := w.msgs[0]; m.GetType() != eventsv1.WatchMessageType_WATCH_MESSAGE_TYPE_SNAPSHOT || m.GetRevision() != 2 {
		t.Fatalf("first message %v, want SNAPSHOT at revision 2", m)
	}
	heartbeats := 0
	for _, m := range w.msgs[1 : len(w.msgs)-1] {
		if m.GetType() != eventsv1.WatchMessageType_WATCH_MESSAGE_TYPE_HEARTBEAT || m.GetRevision() != 2 {
			t.Fatalf("quiet stream sent %v, want heartbeats at revision 2", m)
		}
		heartbeats++
	}
	if heartbeats == 0 {
		t.Error("no heartbeat on a quiet stream")
	}
	if last := w.msgs[len(w.msgs)-1]; last.GetType() != eventsv1.WatchMessageType_WATCH_MESSAGE_TYPE_RECONNECT || last.GetRevision() != 2 {
		t.Fatalf("last message %v, want RECONNECT at revision 2", last)
	}

	// Caught up already: a heartbeat first, no snapshot again.
	w = startWatch(t, ctx, ts.requests, &eventsv1.WatchRequestRequest{RequestId: "hb-req", AfterRevision: 2})
	w.wait(t)
	for _, m := range w.msgs {
		if m.GetType() == eventsv1.WatchMessageType_WATCH_MESSAGE_TYPE_SNAPSHOT || m.GetType() == eventsv1.WatchMessageType_WATCH_MESSAGE_TYPE_UPDATE {
			t.Fatalf("resumed at the current revision but got %v", m)
		}
	}
}

func TestWatchFinishedRequestEndsAfterSnapshot(t *testing.T) {
	t.Parallel()
	ts := startServer(t, nil)
	sc := fixtures.Named(t, "whatsapp-happy-path")
	for _, b := range sc.Bodies {
		ts.ingest(t, b)
	}
	id := requestIDs(t, sc.Bodies[0])[0]
	w := startWatch(t, context.Background(), ts.requests, &eventsv1.WatchRequestRequest{RequestId: id})
	w.wait(t)
	if len(w.msgs) != 1 || w.msgs[0].GetRequest().GetStatus() != eventsv1.RequestStatus_REQUEST_STATUS_SUCCESS {
		t.Fatalf("watch of a finished request sent %v, want one SUCCESS snapshot", w.msgs)
	}
}

// A watcher that never reads slows neither ingestion nor other watchers; it
// is coalesced to the newest snapshot.
func TestSlowWatcherIsCoalesced(t *testing.T) {
	t.Parallel()
	// The slow watcher's messages wait for it until the end, and it shares
	// its connection with the fast one: the server's bound on that wait
	// (30 s), which a loaded machine's 201 commits can outlast, would close
	// the connection and end both streams. The test's own bound stands.
	ts := startServer(t, func(c *server.Config) { server.SetSendWait(c, 2*time.Minute) })
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	const id, n = "slow-req", 200

	slow, err := ts.requests.WatchRequest(ctx, &eventsv1.WatchRequestRequest{RequestId: id})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := slow.Recv(); err != nil {
		t.Fatal(err)
	}
	fast := startWatch(t, ctx, ts.requests, &eventsv1.WatchRequestRequest{RequestId: id})

	pad := strings.Repeat("p", 2048) // fill the slow stream's flow-control window quickly
	for i := range n {
		body := fmt.Appendf(nil, `{"data":{"requestId":%q,"status":"SENT","channel":"SMS","identity":%q},"eventType":"DLR","timestamp":%d}`, id, pad, 1764153000000+int64(i))
		ts.ingest(t, body) // would stall here if the slow watcher held ingestion back
	}
	ts.ingest(t, []byte(`{"data":{"requestId":"slow-req","status":"SUCCESS","authenticationDetails":{}},"eventType":"AUTH","timestamp":1764153999}`))

	fast.wait(t)
	if got := fast.msgs[len(fast.msgs)-1].GetRevision(); got != n+1 {
		t.Fatalf("fast watcher ended at revision %d, want %d", got, n+1)
	}
	var msgs, events, resnapshots int
	var last *eventsv1.WatchRequestResponse
	for {
		m, err := slow.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		msgs++
		events += len(m.GetEvents())
		if m.GetType() == eventsv1.WatchMessageType_WATCH_MESSAGE_TYPE_SNAPSHOT {
			resnapshots++
		}
		last = m
	}
	if events < n+1 && resnapshots == 0 {
		t.Errorf("slow watcher got %d of %d events and no SNAPSHOT saying some were dropped", events, n+1)
	}
	if last.GetRevision() != n+1 || !state.Terminal(last.GetRequest()) {
		t.Fatalf("slow watcher ended at %v, want the terminal snapshot at revision %d", last, n+1)
	}
	if msgs >= n+1 {
		t.Errorf("slow watcher got %d messages for %d changes: nothing was coalesced", msgs, n+1)
	}
}

func TestShutdownEndsWatchesWithReconnect(t *testing.T) {
	t.Parallel()
	ts := startServer(t, nil)
	w := startWatch(t, context.Background(), ts.requests, &eventsv1.WatchRequestRequest{RequestId: "shutdown-req"})
	ts.stop() // fails the test unless Run returns nil
	w.wait(t)
	if last := w.msgs[len(w.msgs)-1]; last.GetType() != eventsv1.WatchMessageType_WATCH_MESSAGE_TYPE_RECONNECT {
		t.Fatalf("last message %v, want RECONNECT", last)
	}
}

func TestWatchOverGatewayIsNDJSON(t *testing.T) {
	t.Parallel()
	ts := startServer(t, nil)
	sc := fixtures.Named(t, "whatsapp-happy-path")
	id := requestIDs(t, sc.Bodies[0])[0]
	resp, err := http.Get(ts.httpURL + "/v1/requests/" + id + ":watch")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	dec := json.NewDecoder(resp.Body)
	var first struct {
		Result struct {
			Type string `json:"type"`
		} `json:"result"`
	}
	if err := dec.Decode(&first); err != nil {
		t.Fatal(err)
	}
	if first.Result.Type != "WATCH_MESSAGE_TYPE_SNAPSHOT" {
		t.Fatalf("first line %+v, want a snapshot", first)
	}
	for _, b := range sc.Bodies {
		ts.ingest(t, b)
	}
	var lastStatus string
	for {
		var line struct {
			Result struct {
				Request struct {
					Status string `json:"status"`
				} `json:"request"`
			} `json:"result"`
			Error json.RawMessage `json:"error"`
		}
		err := dec.Decode(&line)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if line.Error != nil {
			t.Fatalf("stream error %s", line.Error)
		}
		if s := line.Result.Request.Status; s != "" {
			lastStatus = s
		}
	}
	if lastStatus != "REQUEST_STATUS_SUCCESS" {
		t.Fatalf("NDJSON stream ended at %q, want SUCCESS", lastStatus)
	}
}

func TestConfigValidate(t *testing.T) {
	t.Parallel()
	cfg := server.DefaultConfig()
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "API key") || !strings.Contains(err.Error(), "webhook key") {
		t.Fatalf("default config without credentials: %v, want the missing credentials named", err)
	}
	cfg.Security.Disabled = true
	if err := cfg.Validate(); err != nil {
		t.Fatalf("default config, security disabled: %v", err)
	}
	bad := cfg
	bad.Store = "mysql://x"
	bad.WatchHeartbeat = 0
	err := bad.Validate()
	if err == nil || !strings.Contains(err.Error(), "mysql") || !strings.Contains(err.Error(), "heartbeat") {
		t.Fatalf("Validate() = %v, want both problems named", err)
	}
	busyLoop := cfg
	busyLoop.RetentionInterval, busyLoop.HealthInterval = time.Nanosecond, time.Millisecond
	if err := busyLoop.Validate(); err == nil || !strings.Contains(err.Error(), "retention interval must be at least 10ms, got 1ns") || !strings.Contains(err.Error(), "health interval") {
		t.Fatalf("Validate() with intervals of 1ns and 1ms = %v, want both refused", err)
	}
	// grpc-go pings no sooner than a second after a connection falls
	// silent, whatever it is asked (it logs a warning nobody sees): a
	// shorter --grpc-keepalive was taken and not honoured.
	keepalive := cfg
	keepalive.GRPCKeepalive = 500 * time.Millisecond
	if err := keepalive.Validate(); err == nil || err.Error() != "gRPC keepalive must be at least 1s, got 500ms" {
		t.Fatalf("Validate() with a gRPC keepalive of 500ms = %v, want it refused, named", err)
	}
	keepalive.GRPCKeepalive = time.Second
	if err := keepalive.Validate(); err != nil {
		t.Fatalf("Validate() with a gRPC keepalive of 1s = %v", err)
	}
	negative := cfg
	negative.Security.MaxWatches = -1
	if err := negative.Validate(); err == nil || err.Error() != "max watches must not be negative, got -1" {
		t.Fatalf("Validate() with a negative bound of watch streams in all = %v, want it refused, named", err)
	}
	// Without a rate the burst is unused, but no less wrong.
	negativeBurst := cfg
	negativeBurst.Security.Webhook.RatePerSecond, negativeBurst.Security.Webhook.Burst = 0, -1
	negativeBurst.Security.Webhook.FailureRatePerSecond, negativeBurst.Security.Webhook.FailureBurst = 0, -1
	if err := negativeBurst.Validate(); err == nil || !strings.Contains(err.Error(), "burst of webhooks per client address must not be negative, got -1") ||
		!strings.Contains(err.Error(), "burst of failed webhooks per client address must not be negative, got -1") {
		t.Fatalf("Validate() with negative bursts and no rates = %v, want both refused, named", err)
	}
	noBatch := cfg
	noBatch.MaxBatch = 0
	if err := noBatch.Validate(); err == nil || err.Error() != "max batch must be positive, got 0" {
		t.Fatalf("Validate() with a max batch of 0 = %v, want it refused, named", err)
	}
	// The histogram of webhooks per commit ends at 2048, and call
	// durations at an hour: past them, batches and watch streams fell in
	// +Inf, read as the last bucket.
	bigBatch := cfg
	bigBatch.MaxBatch = 2049
	if err := bigBatch.Validate(); err == nil || err.Error() != "max batch must be at most 2048 webhooks, got 2049" {
		t.Fatalf("Validate() with a max batch of 2049 = %v, want it refused, named", err)
	}
	bigBatch.MaxBatch = 2048
	if err := bigBatch.Validate(); err != nil {
		t.Fatalf("Validate() with a max batch of 2048 = %v", err)
	}
	longWatch := cfg
	longWatch.MaxWatchDuration = time.Hour + time.Second
	if err := longWatch.Validate(); err == nil || err.Error() != "max watch duration must be at most 1h0m0s, got 1h0m1s" {
		t.Fatalf("Validate() with a max watch duration of 1h0m1s = %v, want it refused, named", err)
	}
	// Twice the bound, which gRPC's message limits take, must not overflow:
	// at 2^62 every API call was refused as "larger than max".
	huge := cfg
	huge.MaxBodyBytes = 1 << 62
	if err := huge.Validate(); err == nil || !strings.Contains(err.Error(), "max body bytes must be at most 512 MiB") {
		t.Fatalf("Validate() with a body bound of 2^62 = %v, want it refused", err)
	}
	// Both would be listened on only after the first start made (and
	// printed) its credentials.
	for _, addrs := range [][3]string{
		{"127.0.0.1:8080", "127.0.0.1:8080", ""},
		{"127.0.0.1:9090", ":9090", ""},
		{"127.0.0.1:9090", "127.0.0.1:8080", "[::]:8080"},
		// One host written two ways: localhost is listened on at
		// 127.0.0.1, an IPv4-mapped address at its IPv4 one.
		{"127.0.0.1:9090", "localhost:9090", ""},
		{"LocalHost:9090", "127.0.0.1:8080", "[::ffff:127.0.0.1]:9090"},
	} {
		clash := cfg
		clash.GRPCAddr, clash.HTTPAddr, clash.MetricsAddr = addrs[0], addrs[1], addrs[2]
		if err := clash.Validate(); err == nil || !strings.Contains(err.Error(), "listen on the same port") {
			t.Errorf("Validate() with addresses %q = %v, want the clash named", addrs, err)
		}
	}
	for _, addrs := range [][3]string{
		{"127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0"},
		{"127.0.0.1:9090", "127.0.0.2:9090", ""},
	} {
		apart := cfg
		apart.GRPCAddr, apart.HTTPAddr, apart.MetricsAddr = addrs[0], addrs[1], addrs[2]
		if err := apart.Validate(); err != nil {
			t.Errorf("Validate() with addresses %q = %v, want them taken", addrs, err)
		}
	}
	busy := cfg
	busy.DataDir = t.TempDir()
	busy.Store = filepath.Join(busy.DataDir, "x.db")
	busy.HTTPAddr = "256.0.0.1:1"
	if _, err := server.New(context.Background(), busy); err == nil {
		t.Fatal("New with an unusable address succeeded")
	}
}

// A client holding a Health.Watch stream delays gRPC's graceful stop to the
// end of the grace period, but shutdown still drains the writer cleanly.
// Open Health.Watch streams end at shutdown, once told NOT_SERVING (or at
// once, when what they watch was not SERVING), with UNAVAILABLE: they do
// not hold the server's stop for the grace (a minute here).
func TestShutdownWithHealthWatchOpen(t *testing.T) {
	t.Parallel()
	ts := startServer(t, func(c *server.Config) { c.ShutdownGrace = time.Minute })
	watch := func(service string, want healthpb.HealthCheckResponse_ServingStatus) healthpb.Health_WatchClient {
		hw, err := healthpb.NewHealthClient(ts.conn).Watch(t.Context(), &healthpb.HealthCheckRequest{Service: service})
		if err != nil {
			t.Fatal(err)
		}
		if r, err := hw.Recv(); err != nil || r.GetStatus() != want {
			t.Fatalf("Watch(%q) first: %v, %v; want %v", service, r, err, want)
		}
		return hw
	}
	serving, unknown := watch("", healthpb.HealthCheckResponse_SERVING), watch("nope", healthpb.HealthCheckResponse_SERVICE_UNKNOWN)
	ts.ingest(t, dlr("health-watch-req", "SENT", 1764153000000))
	ends := make(chan string, 2)
	go func() {
		var got []string
		for {
			r, err := serving.Recv()
			if err != nil {
				got = append(got, status.Convert(err).Code().String()+": "+status.Convert(err).Message())
				break
			}
			got = append(got, r.GetStatus().String())
		}
		ends <- strings.Join(got, ", ")
		_, err := unknown.Recv()
		ends <- status.Convert(err).Code().String() + ": " + status.Convert(err).Message()
	}()
	ts.stop() // fails the test unless Run returns nil
	for _, want := range []string{"NOT_SERVING, Unavailable: server is shutting down", "Unavailable: server is shutting down"} {
		if got := <-ends; got != want {
			t.Errorf("Health.Watch at shutdown: %s, want %s", got, want)
		}
	}
}

// TestShutdownWithReflectionStreamOpen: a reflection stream, which a schema
// browser holds open between its questions, ends with UNAVAILABLE once
// shutdown begins, rather than hold it for the whole grace.
func TestShutdownWithReflectionStreamOpen(t *testing.T) {
	t.Parallel()
	ts := startServer(t, func(c *server.Config) { c.ShutdownGrace = 20 * time.Second })
	st, err := reflectionpb.NewServerReflectionClient(ts.conn).ServerReflectionInfo(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Send(&reflectionpb.ServerReflectionRequest{MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{}}); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Recv(); err != nil {
		t.Fatalf("the answer to ListServices: %v", err)
	}
	ended := make(chan error, 1)
	go func() {
		_, err := st.Recv()
		ended <- err
	}()
	start := time.Now()
	ts.stop() // fails the test unless Run returns nil
	if took := time.Since(start); took > 10*time.Second {
		t.Errorf("shutdown with a reflection stream open took %s: it waited for the stream", took)
	}
	if err := <-ended; status.Code(err) != codes.Unavailable {
		t.Errorf("the reflection stream at shutdown: %v, want Unavailable", err)
	}
}

// TestShutdownClosesWhatOutlastsTheGrace: a client still sending a body
// when the grace ends has its connection closed, rather than kept until
// the read timeout by a server that has returned from Run.
//
// The request's log line says so: the body was cut by the server, not
// abandoned by its sender (reason unavailable, as the metric counts it,
// not canceled's 408), and its client got no answer at all.
func TestShutdownClosesWhatOutlastsTheGrace(t *testing.T) {
	t.Parallel()
	lines := make(chan map[string]any, 1)
	srv := testserver.Start(t, func(c *server.Config) {
		c.ShutdownGrace = 200 * time.Millisecond
		c.HTTPReadTimeout = 10 * time.Minute
		c.Logger = slog.New(requestLines{slog.NewJSONHandler(io.Discard, nil), lines})
	})
	conn, err := net.Dial("tcp", strings.TrimPrefix(srv.HTTPURL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	// With Expect: 100-continue, the 100 says the handler is reading.
	body := string(dlr("slow-body-req", "SENT", 1764153000000))
	fmt.Fprintf(conn, "POST %s HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\nExpect: 100-continue\r\n\r\n", srv.WebhookPath, len(body))
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	if line, err := bufio.NewReader(conn).ReadString('\n'); !strings.HasPrefix(line, "HTTP/1.1 100 ") {
		t.Fatalf("the answer to the headers: %q, %v; want 100 Continue", line, err)
	}
	io.WriteString(conn, body[:10])
	if err := srv.Shutdown(); err == nil {
		t.Error("Run returned no error though a request outlasted the grace")
	}
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	if n, err := conn.Read(make([]byte, 1)); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("after Run returned, the connection read %d bytes, %v; want it closed", n, err)
	}
	var line map[string]any
	select {
	case line = <-lines: // the handler may end after Run has returned
	case <-time.After(10 * time.Second):
		t.Fatal("no http request line for the webhook cut by shutdown")
	}
	if line["reason"] != "unavailable" || line["answered"] != false || line["bytes"] != float64(0) {
		t.Errorf("the line of a webhook whose body shutdown cut: %v; want reason=unavailable (shutdown's, not the sender's canceled), answered=false, bytes=0", line)
	}
}

// requestLines is a slog.Handler passing on, as attributes, the "http
// request" lines of webhook posts.
type requestLines struct {
	slog.Handler
	lines chan<- map[string]any
}

func (h requestLines) Enabled(context.Context, slog.Level) bool { return true }

func (h requestLines) Handle(_ context.Context, r slog.Record) error {
	if r.Message != "http request" {
		return nil
	}
	line := map[string]any{}
	r.Attrs(func(a slog.Attr) bool {
		v := a.Value.Resolve()
		switch v.Kind() {
		case slog.KindInt64:
			line[a.Key] = float64(v.Int64())
		default:
			line[a.Key] = v.Any()
		}
		return true
	})
	if line["method"] == http.MethodPost {
		h.lines <- line
	}
	return nil
}

func (h requestLines) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h requestLines) WithGroup(string) slog.Handler      { return h }

// TestAnnouncedOversizedBodyIsRefusedBeforeItIsSent: a webhook whose
// Content-Length is over --max-body-bytes gets 413 at once, without a 100
// Continue asking the sender for the body and without reading any of it.
func TestAnnouncedOversizedBodyIsRefusedBeforeItIsSent(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t, func(c *server.Config) { c.MaxBodyBytes = 4 << 10 })
	conn, err := net.Dial("tcp", strings.TrimPrefix(srv.HTTPURL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "POST %s HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\nExpect: 100-continue\r\n\r\n", srv.WebhookPath, 1<<30)
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("no answer to the headers of a 1 GiB body: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestEntityTooLarge {
		t.Fatalf("the answer to the headers of a 1 GiB body: %s, want 413 before the body", resp.Status)
	}
}

func TestIngestOverGRPCRejectsWhatCannotBeKept(t *testing.T) {
	t.Parallel()
	ts := startServer(t, func(c *server.Config) { c.MaxBodyBytes = 4 << 10 })
	ctx := context.Background()
	nan := &eventsv1.IngestRequest{EventType: "DLR", Data: &eventsv1.WebhookData{RequestId: "nan-req", Status: "SENT", MetaData: structpb.NewNumberValue(math.NaN())}}
	if _, err := ts.webhooks.Ingest(ctx, nan); status.Code(err) != codes.InvalidArgument {
		t.Errorf("NaN in metaData: %v, want InvalidArgument", err)
	}
	big := &eventsv1.IngestRequest{EventType: "DLR", Data: &eventsv1.WebhookData{RequestId: "big-req", Status: "SENT", ErrorMessage: strings.Repeat("x", 8<<10)}}
	if _, err := ts.webhooks.Ingest(ctx, big); status.Code(err) != codes.ResourceExhausted {
		t.Errorf("body over --max-body-bytes over gRPC: %v, want ResourceExhausted", err)
	}
	// A message under the bound whose JSON, the body kept, is over it (a
	// control character is one byte in protobuf, six in JSON): kept, it
	// would make a page of events larger than the reads are sized for.
	escaped := &eventsv1.IngestRequest{EventType: "DLR", Data: &eventsv1.WebhookData{RequestId: "escaped-req", Status: "SENT",
		MetaData: structpb.NewStringValue(strings.Repeat("\x01", 2<<10))}}
	if n := proto.Size(escaped); n > 4<<10 {
		t.Fatalf("the message is %d bytes, over the bound itself", n)
	}
	if _, err := ts.webhooks.Ingest(ctx, escaped); status.Code(err) != codes.ResourceExhausted {
		t.Errorf("a message whose JSON is over --max-body-bytes over gRPC: %v, want ResourceExhausted", err)
	}
	if _, err := ts.requests.GetRequest(ctx, &eventsv1.GetRequestRequest{RequestId: "escaped-req"}); status.Code(err) != codes.NotFound {
		t.Errorf("GetRequest of the refused webhook's request: %v, want NotFound (nothing stored)", err)
	}
}

func TestInvalidUTF8URLsAre400(t *testing.T) {
	t.Parallel()
	ts := startServer(t, nil)
	for _, path := range []string{"/v1/requests/%FF", "/v1/requests/%FF/events", "/v1/requests/%FF:watch", "/v1/requests/x/events?page_token=%FF"} {
		if r := ts.get(t, path); r.code != http.StatusBadRequest {
			t.Errorf("GET %s: %d %s, want 400", path, r.code, r.body)
		}
	}
}

// TestGRPCGzip: a client compressing its messages with gzip is understood,
// and answered in kind. The client's compressor is grpc-go's old kind, which
// unlike encoding/gzip registers nothing in the process: the server's
// registration is the one tested.
func TestGRPCGzip(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t, nil)
	conn := srv.Dial(t, grpc.WithPerRPCCredentials(auth.BearerCredentials{Token: testAdminKey, Insecure: true}),
		grpc.WithCompressor(grpc.NewGZIPCompressor()), grpc.WithDecompressor(grpc.NewGZIPDecompressor()))
	in := &eventsv1.IngestRequest{EventType: "DLR", Timestamp: structpb.NewNumberValue(1764153000000),
		Data: &eventsv1.WebhookData{RequestId: "gz", Status: "SENT", Channel: "SMS"}}
	if _, err := eventsv1.NewWebhookServiceClient(conn).Ingest(t.Context(), in); err != nil {
		t.Fatalf("Ingest compressed with gzip: %v", err)
	}
	r, err := eventsv1.NewRequestServiceClient(conn).GetRequest(t.Context(), &eventsv1.GetRequestRequest{RequestId: "gz"})
	if err != nil || r.GetRequest().GetActiveChannel() != "SMS" {
		t.Fatalf("GetRequest compressed with gzip: %v %v, want the request on SMS", r, err)
	}
}

// TestEventLargerThanGRPCDefault: with --max-body-bytes above what a page
// holds, an event that large is stored and listed over HTTP (the gateway's
// connection takes more than gRPC's default 4 MiB).
func TestEventLargerThanGRPCDefault(t *testing.T) {
	t.Parallel()
	ts := startServer(t, func(c *server.Config) { c.MaxBodyBytes = 6 << 20 })
	body := fmt.Appendf(nil, `{"eventType":"DLR","timestamp":1764153000000,"data":{"requestId":"huge","status":"SENT","channel":"SMS","metaData":{"pad":%q}}}`,
		strings.Repeat("x", 9<<19))
	ts.ingest(t, body)
	var page struct {
		Events []struct {
			RawBody string `json:"rawBody"`
		} `json:"events"`
	}
	if r := ts.get(t, "/v1/requests/huge/events"); r.code != http.StatusOK || json.Unmarshal(r.body, &page) != nil || len(page.Events) != 1 || len(page.Events[0].RawBody) != len(body) {
		t.Errorf("GET the events of a request with a %d-byte event: %d %.200s, want the event", len(body), r.code, r.body)
	}
}

// TestRequestIDsThatNeedEscaping: an id is one path segment, percent-encoded:
// a ":watch" (%3A) in it does not make the route a watch. An id holding "/"
// cannot be named (the routes split the path at %2F too), on any route.
func TestRequestIDsThatNeedEscaping(t *testing.T) {
	t.Parallel()
	ts := startServer(t, nil)
	ts.ingest(t, []byte(`{"eventType":"DLR","timestamp":1764153000000,"data":{"requestId":"a/b","status":"SENT","channel":"SMS"}}`))
	ts.ingest(t, []byte(`{"eventType":"DLR","timestamp":1764153000000,"data":{"requestId":"e","status":"SENT","channel":"SMS"}}`))
	for _, path := range []string{"/v1/requests/a%2Fb", "/v1/requests/a%2Fb/events", "/v1/requests/a%2Fb:watch", "/v1/requests/e%2Fevents", "/v1/requests/e%2fevents"} {
		for _, accept := range []string{"", "text/event-stream"} {
			r := ts.do(t, http.MethodGet, path, testAdminKey, nil, "Accept", accept)
			if r.code != http.StatusNotFound {
				t.Errorf("GET %s (Accept %q): %d %s, want 404", path, accept, r.code, r.body)
			}
		}
	}
	// With its colon as sent, "c:watchToken" is the token route, which
	// takes POST only.
	for _, method := range []string{http.MethodGet, http.MethodHead} {
		if r := ts.do(t, method, "/v1/requests/c:watchToken", testAdminKey, nil); r.code != http.StatusMethodNotAllowed || r.header.Get("Allow") != http.MethodPost {
			t.Errorf("%s /v1/requests/c:watchToken: %d (Allow %q), want 405 allowing POST", method, r.code, r.header.Get("Allow"))
		}
	}
	for _, id := range []string{"x:watch", "c:watchToken", "%2F", "sp ace?#"} {
		ts.ingest(t, fmt.Appendf(nil, `{"eventType":"DLR","timestamp":1764153000000,"data":{"requestId":%q,"status":"SENT","channel":"SMS"}}`, id))
		path := "/v1/requests/" + url.PathEscape(id)
		if strings.Contains(id, ":") { // PathEscape leaves ':' as it is
			path = "/v1/requests/" + strings.ReplaceAll(url.PathEscape(id), ":", "%3A")
		}
		var got struct {
			Request struct {
				RequestID string `json:"requestId"`
			} `json:"request"`
		}
		if r := ts.get(t, path); r.code != http.StatusOK || json.Unmarshal(r.body, &got) != nil || got.Request.RequestID != id {
			t.Errorf("GET %s: %d %s, want request %q", path, r.code, r.body, id)
		}
		var events struct {
			Events []struct {
				RequestID string `json:"requestId"`
			} `json:"events"`
		}
		if r := ts.get(t, path+"/events"); r.code != http.StatusOK || json.Unmarshal(r.body, &events) != nil || len(events.Events) != 1 || events.Events[0].RequestID != id {
			t.Errorf("GET %s/events: %d %s, want the event of %q", path, r.code, r.body, id)
		}
		for _, accept := range []string{"", "text/event-stream"} {
			req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, ts.httpURL+path+":watch", nil)
			if err != nil {
				t.Fatal(err)
			}
			req.Header.Set("Authorization", "Bearer "+testAdminKey)
			if accept != "" {
				req.Header.Set("Accept", accept)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			br := bufio.NewReader(resp.Body)
			var line string
			for range 6 { // SSE: retry and a blank line, then id and event lines before data
				if line, err = br.ReadString('\n'); err != nil || strings.Contains(line, "requestId") {
					break
				}
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK || !strings.Contains(line, `"requestId":`+strconv.Quote(id)) {
				t.Errorf("GET %s:watch (Accept %q): %d %q, want a snapshot of %q", path, accept, resp.StatusCode, line, id)
			}
		}
	}
}

// TestLargeEventsArePaged: pages of events with large raw bodies stay under
// the 4 MiB a gRPC client takes by default (the gateway's too): a page is
// cut short, with a token for the rest, over gRPC and over HTTP alike.
func TestLargeEventsArePaged(t *testing.T) {
	t.Parallel()
	ts := startServer(t, nil)
	const n = 30
	pad := strings.Repeat("x", 200<<10)
	for i := range n {
		ts.ingest(t, fmt.Appendf(nil, `{"eventType":"DLR","timestamp":%d,"data":{"requestId":"big","status":"SENT","channel":"SMS","metaData":{"pad":%q}}}`, 1764153000000+i, pad))
	}
	seen := map[string]bool{}
	token, pages := "", 0
	for {
		resp, err := ts.requests.ListRequestEvents(t.Context(), &eventsv1.ListRequestEventsRequest{RequestId: "big", PageToken: token})
		if err != nil {
			t.Fatalf("gRPC page %d: %v", pages+1, err)
		}
		pages++
		for _, e := range resp.GetEvents() {
			seen[e.GetEventId()] = true
		}
		if token = resp.GetNextPageToken(); token == "" {
			break
		}
	}
	if len(seen) != n || pages < 2 {
		t.Fatalf("over gRPC: %d distinct events in %d pages, want %d in more than one", len(seen), pages, n)
	}
	var page struct {
		Events        []json.RawMessage `json:"events"`
		NextPageToken string            `json:"nextPageToken"`
	}
	total := 0
	for path := "/v1/requests/big/events"; ; path = "/v1/requests/big/events?page_token=" + page.NextPageToken {
		r := ts.get(t, path)
		page.NextPageToken = ""
		if r.code != http.StatusOK || json.Unmarshal(r.body, &page) != nil {
			t.Fatalf("GET %s: %d %.300s", path, r.code, r.body)
		}
		total += len(page.Events)
		if page.NextPageToken == "" {
			break
		}
	}
	if total != n {
		t.Errorf("over HTTP: %d events, want %d", total, n)
	}
}

// frozenConn drops what it reads, and swallows writes, once frozen: a peer
// gone without a word (a partition, a NAT that forgot the connection).
type frozenConn struct {
	net.Conn
	frozen *atomic.Bool
}

func (c frozenConn) Read(p []byte) (int, error) {
	for c.frozen.Load() {
		if _, err := c.Conn.Read(p); err != nil {
			return 0, err
		}
	}
	return c.Conn.Read(p)
}

func (c frozenConn) Write(p []byte) (int, error) {
	if c.frozen.Load() {
		return len(p), nil
	}
	return c.Conn.Write(p)
}

// TestSilentPeersLoseTheirWatches: the server pings a gRPC connection that
// has sent nothing for --grpc-keepalive, and closes it when the ping goes
// unanswered: the watch of a peer gone without a word ends, and its place
// under the watch limits (one per request here) is free again.
func TestSilentPeersLoseTheirWatches(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t, func(c *server.Config) {
		c.GRPCKeepalive = time.Second
		c.Security.MaxWatchesPerRequest = 1
	})
	creds := grpc.WithPerRPCCredentials(auth.BearerCredentials{Token: testAdminKey, Insecure: true})
	var frozen atomic.Bool
	gone := srv.Dial(t, creds, grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) {
		c, err := (&net.Dialer{}).DialContext(ctx, "tcp", addr)
		return frozenConn{Conn: c, frozen: &frozen}, err
	}))
	requests := eventsv1.NewRequestServiceClient(srv.Dial(t, creds))
	ctx := t.Context()
	first, err := eventsv1.NewRequestServiceClient(gone).WatchRequest(ctx, &eventsv1.WatchRequestRequest{RequestId: "silent-req"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := first.Recv(); err != nil {
		t.Fatal(err)
	}
	frozen.Store(true)
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		wctx, cancel := context.WithCancel(ctx)
		w, err := requests.WatchRequest(wctx, &eventsv1.WatchRequestRequest{RequestId: "silent-req"})
		if err == nil {
			_, err = w.Recv()
		}
		cancel()
		if err == nil {
			return // the silent peer's place was freed
		}
		if status.Code(err) != codes.ResourceExhausted || time.Now().After(deadline) {
			t.Fatalf("a second watch while the first's peer is silent: %v; want the place freed within 30 s", err)
		}
	}
}

// A store whose first ping fails (here its write-ahead log is gone) leaves
// the server not ready from the start, not only from the first health
// interval on (an hour here).
func TestNotReadyWhenTheFirstPingFails(t *testing.T) {
	t.Parallel()
	var logs testlog.Buffer
	cfg := server.DefaultConfig()
	cfg.GRPCAddr, cfg.HTTPAddr = "127.0.0.1:0", "127.0.0.1:0"
	cfg.DataDir = t.TempDir()
	cfg.Logger = slog.New(slog.NewJSONHandler(&logs, nil))
	cfg.Security.Disabled = true
	cfg.HealthInterval = time.Hour
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	srv, err := server.New(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(cfg.DataDir, "otpless-events.db-wal")); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	defer func() { cancel(); <-done }()
	for len(logs.Matching(t, map[string]any{"msg": "serving"})) == 0 {
		select {
		case err := <-done:
			t.Fatalf("Run ended before serving: %v", err)
		case <-time.After(10 * time.Millisecond):
		}
	}
	resp, err := http.Get("http://" + srv.HTTPAddr().String() + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("/readyz with the store's first ping failed: %d, want 503", resp.StatusCode)
	}
	if len(logs.Matching(t, map[string]any{"msg": "store ping failed; not ready"})) == 0 {
		t.Errorf("no warning that the store's ping failed; log:\n%s", logs.String())
	}
}

// A PostgreSQL DSN in libpq's keyword/value form is not a file path: taken
// for one, it made a SQLite file named after it, password and all, and
// every line about that file logged the password in clear.
func TestConfigValidateKeywordValueDSN(t *testing.T) {
	t.Parallel()
	cfg := server.DefaultConfig()
	cfg.Security.Disabled = true
	for _, dsn := range []string{
		"host=db.internal user=events password=SECRETPW99 dbname=otpless",
		"password=SECRETPW99",
		"  dbname=otpless\tsslmode=verify-full password='SECRET PW99'",
	} {
		c := cfg
		c.Store = dsn
		err := c.Validate()
		if err == nil || !strings.Contains(err.Error(), "postgres://") {
			t.Errorf("Validate() with store %q = %v, want it refused, naming postgres://", dsn, err)
		} else if strings.Contains(err.Error(), "SECRET") {
			t.Errorf("Validate() with store %q = %v: the error quotes the password", dsn, err)
		}
	}
	for _, path := range []string{"/srv/otpless-events/events.db", "/srv/a=b/events.db", "events v2.db", "x=1.db"} {
		c := cfg
		c.Store = path
		if err := c.Validate(); err != nil {
			t.Errorf("Validate() with store %q = %v, want a file path accepted", path, err)
		}
	}
}
