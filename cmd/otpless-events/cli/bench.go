package cli

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/otpless-events/otpless-events/internal/loadgen"
	"github.com/otpless-events/otpless-events/server"
	"github.com/otpless-events/otpless-events/server/auth"
	"github.com/otpless-events/otpless-events/server/gateway"
)

// benchFlags are bench's settings.
type benchFlags struct {
	client      clientFlags
	httpAddr    string
	rate        float64
	concurrency int
	duration    time.Duration
	requests    int
	watchers    int
	watchConns  int
	watchVia    string
	drain       time.Duration
	mix         loadgen.Mix
	seed        uint64
	self        bool
	ceiling     bool
	serverPID   int
	json        bool
	cpuProfile  string
}

func newBench(stdout, stderr io.Writer) *cobra.Command {
	f := benchFlags{httpAddr: server.DefaultConfig().HTTPAddr, mix: loadgen.DefaultMix, drain: loadgen.DefaultDrain}
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "Drive realistic OTPLESS traffic at a server and measure it",
		Long: "Posts whole auth requests (INITIATED, delivery steps, fallbacks, retries, reordering) to the\n" +
			"webhook route, open loop at --rate webhooks/s (latency from the intended send time) or, with\n" +
			"--rate 0, closed loop with --concurrency senders, while --watchers watchers follow the\n" +
			"requests (over gRPC, or with --watch-via sse as Server-Sent Events). Reports webhooks/s,\n" +
			"ingest and webhook-to-watcher latency, errors, and the server's memory and CPU when it is a\n" +
			"local process (--server-pid, or --self to run one in this process). Ingest latency is that of\n" +
			"the posts answered 200 (the others' until their answer or failure is on the failed line);\n" +
			"delivery latency runs from the attempt that was stored (answered 2xx); all from when the\n" +
			"webhook was due in open loop, from its post in closed loop. It also counts the requests\n" +
			"sent whole: a run too short for its requests in progress sends mostly their first\n" +
			"webhooks, and says so. After the last answer the watchers have --drain to receive what\n" +
			"they still expect. A watched request whose SUCCESS was not stored (bench retries no\n" +
			"refused post) never ends its stream: once every post of its SUCCESS was answered, none\n" +
			"2xx, its watcher gives it up for the next request when what it expects arrived, at most\n" +
			"--drain later or --drain after the last of its events stored since (--drain unless SUCCESS\n" +
			"arrives when a post got no answer: it may have been stored), and the report counts those\n" +
			"given up. bench reports the deliveries that never arrived and exits 1 when there were any\n" +
			"(or when no webhook was answered 200, no watcher subscribed, the --ceiling run got no\n" +
			"answer, or a signal cut the run short).\n" +
			"--ceiling first runs the same traffic (closed loop, as many requests in progress, TLS when\n" +
			"the target is https) against a bare net/http handler and, in closed loop, reports the\n" +
			"server's throughput as a share of it. To leave the CPU to a server on the same machine,\n" +
			"bench collects garbage less often (GOGC=400) unless $GOGC is set (not with --self, whose\n" +
			"server shares the process).\n\n" +
			"The target is as for send: --http-addr when given, else $" + envWebhookURL + ", else\n" +
			"$" + EnvName("http-addr") + ", else the default address. Watchers need an API key with the\n" +
			"watch scope ($" + envAPIKey + " or\n" +
			"--api-key-file) when the server checks credentials. A server's default watch limits are\n" +
			"far below benchmark load: raise them (--max-watches-per-credential 0,\n" +
			"--max-watches-per-request 0, and --max-watches 0 for more than " + fmt.Sprint(server.DefaultMaxWatches) + " watchers).",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			explicit := cmd.Flags().Changed("http-addr")
			if err := bindEnv(cmd.Flags()); err != nil {
				return err
			}
			return f.run(cmd.Context(), explicit, stdout, stderr)
		},
	}
	fs := cmd.Flags()
	fs.StringVar(&f.httpAddr, "http-addr", f.httpAddr, "HTTP address of the server (host:port, a base URL, or the webhook URL itself)")
	f.client.register(fs, true)
	fs.Float64Var(&f.rate, "rate", 0, "webhooks per second, open loop; 0: closed loop")
	fs.IntVar(&f.concurrency, "concurrency", 64, "senders: the most webhooks in flight")
	fs.DurationVar(&f.duration, "duration", 10*time.Second, "how long to send")
	fs.IntVar(&f.requests, "requests", 0, "auth requests in progress at once, at least --concurrency (default: the largest of --watchers, --concurrency and 1000)")
	fs.IntVar(&f.watchers, "watchers", 0, "watchers (gRPC, or see --watch-via), each following one request in progress after another; the traffic starts once all have subscribed, after a minute at most, or after 10s if none could")
	fs.IntVar(&f.watchConns, "watch-conns", 4, "gRPC connections the watchers share")
	fs.StringVar(&f.watchVia, "watch-via", "grpc", "how watchers follow: grpc, or sse (Server-Sent Events from the HTTP gateway, a connection each)")
	fs.DurationVar(&f.drain, "drain", f.drain, "how long watchers may still take, after the last answer, to receive what they expect (ends early when nothing is outstanding)")
	fs.Float64Var(&f.mix.Fallback, "fallbacks", f.mix.Fallback, "share of requests that fall back from WhatsApp to SMS")
	fs.Float64Var(&f.mix.Duplicate, "duplicates", f.mix.Duplicate, "share of webhooks retried")
	fs.Float64Var(&f.mix.Reorder, "reorder", f.mix.Reorder, "chance that a webhook trades places with the next of its request (the two are not moved again)")
	fs.Uint64Var(&f.seed, "seed", 1, "seed of the traffic's shape")
	fs.BoolVar(&f.self, "self", false, "run the server in this process (fresh data directory, generated credentials, no rate limits)")
	fs.BoolVar(&f.ceiling, "ceiling", false, "also measure a bare net/http handler with the same traffic")
	fs.IntVar(&f.serverPID, "server-pid", 0, "pid of the local server process, to report its memory and CPU per webhook")
	fs.BoolVar(&f.json, "json", false, "print the report as JSON")
	fs.StringVar(&f.cpuProfile, "cpu-profile", "", "write a CPU profile of this process during the traffic (pprof format) to this file")
	documentEnv(fs)
	return cmd
}

