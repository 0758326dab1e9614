package server_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	eventsv1 "github.com/otpless-events/otpless-events/gen/otpless/events/v1"
	"github.com/otpless-events/otpless-events/internal/fixtures"
	"github.com/otpless-events/otpless-events/server"
)

// ingestMessage is body as a Go client of WebhookService.Ingest sends it:
// read by protojson, the fields it does not know dropped.
func ingestMessage(t *testing.T, body []byte) *eventsv1.IngestRequest {
	t.Helper()
	req := &eventsv1.IngestRequest{}
	if err := (protojson.UnmarshalOptions{DiscardUnknown: true}).Unmarshal(body, req); err != nil {
		t.Fatalf("protojson %.80s: %v", body, err)
	}
	return req
}

// TestFixturesAlikeOverBothTransports: every documented body and every
// scenario gives the same answer, events and snapshots whether it comes
// over the webhook route or gRPC Ingest, and a body sent again over the
// other transport is a duplicate.
func TestFixturesAlikeOverBothTransports(t *testing.T) {
	t.Parallel()
	httpFirst, grpcFirst := startServer(t, nil), startServer(t, nil)
	var names []string
	var bodies [][]byte
	for _, f := range fixtures.Docs(t) {
		names, bodies = append(names, f.Name), append(bodies, f.Body)
	}
	for _, sc := range fixtures.Scenarios(t) {
		for i, b := range sc.Bodies {
			names, bodies = append(names, fmt.Sprintf("%s/%d", sc.Name, i+1)), append(bodies, b)
		}
	}
	overGRPC := func(ts *testServer, body []byte) *eventsv1.IngestResponse {
		t.Helper()
		resp, err := ts.webhooks.Ingest(t.Context(), ingestMessage(t, body))
		if err != nil {
			t.Fatalf("gRPC Ingest %.80s: %v", body, err)
		}
		return resp
	}
	ids := map[string]bool{}
	for i, body := range bodies {
		a, b := httpFirst.ingest(t, body), overGRPC(grpcFirst, body)
		if !proto.Equal(a, b) {
			t.Errorf("%s: answered\n%v over HTTP,\n%v over gRPC", names[i], a, b)
		}
		a, b = overGRPC(httpFirst, body), grpcFirst.ingest(t, body)
		if a.GetStored() != 0 || b.GetStored() != 0 || !proto.Equal(a, b) {
			t.Errorf("%s sent again over the other transport: answered\n%v over gRPC,\n%v over HTTP; want the same duplicates", names[i], a, b)
		}
		for _, e := range a.GetEvents() {
			if e.GetRequestId() != "" {
				ids[e.GetRequestId()] = true
			}
		}
	}
	for id := range ids {
		var snapshots [2]*eventsv1.AuthRequest
		var events [2][]*eventsv1.Event
		for i, ts := range []*testServer{httpFirst, grpcFirst} {
			r, err := ts.requests.GetRequest(t.Context(), &eventsv1.GetRequestRequest{RequestId: id})
			if err != nil {
				t.Fatal(err)
			}
			snapshots[i] = r.GetRequest()
			snapshots[i].UpdateTime = nil // the arrival of the last webhook
			page, err := ts.requests.ListRequestEvents(t.Context(), &eventsv1.ListRequestEventsRequest{RequestId: id, PageSize: 1000})
			if err != nil {
				t.Fatal(err)
			}
			events[i] = page.GetEvents()
		}
		if !proto.Equal(snapshots[0], snapshots[1]) {
			t.Errorf("request %s:\n%v after HTTP first,\n%v after gRPC first", id, snapshots[0], snapshots[1])
		}
		if len(events[0]) != len(events[1]) {
			t.Fatalf("request %s: %d events after HTTP first, %d after gRPC first", id, len(events[0]), len(events[1]))
		}
		for j, a := range events[0] {
			b := events[1][j]
			// The body kept is the original over HTTP, the message's JSON
			// over gRPC: the same webhook.
			if !proto.Equal(ingestMessage(t, []byte(a.GetRawBody())), ingestMessage(t, []byte(b.GetRawBody()))) {
				t.Errorf("request %s, event %d: kept\n%s over HTTP,\n%s over gRPC", id, j, a.GetRawBody(), b.GetRawBody())
			}
			a, b = proto.CloneOf(a), proto.CloneOf(b)
			a.RawBody, b.RawBody, a.ReceiveTime, b.ReceiveTime = "", "", nil, nil
			if !proto.Equal(a, b) {
				t.Errorf("request %s, event %d:\n%v after HTTP first,\n%v after gRPC first", id, j, a, b)
			}
		}
	}
}

