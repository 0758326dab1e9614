package cli

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/encoding/protojson"

	eventsv1 "github.com/otpless-events/otpless-events/gen/otpless/events/v1"
	"github.com/otpless-events/otpless-events/server"
	"github.com/otpless-events/otpless-events/server/gateway"
)

// envWebhookURL is the webhook URL serve prints on its first start, key
// included.
const envWebhookURL = "OTPLESS_WEBHOOK_URL"

func newSend(stdout io.Writer) *cobra.Command {
	var client clientFlags
	httpAddr := server.DefaultConfig().HTTPAddr
	cmd := &cobra.Command{
		Use:   "send FILE...",
		Short: "POST webhook bodies to a server as OTPLESS does",
		Long: "Posts each body, in order, and prints what the server stored: a .json file is one body\n" +
			"(an empty one is refused), a .jsonl file one body per line (the scenario format; blank\n" +
			"lines are skipped); every file is read, and each of its bodies checked to be JSON, before\n" +
			"anything is posted. The file - is standard input, read as JSON bodies one after another,\n" +
			"whatever their layout (one per line as in a .jsonl file, or each over several lines), each\n" +
			"posted as soon as it is read. Stops at the first body the server does not answer with 200,\n" +
			"or on standard input at the first that is not JSON or is over 64 MiB.\n\n" +
			"The target is --http-addr when given on the command line, else $" + envWebhookURL + " (the URL\n" +
			"serve prints on its first start, webhook key included; user:password@ in it is sent as\n" +
			"HTTP Basic), else --http-addr from $" + EnvName("http-addr") + ", else http://" + httpAddr + gateway.WebhookPath + ".",
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, files []string) error {
			if i := slices.Index(files, stdinName); i >= 0 && slices.Contains(files[i+1:], stdinName) {
				return errors.New("standard input (-) given more than once")
			}
			// Every file is read, once, and each of its bodies checked to be
			// JSON before the first is posted: a mistake in one must not
			// leave a replay half done.
			bodies := make([][]body, len(files))
			for i, f := range files {
				if f != stdinName {
					var err error
					if bodies[i], err = readBodies(f); err != nil {
						return err
					}
				}
			}
			explicit := cmd.Flags().Changed("http-addr")
			if err := bindEnv(cmd.Flags()); err != nil {
				return err
			}
			url := webhookURL(httpAddr, client.tls || client.tlsCAFile != "")
			if u := os.Getenv(envWebhookURL); u != "" && !explicit {
				url = u
			}
			if err := client.postTo(url); err != nil {
				return err
			}
			tlsCfg, err := client.tlsConfig()
			if err != nil {
				return err
			}
			hc := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: tlsCfg, Proxy: http.ProxyFromEnvironment}}
			posted := 0
			post := func(b body) error {
				posted++
				return postBody(cmd.Context(), hc, url, b, stdout)
			}
			for i, f := range files {
				if f == stdinName {
					if err := readStream(cmd.Context(), cmd.InOrStdin(), maxStdinBody, post); err != nil {
						return err
					}
				}
				for _, b := range bodies[i] {
					if err := post(b); err != nil {
						return err
					}
				}
			}
			if posted == 0 {
				return fmt.Errorf("no webhook body in %s", strings.Join(files, ", "))
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&httpAddr, "http-addr", httpAddr, "HTTP address of the server (host:port, a base URL, or the webhook URL itself)")
	client.register(f, false)
	documentEnv(f)
	return cmd
}

// webhookURL is the webhook route at addr, a host:port or a base URL.
func webhookURL(addr string, useTLS bool) string {
	if strings.Contains(addr, "://") {
		if u, err := url.Parse(addr); err == nil && (u.Path == gateway.WebhookPath || strings.HasPrefix(u.Path, gateway.WebhookPath+"/")) {
			return addr // the webhook URL itself, as serve prints it
		}
		return strings.TrimSuffix(addr, "/") + gateway.WebhookPath
	}
	scheme := "http://"
	if useTLS {
		scheme = "https://"
	}
	return scheme + dialAddr(addr) + gateway.WebhookPath
}

// body is one webhook body and where it came from.
type body struct {
	where string // file:line, the file as given on the command line
	data  []byte
}