// benchReport is what bench prints.
type benchReport struct {
	Target      string          `json:"target"`
	Rate        float64         `json:"rate,omitempty"`
	Concurrency int             `json:"concurrency"`
	Duration    time.Duration   `json:"duration_ns"`
	Watchers    int             `json:"watchers"`
	WatchVia    string          `json:"watch_via,omitempty"`
	InProgress  int             `json:"requests_in_progress"`
	CPUs        int             `json:"cpus"`
	Result      *loadgen.Result `json:"result"`
	// Ceiling is the bare handler's run (over TLS when CeilingTLS);
	// CeilingRatio the server's throughput as a share of it, in closed
	// loop (in open loop the server's throughput is the rate).
	Ceiling      *loadgen.Result `json:"ceiling,omitempty"`
	CeilingTLS   bool            `json:"ceiling_tls,omitempty"`
	CeilingRatio float64         `json:"ceiling_ratio,omitempty"`
	// Server is the server process's memory and CPU, when it is known.
	Server *benchServer `json:"server,omitempty"`
	// LoadCPUPerWebhook is bench's own CPU time per webhook answered 200
	// during the run: the load generator's share of the machine (not with
	// --self, where the server is in the process too).
	LoadCPUPerWebhook time.Duration `json:"load_cpu_per_webhook_ns,omitempty"`
	// Interrupted says a signal cut the run short: its figures are of less
	// than Duration, and bench exits 1.
	Interrupted bool `json:"interrupted,omitempty"`
}

