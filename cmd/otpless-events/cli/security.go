package cli

import (
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"

	"github.com/spf13/pflag"

	"github.com/otpless-events/otpless-events/server"
	"github.com/otpless-events/otpless-events/server/auth"
)

// Environment variables holding secrets themselves (each also has a
// --…-file flag). Secrets are never taken from command-line values.
const (
	envAPIKeys        = EnvPrefix + "API_KEYS"
	envWebhookKeys    = EnvPrefix + "WEBHOOK_KEYS"
	envWebhookBasic   = EnvPrefix + "WEBHOOK_BASIC"
	envSigningSecrets = EnvPrefix + "WEBHOOK_SIGNING_SECRETS"
	envWatchTokenKeys = EnvPrefix + "WATCH_TOKEN_KEYS"
)

// Files serve keeps in the data directory when no secret is configured.
const (
	webhookKeyFile    = "webhook-key"
	apiKeysFile       = "api-keys"
	watchTokenKeyFile = "watch-token-key"
)

type securityFlags struct {
	apiKeysFile, webhookKeysFile, webhookBasicFile, signingSecretsFile, watchTokenKeysFile string
	allowUnauthenticated                                                                   bool
	allowCIDRs, trustedProxies                                                             string
	rate, failureRate                                                                      float64
	burst, failureBurst                                                                    int
	maxPerCredential, maxPerToken, maxPerRequest, maxWatches                               int
	tlsCert, tlsKey, clientCA                                                              string

	flags *pflag.FlagSet // registered in, to name where a file flag's value came from
}

func (f *securityFlags) register(fs *pflag.FlagSet) {
	f.flags = fs
	fs.StringVar(&f.apiKeysFile, "api-keys-file", "", "file of API keys, one per line: NAME SHA256-HEX SCOPES (also $"+envAPIKeys+")")
	fs.StringVar(&f.webhookKeysFile, "webhook-keys-file", "", "file of webhook URL keys, one per line (also $"+envWebhookKeys+")")
	fs.StringVar(&f.webhookBasicFile, "webhook-basic-file", "", "file of webhook Basic credentials USER:PASSWORD, one per line (also $"+envWebhookBasic+")")
	fs.StringVar(&f.signingSecretsFile, "webhook-signing-secrets-file", "", "file of Standard Webhooks signing secrets; when set, signatures are required (also $"+envSigningSecrets+")")
	fs.StringVar(&f.watchTokenKeysFile, "watch-token-keys-file", "", "file of watch-token signing keys, newest first (also $"+envWatchTokenKeys+")")
	fs.BoolVar(&f.allowUnauthenticated, "allow-unauthenticated-webhooks", false, "accept webhooks without credentials on /v1/webhooks/otpless")
	// Checked when set, so that an error names the variable or the flag.
	checkPrefixes := func(s string) error { _, err := auth.ParsePrefixes(s); return err }
	fs.Var(checkedString{&f.allowCIDRs, checkPrefixes}, "webhook-allow-cidrs", "comma-separated networks webhooks may come from (empty: any)")
	fs.Var(checkedString{&f.trustedProxies, checkPrefixes}, "trusted-proxies", "comma-separated networks of proxies whose X-Forwarded-For is believed")
	fs.Float64Var(&f.rate, "webhook-rate", 0, "authenticated webhooks per second per client address (0: unlimited)")
	fs.IntVar(&f.burst, "webhook-burst", 400, "burst of authenticated webhooks per client address")
	fs.Float64Var(&f.failureRate, "webhook-failure-rate", 200, "webhooks with failed credentials per second per client address (0: unlimited)")
	fs.IntVar(&f.failureBurst, "webhook-failure-burst", 400, "burst of webhooks with failed credentials per client address")
	fs.IntVar(&f.maxPerCredential, "max-watches-per-credential", 1000, "concurrent watch streams per credential (0: unlimited)")
	fs.IntVar(&f.maxPerToken, "max-watches-per-token", 4, "concurrent watch streams per watch token (0: unlimited)")
	fs.IntVar(&f.maxPerRequest, "max-watches-per-request", 20, "concurrent watch streams per request id (0: unlimited)")
	fs.IntVar(&f.maxWatches, "max-watches", server.DefaultMaxWatches, "concurrent watch streams in all, over gRPC, SSE and NDJSON (0: unlimited)")
	fs.StringVar(&f.tlsCert, "tls-cert", "", "TLS certificate file for both listeners")
	fs.StringVar(&f.tlsKey, "tls-key", "", "TLS key file for both listeners")
	fs.StringVar(&f.clientCA, "grpc-client-ca", "", "CA file; gRPC clients must present a certificate it signed (mutual TLS)")
}

// generated are credentials made on this start, to be shown once.
type generated struct {
	webhookKey, apiKey string
}

