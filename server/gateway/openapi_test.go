package gateway_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/otpless-events/otpless-events/internal/fixtures"
	"github.com/otpless-events/otpless-events/internal/testserver"
)

// The gateway's answers are what the OpenAPI document it serves says they
// are: every answer of a replayed scenario, read back through each route,
// matches the schema of its route and status (a message field left unset is
// left out, not null, which no schema of the document allows).
func TestAnswersMatchOpenAPI(t *testing.T) {
	t.Parallel()
	ts := testserver.Start(t, nil)
	doc := fetchOpenAPI(t, ts)
	const id = "c2a1d4e3f6b5a8c7d0e9f1a2b3c4d5e6"
	for _, body := range fixtures.Named(t, "whatsapp-fails-then-sms").Bodies {
		resp, err := http.Post(ts.HTTPURL+ts.WebhookPath, "application/json", bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		doc.check(t, "/v1/webhooks/otpless", "post", resp)
	}
	for _, route := range []struct{ path, url string }{
		{"/v1/requests/{requestId}", "/v1/requests/" + id},
		{"/v1/requests/{requestId}", "/v1/requests/unknown"}, // 404
		{"/v1/requests/{requestId}/events", "/v1/requests/" + id + "/events?page_size=2"},
		{"/v1/requests/{requestId}/events", "/v1/requests/" + id + "/events?page_token=x"}, // 400
		// The terminal snapshot, then (a resume at its revision) a heartbeat.
		{"/v1/requests/{requestId}:watch", "/v1/requests/" + id + ":watch"},
		{"/v1/requests/{requestId}:watch", "/v1/requests/" + id + ":watch?after_revision=6"},
	} {
		resp, err := http.Get(ts.HTTPURL + route.url)
		if err != nil {
			t.Fatal(err)
		}
		doc.check(t, route.path, "get", resp)
	}
}

// openAPI is the part of a Swagger 2.0 document the check reads.
type openAPI struct {
	Paths map[string]map[string]struct {
		Responses map[string]struct{ Schema *schema }
	}
	Definitions map[string]*schema
}

type schema struct {
	Ref                  string `json:"$ref"`
	Type                 string
	Format               string
	Enum                 []string
	Required             []string
	Properties           map[string]*schema
	AdditionalProperties any
	Items                *schema
}

func fetchOpenAPI(t *testing.T, ts *testserver.Server) *openAPI {
	t.Helper()
	resp, err := http.Get(ts.HTTPURL + "/openapi.json")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var doc openAPI
	if err := json.NewDecoder(resp.Body).Decode(&doc); err != nil {
		t.Fatal(err)
	}
	return &doc
}

// check reads resp (each line of a newline-delimited stream) and reports
// where it differs from the schema the document gives its status.
func (d *openAPI) check(t *testing.T, path, method string, resp *http.Response) {
	t.Helper()
	defer resp.Body.Close()
	name := fmt.Sprintf("%s %s: %d", strings.ToUpper(method), resp.Request.URL.RequestURI(), resp.StatusCode)
	answer, ok := d.Paths[path][method].Responses[fmt.Sprint(resp.StatusCode)]
	if !ok || answer.Schema == nil {
		t.Errorf("%s: the document has no schema for the status", name)
		return
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(nil, 4<<20)
	lines := 0
	for ; sc.Scan(); lines++ {
		var v any
		if err := json.Unmarshal(sc.Bytes(), &v); err != nil {
			t.Errorf("%s: not JSON: %v", name, err)
			return
		}
		for _, e := range d.validate(v, answer.Schema, "$") {
			t.Errorf("%s: %s", name, e)
		}
	}
	if err := sc.Err(); err != nil && err != io.EOF {
		t.Errorf("%s: %v", name, err)
	}
	if lines == 0 {
		t.Errorf("%s: no body", name)
	}
}

var dateTime = regexp.MustCompile(`^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)$`)

// validate checks v against s, for what the document uses of Swagger 2.0's
// schemas; a schema without a type takes any value.
func (d *openAPI) validate(v any, s *schema, at string) []string {
	if s.Ref != "" {
		s = d.Definitions[strings.TrimPrefix(s.Ref, "#/definitions/")]
		if s == nil {
			return []string{at + ": unknown $ref"}
		}
	}
	typ := s.Type
	if typ == "" && s.Properties != nil {
		typ = "object"
	}
	bad := func() []string { return []string{fmt.Sprintf("%s: %s, want %s", at, render(v), typ)} }
	switch typ {
	case "object":
		o, ok := v.(map[string]any)
		if !ok {
			return bad()
		}
		var errs []string
		for k, x := range o {
			p, ok := s.Properties[k]
			if !ok {
				if s.AdditionalProperties != true {
					errs = append(errs, fmt.Sprintf("%s: property %q is not in the schema", at, k))
				}
				continue
			}
			errs = append(errs, d.validate(x, p, at+"."+k)...)
		}
		for _, k := range s.Required {
			if _, ok := o[k]; !ok {
				errs = append(errs, fmt.Sprintf("%s: required %q missing", at, k))
			}
		}
		return errs
	case "array":
		a, ok := v.([]any)
		if !ok {
			return bad()
		}
		var errs []string
		for i, x := range a {
			errs = append(errs, d.validate(x, s.Items, fmt.Sprintf("%s[%d]", at, i))...)
		}
		return errs
	case "string":
		str, ok := v.(string)
		if !ok {
			return bad()
		}
		if s.Enum != nil && !slices.Contains(s.Enum, str) {
			return []string{fmt.Sprintf("%s: %q is not one of %v", at, str, s.Enum)}
		}
		switch s.Format {
		case "int64":
			if !regexp.MustCompile(`^-?\d+$`).MatchString(str) {
				return []string{fmt.Sprintf("%s: %q is not an int64", at, str)}
			}
		case "date-time":
			if _, err := time.Parse(time.RFC3339Nano, str); err != nil || !dateTime.MatchString(str) {
				return []string{fmt.Sprintf("%s: %q is not a date-time", at, str)}
			}
		}
	case "integer":
		if n, ok := v.(float64); !ok || n != float64(int64(n)) {
			return bad()
		}
	case "number":
		if _, ok := v.(float64); !ok {
			return bad()
		}
	case "boolean":
		if _, ok := v.(bool); !ok {
			return bad()
		}
	case "":
	default: // so that no type the document comes to use goes unchecked
		return []string{fmt.Sprintf("%s: schema type %q is unknown to this check", at, typ)}
	}
	return nil
}

func render(v any) string {
	b, _ := json.Marshal(v)
	if len(b) > 60 {
		b = append(b[:60], "…"...)
	}
	return string(b)
}