// benchServer samples the server process before the watchers, with every
// watcher subscribed and idle (just before the traffic), and at the end of
// the traffic (the last answer, and the deliveries drained), before the
// watchers close their streams.
type benchServer struct {
	PID          int          `json:"pid"`
	Self         bool         `json:"self"` // the server runs in bench's process
	Start        loadgen.Proc `json:"start"`
	WatchersIdle loadgen.Proc `json:"watchers_idle,omitzero"`
	End          loadgen.Proc `json:"end,omitzero"`
	// CPUPerWebhook is the process's CPU time during the traffic per
	// webhook answered 200 (with --self, the load generator's too).
	CPUPerWebhook time.Duration `json:"cpu_per_webhook_ns,omitempty"`
	// Gone is why the process could not be read during the run (it ended,
	// say): the readings from then on, and CPUPerWebhook, are missing.
	Gone string `json:"gone,omitempty"`
}

// sample reads the server process into p, unless a reading failed before:
// a process gone has no readings from then on, and Gone says why.
func (s *benchServer) sample(p *loadgen.Proc) {
	*p = loadgen.Proc{}
	if s.Gone != "" {
		return
	}
	v, err := loadgen.ReadProc(s.PID)
	if err != nil {
		s.Gone = err.Error()
		return
	}
	*p = v
}

