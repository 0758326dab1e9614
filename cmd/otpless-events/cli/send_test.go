package cli

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"
	"unicode"
)

// Standard input holds JSON bodies one after another, laid out as they
// come; each is named by the line where it starts.
func TestReadStream(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, in string
		want     []string // where=data
		err      string   // the error ending the stream, if any
	}{
		{"empty", "", nil, ""},
		{"jsonl", `{"a":1}` + "\n\n" + `{"b":2}` + "\n", []string{`stdin:1={"a":1}`, `stdin:3={"b":2}`}, ""},
		{"one line, no newline", `{"a":1}`, []string{`stdin:1={"a":1}`}, ""},
		{"pretty-printed", "{\n  \"a\": 1\n}\n{\n  \"b\": [\n    2\n  ]\n}\n", []string{"stdin:1={\n  \"a\": 1\n}", "stdin:4={\n  \"b\": [\n    2\n  ]\n}"}, ""},
		{"byte order mark, blank lines first", "\uFEFF\n\n  {\"a\":1}\r\n{\"b\":\"x\\ny\"}", []string{`stdin:3={"a":1}`, `stdin:4={"b":"x\ny"}`}, ""},
		{"not JSON", `{"a":1}` + "\n\n" + `{"b":2}` + "\nnot json\n", []string{`stdin:1={"a":1}`, `stdin:3={"b":2}`}, "stdin:4: not JSON"},
		{"cut short", `{"a":1}` + "\n\n" + `{"b":` + "\n", []string{`stdin:1={"a":1}`}, "stdin:3: not JSON"},
		{"bad deep in a body", "{\"a\": 1}\n\n{\n  \"b\": [\n    2,\n  ]\n}\n", []string{`stdin:1={"a": 1}`}, "stdin:3: not JSON"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var got []string
			err := readStream(context.Background(), strings.NewReader(tt.in), maxStdinBody, func(b body) error {
				got = append(got, b.where+"="+string(b.data))
				return nil
			})
			if !slices.Equal(got, tt.want) {
				t.Errorf("bodies:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(tt.want, "\n"))
			}
			switch {
			case tt.err == "" && err != nil:
				t.Errorf("error %v", err)
			case tt.err != "" && (err == nil || !strings.HasPrefix(err.Error(), tt.err)):
				t.Errorf("error %v, want %q", err, tt.err)
			}
		})
	}
}

// Interrupted while standard input is still open, send stops at once with
// an error, rather than wait for the input to end and exit 0.
func TestReadStreamInterrupted(t *testing.T) {
	t.Parallel()
	r, w := io.Pipe()
	defer w.Close() // open until the test ends, as a terminal would be
	go w.Write([]byte(`{"a":1}` + "\n"))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- readStream(ctx, r, maxStdinBody, func(body) error {
			cancel() // Ctrl-C after the first body
			return nil
		})
	}()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("readStream = %v, want it interrupted", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("readStream still waiting for input 10 s after it was interrupted")
	}
}

// --http-addr takes a host and port, a base URL, or the webhook URL that
// serve prints, key and all.
func TestWebhookURL(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		addr string
		tls  bool
		want string
	}{
		{"127.0.0.1:8080", false, "http://127.0.0.1:8080/v1/webhooks/otpless"},
		{"127.0.0.1:8443", true, "https://127.0.0.1:8443/v1/webhooks/otpless"},
		{"http://127.0.0.1:8080/", false, "http://127.0.0.1:8080/v1/webhooks/otpless"},
		{"https://proxy.example/base", false, "https://proxy.example/base/v1/webhooks/otpless"},
		{"http://127.0.0.1:8080/v1/webhooks/otpless/whk_0123456789abcdef", false, "http://127.0.0.1:8080/v1/webhooks/otpless/whk_0123456789abcdef"},
		{"http://u:p@127.0.0.1:8080/v1/webhooks/otpless", false, "http://u:p@127.0.0.1:8080/v1/webhooks/otpless"},
	} {
		if got := webhookURL(tc.addr, tc.tls); got != tc.want {
			t.Errorf("webhookURL(%q, %v) = %q, want %q", tc.addr, tc.tls, got, tc.want)
		}
	}
}

