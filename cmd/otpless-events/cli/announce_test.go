package cli

import (
	"bytes"
	"strings"
	"testing"
)

// The webhook URL printed on a first start works from this machine's shell:
// for a listener on all interfaces it names the loopback address (and says
// to use the host's name for OTPLESS), never "[::]" or "0.0.0.0"; and
// never port 0, which a start that failed before listening would print.
// A listener on loopback (the default) is no URL to give OTPLESS, which
// cannot reach it: the note says so, and how to listen for OTPLESS.
func TestAnnounceWebhookURL(t *testing.T) {
	t.Parallel()
	gen := generated{webhookKey: "whk_k", apiKey: "oek_k"}
	for _, tc := range []struct {
		addr      string
		url, note string
	}{
		{"127.0.0.1:8080", "http://127.0.0.1:8080/v1/webhooks/otpless/whk_k", "this machine only: OTPLESS cannot reach 127.0.0.1; for OTPLESS, serve with --http-addr :8080"},
		{"localhost:8080", "http://localhost:8080/v1/webhooks/otpless/whk_k", "this machine only: OTPLESS cannot reach localhost"},
		{"[::1]:8080", "http://[::1]:8080/v1/webhooks/otpless/whk_k", "this machine only: OTPLESS cannot reach ::1"},
		{"[::]:8080", "http://127.0.0.1:8080/v1/webhooks/otpless/whk_k", "public name in place of 127.0.0.1"},
		{"0.0.0.0:18080", "http://127.0.0.1:18080/v1/webhooks/otpless/whk_k", "public name in place of 127.0.0.1"},
		{":8080", "http://127.0.0.1:8080/v1/webhooks/otpless/whk_k", "public name in place of 127.0.0.1"},
		{"192.0.2.7:8080", "http://192.0.2.7:8080/v1/webhooks/otpless/whk_k", "give this URL to OTPLESS"},
		{"nosuchhost.invalid:8080", "http://nosuchhost.invalid:8080/v1/webhooks/otpless/whk_k", "give this URL to OTPLESS"},                                       // as configured, when serve cannot start
		{"127.0.0.1:0", "http://127.0.0.1:PORT/v1/webhooks/otpless/whk_k", "--http-addr :PORT and give this host's public name; PORT: the port serve listens on"}, // the same, before a port was chosen
		{":0", "http://127.0.0.1:PORT/v1/webhooks/otpless/whk_k", "public name in place of 127.0.0.1; PORT: the port serve listens on"},
	} {
		var out bytes.Buffer
		announce(&out, gen, "http", tc.addr)
		if want := "export OTPLESS_WEBHOOK_URL=" + tc.url + " "; !strings.Contains(out.String(), want) || !strings.Contains(out.String(), tc.note) {
			t.Errorf("listening on %v, printed:\n%s\nwant %q and %q", tc.addr, out.String(), want, tc.note)
		}
	}
}