func (f *benchFlags) run(ctx context.Context, explicitAddr bool, stdout, stderr io.Writer) error {
	if f.self && f.serverPID != 0 {
		return errors.New("--self and --server-pid: the server of --self is this process")
	}
	if f.serverPID != 0 { // a pid of no process is refused before any traffic, --ceiling's too
		if _, err := loadgen.ReadProc(f.serverPID); err != nil {
			return fmt.Errorf("--server-pid: %w", err)
		}
	}
	url := webhookURL(f.httpAddr, f.client.tls || f.client.tlsCAFile != "")
	if u := os.Getenv(envWebhookURL); u != "" && !explicitAddr {
		url = u
	}
	if f.watchVia != "grpc" && f.watchVia != "sse" {
		return fmt.Errorf("--watch-via %q: want grpc or sse", f.watchVia)
	}
	if err := f.checkNumbers(); err != nil {
		return err
	}
	prof, err := openCPUProfile(f.cpuProfile)
	if err != nil {
		return err
	}
	defer prof.abandon() // a run that fails before its profile leaves none
	if !f.self && os.Getenv("GOGC") == "" {
		// The load generator shares the machine with the server it
		// measures: with 10,000 watchers the collector, scanning their
		// goroutines, took a sixth of its CPU at the default GOGC of 100.
		// Collecting less often leaves that CPU to the server. (With
		// --self the server's own collector would change too.)
		debug.SetGCPercent(400)
	}
	dial, apiKey := f.client.dial, f.client.apiKey
	if f.self {
		self, err := startSelf(ctx, stderr)
		if err != nil {
			return err
		}
		defer self.stop()
		url, f.serverPID = self.webhookURL, os.Getpid()
		dial = func() (*grpc.ClientConn, error) {
			return grpc.NewClient(self.grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()),
				grpc.WithPerRPCCredentials(auth.BearerCredentials{Token: self.apiKey, Insecure: true}))
		}
		apiKey = func() (string, error) { return self.apiKey, nil }
	}
	tlsCfg, err := f.client.tlsConfig()
	if err != nil {
		return err
	}
	cfg := loadgen.Config{
		WebhookURL:  url,
		TLS:         tlsCfg,
		Rate:        f.rate,
		Concurrency: f.concurrency,
		Duration:    f.duration,
		Requests:    f.requests,
		Watchers:    f.watchers,
		Mix:         f.mix,
		Seed:        f.seed,
		Drain:       f.drain,
	}
	report := &benchReport{Target: redactURL(url), Rate: f.rate, Concurrency: f.concurrency, Duration: f.duration, Watchers: f.watchers,
		InProgress: cfg.InProgress(), CPUs: runtime.GOMAXPROCS(0)}
	if f.watchers > 0 {
		report.WatchVia = f.watchVia
	}

	// What is refused (a key in clear) is refused before any traffic.
	if !f.self {
		if err := f.client.postTo(url); err != nil {
			return err
		}
	}
	switch {
	case f.watchers > 0 && f.watchVia == "sse":
		base := baseURL(url)
		if host, ok := strings.CutPrefix(base, "http://"); ok && !f.self {
			if err := f.client.inClear(host, fmt.Sprintf("the event streams' address %q", host)); err != nil {
				return err
			}
		}
		token, err := apiKey()
		if err != nil {
			return err
		}
		cfg.SSE = &loadgen.SSE{BaseURL: base, Token: token, TLS: tlsCfg}
	case f.watchers > 0:
		for range f.watchConns {
			conn, err := dial()
			if err != nil {
				return err
			}
			defer conn.Close()
			cfg.WatchConns = append(cfg.WatchConns, conn)
		}
	}
	if f.ceiling {
		c, err := loadgen.StartCeiling(strings.HasPrefix(url, "https://"))
		if err != nil {
			return fmt.Errorf("ceiling: %w", err)
		}
		report.CeilingTLS = c.TLS != nil
		report.Ceiling, err = loadgen.Run(ctx, ceilingConfig(cfg, c))
		c.Close()
		if err != nil {
			return fmt.Errorf("ceiling: %w", err)
		}
	}

	if f.serverPID != 0 {
		srv := &benchServer{PID: f.serverPID, Self: f.self}
		if srv.Start, err = loadgen.ReadProc(f.serverPID); err != nil {
			return fmt.Errorf("--server-pid: %w", err)
		}
		srv.WatchersIdle = srv.Start
		cfg.WatchersReady = func() { srv.sample(&srv.WatchersIdle) }
		cfg.TrafficDone = func() { srv.sample(&srv.End) }
		report.Server = srv
	}
	self0, _ := loadgen.ReadProc(os.Getpid())
	self1 := self0
	cfg.WatchersReady = both(cfg.WatchersReady, func() { self0, _ = loadgen.ReadProc(os.Getpid()) })
	cfg.TrafficDone = both(cfg.TrafficDone, func() { self1, _ = loadgen.ReadProc(os.Getpid()) })
	// The profile covers the traffic, as the load's CPU per webhook does:
	// from when the watchers are subscribed (or the start, without any)
	// to the last answer and the drain.
	if f.watchers > 0 {
		cfg.WatchersReady = both(cfg.WatchersReady, prof.start)
	} else if prof.start(); prof.err != nil {
		return prof.err
	}
	cfg.TrafficDone = both(cfg.TrafficDone, prof.stop)
	report.Result, err = loadgen.Run(ctx, cfg)
	prof.stop()
	if err == nil {
		err = prof.err
	}
	if err != nil {
		return err
	}
	report.Interrupted = ctx.Err() != nil
	if report.Result.OK > 0 && !f.self {
		report.LoadCPUPerWebhook = (self1.CPU - self0.CPU) / time.Duration(report.Result.OK)
	}
	if srv := report.Server; srv != nil {
		if ok := report.Result.OK; ok > 0 && srv.Gone == "" {
			srv.CPUPerWebhook = (srv.End.CPU - srv.WatchersIdle.CPU) / time.Duration(ok)
		}
	}
	if report.Ceiling != nil && report.Ceiling.Throughput > 0 && f.rate == 0 {
		report.CeilingRatio = report.Result.Throughput / report.Ceiling.Throughput
	}
	if f.json {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(report); err != nil {
			return err
		}
		return report.failed()
	}
	report.print(stdout)
	return report.failed()
}

// ceilingConfig is the run cfg turned on the bare handler c: the same
// traffic (senders, requests in progress, mix, seed; TLS when c serves it),
// but closed loop whatever --rate (at a rate the bare handler keeps up with,
// its throughput would be the rate) and without watchers.
func ceilingConfig(cfg loadgen.Config, c *loadgen.Ceiling) loadgen.Config {
	bare := cfg
	bare.Requests = cfg.InProgress()
	bare.WebhookURL, bare.TLS, bare.Rate = c.URL, c.TLS, 0
	bare.Watchers, bare.WatchConns, bare.SSE, bare.WatchersReady = 0, nil, nil, nil
	return bare
}