// TestRefusalsAlikeOverBothTransports: a body refused over the webhook
// route is refused over gRPC Ingest with the code of the HTTP answer's
// status, and a message naming the same problem.
func TestRefusalsAlikeOverBothTransports(t *testing.T) {
	t.Parallel()
	ts := startServer(t, func(c *server.Config) { c.MaxBodyBytes = 64 << 10 })
	valid := `{"data":{"requestId":"refused-req","status":"SENT","channel":"SMS"},"eventType":"DLR","timestamp":1764153000400}`
	channels := make([]string, 65)
	for i := range channels {
		channels[i] = fmt.Sprintf(`"C%d"`, i)
	}
	tests := []struct {
		name, body string
		code       int
		grpc       codes.Code
		mentions   string
	}{
		{"nothing recognisable", `{"hello":"world"}`, http.StatusBadRequest, codes.InvalidArgument, "no eventType, status or notificationType"},
		{"timestamp not a time", strings.Replace(valid, `1764153000400`, `"yesterday"`, 1), http.StatusBadRequest, codes.InvalidArgument, "timestamp (a string) is not an epoch time"},
		{"timestamp of the wrong type", strings.Replace(valid, `1764153000400`, `true`, 1), http.StatusBadRequest, codes.InvalidArgument, "timestamp true is not a number or a string"},
		{"timestamp years ahead", strings.Replace(valid, `1764153000400`, `4102444800000`, 1), http.StatusBadRequest, codes.InvalidArgument, "is more than a day after"},
		{"data.timestamp not a time", `{"status":"SENT","data":{"referenceId":"refused-req","timestamp":"nope"}}`, http.StatusBadRequest, codes.InvalidArgument, "data.timestamp (a string) is not"},
		{"too many channels", `{"data":{"status":"INITIATED","authenticationDetails":{"phone":{"requestId":"refused-req","channel":[` + strings.Join(channels, ",") + `]}}},"eventType":"AUTH","timestamp":1764153000}`,
			http.StatusBadRequest, codes.InvalidArgument, "more than 64 channels"},
		{"text over 4 KiB", strings.Replace(valid, `"SMS"`, `"`+strings.Repeat("S", 5<<10)+`"`, 1), http.StatusBadRequest, codes.InvalidArgument, "channel is longer than 4 KiB"},
		{"request id too long", strings.Replace(valid, `"refused-req"`, `"`+strings.Repeat("r", 300)+`"`, 1), http.StatusBadRequest, codes.InvalidArgument, "request id is longer than 256 bytes"},
		{"request id with a control character", strings.Replace(valid, `"refused-req"`, `"refused-req\u0007"`, 1), http.StatusBadRequest, codes.InvalidArgument, "request id contains control characters"},
		{"too large", strings.Replace(valid, `"SMS"}`, `"SMS","metaData":{"pad":"`+strings.Repeat("x", 70<<10)+`"}}`, 1),
			http.StatusRequestEntityTooLarge, codes.ResourceExhausted, "is larger than 64 KiB"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := ts.post(t, "/v1/webhooks/otpless", []byte(tt.body))
			var answer struct {
				Code    codes.Code `json:"code"`
				Message string     `json:"message"`
			}
			if err := json.Unmarshal(r.body, &answer); err != nil {
				t.Fatalf("HTTP answer %q: %v", r.body, err)
			}
			if r.code != tt.code || answer.Code != tt.grpc || !strings.Contains(answer.Message, tt.mentions) {
				t.Errorf("over HTTP: %d %s, want %d with code %d (%s) naming %q", r.code, r.body, tt.code, tt.grpc, tt.grpc, tt.mentions)
			}
			_, err := ts.webhooks.Ingest(t.Context(), ingestMessage(t, []byte(tt.body)))
			if st := status.Convert(err); st.Code() != tt.grpc || !strings.Contains(st.Message(), tt.mentions) {
				t.Errorf("over gRPC: %v, want %s naming %q", err, tt.grpc, tt.mentions)
			}
		})
	}
	if _, err := ts.requests.GetRequest(t.Context(), &eventsv1.GetRequestRequest{RequestId: "refused-req"}); status.Code(err) != codes.NotFound {
		t.Errorf("GetRequest after the refused webhooks: %v, want NotFound (nothing stored)", err)
	}
}

