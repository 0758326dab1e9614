package cli_test

import (
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/otpless-events/otpless-events/internal/testserver"
)

// serveOnATakenPort runs serve with its HTTP address taken, and more
// flags: it stops at once, with an error.
func serveOnATakenPort(t *testing.T, flags ...string) (code int, stderr string) {
	t.Helper()
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	args := append([]string{"serve", "--data-dir", t.TempDir(), "--http-addr", taken.Addr().String(), "--grpc-addr", "127.0.0.1:0", "--metrics-addr", ""}, flags...)
	code, _, stderr = run(t, args...)
	return code, stderr
}

// An error that stops serve after its logger exists is a line of the log,
// in the log's format: with --log-format json, every line of standard
// error is JSON, the last one saying why serve stopped.
func TestServeFailureIsLogged(t *testing.T) {
	t.Parallel()
	code, errOut := serveOnATakenPort(t, "--log-format", "json")
	lines := strings.Split(strings.TrimSpace(errOut), "\n")
	var last map[string]any
	for _, l := range lines {
		if err := json.Unmarshal([]byte(l), &last); err != nil {
			t.Fatalf("exit %d; a line of standard error is not JSON: %q\n%s", code, l, errOut)
		}
	}
	if code != 1 || last["level"] != "ERROR" || last["msg"] != "serve stopped" || !strings.Contains(fmt.Sprint(last["error"]), "address already in use") {
		t.Errorf("exit %d, last line %v: want exit 1 and an ERROR line saying why", code, last)
	}
}

// With the log's level above errors, the error is printed as before: serve
// never exits 1 saying nothing.
func TestServeFailureIsPrintedAboveErrorLevel(t *testing.T) {
	t.Parallel()
	code, errOut := serveOnATakenPort(t, "--log-level", "ERROR+1")
	if code != 1 || !strings.Contains(errOut, "error: ") || !strings.Contains(errOut, "address already in use") {
		t.Errorf("exit %d, standard error %q: want exit 1 and the error", code, errOut)
	}
}