// openCPUProfile opens the file of --cpu-profile at path ("": no
// profile), before any traffic, so that a path it cannot write is refused
// at once. A file already there is emptied only when the profile starts:
// until then, a run that fails keeps it as it was (abandon).
func openCPUProfile(path string) (*cpuProfile, error) {
	p := &cpuProfile{path: path}
	if path == "" {
		return p, nil
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o666)
	if err == nil {
		p.created = true
	} else if errors.Is(err, os.ErrExist) {
		f, err = os.OpenFile(path, os.O_WRONLY, 0)
	}
	if err != nil {
		return nil, fmt.Errorf("--cpu-profile: %w", err)
	}
	p.f = f
	return p, nil
}

// cpuProfile profiles this process into f (nil: no profile) from start to
// stop; err is the first error of either. created says the file is bench's
// own, made for this run.
type cpuProfile struct {
	f       *os.File
	path    string
	created bool
	started bool
	err     error
}

func (p *cpuProfile) start() {
	if p.f == nil || p.started || p.err != nil {
		return
	}
	if fi, err := p.f.Stat(); err == nil && fi.Mode().IsRegular() { // not /dev/null, say
		if err := p.f.Truncate(0); err != nil {
			p.err = fmt.Errorf("--cpu-profile: %w", err)
			return
		}
	}
	if err := pprof.StartCPUProfile(p.f); err != nil {
		p.err = fmt.Errorf("--cpu-profile: %w", err)
		return
	}
	p.started = true
}

// stop writes and closes the profile, once.
func (p *cpuProfile) stop() {
	if !p.started {
		return
	}
	p.started = false
	pprof.StopCPUProfile()
	if err := p.f.Close(); err != nil && p.err == nil {
		p.err = fmt.Errorf("--cpu-profile: %w", err)
	}
	p.f = nil
}

// abandon closes the file of a profile that never started, and removes it
// if bench made it: an empty file is no profile.
func (p *cpuProfile) abandon() {
	if p.f == nil || p.started {
		return
	}
	p.f.Close()
	if p.created {
		os.Remove(p.path)
	}
	p.f = nil
}

// both returns a function calling f (if set), then g.
func both(f, g func()) func() {
	return func() {
		if f != nil {
			f()
		}
		g()
	}
}

// baseURL is scheme://host[:port] of url, without credentials.
func baseURL(url string) string {
	scheme, rest, ok := strings.Cut(url, "://")
	if !ok {
		return url
	}
	host, _, _ := strings.Cut(rest, "/")
	if at := strings.LastIndexByte(host, '@'); at >= 0 {
		host = host[at+1:]
	}
	return scheme + "://" + host
}

// redactURL drops a webhook key or user:password from a URL for the report.
// The key goes first: an "@" in it is no userinfo's end.
func redactURL(url string) string {
	suffix := ""
	if base, key, ok := strings.Cut(url, gateway.WebhookPath+"/"); ok && key != "" {
		url, suffix = base, gateway.WebhookPath+"/{key}"
	}
	if scheme, rest, ok := strings.Cut(url, "://"); ok {
		if at := strings.LastIndexByte(rest, '@'); at >= 0 {
			rest = rest[at+1:]
		}
		url = scheme + "://" + rest
	}
	return url + suffix
}

// failed is the run's error, after the report said why: it measured
// nothing (no webhook answered 200, or no watcher subscribed), or watchers
// never received updates the server had acknowledged, which the delivery
// latencies cannot show.
func (r *benchReport) failed() error {
	res := r.Result
	switch {
	case r.Interrupted:
		return errors.New("bench: interrupted, the figures are of a shorter run")
	case res.OK == 0:
		return errors.New("bench: no webhook was answered 200 (see errors)")
	case r.Watchers > 0 && res.WatchersReady == 0:
		return errors.New("bench: no watcher subscribed (see the watchers' errors)")
	case res.DeliveryLost > 0:
		return fmt.Errorf("bench: %d of %d expected deliveries never reached a watcher", res.DeliveryLost, res.DeliveryExpected)
	case r.Ceiling != nil && r.Ceiling.OK == 0:
		return errors.New("bench: the bare handler answered no webhook 200: no ceiling to compare with (see its errors)")
	}
	return nil
}

