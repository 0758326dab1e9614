package gateway_test

import (
	"context"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"

	eventsv1 "github.com/otpless-events/otpless-events/gen/otpless/events/v1"
	"github.com/otpless-events/otpless-events/internal/fixtures"
	"github.com/otpless-events/otpless-events/internal/testserver"
	"github.com/otpless-events/otpless-events/server"
	"github.com/otpless-events/otpless-events/server/auth"
)

// watchURL is the watch route of the request the scenario is about.
func watchURL(ts *testserver.Server, id string) string {
	return ts.HTTPURL + "/v1/requests/" + id + ":watch"
}

// A whole scenario over the event stream, with a disconnect in the middle:
// the reconnect (Last-Event-ID, or ?after_revision=) continues after the
// last revision received, with nothing missed and nothing repeated, and the
// stream ends after SUCCESS.
func TestSSEResumesAcrossDisconnect(t *testing.T) {
	t.Parallel()
	ts := testserver.Start(t, nil)
	sc := fixtures.Named(t, "whatsapp-fails-then-sms")
	const id = "c2a1d4e3f6b5a8c7d0e9f1a2b3c4d5e6"

	ctx, cancel := context.WithCancel(testContext(t))
	first := openSSE(t, ctx, watchURL(ts, id), nil)
	if ev := first.nextEvent(t); ev.Event != "snapshot" || ev.ID != "0" {
		t.Fatalf("first event %+v, want the snapshot at revision 0", ev)
	}
	seen := map[string]int{} // event id -> times delivered
	for _, body := range sc.Bodies[:3] {
		rev := ts.Ingest(t, body).GetEvents()[0].GetRevision()
		ev := first.nextEvent(t)
		m := message(t, ev)
		if ev.Event != "update" || m.GetRevision() != rev || ev.ID != strconv.FormatInt(rev, 10) {
			t.Fatalf("event %s id %s at revision %d, want an update at %d", ev.Event, ev.ID, m.GetRevision(), rev)
		}
		for _, e := range m.GetEvents() {
			seen[e.GetEventId()]++
		}
	}
	cancel() // the browser tab sleeps; one webhook arrives meanwhile
	ts.Ingest(t, sc.Bodies[3])

	resumed := openSSE(t, testContext(t), watchURL(ts, id), http.Header{"Last-Event-Id": {"3"}})
	ev := resumed.nextEvent(t)
	snap := message(t, ev)
	if ev.Event != "snapshot" || ev.ID != "4" || len(snap.GetRequest().GetFallbacks()) != 1 {
		t.Fatalf("resumed with %s id %s (%v), want the snapshot at revision 4 holding the missed fallback", ev.Event, ev.ID, snap.GetRequest())
	}
	// A second client that is up to date resumes with ?after_revision=.
	current := openSSE(t, testContext(t), watchURL(ts, id)+"?after_revision=4", nil)
	if ev := current.nextEvent(t); ev.Event != "heartbeat" || ev.ID != "4" {
		t.Fatalf("up-to-date resume began with %s id %s, want a heartbeat at 4", ev.Event, ev.ID)
	}

	for _, body := range sc.Bodies[4:] {
		ts.Ingest(t, body)
	}
	for _, st := range []*sseStream{resumed, current} {
		last := int64(4)
		var final *eventsv1.WatchRequestResponse
		for {
			b, err := st.next()
			if err != nil {
				break // the end after SUCCESS (checked below)
			}
			if b.Event != "update" {
				continue
			}
			m := message(t, b)
			if m.GetRevision() <= last {
				t.Fatalf("revision %d after %d: repeated", m.GetRevision(), last)
			}
			last, final = m.GetRevision(), m
			if st == resumed {
				for _, e := range m.GetEvents() {
					seen[e.GetEventId()]++
				}
			}
		}
		if final.GetRequest().GetStatus() != eventsv1.RequestStatus_REQUEST_STATUS_SUCCESS || last != 6 {
			t.Fatalf("stream ended at revision %d with %v, want SUCCESS at 6", last, final.GetRequest().GetStatus())
		}
	}
	// Events 1-3 and 5-6 arrived as updates, once each; event 4 is in the
	// resumed snapshot.
	if len(seen) != 5 {
		t.Errorf("%d distinct events streamed as updates, want 5", len(seen))
	}
	for e, n := range seen {
		if n != 1 {
			t.Errorf("event %s delivered %d times", e, n)
		}
	}
}