// What send prints of an answer names what the sender wrote (a status):
// control characters in it are escaped, as watch escapes them.
func TestSendPrintsNoControlCharacters(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		io.WriteString(w, `{"events":[{"eventId":"e1","requestId":"r1","revision":"1","status":"SENT\u001b]0;PWNED\u0007"}],"stored":1}`)
	}))
	defer srv.Close()
	var out strings.Builder
	if err := postBody(t.Context(), srv.Client(), srv.URL, body{where: "-:1", data: []byte(`{}`)}, &out); err != nil {
		t.Fatal(err)
	}
	if got := out.String(); strings.ContainsFunc(strings.TrimSuffix(got, "\n"), unicode.IsControl) || !strings.Contains(got, `SENT\x1b]0;PWNED\a`) {
		t.Errorf("printed %q; want one line with the control characters escaped", got)
	}
}

// A proxy's error page (an HTML 502) is not printed whole: a line of it,
// its control characters escaped, says enough, and the terminal is not
// flooded.
func TestSendShowsAPageInALine(t *testing.T) {
	t.Parallel()
	// The terminal's escape within what is printed (the first 200
	// characters), where only its escaping keeps it out.
	page := "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\x1b]0;PWNED\a\r\n<center><h1>502 Bad Gateway</h1></center>\r\n" +
		strings.Repeat("<!-- a padding to disable MSIE and Chrome friendly error page -->\r\n", 200) + "</body></html>\r\n"
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/html")
		w.WriteHeader(http.StatusBadGateway)
		io.WriteString(w, page)
	}))
	defer srv.Close()
	err := postBody(t.Context(), srv.Client(), srv.URL, body{where: "-:1", data: []byte(`{}`)}, io.Discard)
	if err == nil || len(err.Error()) > 400 || strings.ContainsFunc(err.Error(), unicode.IsControl) ||
		!strings.HasPrefix(err.Error(), "-:1: HTTP 502: <html> <head><title>502 Bad Gateway</title></head> <body>\\x1b]0;PWNED\\a <center>") {
		t.Errorf("a proxy's 502 page: %q; want a line beginning with the page, without control characters", err)
	}
}

// An error answer is read only as far as send prints it: a proxy streaming
// a large page (a misrouted download, say) is not read whole into memory.
func TestSendReadsAnErrorAnswerOnlyInPart(t *testing.T) {
	t.Parallel()
	const size = 64 << 20
	wrote := make(chan int64, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusBadGateway)
		n, _ := io.Copy(w, io.LimitReader(endlessX{}, size))
		wrote <- n
	}))
	defer srv.Close()
	err := postBody(t.Context(), srv.Client(), srv.URL, body{where: "-:1", data: []byte(`{}`)}, io.Discard)
	if err == nil || !strings.HasPrefix(err.Error(), "-:1: HTTP 502: xxx") {
		t.Errorf("a 502 with a large body: %v; want its start", err)
	}
	if n := <-wrote; n == size {
		t.Errorf("send read all %d bytes of an error answer", n)
	}
}

// A 200 answer is read no further than a server's answer can be: a wrong
// URL answering 200 with a large page (a download, say) is not read whole
// into memory, and send says what it got.
func TestSendReadsASuccessAnswerOnlyInPart(t *testing.T) {
	t.Parallel()
	const size = 64 << 20
	wrote := make(chan int64, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		n, _ := io.Copy(w, io.LimitReader(endlessX{}, size))
		wrote <- n
	}))
	defer srv.Close()
	err := postBody(t.Context(), srv.Client(), srv.URL, body{where: "-:1", data: []byte(`{}`)}, io.Discard)
	if err == nil || !strings.HasPrefix(err.Error(), "-:1: answer \"xxx") || !strings.Contains(err.Error(), "over 1 MiB") {
		t.Errorf("a 200 with a large body: %v; want its start, and that it is over the bound", err)
	}
	if n := <-wrote; n == size {
		t.Errorf("send read all %d bytes of a 200 answer", n)
	}
}

// An error answer without a body (a proxy's bare 502) is named by its
// status, not left as "HTTP 502: " and nothing.
func TestSendNamesAnEmptyErrorAnswer(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusBadGateway)
	}))
	defer srv.Close()
	err := postBody(t.Context(), srv.Client(), srv.URL, body{where: "-:1", data: []byte(`{}`)}, io.Discard)
	if want := "-:1: HTTP 502: (an empty answer) Bad Gateway"; err == nil || err.Error() != want {
		t.Errorf("a bare 502: %v; want %q", err, want)
	}
}