func (r *benchReport) print(w io.Writer) {
	mode := fmt.Sprintf("closed loop, %d senders", r.Concurrency)
	if r.Rate > 0 {
		mode = fmt.Sprintf("open loop at %s webhooks/s, at most %d in flight", perSecond(r.Rate), r.Concurrency)
	}
	watchers := fmt.Sprintf("%d watchers", r.Watchers)
	if r.WatchVia != "" {
		watchers += " (" + r.WatchVia + ")"
	}
	fmt.Fprintf(w, "bench: %s, %s, %s, %d CPUs -> %s\n", mode, r.Duration, watchers, r.CPUs, r.Target)
	res := r.Result
	fmt.Fprintf(w, "webhooks  %d sent, %d ok in %s: %s/s\n", res.Sent, res.OK, res.Elapsed.Round(time.Millisecond), perSecond(res.Throughput))
	fmt.Fprintf(w, "requests  %s\n", requestsLine(res, r.InProgress))
	fmt.Fprintf(w, "ingest    %s\n", latencyLine(res.Ingest))
	if r.Watchers > 0 {
		fmt.Fprintf(w, "delivery  %s\n", latencyLine(res.Delivery))
		fmt.Fprintf(w, "          %s\n", lostLine(res))
		fmt.Fprintf(w, "watchers  %d subscribed at the start, %d requests late, %d given up (SUCCESS refused or unanswered), errors: %s\n",
			res.WatchersReady, res.WatchLate, res.WatchAbandoned, kinds(res.WatchErrors))
	}
	fmt.Fprintf(w, "errors    %s\n", kinds(res.Errors))
	if res.Failed.Count > 0 {
		fmt.Fprintf(w, "failed    %s\n", latencyLine(res.Failed))
	}
	if m := r.Server; m != nil {
		who := fmt.Sprintf("pid %d", m.PID)
		if m.Self {
			who = "this process (server and load)"
		}
		fmt.Fprintf(w, "server    %s: RSS %s at the start", who, mib(m.Start.RSS))
		if r.Watchers > 0 && m.WatchersIdle.RSS > 0 {
			fmt.Fprintf(w, ", %s with %d idle watchers", mib(m.WatchersIdle.RSS), res.WatchersReady)
		}
		if m.Gone != "" {
			fmt.Fprintf(w, "; then no reading, did it end? %s\n", m.Gone)
		} else {
			fmt.Fprintf(w, ", %s at the end (peak %s); %s\n", mib(m.End.RSS), mib(m.End.PeakRSS), cpuPerWebhook(res, m.CPUPerWebhook))
		}
	}
	if r.Server == nil || !r.Server.Self {
		fmt.Fprintf(w, "load      %s in this process\n", cpuPerWebhook(res, r.LoadCPUPerWebhook))
	}
	if c := r.Ceiling; c != nil {
		bare := "bare net/http handler"
		if r.CeilingTLS {
			bare += " over TLS"
		}
		fmt.Fprintf(w, "ceiling   %s: %d sent, %d ok: %s/s, %s; errors %s\n", bare, c.Sent, c.OK, perSecond(c.Throughput), latencyLine(c.Ingest), kinds(c.Errors))
		switch {
		case r.Rate > 0:
			fmt.Fprintf(w, "          this server: no share of the ceiling in open loop (it took the rate); run without --rate\n")
		case c.OK == 0:
			fmt.Fprintf(w, "          this server: no share of a ceiling that answered nothing\n")
		case res.OK == 0:
			fmt.Fprintf(w, "          this server: no share of the ceiling, no webhook answered 200\n")
		default:
			fmt.Fprintf(w, "          this server: %.2f of the ceiling\n", r.CeilingRatio)
		}
	}
}