// After SUCCESS the stream ends; an EventSource the page does not close
// then reconnects with the final revision as Last-Event-ID. That resume,
// which has nothing to say, is answered 204 No Content, which stops the
// EventSource (after a 200 and an end it would be back every retry
// interval), with the headers a page on another origin needs to see it, and
// gives back its place under the watch limits at once. A resume from before
// SUCCESS and a first connection get the snapshot, and the other transports
// are answered as before.
func TestSSEResumeOfAFinishedRequestIsNoContent(t *testing.T) {
	t.Parallel()
	const origin = "https://login.example"
	ts := testserver.Start(t, func(c *server.Config) {
		c.CORSOrigins = []string{origin}
		c.Security.MaxWatches = 1 // a place a 204 kept would refuse the next watch (429)
	})
	const id = "b1f0c2d3e4a5968778695a4b3c2d1e0f"
	for _, body := range fixtures.Named(t, "whatsapp-happy-path").Bodies {
		ts.Ingest(t, body)
	}
	// finished reads a stream to its end, and checks that it was the
	// snapshot at SUCCESS and nothing else.
	finished := func(t *testing.T, st *sseStream) int64 {
		t.Helper()
		if st.resp.StatusCode != http.StatusOK {
			t.Fatalf("status %d, want 200", st.resp.StatusCode)
		}
		ev := st.nextEvent(t)
		snap := message(t, ev)
		if ev.Event != "snapshot" || ev.ID != strconv.FormatInt(snap.GetRevision(), 10) ||
			snap.GetRequest().GetStatus() != eventsv1.RequestStatus_REQUEST_STATUS_SUCCESS {
			t.Fatalf("%s id %s %v, want the snapshot at SUCCESS", ev.Event, ev.ID, snap.GetRequest())
		}
		if ev, err := st.events.NextEvent(); err != io.EOF {
			t.Fatalf("after the snapshot at SUCCESS: %+v, %v; want the end", ev, err)
		}
		return snap.GetRevision()
	}

	final := finished(t, openSSE(t, testContext(t), watchURL(ts, id), nil)) // a first connection
	last := strconv.FormatInt(final, 10)
	for _, tt := range []struct {
		name, query string
		header      http.Header
	}{
		{"Last-Event-ID at SUCCESS", "", http.Header{"Last-Event-Id": {last}, "Origin": {origin}}},
		{"again", "", http.Header{"Last-Event-Id": {last}, "Origin": {origin}}},
		{"after_revision at SUCCESS", "?after_revision=" + last, http.Header{"Origin": {origin}}},
	} {
		st := openSSE(t, testContext(t), watchURL(ts, id)+tt.query, tt.header)
		body, err := io.ReadAll(st.resp.Body)
		if err != nil || st.resp.StatusCode != http.StatusNoContent || len(body) != 0 {
			t.Fatalf("%s: %d %q (%v), want 204 without a body", tt.name, st.resp.StatusCode, body, err)
		}
		h := st.resp.Header
		if h.Get("Access-Control-Allow-Origin") != origin || h.Get("Cache-Control") != "no-store" || h.Get("Content-Type") != "" {
			t.Errorf("%s: headers %v, want Access-Control-Allow-Origin %s, Cache-Control no-store and no Content-Type", tt.name, h, origin)
		}
	}
	// A resume before SUCCESS gets what it missed.
	st := openSSE(t, testContext(t), watchURL(ts, id), http.Header{"Last-Event-Id": {strconv.FormatInt(final-1, 10)}})
	if got := finished(t, st); got != final {
		t.Errorf("resumed before SUCCESS: the snapshot at %d, want %d", got, final)
	}

	// Newline-delimited JSON and gRPC resumes at SUCCESS: a heartbeat and
	// the end, as before.
	resp, err := http.Get(watchURL(ts, id) + "?after_revision=" + last)
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusOK || !strings.Contains(string(body), "WATCH_MESSAGE_TYPE_HEARTBEAT") || strings.Count(string(body), "\n") != 1 {
		t.Errorf("NDJSON resume at SUCCESS: %d %s (%v), want a heartbeat line", resp.StatusCode, body, err)
	}
	stream, err := eventsv1.NewRequestServiceClient(ts.Dial(t)).WatchRequest(testContext(t), &eventsv1.WatchRequestRequest{RequestId: id, AfterRevision: final})
	if err != nil {
		t.Fatal(err)
	}
	if m, err := stream.Recv(); err != nil || m.GetType() != eventsv1.WatchMessageType_WATCH_MESSAGE_TYPE_HEARTBEAT || m.GetRevision() != final {
		t.Fatalf("gRPC resume at SUCCESS: %v, %v; want a heartbeat at %d", m, err, final)
	}
	if m, err := stream.Recv(); err != io.EOF {
		t.Fatalf("gRPC resume at SUCCESS, after the heartbeat: %v, %v; want the OK end", m, err)
	}
}

