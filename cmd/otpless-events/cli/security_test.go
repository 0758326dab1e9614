package cli

import (
	"net/netip"
	"os"
	"runtime"
	"testing"

	"github.com/spf13/pflag"

	"github.com/otpless-events/otpless-events/server"
	"github.com/otpless-events/otpless-events/server/auth"
)

// resolveSecurity is serve's Security from the security flags args, with a
// webhook key in the environment.
func resolveSecurity(t *testing.T, args ...string) server.Security {
	t.Helper()
	t.Setenv(envWebhookKeys, "wk_0123456789abcdef")
	var f securityFlags
	fs := pflag.NewFlagSet("serve", pflag.ContinueOnError)
	f.register(fs)
	if err := fs.Parse(args); err != nil {
		t.Fatal(err)
	}
	sec, _, err := f.resolve(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return sec
}

// By default serve limits failed credentials per client address but not
// authenticated webhooks: OTPLESS sends from a few addresses, and a limit
// on them would refuse its peaks.
func TestWebhookLimitsByDefault(t *testing.T) {
	guard, err := auth.NewWebhookGuard(resolveSecurity(t).Webhook)
	if err != nil {
		t.Fatal(err)
	}
	addr := netip.MustParseAddr("192.0.2.1")
	for i := range 10_000 {
		if ok, _ := guard.Allow(addr); !ok {
			t.Fatalf("authenticated webhook %d from one address refused by default", i+1)
		}
	}
	for range 10_000 {
		if ok, _ := guard.AllowFailure(addr); !ok {
			return
		}
	}
	t.Fatal("10,000 failed credentials from one address allowed at once by default")
}

// Each of the four webhook limit flags sets its own field: the burst of
// failures is not --webhook-burst's, though both default to 400.
func TestWebhookLimitFlags(t *testing.T) {
	w := resolveSecurity(t, "--webhook-rate", "1", "--webhook-burst", "2", "--webhook-failure-rate", "3", "--webhook-failure-burst", "4").Webhook
	if w.RatePerSecond != 1 || w.Burst != 2 || w.FailureRatePerSecond != 3 || w.FailureBurst != 4 {
		t.Errorf("rate %v, burst %d, failure rate %v, failure burst %d; want 1, 2, 3, 4", w.RatePerSecond, w.Burst, w.FailureRatePerSecond, w.FailureBurst)
	}
}

// --max-watches reaches the server's configuration: by default
// server.DefaultMaxWatches, else as given (0 included).
func TestMaxWatchesFlag(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want int
	}{{nil, server.DefaultMaxWatches}, {[]string{"--max-watches", "7"}, 7}, {[]string{"--max-watches", "0"}, 0}} {
		if got := resolveSecurity(t, tc.args...).MaxWatches; got != tc.want {
			t.Errorf("%q: MaxWatches %d, want %d", tc.args, got, tc.want)
		}
	}
}

// Without a data directory nothing is kept or read there: files of the
// data directory's names in the current directory are none of serve's.
func TestLooseSecretFilesWithoutDataDir(t *testing.T) {
	dir := t.TempDir()
	t.Chdir(dir)
	for _, name := range []string{webhookKeyFile, apiKeysFile, watchTokenKeyFile} {
		if err := os.WriteFile(name, []byte("x\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(name, 0o644); err != nil { // whatever the umask
			t.Fatal(err)
		}
	}
	var f securityFlags
	if loose := f.looseSecretFiles(""); len(loose) != 0 {
		t.Errorf("looseSecretFiles without a data directory = %q, want none", loose)
	}
	if loose := f.looseSecretFiles("."); len(loose) != 3 && runtime.GOOS != "windows" {
		t.Errorf("looseSecretFiles(\".\") = %q, want the three files", loose)
	}
}