// cpuPerWebhook says the CPU time d per webhook answered 200, or that
// there is none when no webhook was, or when the CPU time read did not
// advance (/proc counts it in ticks of 10 ms): neither is 0 per webhook.
func cpuPerWebhook(res *loadgen.Result, d time.Duration) string {
	if res.OK == 0 {
		return "no CPU per webhook, no webhook answered 200"
	}
	if d == 0 {
		return "no CPU per webhook, less than a tick (10 ms) of CPU time counted in all"
	}
	return fmt.Sprintf("CPU %s per webhook", us(d))
}

// requestsLine says how many requests were started and sent whole, and
// warns when most were cut short: their mix is not the one asked for.
func requestsLine(res *loadgen.Result, inProgress int) string {
	line := fmt.Sprintf("%d started, %d sent whole, %d at a time", res.RequestsStarted, res.RequestsWhole, inProgress)
	if res.RequestsWhole*2 < res.RequestsStarted && res.Sent > 0 {
		every := time.Duration(float64(res.Elapsed) * float64(inProgress) / float64(res.Sent))
		line += fmt.Sprintf("; most were cut short (each got a webhook every %s), so the traffic was mostly their first webhooks: run longer, or with fewer --requests", every.Round(time.Millisecond))
	}
	return line
}

func latencyLine(l loadgen.Latency) string {
	if l.Count == 0 {
		return "none measured"
	}
	return fmt.Sprintf("p50 %s  p90 %s  p99 %s  max %s  (n=%d)", ms(l.P50), ms(l.P90), ms(l.P99), ms(l.Max), l.Count)
}

// lostLine says how many of the deliveries expected never arrived.
func lostLine(res *loadgen.Result) string {
	line := fmt.Sprintf("%d expected, %d lost (never arrived)", res.DeliveryExpected, res.DeliveryLost)
	if res.DeliveryResynced > 0 {
		line += fmt.Sprintf(", %d skipped by the server for watchers behind (a SNAPSHOT instead)", res.DeliveryResynced)
	}
	return line
}

func us(d time.Duration) string { return fmt.Sprintf("%.1fµs", float64(d)/float64(time.Microsecond)) }

func ms(d time.Duration) string { return fmt.Sprintf("%.2fms", float64(d)/float64(time.Millisecond)) }

// perSecond prints a rate: whole from 100 up, else to three significant
// digits, so that a slow one (0.5/s) does not read as 0 or 1.
func perSecond(v float64) string {
	if v >= 100 {
		return fmt.Sprintf("%.0f", v)
	}
	return strconv.FormatFloat(v, 'g', 3, 64)
}

func mib(b uint64) string { return fmt.Sprintf("%.0f MiB", float64(b)/(1<<20)) }

func kinds(m map[string]int64) string {
	if len(m) == 0 {
		return "none"
	}
	parts := make([]string, 0, len(m))
	for k, v := range m {
		parts = append(parts, fmt.Sprintf("%s %d", k, v))
	}
	slices.Sort(parts)
	return strings.Join(parts, ", ")
}

// selfServer is the in-process server of --self.
type selfServer struct {
	webhookURL, grpcAddr, apiKey string
	stop                         func()
}