// With authentication on, a browser follows a request with a watch token as
// ?access_token=: the stream works for that request only, carries no
// personal data, and refusals are HTTP statuses (EventSource stops).
func TestSSEWithWatchToken(t *testing.T) {
	t.Parallel()
	ts := testserver.Start(t, testserver.Secure)
	sc := fixtures.Named(t, "whatsapp-happy-path")
	const id = "b1f0c2d3e4a5968778695a4b3c2d1e0f"
	ts.Ingest(t, sc.Bodies[0])

	admin := eventsv1.NewRequestServiceClient(ts.Dial(t, grpc.WithPerRPCCredentials(auth.BearerCredentials{Token: testserver.AdminKey, Insecure: true})))
	tok, err := admin.CreateWatchToken(testContext(t), &eventsv1.CreateWatchTokenRequest{RequestId: id})
	if err != nil {
		t.Fatal(err)
	}

	st := openSSE(t, testContext(t), watchURL(ts, id)+"?access_token="+tok.GetToken(), nil)
	if st.resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d with a watch token", st.resp.StatusCode)
	}
	ev := st.nextEvent(t)
	snap := message(t, ev).GetRequest()
	if ev.Event != "snapshot" || snap.GetStatus() != eventsv1.RequestStatus_REQUEST_STATUS_IN_PROGRESS {
		t.Fatalf("first event %s %v", ev.Event, snap)
	}
	if snap.GetPhone() != nil {
		t.Errorf("a watch token's stream carries the phone number %v", snap.GetPhone())
	}
	for _, body := range sc.Bodies[1:] {
		ts.Ingest(t, body)
	}
	var last *eventsv1.WatchRequestResponse
	for {
		b, err := st.next()
		if err != nil {
			break
		}
		if b.Event == "update" {
			last = message(t, b)
		}
	}
	if last.GetRequest().GetStatus() != eventsv1.RequestStatus_REQUEST_STATUS_SUCCESS || last.GetRequest().GetToken() != "" {
		t.Fatalf("stream ended with %v, want SUCCESS without the OTPLESS token", last.GetRequest())
	}

	for _, tt := range []struct {
		name, url string
		code      int
	}{
		{"no credential", watchURL(ts, id), http.StatusUnauthorized},
		{"another request", watchURL(ts, "someone-else") + "?access_token=" + tok.GetToken(), http.StatusForbidden},
		{"not a token", watchURL(ts, id) + "?access_token=forged", http.StatusUnauthorized},
	} {
		t.Run(tt.name, func(t *testing.T) {
			st := openSSE(t, testContext(t), tt.url, nil)
			if st.resp.StatusCode != tt.code {
				t.Fatalf("status %d, want %d", st.resp.StatusCode, tt.code)
			}
		})
	}
}