// readBodies reads the bodies of a .json or .jsonl file, refusing a file of
// another kind, a directory, a .json file without a body, and a body that
// is not JSON.
func readBodies(path string) ([]body, error) {
	ext := filepath.Ext(path)
	if ext != ".json" && ext != ".jsonl" {
		return nil, errNotJSONFile(path)
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if st, err := f.Stat(); err == nil && st.IsDir() {
		return nil, fmt.Errorf("%s is a directory", path)
	}
	b, err := io.ReadAll(f)
	if err != nil {
		return nil, err
	}
	b = bytes.TrimPrefix(b, bom)
	// The path as given, not its base name: files of one name in several
	// directories (a capture per day) must be told apart.
	name := path
	if ext == ".json" {
		if b = bytes.TrimSpace(b); len(b) == 0 {
			return nil, fmt.Errorf("%s: empty, want one JSON body (a .json file is one body)", name)
		}
		if err := checkJSON(b); err != nil {
			return nil, fmt.Errorf("%s: not JSON (a .json file is one body): %w", name, err)
		}
		return []body{{where: name, data: b}}, nil
	}
	var out []body
	n := 0
	for line := range bytes.Lines(b) {
		n++
		if line = bytes.TrimSpace(line); len(line) > 0 {
			where := fmt.Sprintf("%s:%d", name, n)
			if err := checkJSON(line); err != nil {
				return nil, fmt.Errorf("%s: not JSON (a .jsonl file is one body per line): %w", where, err)
			}
			out = append(out, body{where: where, data: line})
		}
	}
	return out, nil
}

// checkJSON reports why b is not one JSON value, if it is not.
func checkJSON(b []byte) error {
	if json.Valid(b) {
		return nil
	}
	return json.Unmarshal(b, new(json.RawMessage))
}

func errNotJSONFile(path string) error {
	return fmt.Errorf("%s: want a .json file (one body), a .jsonl file (one body per line), or - for standard input", path)
}

// stdinName is the file name that means standard input.
const stdinName = "-"

// bom is a byte order mark some editors write: not part of the JSON.
var bom = []byte("\uFEFF")

// readStream posts each JSON value of r, as soon as it is read: values one
// per line as in a .jsonl file, or each over several lines, as jq prints
// them. A body is named by the line where it starts. When ctx ends first it
// returns at once, though a read of r may still be waiting: reading a
// terminal or a pipe cannot be interrupted.
func readStream(ctx context.Context, r io.Reader, maxBody int, post func(body) error) error {
	type next struct {
		b   body
		err error // io.EOF at the end
	}
	values := make(chan next)
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		send := func(n next) bool {
			select {
			case values <- n:
				return true
			case <-stop:
				return false
			}
		}
		br := bufio.NewReader(r)
		if b, err := br.Peek(len(bom)); err == nil && bytes.Equal(b, bom) {
			br.Discard(len(bom))
		}
		in := &lineCounter{r: br, line: 1, max: maxBody}
		dec := json.NewDecoder(in)
		for {
			var raw json.RawMessage
			err := dec.Decode(&raw)
			switch {
			case errors.Is(err, io.EOF):
				send(next{err: io.EOF})
				return
			case errors.As(err, new(bodyTooLarge)): // JSON or not, too much of it
				send(next{err: fmt.Errorf("stdin:%d: %w", in.lineOfNext(dec.InputOffset()), err)})
				return
			case err != nil: // named, as a body is, by the line where it starts
				send(next{err: fmt.Errorf("stdin:%d: not JSON: %w", in.lineOfNext(dec.InputOffset()), err)})
				return
			}
			where := fmt.Sprintf("stdin:%d", in.lineAt(dec.InputOffset()-int64(len(raw))))
			in.lineAt(dec.InputOffset()) // read whole: the bound is on the next body alone
			if !send(next{b: body{where: where, data: raw}}) {
				return
			}
		}
	}()
	interrupted := func() error { return fmt.Errorf("interrupted while reading stdin: %w", context.Cause(ctx)) }
	for {
		select {
		case <-ctx.Done():
			return interrupted()
		case n := <-values:
			switch {
			case errors.Is(n.err, io.EOF) && ctx.Err() != nil:
				return interrupted()
			case errors.Is(n.err, io.EOF):
				return nil
			case n.err != nil:
				return n.err
			}
			if err := post(n.b); err != nil {
				return err
			}
		}
	}
}

// lineCounter counts the lines of what a json.Decoder reads through it. It
// keeps what was read after the last offset asked about: the decoder's
// read-ahead.
type lineCounter struct {
	r    io.Reader
	buf  []byte // read, from offset base on
	base int64
	line int // the line at base
	max  int // bounds buf: what was read since the body began
}

func (c *lineCounter) Read(p []byte) (int, error) {
	if len(c.buf) > c.max { // else it and the decoder's copy would grow without bound
		return 0, bodyTooLarge(c.max)
	}
	n, err := c.r.Read(p)
	c.buf = append(c.buf, p[:n]...)
	return n, err
}

// bodyTooLarge refuses a body on standard input longer than its value, the
// most send reads of one.
type bodyTooLarge int

func (b bodyTooLarge) Error() string {
	return fmt.Sprintf("a body is over %d MiB, more than send reads of one (a server takes 1 MiB by default, its --max-body-bytes)", int(b)>>20)
}

// maxStdinBody bounds a body read from standard input: far over what a
// server takes (--max-body-bytes, 1 MiB by default), and a bound on the
// memory send holds.
const maxStdinBody = 64 << 20

// lineAt is the line of the byte at offset off, no earlier than the last
// offset asked about.
func (c *lineCounter) lineAt(off int64) int {
	k := int(min(max(off-c.base, 0), int64(len(c.buf))))
	c.line += bytes.Count(c.buf[:k], []byte("\n"))
	c.buf = c.buf[k:] // not moved to the front: after a large body, the decoder's read-ahead is large, and each body would copy it
	c.base += int64(k)
	return c.line
}