// startSelf runs a server in this process as an operator would for a
// benchmark: fresh data directory, real credentials (a webhook key in the
// URL, an API key for the watchers), no per-address rate limit and no watch
// limits. Its logs go to stderr from warn up.
func startSelf(ctx context.Context, stderr io.Writer) (*selfServer, error) {
	dir, err := os.MkdirTemp("", "otpless-events-bench")
	if err != nil {
		return nil, err
	}
	webhookKey, apiKey := auth.NewSecret("wk_"), auth.NewSecret("ak_")
	tokenKey := make([]byte, 32)
	_, _ = rand.Read(tokenKey) // crypto/rand.Read never fails
	cfg := server.DefaultConfig()
	cfg.GRPCAddr, cfg.HTTPAddr, cfg.DataDir = "127.0.0.1:0", "127.0.0.1:0", dir
	cfg.Logger = slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	cfg.Security.APIKeys = []auth.APIKey{{Name: "bench", Hash: sha256.Sum256([]byte(apiKey)), Scopes: []auth.Scope{auth.ScopeWatch}}}
	cfg.Security.WatchTokenKeys = [][]byte{tokenKey}
	cfg.Security.Webhook = auth.WebhookConfig{Keys: []string{webhookKey}}
	cfg.Security.MaxWatchesPerCredential, cfg.Security.MaxWatchesPerRequest, cfg.Security.MaxWatches = 0, 0, 0

	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	srv, err := server.New(runCtx, cfg)
	if err != nil {
		cancel()
		os.RemoveAll(dir)
		return nil, fmt.Errorf("--self: %w", err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Run(runCtx) }()
	s := &selfServer{
		webhookURL: "http://" + srv.HTTPAddr().String() + gateway.WebhookPath + "/" + webhookKey,
		grpcAddr:   srv.GRPCAddr().String(),
		apiKey:     apiKey,
		stop: func() {
			cancel()
			if err := <-done; err != nil {
				fmt.Fprintln(stderr, "bench: server:", err)
			}
			os.RemoveAll(dir)
		},
	}
	if err := waitServing(ctx, s.grpcAddr); err != nil {
		s.stop()
		return nil, fmt.Errorf("--self: %w", err)
	}
	return s, nil
}

// waitServing waits until the server at addr reports SERVING, for 30
// seconds at most; ctx ending (a signal) interrupts the wait.
func waitServing(ctx context.Context, addr string) error {
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer conn.Close()
	waitCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	health := healthpb.NewHealthClient(conn)
	for {
		resp, err := health.Check(waitCtx, &healthpb.HealthCheckRequest{}, grpc.WaitForReady(true))
		if err == nil && resp.GetStatus() == healthpb.HealthCheckResponse_SERVING {
			return nil
		}
		select {
		case <-waitCtx.Done():
			if ctx.Err() != nil {
				return errors.New("interrupted while the server was starting")
			}
			return fmt.Errorf("server not serving: %w", waitCtx.Err())
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// checkNumbers refuses, before any traffic, the numeric flags out of their
// range, naming the flag.
func (f *benchFlags) checkNumbers() error {
	var errs []error
	for _, c := range []struct {
		flag string
		v    int
		min  int
	}{{"concurrency", f.concurrency, 1}, {"requests", f.requests, 0}, {"watchers", f.watchers, 0}, {"watch-conns", f.watchConns, 1}} {
		if c.v < c.min {
			errs = append(errs, fmt.Errorf("--%s %d: want %d or more", c.flag, c.v, c.min))
		}
	}
	for _, c := range []struct {
		flag string
		v    float64
	}{{"fallbacks", f.mix.Fallback}, {"duplicates", f.mix.Duplicate}, {"reorder", f.mix.Reorder}} {
		if !(c.v >= 0 && c.v <= 1) {
			errs = append(errs, fmt.Errorf("--%s %v: want a share from 0 to 1", c.flag, c.v))
		}
	}
	if f.requests > 0 && f.requests < f.watchers {
		errs = append(errs, fmt.Errorf("--requests %d: want at least --watchers (%d), a request in progress each", f.requests, f.watchers))
	}
	if f.requests > 0 && f.requests < f.concurrency {
		errs = append(errs, fmt.Errorf("--requests %d: want at least --concurrency (%d), or webhooks of one request are in flight together, reordered beyond --reorder", f.requests, f.concurrency))
	}
	if !(f.rate >= 0) || math.IsInf(f.rate, 0) {
		errs = append(errs, fmt.Errorf("--rate %v: want 0 (closed loop) or a positive number", f.rate))
	}
	for _, c := range []struct {
		flag string
		v    time.Duration
	}{{"duration", f.duration}, {"drain", f.drain}} {
		if c.v <= 0 {
			errs = append(errs, fmt.Errorf("--%s %v: want a positive duration", c.flag, c.v))
		}
	}
	return errors.Join(errs...)
}