// A watch lasts longer than the server's HTTP read timeout (which bounds
// reading requests, not streaming answers).
func TestSSEOutlivesHTTPReadTimeout(t *testing.T) {
	t.Parallel()
	// The request must be read within it: at 100 ms, a client or server
	// stalled that long on a loaded machine would be cut off before the
	// stream began.
	const readTimeout = time.Second
	ts := testserver.Start(t, func(c *server.Config) {
		c.HTTPReadTimeout = readTimeout
		c.WatchHeartbeat = 20 * time.Millisecond
	})
	st := openSSE(t, testContext(t), watchURL(ts, "long-watch"), nil)
	start := time.Now()
	for time.Since(start) < 4*readTimeout {
		if ev := st.nextEvent(t); ev.Event != "snapshot" && ev.Event != "heartbeat" {
			t.Fatalf("event %+v on a quiet stream", ev)
		}
	}
}

// Over TLS a browser speaks HTTP/2, and other clients HTTP/1.1 (whose
// stream the gateway detaches from its handler): either way the stream
// outlives the read timeout, carries a whole scenario and ends cleanly.
func TestSSEOverTLS(t *testing.T) {
	t.Parallel()
	// The read timeout covers the TLS handshake too, which under -race on
	// a busy machine took longer than 100 ms.
	const readTimeout = 500 * time.Millisecond
	certFile, keyFile := testserver.SelfSigned(t)
	ts := testserver.Start(t, func(c *server.Config) {
		c.Security.TLSCertFile, c.Security.TLSKeyFile = certFile, keyFile
		c.HTTPReadTimeout = readTimeout
		c.WatchHeartbeat = 20 * time.Millisecond
	})
	h1 := ts.HTTPClient().Transport.(*http.Transport).Clone()
	h1.Protocols = new(http.Protocols)
	h1.Protocols.SetHTTP1(true)
	h1.TLSClientConfig.NextProtos = []string{"http/1.1"}
	for _, tt := range []struct {
		client       *http.Client
		proto        int
		scenario, id string
	}{
		{ts.HTTPClient(), 2, "whatsapp-happy-path", "b1f0c2d3e4a5968778695a4b3c2d1e0f"},
		{&http.Client{Transport: h1}, 1, "whatsapp-fails-then-sms", "c2a1d4e3f6b5a8c7d0e9f1a2b3c4d5e6"},
	} {
		st := openSSEWith(t, testContext(t), tt.client, watchURL(ts, tt.id), nil)
		if st.resp.ProtoMajor != tt.proto || st.resp.StatusCode != http.StatusOK {
			t.Fatalf("%s %d, want HTTP/%d 200", st.resp.Proto, st.resp.StatusCode, tt.proto)
		}
		if ev := st.nextEvent(t); ev.Event != "snapshot" {
			t.Fatalf("HTTP/%d: first event %+v, want the snapshot", tt.proto, ev)
		}
		for start := time.Now(); time.Since(start) < 4*readTimeout; {
			if ev := st.nextEvent(t); ev.Event != "heartbeat" {
				t.Fatalf("HTTP/%d: event %+v on a quiet stream", tt.proto, ev)
			}
		}
		for _, body := range fixtures.Named(t, tt.scenario).Bodies {
			ts.Ingest(t, body)
		}
		var last *eventsv1.WatchRequestResponse
		var err error
		for {
			var b sseEvent
			if b, err = st.next(); err != nil {
				break
			}
			if b.Event == "update" {
				last = message(t, b)
			}
		}
		if err != io.EOF || last.GetRequest().GetStatus() != eventsv1.RequestStatus_REQUEST_STATUS_SUCCESS {
			t.Fatalf("HTTP/%d: stream ended with %v after %v, want a clean end after SUCCESS", tt.proto, err, last.GetRequest())
		}
	}
}