// A configuration unusable whatever the credentials is refused before a
// first start makes them: they are printed once only, and would be lost.
// So are the settings of the security flags that hold no secret: limits,
// rates and TLS files.
func TestServeRefusesBadConfigBeforeMakingCredentials(t *testing.T) {
	t.Parallel()
	missing := t.TempDir()
	cert, _ := testserver.SelfSigned(t)
	_, otherKey := testserver.SelfSigned(t)
	secrets := t.TempDir()
	secret := func(name, text string) string {
		file := filepath.Join(secrets, name)
		if err := os.WriteFile(file, []byte(text+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		return file
	}
	for _, tc := range []struct {
		name  string
		flags []string
		says  string
	}{
		{"empty http address", []string{"--http-addr", ""}, "http"},
		{"negative watch limit", []string{"--max-watches-per-token", "-1"}, "must not be negative"},
		{"negative watches in all", []string{"--max-watches", "-1"}, "must not be negative"},
		{"TLS certificate without key", []string{"--tls-cert", "cert.pem"}, "TLS needs both"},
		{"client CA without TLS", []string{"--grpc-client-ca", "ca.pem"}, "mutual TLS"},
		{"no TLS certificate file", []string{"--tls-cert", "missing-cert.pem", "--tls-key", "missing-key.pem"}, "missing-cert.pem"},
		{"another certificate's key", []string{"--tls-cert", cert, "--tls-key", otherKey}, "TLS certificate " + cert + " and key " + otherKey + ": tls: private key does not match"},
		{"negative webhook rate", []string{"--webhook-rate", "-1"}, "rate of webhooks"},
		{"no burst for the failure rate", []string{"--webhook-failure-burst", "0"}, "burst of failed webhooks"},
		// Refused whether or not its rate is set: it would be refused
		// only once someone set the rate.
		{"negative burst without a rate", []string{"--webhook-burst", "-1"}, "burst of webhooks per client address must not be negative, got -1"},
		{"negative failure burst without a rate", []string{"--webhook-failure-rate", "0", "--webhook-failure-burst", "-2"}, "burst of failed webhooks per client address must not be negative, got -2"},
		{"gRPC address without a port", []string{"--grpc-addr", "localhost"}, "missing port"},
		{"HTTP address with a port that is no number", []string{"--http-addr", "127.0.0.1:80a"}, "http address"},
		{"metrics address without a port", []string{"--metrics-addr", "127.0.0.1"}, "metrics address"},
		{"gRPC port out of range", []string{"--grpc-addr", "127.0.0.1:65536"}, "grpc address"},
		{"PostgreSQL DSN that does not parse", []string{"--store", "postgres://u@127.0.0.1:1/db?pool_max_conns=many"}, "pool_max_conns"},
		// The operator's own value, not masked as a number sent in a
		// webhook would be.
		{"body bound over 512 MiB", []string{"--max-body-bytes", "600000000"}, "got 600000000"},
		// A secret configured in a file that cannot be read: what else is
		// not configured is not made either (an admin key made, then not
		// printed, would be lost).
		{"no API keys file", []string{"--api-keys-file", filepath.Join(missing, "api-keys")}, "api-keys"},
		{"no watch-token keys file", []string{"--watch-token-keys-file", filepath.Join(missing, "token-keys")}, "token-keys"},
		// A secret configured that no server can use: the start that
		// refuses it makes nothing either.
		{"short webhook key", []string{"--webhook-keys-file", secret("short-webhook-key", "whk_short")}, "shorter than 16 bytes"},
		{"webhook key holding /", []string{"--webhook-keys-file", secret("slash-webhook-key", "whk_0123456789/abcdef")}, "no webhook URL can carry"},
		{"short signing secret", []string{"--webhook-signing-secrets-file", secret("short-signing-secret", "short")}, "shorter than 16 bytes"},
		// Lengths are counted, and said, in bytes: a character may be
		// several.
		{"short Basic password", []string{"--webhook-basic-file", secret("short-basic", "otpless:ééé")}, "a password of 8 or more bytes"},
		{"signing secret not base64", []string{"--webhook-signing-secrets-file", secret("bad-whsec", "whsec_!!!!")}, "not valid base64"},
		{"short watch-token key", []string{"--watch-token-keys-file", secret("short-token-key", "short")}, "shorter than 32 bytes"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			args := append([]string{"serve", "--data-dir", dir, "--http-addr", "127.0.0.1:0", "--grpc-addr", "127.0.0.1:0", "--metrics-addr", ""}, tc.flags...)
			code, out, errOut := run(t, args...)
			if code != 1 || strings.Contains(out, "export") || !strings.Contains(errOut, tc.says) {
				t.Errorf("serve %s: exit %d, stdout %q, stderr %q; want 1, no credentials printed, saying %q", strings.Join(tc.flags, " "), code, out, errOut, tc.says)
			}
			if entries, _ := os.ReadDir(dir); len(entries) != 0 {
				t.Errorf("serve refused its configuration but left %d files in its data directory", len(entries))
			}
		})
	}
}

// Without a data directory, a credential that is not configured cannot be
// made and kept: serve says which to configure, not that mkdir failed.
func TestServeWithoutDataDirNamesTheCredentials(t *testing.T) {
	t.Parallel()
	store := filepath.Join(t.TempDir(), "x.db")
	code, out, errOut := run(t, "serve", "--data-dir", "", "--store", store, "--http-addr", "127.0.0.1:0", "--grpc-addr", "127.0.0.1:0", "--metrics-addr", "")
	if code != 1 || strings.Contains(out, "export") || !strings.Contains(errOut, "--data-dir") || !strings.Contains(errOut, "OTPLESS_EVENTS_WEBHOOK_KEYS") || strings.Contains(errOut, "mkdir") {
		t.Errorf("serve --data-dir '' without credentials: exit %d, stdout %q, stderr %q; want 1, naming --data-dir and the credentials to configure", code, out, errOut)
	}
}

// A file of secrets others may read is worth a warning: serve makes its own
// 0600, and uses what it is given as it is.
func TestServeWarnsOfLooseSecretFiles(t *testing.T) {
	t.Parallel()
	keys := filepath.Join(t.TempDir(), "webhook-keys")
	if err := os.WriteFile(keys, []byte("wk_loose-but-long-enough-0123456789\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(keys, 0o644); err != nil { // whatever the umask
		t.Fatal(err)
	}
	_, errOut := serveOnATakenPort(t, "--webhook-keys-file", keys)
	if !strings.Contains(errOut, "chmod 600") || !strings.Contains(errOut, keys) {
		t.Errorf("serve with a webhook key file of mode 0644 logged:\n%s\nwant a warning naming it", errOut)
	}
	if err := os.Chmod(keys, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, errOut := serveOnATakenPort(t, "--webhook-keys-file", keys); strings.Contains(errOut, "chmod 600") {
		t.Errorf("serve warned of a file of mode 0600:\n%s", errOut)
	}
}

// A log level serve cannot read is named with the ones it can.
func TestServeRefusesUnknownLogLevel(t *testing.T) {
	t.Parallel()
	code, _, errOut := run(t, "serve", "--data-dir", t.TempDir(), "--log-level", "loud")
	if code != 1 || !strings.Contains(errOut, `log level "loud": want debug, info, warn or error`) {
		t.Errorf("serve --log-level loud: exit %d, stderr %q; want 1 naming the levels", code, errOut)
	}
}

// A log level or format set in the environment that serve cannot read is
// refused naming the variable, as a number or duration there is.
func TestServeNamesTheLogVariables(t *testing.T) { // not parallel: Setenv
	for _, tc := range []struct{ env, says string }{
		{"OTPLESS_EVENTS_LOG_LEVEL", `log level "bogus": want debug, info, warn or error`},
		{"OTPLESS_EVENTS_LOG_FORMAT", `log format "bogus": want text or json`},
		{"OTPLESS_EVENTS_WRITE_QUEUE", `invalid argument "bogus"`}, // the others' way
	} {
		t.Run(tc.env, func(t *testing.T) {
			t.Setenv(tc.env, "bogus")
			code, _, errOut := run(t, "serve", "--data-dir", t.TempDir(), "--http-addr", "127.0.0.1:0", "--grpc-addr", "127.0.0.1:0", "--metrics-addr", "")
			if code != 1 || !strings.Contains(errOut, tc.env+": ") || !strings.Contains(errOut, tc.says) {
				t.Errorf("serve with %s=bogus: exit %d, stderr %q; want 1, naming %s and saying %s", tc.env, code, errOut, tc.env, tc.says)
			}
		})
	}
}

// Every setting serve refuses is named where its value came from: the
// environment variable, or the flag. A bad $OTPLESS_EVENTS_WEBHOOK_ALLOW_CIDRS
// or $OTPLESS_EVENTS_TRUSTED_PROXIES was named as its flag, and the
// config: refusals named neither, only the setting in words.
func TestServeNamesWhereABadSettingCameFrom(t *testing.T) { // not parallel: Setenv
	dir := t.TempDir()
	basic := filepath.Join(dir, "basic")
	key := "ops " + strings.Repeat("ab", 32) + " read"
	keys := filepath.Join(dir, "api-keys")
	for file, text := range map[string]string{basic: "otpless:short", keys: key} {
		if err := os.WriteFile(file, []byte(text+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct {
		env, value string
		flags      []string
		says       string
	}{
		{"OTPLESS_EVENTS_WEBHOOK_ALLOW_CIDRS", "10.0.0.0/33", nil, `OTPLESS_EVENTS_WEBHOOK_ALLOW_CIDRS: invalid argument "10.0.0.0/33" for "--webhook-allow-cidrs" flag: "10.0.0.0/33" is neither a CIDR nor an address`},
		{"OTPLESS_EVENTS_TRUSTED_PROXIES", "proxy", nil, `OTPLESS_EVENTS_TRUSTED_PROXIES: invalid argument "proxy" for "--trusted-proxies" flag: "proxy" is neither a CIDR nor an address`},
		{"", "", []string{"--trusted-proxies", "proxy"}, `invalid argument "proxy" for "--trusted-proxies" flag: "proxy" is neither a CIDR nor an address`},
		{"OTPLESS_EVENTS_MAX_BATCH", "5000", nil, "config: OTPLESS_EVENTS_MAX_BATCH: max batch must be at most 2048 webhooks, got 5000"},
		{"", "", []string{"--max-batch", "5000"}, "config: --max-batch: max batch must be at most 2048 webhooks, got 5000"},
		{"OTPLESS_EVENTS_MAX_WATCH_DURATION", "2h", nil, "config: OTPLESS_EVENTS_MAX_WATCH_DURATION: max watch duration must be at most 1h0m0s"},
		{"OTPLESS_EVENTS_GRPC_ADDR", "localhost", nil, `config: OTPLESS_EVENTS_GRPC_ADDR: grpc address "localhost": missing port`},
		{"OTPLESS_EVENTS_CORS_ORIGINS", "example.com", nil, `config: OTPLESS_EVENTS_CORS_ORIGINS: CORS origin "example.com"`},
		{"OTPLESS_EVENTS_STORE", "mysql://db", nil, `config: OTPLESS_EVENTS_STORE: store scheme "mysql" is not supported`},
		{"OTPLESS_EVENTS_WEBHOOK_BURST", "-1", nil, "config: OTPLESS_EVENTS_WEBHOOK_BURST: webhooks: the burst of webhooks per client address must not be negative"},
		{"OTPLESS_EVENTS_MAX_WATCHES", "-1", nil, "config: OTPLESS_EVENTS_MAX_WATCHES: max watches must not be negative"},
		{"OTPLESS_EVENTS_TLS_CERT", "cert.pem", nil, "config: OTPLESS_EVENTS_TLS_CERT: TLS needs both a certificate and a key"},
		// Secrets: the variable, or the file and where its name came from.
		{"OTPLESS_EVENTS_WEBHOOK_BASIC", "otpless", nil, "OTPLESS_EVENTS_WEBHOOK_BASIC: webhook basic credentials: want USER:PASSWORD"},
		{"OTPLESS_EVENTS_WATCH_TOKEN_KEYS", "short", nil, "OTPLESS_EVENTS_WATCH_TOKEN_KEYS: watch tokens: a signing key is shorter than 32 bytes"},
		{"OTPLESS_EVENTS_WEBHOOK_SIGNING_SECRETS", "whsec_!!!!", nil, "OTPLESS_EVENTS_WEBHOOK_SIGNING_SECRETS: webhooks: a whsec_ signing secret is not valid base64"},
		{"OTPLESS_EVENTS_WEBHOOK_KEYS", "whk_short", nil, "OTPLESS_EVENTS_WEBHOOK_KEYS: webhooks: a webhook key is shorter than 16 bytes"},
		{"OTPLESS_EVENTS_WEBHOOK_BASIC_FILE", basic, nil, "OTPLESS_EVENTS_WEBHOOK_BASIC_FILE " + basic + ": webhook basic credentials"},
		{"", "", []string{"--webhook-basic-file", basic}, "--webhook-basic-file " + basic + ": webhook basic credentials"},
		{"OTPLESS_EVENTS_API_KEYS", "ops", nil, "OTPLESS_EVENTS_API_KEYS: api key 1: want NAME SHA256-HEX SCOPES"},
		{"OTPLESS_EVENTS_API_KEYS", key, []string{"--api-keys-file", keys}, `OTPLESS_EVENTS_API_KEYS, --api-keys-file: api key "ops" configured twice`},
		// Settings refused together are named each where it came from.
		{"OTPLESS_EVENTS_HTTP_ADDR", "127.0.0.1:9", []string{"--grpc-addr", "127.0.0.1:9"}, `config: --grpc-addr, OTPLESS_EVENTS_HTTP_ADDR: grpc address "127.0.0.1:9" and http address "127.0.0.1:9" listen on the same port`},
	} {
		t.Run(tc.env+strings.Join(tc.flags, " "), func(t *testing.T) {
			if tc.env != "" {
				t.Setenv(tc.env, tc.value)
			}
			args := []string{"serve", "--data-dir", t.TempDir(), "--metrics-addr", ""}
			for _, f := range []string{"grpc-addr", "http-addr"} {
				if tc.env != "OTPLESS_EVENTS_"+strings.ToUpper(strings.ReplaceAll(f, "-", "_")) && !slices.Contains(tc.flags, "--"+f) {
					args = append(args, "--"+f, "127.0.0.1:0")
				}
			}
			code, _, errOut := run(t, append(args, tc.flags...)...)
			errOut = strings.ReplaceAll(errOut, `\"`, `"`) // quoted in the log line
			if code != 1 || !strings.Contains(errOut, tc.says) {
				t.Errorf("serve %s with %s=%s: exit %d, stderr %q; want 1 saying %s", strings.Join(tc.flags, " "), tc.env, tc.value, code, errOut, tc.says)
			}
		})
	}
}

// A first start that fails after making a credential, reading another kept
// in its data directory (here an empty watch-token key file), still prints
// what it made: the admin key is kept as a hash only, so shown then or
// never.
func TestServePrintsCredentialsMadeBeforeAFailure(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "watch-token-key"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	code, out, errOut := run(t, "serve", "--data-dir", dir, "--http-addr", "127.0.0.1:0", "--grpc-addr", "127.0.0.1:0", "--metrics-addr", "")
	if code != 1 || !strings.Contains(errOut, "watch-token-key is empty") {
		t.Fatalf("serve with an empty watch-token key file: exit %d, stderr %q; want 1 saying the file is empty", code, errOut)
	}
	if _, err := os.Stat(filepath.Join(dir, "api-keys")); err == nil && !strings.Contains(out, "export OTPLESS_EVENTS_API_KEY=oek_") {
		t.Errorf("serve made an admin key, kept as a hash only, but printed %q", out)
	}
	if _, err := os.Stat(filepath.Join(dir, "webhook-key")); err == nil && !strings.Contains(out, "export OTPLESS_WEBHOOK_URL=") {
		t.Errorf("serve made a webhook key but printed %q", out)
	}
}

// A trailing or doubled comma in a comma-separated list (as in an
// environment variable built by a script) leaves an empty entry, which is
// skipped: in --cors-origins as in the lists of networks, the start goes
// on (here, to the taken port).
func TestServeSkipsEmptyListEntries(t *testing.T) {
	t.Parallel()
	for _, flags := range [][]string{
		{"--cors-origins", "https://a.example,"},
		{"--cors-origins", "https://a.example,, https://b.example"},
		{"--cors-origins", ","},
		{"--trusted-proxies", "10.0.0.0/8,"},
		{"--webhook-allow-cidrs", "10.0.0.0/8,,"},
	} {
		t.Run(strings.Join(flags, " "), func(t *testing.T) {
			t.Parallel()
			code, errOut := serveOnATakenPort(t, flags...)
			if code != 1 || !strings.Contains(errOut, "address already in use") {
				t.Errorf("exit %d, standard error %q: want the configuration accepted, and the taken port refused", code, errOut)
			}
		})
	}
}

// A first start on a store this build refuses (one a newer build migrated,
// or one with another build's migration) makes no credential: the server
// never runs, and credentials printed by it, kept in a data directory it
// refused, would be the operator's to find and revoke. They were made,
// and printed, before the store was opened.
func TestServeRefusesTheStoreBeforeMakingCredentials(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, statements, says string
	}{
		{"newer schema", `INSERT INTO schema_migrations (version, name, applied_at) VALUES (99, '0099_later.sql', 0)`, "newer"},
		{"another build's migration", `UPDATE schema_migrations SET name = '0001_other.sql' WHERE version = 1`, "0001_other.sql"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dir, path := dataDir(t)
			execSQLite(t, path, tc.statements)
			code, out, errOut := run(t, "serve", "--data-dir", dir, "--http-addr", "127.0.0.1:0", "--grpc-addr", "127.0.0.1:0", "--metrics-addr", "")
			if code != 1 || strings.Contains(out, "export") || !strings.Contains(errOut, tc.says) {
				t.Errorf("serve on a store of a %s: exit %d, stdout %q, stderr %q; want 1, no credentials printed, saying %q", tc.name, code, out, errOut, tc.says)
			}
			for _, name := range []string{"api-keys", "webhook-key", "watch-token-key"} {
				if _, err := os.Stat(filepath.Join(dir, name)); err == nil {
					t.Errorf("serve refused its store but left %s in its data directory", name)
				}
			}
		})
	}
}
