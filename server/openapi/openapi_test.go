package openapi_test

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/otpless-events/otpless-events/server/openapi"
)

// The embedded copy is the document the README points to.
func TestDocumentIsTheGeneratedOne(t *testing.T) {
	t.Parallel()
	want, err := os.ReadFile(filepath.Join("..", "..", "gen", "otpless", "events", "v1", "openapi.swagger.json"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(openapi.Document(), want) {
		t.Fatal("server/openapi/spec/openapi.swagger.json differs from gen/otpless/events/v1/openapi.swagger.json: run 'go tool buf generate'")
	}
}

func TestHandler(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(openapi.Handler())
	t.Cleanup(srv.Close)

	resp, err := http.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("GET: %d %q", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	var doc struct {
		Swagger string                     `json:"swagger"`
		Paths   map[string]json.RawMessage `json:"paths"`
	}
	if err := json.Unmarshal(body, &doc); err != nil {
		t.Fatalf("document is not JSON: %v", err)
	}
	if doc.Swagger != "2.0" || doc.Paths["/v1/webhooks/otpless"] == nil {
		t.Fatalf("document has swagger %q and paths %v, want 2.0 with the webhook route", doc.Swagger, len(doc.Paths))
	}

	post, err := http.Post(srv.URL, "application/json", nil)
	if err != nil {
		t.Fatal(err)
	}
	post.Body.Close()
	if post.StatusCode != http.StatusMethodNotAllowed {
		t.Fatalf("POST: %d, want 405", post.StatusCode)
	}
}

// The document says how each route authenticates, so that clients
// generated from it send their credentials: a bearer credential for the
// request routes (or, on the watch route, a watch token as access_token),
// HTTP Basic for the webhook route.
func TestDocumentNamesCredentials(t *testing.T) {
	t.Parallel()
	var doc struct {
		SecurityDefinitions map[string]struct{ Type, In, Name string }
		Security            []map[string][]string
		Paths               map[string]map[string]struct{ Security []map[string][]string }
	}
	if err := json.Unmarshal(openapi.Document(), &doc); err != nil {
		t.Fatal(err)
	}
	if b := doc.SecurityDefinitions["bearer"]; b.Type != "apiKey" || b.In != "header" || b.Name != "Authorization" {
		t.Errorf("bearer: %+v, want an apiKey in the Authorization header", b)
	}
	if doc.SecurityDefinitions["basic"].Type != "basic" {
		t.Errorf("basic: %+v", doc.SecurityDefinitions["basic"])
	}
	if a := doc.SecurityDefinitions["access_token"]; a.Type != "apiKey" || a.In != "query" || a.Name != "access_token" {
		t.Errorf("access_token: %+v, want an apiKey in the query's access_token", a)
	}
	if len(doc.Security) != 1 || doc.Security[0]["bearer"] == nil {
		t.Errorf("the document's security %v, want bearer", doc.Security)
	}
	for path, ops := range doc.Paths {
		for method, op := range ops {
			var want []string // the document's
			switch path {
			case "/v1/webhooks/otpless":
				want = []string{"basic"}
			case "/v1/requests/{requestId}:watch":
				want = []string{"bearer", "access_token"}
			}
			var got []string
			for _, req := range op.Security {
				for name := range req {
					got = append(got, name)
				}
			}
			if !slices.Equal(got, want) {
				t.Errorf("%s %s: security %v, want %v", method, path, op.Security, want)
			}
		}
	}
}

// The watch route documents what browsers use of it: the event stream it
// also produces, Last-Event-ID, and the 204 that ends a resumed stream of a
// finished request.
func TestDocumentDescribesEventStreams(t *testing.T) {
	t.Parallel()
	var doc struct {
		Paths map[string]map[string]struct {
			Produces   []string
			Parameters []struct{ Name, In string }
			Responses  map[string]struct{ Description string }
		}
	}
	if err := json.Unmarshal(openapi.Document(), &doc); err != nil {
		t.Fatal(err)
	}
	op := doc.Paths["/v1/requests/{requestId}:watch"]["get"]
	if !slices.Contains(op.Produces, "text/event-stream") {
		t.Errorf("watch produces %v, want text/event-stream among them", op.Produces)
	}
	if !slices.ContainsFunc(op.Parameters, func(p struct{ Name, In string }) bool { return p.Name == "Last-Event-ID" && p.In == "header" }) {
		t.Errorf("watch parameters %+v, want the Last-Event-ID header", op.Parameters)
	}
	if op.Responses["204"].Description == "" {
		t.Errorf("watch answers %v, want a 204 described", op.Responses)
	}
}

// Every operation names the errors it answers, each a google.rpc.Status:
// those of every route, and its own.
func TestDocumentNamesErrors(t *testing.T) {
	t.Parallel()
	var doc struct {
		Paths map[string]map[string]struct {
			Responses map[string]struct {
				Description string
				Schema      struct {
					Ref string `json:"$ref"`
				}
			}
		}
	}
	if err := json.Unmarshal(openapi.Document(), &doc); err != nil {
		t.Fatal(err)
	}
	own := map[string][]string{
		"get /v1/requests/{requestId}":             {"404"},
		"get /v1/requests/{requestId}/events":      {"404"},
		"get /v1/requests/{requestId}:watch":       {"429"},
		"post /v1/requests/{requestId}:watchToken": {"413"},
		"post /v1/webhooks/otpless":                {"413", "415", "429"},
	}
	n := 0
	for path, ops := range doc.Paths {
		for method, op := range ops {
			n++
			name := method + " " + path
			for _, code := range append([]string{"400", "401", "403", "503"}, own[name]...) {
				r, ok := op.Responses[code]
				if !ok || r.Description == "" || r.Schema.Ref != "#/definitions/rpcStatus" {
					t.Errorf("%s: answer %s is %+v (declared %v), want a description and a google.rpc.Status", name, code, r, ok)
				}
			}
		}
	}
	if n != len(own) {
		t.Errorf("%d operations, want %d", n, len(own))
	}
}