// settings is the Security the flags give without a secret: limits,
// rates, networks and TLS files, which serve can check before a first
// start makes credentials.
func (f *securityFlags) settings() (server.Security, error) {
	sec := server.Security{
		MaxWatchesPerCredential: f.maxPerCredential,
		MaxWatchesPerToken:      f.maxPerToken,
		MaxWatchesPerRequest:    f.maxPerRequest,
		MaxWatches:              f.maxWatches,
		TLSCertFile:             f.tlsCert,
		TLSKeyFile:              f.tlsKey,
		ClientCAFile:            f.clientCA,
	}
	w := &sec.Webhook
	w.AllowUnauthenticated = f.allowUnauthenticated
	w.RatePerSecond, w.Burst = f.rate, f.burst
	w.FailureRatePerSecond, w.FailureBurst = f.failureRate, f.failureBurst
	var err error
	if w.AllowedNets, err = auth.ParsePrefixes(f.allowCIDRs); err != nil {
		return sec, fmt.Errorf("--webhook-allow-cidrs: %w", err)
	}
	if w.TrustedProxies, err = auth.ParsePrefixes(f.trustedProxies); err != nil {
		return sec, fmt.Errorf("--trusted-proxies: %w", err)
	}
	return sec, nil
}

// resolve is settings with the configured secrets and, for what is not
// configured, credentials loaded or created in dataDir. Every configured
// secret is read and checked before any credential is made: a file that
// cannot be read, or a secret no server can use, must not leave behind an
// admin key made on this start, which only its printing shows.
func (f *securityFlags) resolve(dataDir string) (server.Security, generated, error) {
	var gen generated
	sec, err := f.settings()
	if err != nil {
		return sec, gen, err
	}
	w := &sec.Webhook
	// Each source of a kind of secret, its variable and its file, is read
	// and checked alone, so that an error names the one it is in.
	if w.Keys, err = fromSources(f.flags, envWebhookKeys, "webhook-keys-file", f.webhookKeysFile, func(text string) ([]string, error) {
		keys := secrets(text)
		return keys, (&auth.WebhookConfig{Keys: keys}).CheckSecrets()
	}); err != nil {
		return sec, gen, err
	}
	if w.Basic, err = fromSources(f.flags, envWebhookBasic, "webhook-basic-file", f.webhookBasicFile, parseBasic); err != nil {
		return sec, gen, err
	}
	if w.SigningSecrets, err = fromSources(f.flags, envSigningSecrets, "webhook-signing-secrets-file", f.signingSecretsFile, func(text string) ([]string, error) {
		signing := secrets(text)
		return signing, (&auth.WebhookConfig{SigningSecrets: signing}).CheckSecrets()
	}); err != nil {
		return sec, gen, err
	}
	if sec.APIKeys, err = fromSources(f.flags, envAPIKeys, "api-keys-file", f.apiKeysFile, auth.ParseAPIKeys); err != nil {
		return sec, gen, err
	}
	seen := map[string]bool{}
	for _, k := range sec.APIKeys {
		if seen[k.Name] { // once in the variable, once in the file
			return sec, gen, fmt.Errorf("%s, %s: api key %q configured twice", envAPIKeys, source(f.flags, "api-keys-file"), k.Name)
		}
		seen[k.Name] = true
	}
	if sec.WatchTokenKeys, err = fromSources(f.flags, envWatchTokenKeys, "watch-token-keys-file", f.watchTokenKeysFile, func(text string) ([][]byte, error) {
		var keys [][]byte
		for _, k := range secrets(text) {
			keys = append(keys, []byte(k))
		}
		return keys, auth.CheckTokenKeys(keys)
	}); err != nil {
		return sec, gen, err
	}

	if !w.Configured() {
		if err := canKeep(dataDir, "webhook key", "$"+envWebhookKeys+" (or --webhook-keys-file), Basic credentials or signing secrets"); err != nil {
			return sec, gen, err
		}
		key, created, err := auth.LoadOrCreateSecret(dataDir, webhookKeyFile, "whk_")
		if err != nil {
			return sec, gen, err
		}
		w.Keys = []string{key}
		if created {
			gen.webhookKey = key
		}
	}
	if len(sec.APIKeys) == 0 {
		if err := canKeep(dataDir, "admin API key", "$"+envAPIKeys+" (or --api-keys-file)"); err != nil {
			return sec, gen, err
		}
		if sec.APIKeys, gen.apiKey, err = loadOrCreateAdminKey(dataDir); err != nil {
			return sec, gen, err
		}
	}
	if len(sec.WatchTokenKeys) == 0 {
		if err := canKeep(dataDir, "watch-token key", "$"+envWatchTokenKeys+" (or --watch-token-keys-file)"); err != nil {
			return sec, gen, err
		}
		key, _, err := auth.LoadOrCreateSecret(dataDir, watchTokenKeyFile, "")
		if err != nil {
			return sec, gen, err
		}
		sec.WatchTokenKeys = [][]byte{[]byte(key)}
	}
	return sec, gen, nil
}

// canKeep refuses to make a credential (what) without a data directory to
// keep it in, naming how to configure it instead.
func canKeep(dataDir, what, configure string) error {
	if dataDir == "" {
		return fmt.Errorf("no --data-dir to keep a generated %s in: configure one with %s, or give --data-dir", what, configure)
	}
	return nil
}

