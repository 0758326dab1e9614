package ui_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"
	"google.golang.org/grpc"

	eventsv1 "github.com/otpless-events/otpless-events/gen/otpless/events/v1"
	"github.com/otpless-events/otpless-events/internal/fixtures"
	"github.com/otpless-events/otpless-events/internal/testserver"
	"github.com/otpless-events/otpless-events/server"
	"github.com/otpless-events/otpless-events/server/auth"
)

// chromiumPath is where Debian's chromium package installs the browser.
const chromiumPath = "/usr/bin/chromium"

// newBrowser starts headless Chromium for the test, or skips the test when
// there is no Chromium to start.
func newBrowser(t *testing.T) context.Context {
	t.Helper()
	path := chromiumPath
	if _, err := os.Stat(path); err != nil {
		if path, err = exec.LookPath("chromium"); err != nil {
			t.Skipf("no chromium browser at %s or on PATH (apt-get install chromium; .ci/run does)", chromiumPath)
		}
	}
	alloc, cancelAlloc := chromedp.NewExecAllocator(context.Background(),
		chromedp.ExecPath(path),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.Flag("disable-quic", true),
		chromedp.NoFirstRun,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-dev-shm-usage", true), // containers have a small /dev/shm
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1100, 1000),
	)
	ctx, cancel := chromedp.NewContext(alloc)
	t.Cleanup(func() { cancel(); cancelAlloc() })
	if err := chromedp.Do(ctx); err != nil { // starts the browser
		t.Fatalf("starting chromium: %v", err)
	}
	return ctx
}

// page is one browser tab showing the status page.
type page struct {
	t   *testing.T
	ctx context.Context
}

func openPage(t *testing.T, browser context.Context, url string) *page {
	t.Helper()
	ctx, cancel := chromedp.NewContext(browser) // a new tab
	t.Cleanup(cancel)
	p := &page{t: t, ctx: ctx}
	if err := chromedp.Do(p.bounded(30*time.Second), chromedp.Navigate(url)); err != nil {
		t.Fatalf("open %s: %v", url, err)
	}
	return p
}

func (p *page) bounded(d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(p.ctx, d)
	p.t.Cleanup(cancel)
	return ctx
}

// view is what the page shows, read from the DOM.
type view struct {
	Status     string            `json:"status"`
	Revision   string            `json:"revision"`
	Connection string            `json:"connection"`
	Badge      string            `json:"badge"`
	Outcome    string            `json:"outcome"`
	Steps      map[string]string `json:"steps"` // "CHANNEL/STEP" -> reached, implied, failed, pending
	Fallbacks  []string          `json:"fallbacks"`
	Failures   []string          `json:"failures"`
	Activity   []string          `json:"activity"` // event ids, in arrival order
	Watch      struct {
		Messages []struct {
			Type     string `json:"type"`
			Revision int64  `json:"revision"`
		} `json:"messages"`
		EventIDs []string `json:"eventIds"`
		Opens    int      `json:"opens"`
	} `json:"watch"`
}

const readView = `(() => ({
  status: document.body.dataset.status,
  revision: document.body.dataset.revision,
  connection: document.body.dataset.connection,
  badge: document.getElementById('status-badge').textContent,
  outcome: document.getElementById('outcome').textContent,
  steps: Object.fromEntries([...document.querySelectorAll('[data-step]')].map(e => [e.dataset.step, e.dataset.state])),
  fallbacks: [...document.querySelectorAll('[data-fallback]')].map(e => e.dataset.fallback),
  failures: [...document.querySelectorAll('#failures li')].map(e => e.textContent),
  activity: [...document.querySelectorAll('#activity [data-event-id]')].map(e => e.dataset.eventId),
  watch: window.otplessWatch,
}))()`

func (p *page) view() view {
	p.t.Helper()
	v, err := chromedp.Run(p.bounded(10*time.Second), chromedp.Evaluate[view](readView))
	if err != nil {
		p.t.Fatalf("reading the page: %v", err)
	}
	return v
}