// A query parameter that names no field of the route's request is refused,
// naming it, on the routes that read their query: a misspelt ?after_revison=5 resumed a watch from the start,
// and ?page_sise=1 read pages of the default size, both without a word.
// Both spellings of a field, and the watch route's access_token, are taken;
// the path's request_id is not (another id there was ignored).
func TestUnknownQueryParametersAreRefused(t *testing.T) {
	t.Parallel()
	ts := startServer(t, nil)
	ts.ingest(t, dlr("query-req", "SENT", 1764153000000))
	for _, tc := range []struct {
		path    string
		headers []string
		code    int
		names   string
	}{
		{"/v1/requests/query-req/events?page_size=1", nil, http.StatusOK, ""},
		{"/v1/requests/query-req/events?pageSize=1", nil, http.StatusOK, ""},
		{"/v1/requests/query-req/events?page_sise=1", nil, http.StatusBadRequest, "page_sise"},
		{"/v1/requests/query-req:watch?after_revison=1", nil, http.StatusBadRequest, "after_revison"},
		{"/v1/requests/query-req:watch?after_revison=1", []string{"Accept", "text/event-stream"}, http.StatusBadRequest, "after_revison"},
		{"/v1/requests/query-req:watch?request_id.x=1", nil, http.StatusBadRequest, "request_id.x"},
		// The request is named by the path alone: another id in the query
		// was ignored, and the path's request read or watched.
		{"/v1/requests/query-req/events?request_id=other", nil, http.StatusBadRequest, `\"request_id\" sets what the path names`},
		{"/v1/requests/query-req/events?requestId=query-req", nil, http.StatusBadRequest, `\"requestId\" sets what the path names`},
		{"/v1/requests/query-req:watch?request_id=other", nil, http.StatusBadRequest, `\"request_id\" sets what the path names`},
		{"/v1/requests/query-req:watch?requestId=other", []string{"Accept", "text/event-stream"}, http.StatusBadRequest, `\"requestId\" sets what the path names`},
		// The watch route alone takes a credential in its query.
		{"/v1/requests/query-req/events?access_token=owt1.x", nil, http.StatusBadRequest, "access_token"},
		{"/v1/requests/query-req:watch?access_token=&after_revison=1", nil, http.StatusBadRequest, "after_revison"},
		// Taken, empty too: the watch's own refusal of its revision is
		// what answers (the query's keys are read in no set order).
		{"/v1/requests/query-req:watch?access_token=&after_revision=-1", nil, http.StatusBadRequest, "after_revision must not be negative"},
		{"/v1/requests/query-req:watch?access_token=&after_revision=-1", []string{"Accept", "text/event-stream"}, http.StatusBadRequest, "after_revision must not be negative"},
	} {
		r := ts.do(t, http.MethodGet, tc.path, testAdminKey, nil, tc.headers...)
		if r.code != tc.code || !strings.Contains(string(r.body), tc.names) {
			t.Errorf("GET %s %v: %d %.200s, want %d naming %q", tc.path, tc.headers, r.code, r.body, tc.code, tc.names)
		}
	}
}