// looseSecretFiles are the files of secrets this start reads (configured,
// or kept in dataDir) that other users may read or write: worth a warning,
// as the files serve makes are 0600.
func (f *securityFlags) looseSecretFiles(dataDir string) []string {
	if runtime.GOOS == "windows" { // no such mode bits
		return nil
	}
	files := []string{f.apiKeysFile, f.webhookKeysFile, f.webhookBasicFile, f.signingSecretsFile, f.watchTokenKeysFile, f.tlsKey}
	if dataDir != "" { // else nothing is kept, nor read, there
		files = append(files, filepath.Join(dataDir, webhookKeyFile), filepath.Join(dataDir, apiKeysFile), filepath.Join(dataDir, watchTokenKeyFile))
	}
	var loose []string
	for _, file := range files {
		if info, err := os.Stat(file); file != "" && err == nil && info.Mode().Perm()&0o077 != 0 {
			loose = append(loose, file)
		}
	}
	return loose
}

// fromSources parses a kind of secret from the environment variable env and
// from the file given by the flag fileFlag (empty: none), each alone, so
// that an error names where it came from: the variable, or the file and
// where its name came from.
func fromSources[T any](flags *pflag.FlagSet, env, fileFlag, file string, parse func(text string) ([]T, error)) ([]T, error) {
	out, err := parse(os.Getenv(env))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", env, err)
	}
	if file == "" {
		return out, nil
	}
	b, err := os.ReadFile(file)
	if err != nil { // names the file
		return nil, fmt.Errorf("%s: %w", source(flags, fileFlag), err)
	}
	more, err := parse(string(b))
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", source(flags, fileFlag), file, err)
	}
	return append(out, more...), nil
}

// secrets are the entries of a variable's or a file's text (auth.ReadSecrets).
func secrets(text string) []string {
	s, _ := auth.ReadSecrets(text, "") // reads no file, so fails never
	return s
}

// parseBasic parses webhook Basic credentials, USER:PASSWORD each.
func parseBasic(text string) ([]auth.BasicCredential, error) {
	var out []auth.BasicCredential
	for _, b := range secrets(text) {
		user, pass, ok := strings.Cut(b, ":")
		if !ok || user == "" || len(pass) < 8 {
			return nil, fmt.Errorf("webhook basic credentials: want USER:PASSWORD with a password of 8 or more bytes")
		}
		out = append(out, auth.BasicCredential{User: user, Password: pass})
	}
	return out, nil
}

// loadOrCreateAdminKey reads dataDir/api-keys, or creates it with one admin
// key whose plain text is returned to be shown once: only its hash is kept.
func loadOrCreateAdminKey(dataDir string) ([]auth.APIKey, string, error) {
	var plain string
	line, created, err := auth.LoadOrCreateSecretWith(dataDir, apiKeysFile, func() string {
		plain = auth.NewSecret("oek_")
		return auth.FormatAPIKey("admin", plain, []auth.Scope{auth.ScopeAdmin})
	})
	if err != nil {
		return nil, "", err
	}
	keys, err := auth.ParseAPIKeys(line)
	if err != nil {
		return nil, "", fmt.Errorf("%s/%s: %w", dataDir, apiKeysFile, err)
	}
	if !created {
		plain = ""
	}
	return keys, plain, nil
}

// announce prints credentials made on this start; they are not shown again.
// The webhook URL is for the HTTP listener at addr (host:port): on all
// interfaces (":8080"), it names the loopback address, for this machine's
// shell, and says to name the host instead for OTPLESS; on loopback (the
// default), it says that OTPLESS cannot reach it, and how to listen for
// OTPLESS.
func announce(w io.Writer, gen generated, scheme, addr string) {
	if gen == (generated{}) {
		return
	}
	fmt.Fprintln(w, "First start: generated credentials. Shown this once; copy them now.")
	if gen.webhookKey != "" {
		note := "give this URL to OTPLESS"
		if host, port, err := net.SplitHostPort(addr); err == nil {
			if port == "0" { // a start that failed before it had a port
				port = "PORT"
			}
			switch ip := net.ParseIP(host); {
			case host == "" || ip != nil && ip.IsUnspecified(): // Go listens on both families there
				host = "127.0.0.1"
				note = "for OTPLESS, this host's public name in place of 127.0.0.1"
			case loopback(addr):
				note = "this machine only: OTPLESS cannot reach " + host + "; for OTPLESS, serve with --http-addr :" + port + " and give this host's public name"
			}
			if port == "PORT" {
				note += "; PORT: the port serve listens on"
			}
			addr = net.JoinHostPort(host, port)
		}
		fmt.Fprintf(w, "  export OTPLESS_WEBHOOK_URL=%s://%s/v1/webhooks/otpless/%s   # %s\n", scheme, addr, gen.webhookKey, note)
	}
	if gen.apiKey != "" {
		fmt.Fprintf(w, "  export OTPLESS_EVENTS_API_KEY=%s   # admin API key; only its hash is kept\n", gen.apiKey)
	}
}
