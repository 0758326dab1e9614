package cli

import (
	"bytes"
	"net"
	"strings"
	"testing"
)

// The webhook URL printed on a first start works from this machine's shell:
// for a listener on all interfaces it names the loopback address (and says
// to use the host's name for OTPLESS), never "[::]" or "0.0.0.0".
func TestAnnounceWebhookURL(t *testing.T) {
	t.Parallel()
	gen := generated{webhookKey: "whk_k", apiKey: "oek_k"}
	for _, tc := range []struct {
		addr      *net.TCPAddr
		url, note string
	}{
		{&net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 8080}, "http://127.0.0.1:8080/v1/webhooks/otpless/whk_k", "give this URL to OTPLESS"},
		{&net.TCPAddr{IP: net.IPv6zero, Port: 8080}, "http://127.0.0.1:8080/v1/webhooks/otpless/whk_k", "public name in place of 127.0.0.1"},
		{&net.TCPAddr{IP: net.IPv4zero, Port: 18080}, "http://127.0.0.1:18080/v1/webhooks/otpless/whk_k", "public name in place of 127.0.0.1"},
		{&net.TCPAddr{Port: 8080}, "http://127.0.0.1:8080/v1/webhooks/otpless/whk_k", "public name in place of 127.0.0.1"}, // ":8080", resolved
		{&net.TCPAddr{IP: net.ParseIP("192.0.2.7"), Port: 8080}, "http://192.0.2.7:8080/v1/webhooks/otpless/whk_k", "give this URL to OTPLESS"},
	} {
		var out bytes.Buffer
		announce(&out, gen, "http", tc.addr)
		if want := "export OTPLESS_WEBHOOK_URL=" + tc.url + " "; !strings.Contains(out.String(), want) || !strings.Contains(out.String(), tc.note) {
			t.Errorf("listening on %v, printed:\n%s\nwant %q and %q", tc.addr, out.String(), want, tc.note)
		}
	}
}
