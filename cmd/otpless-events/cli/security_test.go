package cli

import (
	"net/netip"
	"testing"

	"github.com/spf13/pflag"

	"github.com/otpless-events/otpless-events/server/auth"
)

// By default serve limits failed credentials per client address but not
// authenticated webhooks: OTPLESS sends from a few addresses, and a limit
// on them would refuse its peaks.
func TestWebhookLimitsByDefault(t *testing.T) {
	t.Setenv(envWebhookKeys, "wk_0123456789abcdef")
	var f securityFlags
	fs := pflag.NewFlagSet("serve", pflag.ContinueOnError)
	f.register(fs)
	if err := fs.Parse(nil); err != nil {
		t.Fatal(err)
	}
	sec, _, err := f.resolve(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	guard, err := auth.NewWebhookGuard(sec.Webhook)
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