// lineOfNext is the line of the first byte at or after off that is not
// white space.
func (c *lineCounter) lineOfNext(off int64) int {
	line := c.lineAt(off)
	for _, b := range c.buf {
		switch b {
		case '\n':
			line++
		case ' ', '\t', '\r':
		default:
			return line
		}
	}
	return line
}

// postBody posts one body and prints what the server stored.
func postBody(ctx context.Context, hc *http.Client, url string, b body, stdout io.Writer) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(b.data))
	if err != nil { // a *url.Error: its text, and what it quotes, can show the key or a password
		return fmt.Errorf("webhook URL %s is not a valid URL (a user or password holding \"/\", \"?\", \"#\" or \"@\" must be percent-encoded)", redactURL(url))
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := hc.Do(req)
	if err != nil { // a *url.Error: its text would show the webhook key
		err = errors.Unwrap(err)
		if req.URL.Scheme == "http" && speaksHTTP2First(ctx, req.URL.Host) {
			return fmt.Errorf("%s: POST %s: %w; is it the gRPC port? the webhook URL takes the HTTP port (8080 by default)", b.where, redactURL(url), err)
		}
		return fmt.Errorf("%s: POST %s: %w", b.where, redactURL(url), err)
	}
	// Of an error answer send prints the message or a line of the start,
	// and a server's 200 answer is far shorter than maxAnswer: a page
	// answering either, however long, is read no further.
	limit := int64(64 << 10)
	if resp.StatusCode == http.StatusOK {
		limit = maxAnswer + 1 // one more, to tell an answer over the bound
	}
	answer, err := io.ReadAll(io.LimitReader(resp.Body, limit))
	resp.Body.Close()
	if err != nil {
		return fmt.Errorf("%s: reading the answer: %w", b.where, err)
	}
	if resp.StatusCode == http.StatusOK && len(answer) > maxAnswer {
		return fmt.Errorf("%s: answer %q is over %d MiB, more than a server answers to a body: is %s an otpless-events server?",
			b.where, excerpt(string(answer)), maxAnswer>>20, redactURL(url))
	}
	if resp.StatusCode != http.StatusOK {
		var st struct{ Message string }
		if json.Unmarshal(answer, &st) != nil || st.Message == "" {
			st.Message = string(answer) // a proxy's error page, say
		}
		words := printable(excerpt(st.Message))
		if words == "" { // a proxy's bare status, say
			words = strings.TrimSpace("(an empty answer) " + http.StatusText(resp.StatusCode))
		}
		return fmt.Errorf("%s: HTTP %d: %s", b.where, resp.StatusCode, words)
	}
	// A newer server may answer with fields and enum values this build does
	// not know, as the API may add them.
	out := &eventsv1.IngestResponse{}
	if err := (protojson.UnmarshalOptions{DiscardUnknown: true}).Unmarshal(answer, out); err != nil {
		return fmt.Errorf("%s: answer %q: %w", b.where, excerpt(string(answer)), err)
	}
	if len(out.GetEvents()) == 0 { // a stored body has at least one event
		return fmt.Errorf("%s: answer %q names no event: is %s an otpless-events server?", b.where, excerpt(string(answer)), redactURL(url))
	}
	for _, e := range out.GetEvents() {
		line := fmt.Sprintf("%s  %s  rev %d  %s", b.where, orNone(e.GetRequestId()), e.GetRevision(), e.GetStatus())
		if e.GetDuplicate() {
			line += "  (duplicate)"
		}
		if _, err := fmt.Fprintln(stdout, printable(line)); err != nil {
			return err
		}
	}
	return nil
}

// maxAnswer bounds the 200 answer send reads: a body yields two events at
// most, and what an event's entry repeats of the body (its request id, 256
// bytes at most, and status, 4 KiB at most) keeps the answer under 64 KiB
// even with every character escaped.
const maxAnswer = 1 << 20

// excerpt is the start of an answer, which may be a page of HTML from a
// proxy, in one line for an error: runs of white space as one space, cut
// after 200 characters.
func excerpt(s string) string {
	const most = 200
	s = strings.Join(strings.Fields(s), " ")
	if utf8.RuneCountInString(s) > most {
		s = string([]rune(s)[:most]) + "…"
	}
	return s
}

// speaksHTTP2First reports whether the server at addr (host:port), dialed
// in clear, begins with an HTTP/2 SETTINGS frame unasked, as a gRPC server
// does and an HTTP/1.1 one never would. What net/http makes of such an
// answer to its request varies with timing, so the server is asked again.
func speaksHTTP2First(ctx context.Context, addr string) bool {
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	conn, err := (&net.Dialer{}).DialContext(ctx, "tcp", addr)
	if err != nil {
		return false
	}
	defer conn.Close()
	deadline, _ := ctx.Deadline()
	conn.SetReadDeadline(deadline)
	var frame [9]byte // a frame header: length (3), type (1), flags (1), stream (4)
	if _, err := io.ReadFull(conn, frame[:]); err != nil {
		return false
	}
	const settings = 0x4
	return frame[3] == settings && frame[5]|frame[6]|frame[7]|frame[8] == 0
}

func orNone(requestID string) string {
	if requestID == "" {
		return "(no request)"
	}
	return requestID
}