// waitFor waits until the JavaScript condition holds on the page. An
// evaluation that fails is tried again (while the page is navigating, its
// JavaScript context may be gone), unless the condition itself is wrong: a
// SyntaxError or ReferenceError fails the test at once.
func (p *page) waitFor(what, cond string) {
	p.t.Helper()
	ctx := p.bounded(30 * time.Second)
	var err error
	for {
		attempt, cancel := context.WithTimeout(ctx, time.Second)
		var ok bool
		ok, err = chromedp.Run(attempt, chromedp.Evaluate[bool](cond))
		cancel()
		if ok {
			return
		}
		if badCondition(err) {
			p.t.Fatalf("waiting for %s (%s): %v", what, cond, err)
		}
		select {
		case <-ctx.Done():
			shown := "unreadable"
			if v, verr := chromedp.Run(p.bounded(5*time.Second), chromedp.Evaluate[view](readView)); verr == nil {
				b, _ := json.MarshalIndent(v, "", "  ")
				shown = string(b)
			}
			p.t.Fatalf("waiting for %s (%s): %v (last evaluation: %v)\npage: %s", what, cond, ctx.Err(), err, shown)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// badCondition tells whether err says that a condition cannot be evaluated
// on any page, as opposed to not yet (an element not there yet gives a
// TypeError).
func badCondition(err error) bool {
	var exc *chromedp.ExceptionError
	if !errors.As(err, &exc) || exc.Exception == nil {
		return false
	}
	return exc.Exception.ClassName == "SyntaxError" || exc.Exception.ClassName == "ReferenceError"
}

func (p *page) waitRevision(rev int64) {
	p.t.Helper()
	p.waitFor(fmt.Sprintf("revision %d", rev), fmt.Sprintf(`document.body.dataset.revision === "%d"`, rev))
}

// eval runs a JavaScript expression on the page.
func (p *page) eval(expr string) {
	p.t.Helper()
	if _, err := chromedp.Run(p.bounded(10*time.Second), chromedp.Evaluate[any](expr)); err != nil {
		p.t.Fatalf("%s: %v", expr, err)
	}
}

// screenshot saves the page where a person can look at it after the test.
func (p *page) screenshot(name string) {
	p.t.Helper()
	png, err := chromedp.Run(p.bounded(30*time.Second), chromedp.FullScreenshot(100))
	if err != nil {
		p.t.Fatalf("screenshot: %v", err)
	}
	dir, err := os.MkdirTemp("", "otpless-events-ui-")
	if err != nil {
		p.t.Fatal(err)
	}
	path := filepath.Join(dir, name+".png")
	if err := os.WriteFile(path, png, 0o644); err != nil {
		p.t.Fatal(err)
	}
	p.t.Logf("screenshot of the status page: %s", path)
}

// checkShows fails unless the page shows each event of the body: in the
// activity list, and as a channel step, fallback or failure.
func checkShows(t *testing.T, v view, evs []*eventsv1.Event) {
	t.Helper()
	for _, e := range evs {
		if !slices.Contains(v.Activity, e.GetEventId()) {
			t.Errorf("%s %s is not in the activity list %v", e.GetChannel(), e.GetStatus(), v.Activity)
		}
		step := e.GetChannel() + "/" + e.GetStatus()
		switch {
		case e.GetKind() == eventsv1.EventKind_EVENT_KIND_DELIVERY && e.GetStatus() == "FAILED":
			if v.Steps[step] != "failed" {
				t.Errorf("step %s shows %q, want failed", step, v.Steps[step])
			}
		case e.GetKind() == eventsv1.EventKind_EVENT_KIND_DELIVERY:
			if v.Steps[step] != "reached" {
				t.Errorf("step %s shows %q, want reached", step, v.Steps[step])
			}
		case e.GetStatus() == "FALLBACK":
			if fb := e.GetFromChannel() + "/" + e.GetToChannel(); !slices.Contains(v.Fallbacks, fb) {
				t.Errorf("fallback %s not shown in %v", fb, v.Fallbacks)
			}
		}
	}
}

// checkOnce fails unless every event arrived exactly once.
func checkOnce(t *testing.T, v view, want int) {
	t.Helper()
	seen := map[string]int{}
	for _, id := range v.Watch.EventIDs {
		seen[id]++
	}
	for id, n := range seen {
		if n != 1 {
			t.Errorf("event %s arrived %d times", id, n)
		}
	}
	if len(seen) != want || len(v.Activity) != want {
		t.Errorf("%d distinct events arrived, %d listed; want %d", len(seen), len(v.Activity), want)
	}
}

// The status page in a real browser: it follows a request live, step by
// step, to SUCCESS; and across a server restart it reconnects, resumes from
// its last revision and misses nothing.
func TestStatusPageInBrowser(t *testing.T) {
	browser := newBrowser(t)

	t.Run("live", func(t *testing.T) {
		ts := testserver.Start(t, nil)
		sc := fixtures.Named(t, "whatsapp-happy-path")
		const id = "b1f0c2d3e4a5968778695a4b3c2d1e0f"
		p := openPage(t, browser, ts.HTTPURL+"/ui/?request_id="+id)
		p.waitFor("the first snapshot", `document.body.dataset.connection === "live" && document.body.dataset.revision === "0"`)
		if v := p.view(); v.Badge != "Waiting" {
			t.Errorf("unknown request shows %q, want Waiting", v.Badge)
		}
		for _, body := range sc.Bodies {
			rev := ts.Ingest(t, body).GetEvents()[0].GetRevision()
			p.waitRevision(rev)
			checkShows(t, p.view(), fixtures.Events(t, body))
		}
		p.waitFor("the end of the watch", `document.body.dataset.connection === "finished"`)
		v := p.view()
		if v.Status != "REQUEST_STATUS_SUCCESS" || v.Badge != "Success" || !strings.HasPrefix(v.Outcome, "Signed in at") {
			t.Errorf("final view %q %q %q, want SUCCESS", v.Status, v.Badge, v.Outcome)
		}
		checkOnce(t, v, len(sc.Bodies))
		p.screenshot("happy-path")
	})

	// An EventSource that its page does not close at SUCCESS: the stream
	// ends, the browser reconnects with the final revision as
	// Last-Event-ID, and the server's 204 stops it for good.
	t.Run("an EventSource left open after SUCCESS", func(t *testing.T) {
		ts := testserver.Start(t, nil)
		const id = "b1f0c2d3e4a5968778695a4b3c2d1e0f"
		var final int64
		for _, body := range fixtures.Named(t, "whatsapp-happy-path").Bodies {
			final = ts.Ingest(t, body).GetEvents()[0].GetRevision()
		}
		p := openPage(t, browser, ts.HTTPURL+"/ui/")
		const follow = `new Promise((resolve) => {
			const seen = window.leftOpen = [];
			const es = new EventSource('/v1/requests/` + id + `:watch');
			es.onopen = () => seen.push('open');
			for (const type of ['snapshot', 'update', 'heartbeat']) es.addEventListener(type, (e) => seen.push(type + ' ' + e.lastEventId));
			es.onerror = () => {
				seen.push(es.readyState === EventSource.CLOSED ? 'closed' : 'error');
				if (es.readyState === EventSource.CLOSED) resolve(seen.join(', '));
			};
		})`
		got, err := chromedp.Run(p.bounded(15*time.Second), chromedp.Evaluate[string](follow, chromedp.EvalAwaitPromise))
		if err != nil { // what it saw until then
			got, _ = chromedp.Run(p.bounded(5*time.Second), chromedp.Evaluate[string](`window.leftOpen.join(', ')`))
		}
		if want := fmt.Sprintf("open, snapshot %d, error, closed", final); err != nil || got != want {
			t.Fatalf("the EventSource saw %q (%v), want %q", got, err, want)
		}
	})

	// Refused before its first snapshot, a page knows nothing of the
	// request yet: it says nothing of it (no "0" events, no "No delivery
	// report yet" for a request that has them), then shows it once let in.
	t.Run("refused for a while", func(t *testing.T) {
		ts := testserver.Start(t, func(c *server.Config) { c.Security.MaxWatchesPerRequest = 1 })
		const id = "e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9"
		ts.Ingest(t, []byte(`{"data":{"requestId":"`+id+`","status":"SENT","channel":"SMS"},"eventType":"DLR","timestamp":1764153060300}`))
		first := openPage(t, browser, ts.HTTPURL+"/ui/?request_id="+id)
		first.waitFor("the first page's stream", `document.body.dataset.connection === "live"`)
		second := openPage(t, browser, ts.HTTPURL+"/ui/?request_id="+id)
		second.waitFor("the refusal of a second stream", `document.body.dataset.connection === "reconnecting" && document.getElementById('stream-error').textContent.includes('HTTP 429')`)
		type shown struct{ Events, Claims string }
		got, err := chromedp.Run(second.bounded(10*time.Second), chromedp.Evaluate[shown](`({
			events: document.getElementById('fact-events').textContent,
			claims: [...document.querySelectorAll('#main .muted, #main .badge, #main .outcome')].filter(e => e.getClientRects().length).map(e => e.textContent).join(' | ')})`))
		if err != nil || got.Events != "–" || strings.Contains(got.Claims, "No delivery report") {
			t.Errorf("refused before its first snapshot, the page shows events %q and %q (%v); want \"–\" and no claim of no report", got.Events, got.Claims, err)
		}
		if err := chromedp.Cancel(first.ctx); err != nil { // the first page's tab closes
			t.Fatal(err)
		}
		second.waitFor("the second page's stream, on its own", `document.body.dataset.connection === "live"`)
		if v := second.view(); v.Steps["SMS/SENT"] != "reached" {
			t.Errorf("let in, the page shows steps %v; want SMS SENT reached", v.Steps)
		}
	})

	// A page left for another may stay in the back/forward cache, and its
	// stream with it unless the page closes it: it held the request's only
	// watch slot. Back on the page, it watches again, restored from the
	// cache or (as this Chromium does with a page sent no-store) loaded
	// afresh.
	t.Run("back and forward", func(t *testing.T) {
		ts := testserver.Start(t, func(c *server.Config) { c.Security.MaxWatchesPerRequest = 1 })
		sc := fixtures.Named(t, "whatsapp-happy-path")
		const id = "b1f0c2d3e4a5968778695a4b3c2d1e0f" // the scenario's
		first := openPage(t, browser, ts.HTTPURL+"/ui/?request_id="+id)
		first.waitFor("the first page's stream", `document.body.dataset.connection === "live"`)
		first.eval(`window.leftAt = window.otplessWatch`)
		if err := chromedp.Do(first.bounded(30*time.Second), chromedp.Navigate(ts.HTTPURL+"/openapi.json")); err != nil {
			t.Fatal(err)
		}
		second := openPage(t, browser, ts.HTTPURL+"/ui/?request_id="+id)
		second.waitFor("a second page's stream, the first page left", `document.body.dataset.connection === "live"`)
		if err := chromedp.Cancel(second.ctx); err != nil {
			t.Fatal(err)
		}
		// Not chromedp.NavigateBack: it waits for a load event, which a
		// page restored from the cache does not fire.
		first.eval(`history.back()`)
		first.waitFor("the first page back, watching again",
			`location.pathname === "/ui/" && window.leftAt !== window.otplessWatch && document.body.dataset.connection === "live"`)
		rev := ts.Ingest(t, sc.Bodies[0]).GetEvents()[0].GetRevision()
		first.waitRevision(rev)
	})

	t.Run("long values and times", func(t *testing.T) {
		ts := testserver.Start(t, nil)
		const id = "d3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8"
		long := strings.Repeat("0123456789abcdef", 25) // no place to break a line
		ts.Ingest(t, []byte(`{"status":"FAILED","data":{"referenceId":"`+id+`","timestamp":1707743479000,"channel":"`+long+`","errorCode":"003"}}`))
		p := openPage(t, browser, ts.HTTPURL+"/ui/?request_id="+id)
		p.waitRevision(1)
		wide, err := chromedp.Run(p.bounded(10*time.Second), chromedp.Evaluate[bool](`document.documentElement.scrollWidth > window.innerWidth`))
		if err != nil || wide {
			t.Errorf("a long channel name makes the page wider than the window (%v)", err)
		}
		for expr, want := range map[string]string{
			`since('2025-01-01T00:00:02.100Z', '2025-01-01T00:00:00Z')`: "+2.1 s",
			`since('2025-01-01T00:00:59.960Z', '2025-01-01T00:00:00Z')`: "+1 min 0 s",
			`since('2025-01-01T00:01:59.600Z', '2025-01-01T00:00:00Z')`: "+2 min 0 s",
			`since('2025-01-01T00:03:04.200Z', '2025-01-01T00:00:00Z')`: "+3 min 4 s",
		} {
			if got, err := chromedp.Run(p.bounded(10*time.Second), chromedp.Evaluate[string](expr)); err != nil || got != want {
				t.Errorf("%s = %q, %v; want %q", expr, got, err, want)
			}
		}
	})

	t.Run("a late first event, then unreachable", func(t *testing.T) {
		ts := testserver.Start(t, nil)
		const id = "f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0"
		dlr := func(st string, ms int64) []byte {
			return []byte(fmt.Sprintf(`{"status":%q,"data":{"referenceId":%q,"timestamp":%d,"channel":"SMS"}}`, st, id, ms))
		}
		p := openPage(t, browser, ts.HTTPURL+"/ui/?request_id="+id)
		p.waitFor("the first snapshot", `document.body.dataset.connection === "live"`)
		p.waitRevision(ts.Ingest(t, dlr("DELIVERED", 1707743489000)).GetEvents()[0].GetRevision())
		p.waitRevision(ts.Ingest(t, dlr("SENT", 1707743479000)).GetEvents()[0].GetRevision()) // 10 s earlier, arriving later
		got, err := chromedp.Run(p.bounded(10*time.Second), chromedp.Evaluate[[]string](
			`[...document.querySelectorAll('#activity [data-event-id] .since')].map(e => e.textContent.trim())`))
		if err != nil || !slices.Equal(got, []string{"+10.0 s", "+0.0 s"}) {
			t.Errorf("activity times %q (%v), want DELIVERED at +10.0 s and SENT at +0.0 s", got, err)
		}

		// A failure report, then OTPLESS reports the user unreachable: the
		// outcome names the second, which no fallback undoes.
		// Without a code (OTPLESS's documented FAILED has none), and for a
		// watch token without a message: the page says so in words.
		p.waitRevision(ts.Ingest(t, dlr("FAILED", 1707743499000)).GetEvents()[0].GetRevision())
		if v := p.view(); len(v.Failures) != 1 || !strings.HasSuffix(v.Failures[0], "SMS unknown failure") {
			t.Errorf("after a FAILED without a code: failures %q; want the failure named unknown", v.Failures)
		}
		unreachable := fmt.Sprintf(`{"token":"tok","timestamp":1707743509000,"requestId":%q,"notificationType":"UNREACHABLE"}`, id)
		p.waitRevision(ts.Ingest(t, []byte(unreachable)).GetEvents()[0].GetRevision())
		if v := p.view(); v.Status != "REQUEST_STATUS_FAILED" || !strings.HasPrefix(v.Outcome, "OTPLESS reported the user unreachable at") {
			t.Errorf("after FAILED and UNREACHABLE: %s, outcome %q; want FAILED, the user unreachable", v.Status, v.Outcome)
		}
	})

	// A status counts only with its kind (server/state): a delivery report
	// saying SUCCESS, FALLBACK or UNREACHABLE, or an auth event saying
	// FAILED, moves nothing, and the activity list does not present it as
	// the sign-in, a fallback, the user unreachable or a failure.
	t.Run("statuses of another kind", func(t *testing.T) {
		ts := testserver.Start(t, nil)
		const id = "a9b8c7d6e5f4a3b2c1d0e9f8a7b6c5d4"
		p := openPage(t, browser, ts.HTTPURL+"/ui/?request_id="+id)
		p.waitFor("the first snapshot", `document.body.dataset.connection === "live"`)
		for _, body := range []string{
			`{"data":{"status":"INITIATED","authenticationDetails":{"phone":{"requestId":"` + id + `","method":"OTP","channel":["SMS"]}}},"eventType":"AUTH","timestamp":1764153060}`,
			`{"data":{"requestId":"` + id + `","status":"SUCCESS","channel":"SMS"},"eventType":"DLR","timestamp":1764153061000}`,
			`{"data":{"requestId":"` + id + `","status":"FALLBACK","fromChannel":"SMS","toChannel":"EMAIL"},"eventType":"DLR","timestamp":1764153062000}`,
			`{"data":{"requestId":"` + id + `","status":"UNREACHABLE"},"eventType":"DLR","timestamp":1764153063000}`,
			`{"data":{"requestId":"` + id + `","status":"FAILED","channel":"SMS","errorCode":"003"},"eventType":"AUTH","timestamp":1764153064000}`,
		} {
			p.waitRevision(ts.Ingest(t, []byte(body)).GetEvents()[0].GetRevision())
		}
		if v := p.view(); v.Status != "REQUEST_STATUS_IN_PROGRESS" || len(v.Activity) != 5 {
			t.Fatalf("status %s, activity %v; want IN_PROGRESS with 5 events", v.Status, v.Activity)
		}
		got, err := chromedp.Run(p.bounded(10*time.Second), chromedp.Evaluate[[]string](
			`[...document.querySelectorAll('#activity [data-event-id]')].slice(1).map(e => e.className + ': ' + e.querySelector('.what').textContent)`))
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range got {
			class, what, _ := strings.Cut(line, ": ")
			if class != "" || strings.HasPrefix(what, "Success") || strings.HasPrefix(what, "Fell back") ||
				strings.Contains(what, "reported the user unreachable") || strings.Contains(what, "failed:") {
				t.Errorf("activity %q: a report that moves nothing shown as what it would mean on its own kind", line)
			}
		}
		// The same statuses of their own kinds still read as such.
		for _, body := range []string{
			`{"data":{"requestId":"` + id + `","status":"FAILED","channel":"SMS","errorCode":"003"},"eventType":"DLR","timestamp":1764153065000}`,
			`{"data":{"status":"SUCCESS","authenticationDetails":{"phone":{"requestId":"` + id + `","method":"OTP","channel":["SMS"]}}},"eventType":"AUTH","timestamp":1764153066}`,
		} {
			p.waitRevision(ts.Ingest(t, []byte(body)).GetEvents()[0].GetRevision())
		}
		got, err = chromedp.Run(p.bounded(10*time.Second), chromedp.Evaluate[[]string](
			`[...document.querySelectorAll('#activity [data-event-id]')].slice(5).map(e => e.className + ': ' + e.querySelector('.what').textContent)`))
		if err != nil || len(got) != 2 || !strings.HasPrefix(got[0], "bad: SMS failed: ") || got[1] != "good: Success (OTP)" {
			t.Errorf("activity %q (%v); want the failure, then the success", got, err)
		}
	})

	// A fallback OTPLESS sent without the channel it fell back to (a
	// legacy FALLBACK_TRIGGERED without fallbackChannel) is listed with a
	// mark in its place, not with nothing after its arrow.
	t.Run("a fallback to no named channel", func(t *testing.T) {
		ts := testserver.Start(t, nil)
		const id = "c1d2e3f4a5b6c7d8e9f0a1b2c3d4e5f6"
		ts.Ingest(t, []byte(`{"token":"tok","timestamp":1707743509000,"requestId":"`+id+`","notificationType":"FALLBACK_TRIGGERED"}`))
		p := openPage(t, browser, ts.HTTPURL+"/ui/?request_id="+id)
		p.waitRevision(1)
		got, err := chromedp.Run(p.bounded(10*time.Second), chromedp.Evaluate[[]string](
			`[...document.querySelectorAll('#fallbacks .what')].map(e => e.textContent)`))
		if err != nil || len(got) != 1 || got[0] != "? → ?" {
			t.Errorf("fallbacks %q (%v); want one, \"? → ?\"", got, err)
		}
	})

	t.Run("server restart", func(t *testing.T) {
		ts := testserver.Start(t, nil)
		sc := fixtures.Named(t, "whatsapp-fails-then-sms")
		const id = "c2a1d4e3f6b5a8c7d0e9f1a2b3c4d5e6"
		p := openPage(t, browser, ts.HTTPURL+"/ui/?request_id="+id)
		p.waitFor("the first snapshot", `document.body.dataset.connection === "live"`)
		for _, body := range sc.Bodies[:3] { // INITIATED, SENT, FAILED
			p.waitRevision(ts.Ingest(t, body).GetEvents()[0].GetRevision())
			checkShows(t, p.view(), fixtures.Events(t, body))
		}
		v := p.view()
		if v.Status != "REQUEST_STATUS_FAILED" || len(v.Failures) != 1 ||
			!strings.Contains(v.Failures[0], "code 033") || !strings.Contains(v.Failures[0], "retriable once the user opts in") {
			t.Errorf("after WhatsApp failed: status %s, failures %q; want FAILED with 033 in words", v.Status, v.Failures)
		}

		ts.Restart(t) // same port, same data
		p.waitFor("the reconnect", `document.body.dataset.connection === "live" && window.otplessWatch.opens === 2`)
		v = p.view()
		msgs := v.Watch.Messages
		i := slices.IndexFunc(msgs, func(m struct {
			Type     string `json:"type"`
			Revision int64  `json:"revision"`
		}) bool {
			return m.Type == "reconnect"
		})
		if i < 0 || i+1 >= len(msgs) || msgs[i+1].Type != "heartbeat" || msgs[i+1].Revision != 3 {
			t.Fatalf("messages %+v: want RECONNECT, then the stream resumed after revision 3 (a heartbeat, no snapshot again)", msgs)
		}

		for _, body := range sc.Bodies[3:] { // FALLBACK, SMS DELIVERED, SUCCESS
			p.waitRevision(ts.Ingest(t, body).GetEvents()[0].GetRevision())
			checkShows(t, p.view(), fixtures.Events(t, body))
		}
		p.waitFor("the end of the watch", `document.body.dataset.connection === "finished"`)
		v = p.view()
		if v.Status != "REQUEST_STATUS_SUCCESS" || v.Steps["SMS/SENT"] != "implied" || v.Steps["WHATSAPP/FAILED"] != "failed" {
			t.Errorf("final view: status %s, steps %v; want SUCCESS, SMS SENT implied, WhatsApp failed", v.Status, v.Steps)
		}
		checkOnce(t, v, len(sc.Bodies))
		p.screenshot("after-restart")
	})

	// Refused when it comes back (the request's only watch slot taken
	// meanwhile), the page keeps what it shows and, once let in, resumes
	// after its revision: nothing lost, nothing twice.
	t.Run("refused on its return, then resumed", func(t *testing.T) {
		ts := testserver.Start(t, func(c *server.Config) { c.Security.MaxWatchesPerRequest = 1 })
		sc := fixtures.Named(t, "whatsapp-fails-then-sms")
		const id = "c2a1d4e3f6b5a8c7d0e9f1a2b3c4d5e6"
		p := openPage(t, browser, ts.HTTPURL+"/ui/?request_id="+id)
		p.waitFor("the first snapshot", `document.body.dataset.connection === "live"`)
		for _, body := range sc.Bodies[:2] { // INITIATED, SENT
			p.waitRevision(ts.Ingest(t, body).GetEvents()[0].GetRevision())
		}

		ts.Restart(t)
		// The page comes back after its retry hint (2 s); a watcher takes
		// the only slot first.
		hold, release := context.WithCancel(t.Context())
		defer release()
		w, err := eventsv1.NewRequestServiceClient(ts.Dial(t)).WatchRequest(hold, &eventsv1.WatchRequestRequest{RequestId: id})
		if err == nil {
			_, err = w.Recv()
		}
		if err != nil {
			t.Fatalf("the watcher taking the slot: %v", err)
		}
		p.waitFor("the refusal", `document.getElementById('stream-error').textContent.includes('HTTP 429')`)
		if v := p.view(); len(v.Activity) != 2 || v.Status == "" {
			t.Errorf("refused, the page shows status %q and activity %v; want what it showed (2 events)", v.Status, v.Activity)
		}
		release()
		p.waitFor("the stream again", `document.body.dataset.connection === "live"`)
		for _, body := range sc.Bodies[2:] {
			p.waitRevision(ts.Ingest(t, body).GetEvents()[0].GetRevision())
		}
		p.waitFor("the end of the watch", `document.body.dataset.connection === "finished"`)
		checkOnce(t, p.view(), len(sc.Bodies))
	})

	t.Run("README snippet", func(t *testing.T) {
		ts := testserver.Start(t, testserver.Secure)
		sc := fixtures.Named(t, "whatsapp-fails-then-sms")
		const id = "c2a1d4e3f6b5a8c7d0e9f1a2b3c4d5e6"
		admin := eventsv1.NewRequestServiceClient(ts.Dial(t, grpc.WithPerRPCCredentials(auth.BearerCredentials{Token: testserver.AdminKey, Insecure: true})))
		tok, err := admin.CreateWatchToken(t.Context(), &eventsv1.CreateWatchTokenRequest{RequestId: id})
		if err != nil {
			t.Fatal(err)
		}
		p := openPage(t, browser, ts.HTTPURL+"/ui/") // a page of the same origin
		start := fmt.Sprintf("%s\nwindow.login = waitForSuccess(%q, %q).then(r => r.status, e => 'rejected: ' + JSON.stringify(e)); true",
			readmeSnippet(t), id, tok.GetToken())
		if _, err := chromedp.Run(p.bounded(10*time.Second), chromedp.Evaluate[bool](start)); err != nil {
			t.Fatalf("running the README's snippet: %v", err)
		}
		for _, body := range sc.Bodies {
			ts.Ingest(t, body)
		}
		got, err := chromedp.Run(p.bounded(30*time.Second), chromedp.Evaluate[string]("window.login", chromedp.EvalAwaitPromise))
		if err != nil || got != "REQUEST_STATUS_SUCCESS" {
			t.Fatalf("the README's waitForSuccess gave %q, %v; want REQUEST_STATUS_SUCCESS", got, err)
		}

		// The page itself, opened with the token as the README says.
		page := openPage(t, browser, ts.HTTPURL+"/ui/?request_id="+id+"&access_token="+tok.GetToken())
		page.waitFor("the final snapshot", `document.body.dataset.connection === "finished"`)
		if v := page.view(); v.Status != "REQUEST_STATUS_SUCCESS" || v.Steps["SMS/DELIVERED"] != "reached" {
			t.Errorf("page with a watch token shows %s, steps %v", v.Status, v.Steps)
		}
		// Another id, from the form: the token is not for it, so the server
		// refuses, and nothing of the first request stays on the page.
		if _, err := chromedp.Run(page.bounded(10*time.Second), chromedp.Evaluate[bool](
			`document.getElementById('request-id').value = 'not-this-token'; document.getElementById('watch-form').requestSubmit(); true`)); err != nil {
			t.Fatal(err)
		}
		page.waitFor("the refusal of the other id", `document.body.dataset.access === "refused" && document.getElementById('summary-id').textContent === "not-this-token"`)
		const shownNow = `({badge: document.getElementById('status-badge').textContent, outcome: document.getElementById('outcome').textContent,
			events: document.getElementById('fact-events').textContent, method: document.getElementById('fact-method').textContent,
			channels: document.querySelectorAll('#channels article').length, noChannels: !document.getElementById('no-channels').hidden,
			fallbacks: !document.getElementById('fallbacks-section').hidden, failures: !document.getElementById('failures-section').hidden})`
		type shown struct {
			Badge, Outcome, Events, Method  string
			Channels                        int
			NoChannels, Fallbacks, Failures bool
		}
		now, err := chromedp.Run(page.bounded(10*time.Second), chromedp.Evaluate[shown](shownNow))
		if err != nil {
			t.Fatal(err)
		}
		if want := (shown{Badge: "Access refused", Events: "–", Method: "–"}); now != want {
			t.Errorf("after switching to a refused id: %+v, want %+v", now, want)
		}
		// A bad token: the page stops and says why.
		refused := openPage(t, browser, ts.HTTPURL+"/ui/?request_id="+id+"&access_token=forged")
		refused.waitFor("the refusal", `document.body.dataset.connection === "closed" && document.getElementById('stream-error').textContent.includes('HTTP 401')`)
	})

	// An unknown request's page, across a server restart: the stream
	// starts over with the revision-0 snapshot, and the page says once that
	// nothing has arrived.
	t.Run("an unknown request across a restart", func(t *testing.T) {
		ts := testserver.Start(t, nil)
		p := openPage(t, browser, ts.HTTPURL+"/ui/?request_id=a0b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5")
		p.waitFor("the first snapshot", `document.body.dataset.connection === "live" && document.body.dataset.revision === "0"`)
		ts.Restart(t)
		p.waitFor("the snapshot again", `window.otplessWatch.opens === 2 && window.otplessWatch.messages.filter(m => m.type === "snapshot").length === 2`)
		notes, err := chromedp.Run(p.bounded(10*time.Second), chromedp.Evaluate[[]string](
			`[...document.querySelectorAll('#activity li.note')].map(e => e.textContent)`))
		if err != nil || len(notes) != 1 {
			t.Errorf("notes %q (%v), want one", notes, err)
		}
	})

	// Refused for its token, the page says so and what to do, rather than
	// showing the placeholders of a request not yet seen.
	t.Run("access refused", func(t *testing.T) {
		ts := testserver.Start(t, testserver.Secure)
		const id = "c2a1d4e3f6b5a8c7d0e9f1a2b3c4d5e6"
		for _, token := range []string{"forged", ""} {
			p := openPage(t, browser, ts.HTTPURL+"/ui/?request_id="+id+"&access_token="+token)
			p.waitFor("the refusal", `document.body.dataset.access === "refused"`)
			type shown struct {
				Badge, Error                  string
				Placeholders, Facts, Activity bool
			}
			got, err := chromedp.Run(p.bounded(10*time.Second), chromedp.Evaluate[shown](`({
				badge: document.getElementById('status-badge').textContent,
				error: document.getElementById('stream-error').textContent,
				placeholders: document.getElementById('no-channels').getClientRects().length > 0,
				facts: document.querySelector('.facts').getClientRects().length > 0,
				activity: document.getElementById('activity').getClientRects().length > 0})`))
			if err != nil {
				t.Fatal(err)
			}
			if got.Badge != "Access refused" || !strings.Contains(got.Error, "HTTP 401") || !strings.Contains(got.Error, "new link") ||
				got.Placeholders || got.Facts || got.Activity {
				t.Errorf("token %q: the page shows %+v; want access refused, a new link asked for, no placeholders", token, got)
			}
		}
	})

	// A time not of today shows its date; one of today need not.
	t.Run("dates", func(t *testing.T) {
		ts := testserver.Start(t, nil)
		const id = "b7c8d9e0f1a2b3c4d5e6f7a8b9c0d1e2"
		ts.Ingest(t, []byte(`{"status":"SENT","data":{"referenceId":"`+id+`","timestamp":1707743479000,"channel":"SMS"}}`))
		p := openPage(t, browser, ts.HTTPURL+"/ui/?request_id="+id)
		p.waitRevision(1)
		// The date as the local calendar has it, worked out here apart from
		// the page's code.
		const localDate = `((ts) => { const d = new Date(ts); return d.getFullYear() + '-' + String(d.getMonth() + 1).padStart(2, '0') + '-' + String(d.getDate()).padStart(2, '0'); })`
		got, err := chromedp.Run(p.bounded(10*time.Second), chromedp.Evaluate[[]string](
			`[...document.querySelectorAll('main time')].filter(t => !t.textContent.startsWith(`+localDate+`(t.dateTime))).map(t => t.textContent)`))
		if err != nil || len(got) != 0 {
			t.Errorf("times of 2024 without their date: %q (%v)", got, err)
		}
		noon := `new Date(new Date().setHours(12, 0, 0, 0))`
		yesterday := `(() => { const d = new Date(); d.setDate(d.getDate() - 1); d.setHours(12, 0, 0, 0); return d; })()`
		for _, tc := range []struct{ expr, want string }{
			{`clock(` + noon + `.toISOString())`, `'12:00:00.000'`},
			{`clock(` + yesterday + `.toISOString())`, localDate + `(` + yesterday + `) + ' 12:00:00.000'`},
		} {
			ok, err := chromedp.Run(p.bounded(10*time.Second), chromedp.Evaluate[bool](tc.expr+` === `+tc.want))
			if err != nil || !ok {
				got, _ := chromedp.Run(p.bounded(10*time.Second), chromedp.Evaluate[string](tc.expr))
				t.Errorf("%s = %q (%v), want %s", tc.expr, got, err, tc.want)
			}
		}
	})

	// Values the webhook's sender chose are isolated: a right-to-left
	// override in a channel's name, or a stray end of isolate before one,
	// cannot reorder the page's own words around it.
	t.Run("bidi values", func(t *testing.T) {
		ts := testserver.Start(t, nil)
		const id = "e1f2a3b4c5d6e7f8a9b0c1d2e3f4a5b6"
		for _, body := range []string{
			`{"data":{"status":"INITIATED","authenticationDetails":{"phone":{"requestId":"` + id + `","method":"\u202eOTP","channel":["\u202eEVIL","SMS"]}}},"eventType":"AUTH","timestamp":1764153060}`,
			`{"data":{"requestId":"` + id + `","status":"FAILED","channel":"\u202eEVIL","errorCode":"\u202e033"},"eventType":"DLR","timestamp":1764153062100}`,
			`{"data":{"requestId":"` + id + `","status":"FALLBACK","fromChannel":"\u202eEVIL","toChannel":"X\u2069\u202eSMS"},"eventType":"AUTH","timestamp":1764153062200}`,
			`{"data":{"requestId":"` + id + `","status":"FAILED","channel":"X\u2069\u202eSMS","errorCode":"\u2069\u202e003"},"eventType":"DLR","timestamp":1764153063100}`,
		} {
			ts.Ingest(t, []byte(body))
		}
		p := openPage(t, browser, ts.HTTPURL+"/ui/?request_id="+id)
		p.waitRevision(4)
		// Each word of the page's own (two letters or more, outside a
		// <bdi>) must read left to right.
		reordered, err := chromedp.Run(p.bounded(10*time.Second), chromedp.Evaluate[[]string](`(() => {
			const bad = [];
			const walk = document.createTreeWalker(document.getElementById('main'), NodeFilter.SHOW_TEXT);
			for (let n; (n = walk.nextNode());) {
				if (n.parentElement.closest('bdi')) continue;
				for (const m of n.data.matchAll(/[A-Za-z]{2,}/g)) {
					let last = null;
					for (let i = m.index; i < m.index + m[0].length; i++) {
						const r = document.createRange();
						r.setStart(n, i);
						r.setEnd(n, i + 1);
						const b = r.getBoundingClientRect();
						if (b.width === 0) { last = null; continue; }
						if (last && Math.abs(b.top - last.top) < 1 && b.left < last.left) { bad.push(n.parentElement.textContent); break; }
						last = b;
					}
				}
			}
			return bad;
		})()`))
		if err != nil || len(reordered) != 0 {
			t.Errorf("the page's own words reordered in %q (%v)", reordered, err)
		}
		if title, err := chromedp.Run(p.bounded(10*time.Second), chromedp.Evaluate[string](`document.title`)); err != nil || !strings.HasPrefix(title, "\u2068"+id+"\u2069") {
			t.Errorf("title %q (%v), want the id isolated", title, err)
		}
		p.screenshot("bidi")
	})

	// Huge values (an INITIATED of 64 channels of 4 KiB each) are cut, each
	// a button that shows it whole and cuts it again, from the keyboard
	// too, and the page does not widen.
	t.Run("huge values", func(t *testing.T) {
		ts := testserver.Start(t, nil)
		const id = "f0e1d2c3b4a5968778695a4b3c2d1e0f"
		var chs []string
		for i := range 64 {
			chs = append(chs, fmt.Sprintf(`"C%02d%s"`, i, strings.Repeat("x", 4093)))
		}
		ts.Ingest(t, []byte(`{"data":{"status":"INITIATED","authenticationDetails":{"phone":{"requestId":"`+id+`","method":"OTP","channel":[`+strings.Join(chs, ",")+`]}}},"eventType":"AUTH","timestamp":1764153060}`))
		p := openPage(t, browser, ts.HTTPURL+"/ui/?request_id="+id)
		p.waitFor("the snapshot", `document.body.dataset.connection === "live"`)
		ts.Ingest(t, []byte(`{"data":{"requestId":"`+id+`","status":"SENT","channel":"C05`+strings.Repeat("x", 4093)+`"},"eventType":"DLR","timestamp":1764153060300}`))
		p.waitRevision(2)
		type shown struct {
			ScrollWidth, Width, Longest int
			Buttons                     bool
		}
		got, err := chromedp.Run(p.bounded(10*time.Second), chromedp.Evaluate[shown](`(() => {
			const vals = [...document.querySelectorAll('main bdi')].filter(b => b.textContent.startsWith('C0'));
			return {
				scrollWidth: document.documentElement.scrollWidth, width: window.innerWidth,
				longest: Math.max(...vals.map(b => b.textContent.length)),
				buttons: vals.length > 0 && vals.every(b => b.querySelector('button.cut[aria-expanded="false"]')),
			};
		})()`))
		if err != nil || got.ScrollWidth > got.Width || got.Longest > 100 || !got.Buttons {
			t.Errorf("%+v (%v): want no wider than the window, values cut to 100 characters or fewer, each a collapsed button", got, err)
		}

		// From the keyboard: the first channel of the activity list, focused,
		// opens with Enter and closes with Space.
		type focused struct {
			Cut, Expanded, Text string
			ScrollWidth, Width  int
		}
		const readFocused = `(() => { const b = document.activeElement; return {
			cut: b.matches('#activity bdi > button.cut') ? 'yes' : b.outerHTML.slice(0, 80),
			expanded: b.getAttribute('aria-expanded'), text: b.textContent,
			scrollWidth: document.documentElement.scrollWidth, width: window.innerWidth}; })()`
		// The channels' names are upper-cased: "C05XXX…" in place of
		// "C05xxx…", and each has 4,096 characters.
		var first string // the first 80 characters shown
		for _, step := range []struct {
			action   chromedp.Action[chromedp.Void]
			expanded string
			length   int
		}{
			{chromedp.Focus(chromedp.CSS(`#activity button.cut`)), "false", 81},
			{chromedp.KeyEvent("\r"), "true", 4096},
			{chromedp.KeyEvent(" "), "false", 81},
			{chromedp.KeyEvent(" "), "true", 4096},
		} {
			if err := chromedp.Do(p.bounded(10*time.Second), step.action); err != nil {
				t.Fatal(err)
			}
			f, err := chromedp.Run(p.bounded(10*time.Second), chromedp.Evaluate[focused](readFocused))
			text := []rune(f.Text)
			if first == "" && len(text) > 80 {
				first = string(text[:80])
			}
			if err != nil || f.Cut != "yes" || f.Expanded != step.expanded || len(text) != step.length || !strings.HasPrefix(f.Text, first) ||
				(step.length == 81 && text[80] != '…') || f.ScrollWidth > f.Width {
				t.Fatalf("focused %q, aria-expanded %q, showing %d characters (%.12q), page %d px in %d (%v); want the cut value, aria-expanded %s, showing %d",
					f.Cut, f.Expanded, len(text), f.Text, f.ScrollWidth, f.Width, err, step.expanded, step.length)
			}
		}
		p.screenshot("huge")

		// A value open in a part of the page drawn again on an update (the
		// channels) stays open, and keeps the focus.
		if err := chromedp.Do(p.bounded(10*time.Second), chromedp.Focus(chromedp.CSS(`#channels button.cut`)), chromedp.KeyEvent("\r")); err != nil {
			t.Fatal(err)
		}
		ts.Ingest(t, []byte(`{"data":{"requestId":"`+id+`","status":"DELIVERED","channel":"C05`+strings.Repeat("x", 4093)+`"},"eventType":"DLR","timestamp":1764153060600}`))
		p.waitRevision(3)
		kept, err := chromedp.Run(p.bounded(10*time.Second), chromedp.Evaluate[string](
			`(b => b.matches('#channels button.cut') ? b.getAttribute('aria-expanded') + ' ' + b.textContent.length : b.tagName)(document.activeElement)`))
		if err != nil || kept != "true 4096" {
			t.Errorf("after an update, the focus on %q (%v); want the opened channel's button, whole", kept, err)
		}
	})

	// At 375 px wide (a phone) nothing sticks out of its box and the page
	// does not scroll sideways, nor once long values (a channel, an error
	// code, in a card, a failure, a fallback, the activity) are opened; and
	// beside them, the page's own short words keep to one line.
	t.Run("narrow window", func(t *testing.T) {
		ts := testserver.Start(t, nil)
		sc := fixtures.Named(t, "whatsapp-fails-then-sms")
		const id = "c2a1d4e3f6b5a8c7d0e9f1a2b3c4d5e6"
		for _, body := range sc.Bodies[:5] { // up to SMS DELIVERED: SMS SENT implied, WhatsApp failed
			ts.Ingest(t, body)
		}
		long := strings.Repeat("0123456789abcdef", 25) // no place to break a line
		ts.Ingest(t, []byte(`{"data":{"requestId":"`+id+`","status":"FALLBACK","fromChannel":"SMS","toChannel":"`+long+`"},"eventType":"AUTH","timestamp":1764153066000}`))
		ts.Ingest(t, []byte(`{"data":{"requestId":"`+id+`","status":"FAILED","channel":"`+long+`","errorCode":"`+long+`"},"eventType":"DLR","timestamp":1764153067000}`))
		p := openPage(t, browser, "about:blank")
		if err := chromedp.Do(p.bounded(30*time.Second), chromedp.EmulateViewport(375, 812), chromedp.Navigate(ts.HTTPURL+"/ui/?request_id="+id)); err != nil {
			t.Fatal(err)
		}
		p.waitRevision(7)
		const sticksOut = `(() => {
			const bad = [];
			const name = (e) => e.tagName.toLowerCase() + (e.id ? '#' + e.id : '') + (e.className ? '.' + String(e.className).replace(/ /g, '.') : '');
			for (const e of document.body.querySelectorAll('*')) {
				if (e.closest('.visually-hidden, script, link') || !e.getClientRects().length) continue;
				const r = e.getBoundingClientRect(), q = e.parentElement.getBoundingClientRect();
				if (r.left < q.left - 0.5 || r.right > q.right + 0.5) {
					bad.push(name(e) + ' [' + Math.round(r.left) + ', ' + Math.round(r.right) + '] in ' + name(e.parentElement) + ' [' + Math.round(q.left) + ', ' + Math.round(q.right) + ']');
				}
			}
			if (document.documentElement.scrollWidth > window.innerWidth) bad.push('the page, ' + document.documentElement.scrollWidth + ' px wide');
			// The page's own short words keep to one line, not squeezed
			// letter by letter beside a long value.
			for (const e of document.querySelectorAll('main .tag, main .channel-status, main .step-name, main .badge')) {
				const r = document.createRange();
				r.selectNodeContents(e);
				const lines = new Set([...r.getClientRects()].map(x => Math.round(x.top))).size;
				if (lines > 1) bad.push(name(e) + ' "' + e.textContent + '" on ' + lines + ' lines');
			}
			return bad;
		})()`
		out, err := chromedp.Run(p.bounded(10*time.Second), chromedp.Evaluate[[]string](sticksOut))
		if err != nil || len(out) != 0 {
			t.Errorf("at 375 px (%v):\n%s", err, strings.Join(out, "\n"))
		}
		opened, err := chromedp.Run(p.bounded(10*time.Second), chromedp.Evaluate[int](`(() => {
			const cut = [...document.querySelectorAll('main button.cut')];
			for (const b of cut) b.click();
			return cut.filter(b => b.getAttribute('aria-expanded') === 'true' && b.textContent.length === 400).length;
		})()`))
		if err != nil || opened < 6 { // the channel twice, the code thrice, the fallback's target
			t.Fatalf("%d long values opened (%v), want 6 or more", opened, err)
		}
		out, err = chromedp.Run(p.bounded(10*time.Second), chromedp.Evaluate[[]string](sticksOut))
		if err != nil || len(out) != 0 {
			t.Errorf("at 375 px, the long values opened (%v):\n%s", err, strings.Join(out, "\n"))
		}
		p.screenshot("narrow")
	})

	// Opened from a link with its token (through the /ui redirect), the
	// page sends the token in no Referer: not for its files, not for its
	// stream.
	t.Run("no token in a Referer", func(t *testing.T) {
		ts := testserver.Start(t, testserver.Secure)
		const id = "c2a1d4e3f6b5a8c7d0e9f1a2b3c4d5e6"
		admin := eventsv1.NewRequestServiceClient(ts.Dial(t, grpc.WithPerRPCCredentials(auth.BearerCredentials{Token: testserver.AdminKey, Insecure: true})))
		tok, err := admin.CreateWatchToken(t.Context(), &eventsv1.CreateWatchTokenRequest{RequestId: id})
		if err != nil {
			t.Fatal(err)
		}
		p := openPage(t, browser, "about:blank")
		var mu sync.Mutex
		var sent, referred []string // each request's URL; those with a Referer, and it
		if err := chromedp.Listen(p.ctx, func(ev any) {
			if e, ok := ev.(*network.EventRequestWillBeSent); ok {
				mu.Lock()
				sent = append(sent, e.Request.URL)
				if ref, _ := e.Request.Headers["Referer"].(string); ref != "" {
					referred = append(referred, e.Request.URL+" (Referer "+ref+")")
				}
				mu.Unlock()
			}
		}); err != nil {
			t.Fatal(err)
		}
		if err := chromedp.Do(p.bounded(30*time.Second), chromedp.Navigate(ts.HTTPURL+"/ui?request_id="+id+"&access_token="+tok.GetToken())); err != nil {
			t.Fatal(err)
		}
		p.waitFor("the stream", `document.body.dataset.connection === "live"`)
		mu.Lock()
		defer mu.Unlock()
		if len(sent) < 4 { // the link, the page, its two files, the stream
			t.Errorf("requests seen: %q; want the page's", sent)
		}
		for _, r := range referred {
			t.Errorf("a Referer sent: %s", r)
		}
	})

	// waitFor stops at once on a condition that no page can satisfy, and
	// waits on one that throws only until the page has rendered.
	t.Run("conditions waitFor gives up on", func(t *testing.T) {
		p := openPage(t, browser, "about:blank")
		for cond, bad := range map[string]bool{
			`noSuchVariable === 1`:                                  true,
			`document.body.dataset.connection === `:                 true,
			`document.getElementById('not-yet').textContent === ""`: false,
		} {
			_, err := chromedp.Run(p.bounded(10*time.Second), chromedp.Evaluate[bool](cond))
			if err == nil || badCondition(err) != bad {
				t.Errorf("%s: error %v; badCondition %v, want %v", cond, err, badCondition(err), bad)
			}
		}
	})
}

// readmeSnippet is the README's JavaScript for login pages.
func readmeSnippet(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile("../../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, js, ok := strings.Cut(string(b), "```js\n")
	js, _, ok2 := strings.Cut(js, "\n```")
	if !ok || !ok2 || !strings.Contains(js, "function waitForSuccess(") {
		t.Fatal("README.md has no ```js block defining waitForSuccess")
	}
	return js
}