// An answer from a newer server, with a field or an enum value this build
// does not know (which buf breaking lets the API add), is read for what
// this build knows: the webhook was stored, and send says so.
func TestSendReadsANewerServersAnswer(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		io.WriteString(w, `{"events":[{"eventId":"e1","requestId":"r1","duplicate":false,"revision":"3","status":"SENT",`+
			`"kind":"EVENT_KIND_NOT_YET_KNOWN","shard":"b"}],"stored":1,"duplicates":0,"commitTime":"2026-01-02T03:04:05Z"}`)
	}))
	defer srv.Close()
	var out strings.Builder
	if err := postBody(t.Context(), srv.Client(), srv.URL, body{where: "-:1", data: []byte(`{}`)}, &out); err != nil {
		t.Fatal(err)
	}
	if got, want := out.String(), "-:1  r1  rev 3  SENT\n"; got != want {
		t.Errorf("printed %q, want %q", got, want)
	}
}

// A body without end is refused once past the bound, rather than held in
// memory whole (300 MB took 1.7 GB).
func TestReadStreamBoundsABody(t *testing.T) {
	t.Parallel()
	endless := io.MultiReader(strings.NewReader("{\"a\":1}\n\n"+`{"pad":"`), endlessX{})
	err := readStream(t.Context(), endless, 1<<20, func(body) error { return nil })
	// Not "not JSON": what was read of it may well be.
	if err == nil || !strings.HasPrefix(err.Error(), "stdin:3: a body is over 1 MiB") {
		t.Errorf("an endless body on stdin: %v, want it refused past 1 MiB, named by its line", err)
	}
}

// The bound is on each body: bodies each under it, which together are
// over it, are all posted, read as a pipe gives them (64 KiB at a time):
// the body before must not count against the next.
func TestReadStreamBoundsEachBody(t *testing.T) {
	t.Parallel()
	big := `{"pad":"` + strings.Repeat("x", 600<<10) + `"}`
	var posted []string
	err := readStream(t.Context(), &chunkReader{b: []byte(big + "\n" + big + "\n" + big + "\n"), n: 64 << 10}, 1<<20, func(b body) error {
		posted = append(posted, b.where)
		return nil
	})
	if err != nil || !slices.Equal(posted, []string{"stdin:1", "stdin:2", "stdin:3"}) {
		t.Errorf("three bodies of 600 KiB on stdin, the bound 1 MiB: posted %v, %v; want all three", posted, err)
	}
}

// endlessX reads as x, x, x, … for ever.
type endlessX struct{}

func (endlessX) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = 'x'
	}
	return len(p), nil
}

// redactURL keeps neither a webhook key nor a password, whatever they
// hold: an "@" in a key (a path segment) is not the end of a userinfo.
func TestRedactURL(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct{ url, want string }{
		{"http://127.0.0.1:8080/v1/webhooks/otpless/whk_0123456789abcdef", "http://127.0.0.1:8080/v1/webhooks/otpless/{key}"},
		{"http://hook:s3cretpassword@127.0.0.1:8080", "http://127.0.0.1:8080"},
		{"http://hook:s3cret@word@127.0.0.1:8080/v1/webhooks/otpless", "http://127.0.0.1:8080/v1/webhooks/otpless"},
		{"https://events.example/v1/webhooks/otpless/whk_ab@SECRETSECRETSECRET", "https://events.example/v1/webhooks/otpless/{key}"},
		{"http://hook:pass/word@127.0.0.1:8080/v1/webhooks/otpless/", "http://127.0.0.1:8080/v1/webhooks/otpless/"},
	} {
		if got := redactURL(tt.url); got != tt.want {
			t.Errorf("redactURL(%q) = %q, want %q", tt.url, got, tt.want)
		}
	}
}

// BenchmarkReadStreamAfterALargeBody reads 20,000 small bodies from a file
// after one of 8 MiB, whose reading leaves the decoder reading ahead in
// large pieces: each body must cost what it would after a small one.
func BenchmarkReadStreamAfterALargeBody(b *testing.B) {
	var in bytes.Buffer
	in.WriteString(`{"a":"` + strings.Repeat("x", 8<<20) + `"}` + "\n")
	for range 20000 {
		in.WriteString(`{"mobile":"+919800000001","status":"SENT"}` + "\n")
	}
	b.SetBytes(int64(in.Len()))
	for b.Loop() {
		n := 0
		if err := readStream(b.Context(), bytes.NewReader(in.Bytes()), maxStdinBody, func(body) error { n++; return nil }); err != nil || n != 20001 {
			b.Fatalf("%d bodies read, %v", n, err)
		}
	}
}
