package observe

import (
	"strings"
	"testing"
)

// A webhook key in a path is logged as its fingerprint, also when the
// path is not quite the route's (a 404 logs its path too).
func TestLogPathMasksWebhookKeys(t *testing.T) {
	const key = "whk_Lh8kQ0secretsecretsecret"
	for _, tc := range []struct{ path, want string }{
		{"/v1/webhooks/otpless/" + key, "/v1/webhooks/otpless/" + MaskToken(key)},
		{"//v1/webhooks/otpless/" + key, "/v1/webhooks/otpless/" + MaskToken(key)},
		{"/v1/webhooks//otpless/" + key, "/v1/webhooks/otpless/" + MaskToken(key)},
		{"/v1//webhooks/otpless/" + key + "/", "/v1/webhooks/otpless/" + MaskToken(key)},
		{"/api/v1/webhooks/otpless/" + key, "/api/v1/webhooks/otpless/" + MaskToken(key)},
		{"/V1/Webhooks/OTPLESS/" + key, "/V1/Webhooks/OTPLESS/" + MaskToken(key)},
		{"/v1/webhooks/otpless/" + key + "/extra", "/v1/webhooks/otpless/" + MaskToken(key+"/extra")},
		{"/v1/webhooks/otpless", "/v1/webhooks/otpless"},
		{"/v1/webhooks/otpless/", "/v1/webhooks/otpless/"},
		{"/v1/requests/r1", "/v1/requests/r1"},
		{"/v1/requests/a//b", "/v1/requests/a//b"},
		// Letters whose lower case is longer or shorter, and bytes that
		// are not UTF-8, before the route: offsets stay.
		{"/" + strings.Repeat("Ⱥ", 60) + "/v1/webhooks/otpless/" + key, "/" + strings.Repeat("Ⱥ", 60) + "/v1/webhooks/otpless/" + MaskToken(key)},
		{"/İİİİ/v1/webhooks/otpless/" + key, "/İİİİ/v1/webhooks/otpless/" + MaskToken(key)},
		{"/\xff\xfe/v1/webhooks/otpless/" + key, "/\xff\xfe/v1/webhooks/otpless/" + MaskToken(key)},
	} {
		got := logPath(tc.path, false)
		if got != tc.want || strings.Contains(got, "secret") {
			t.Errorf("logPath(%q) = %q, want %q", tc.path, got, tc.want)
		}
	}
}

// In the path of a 404, a mistyped webhook URL's key is logged as its
// fingerprint too; the request routes' ids, and the paths of answers other
// than 404, are kept.
func TestLogPathOfNotFound(t *testing.T) {
	const key = "whk_Lh8kQ0secretsecretsecret"
	for _, tc := range []struct {
		path     string
		notFound bool
		want     string
	}{
		{"/v1/webhook/otpless/" + key, true, "/v1/webhook/otpless/" + MaskToken(key)},
		{"/v1/webhooks/otpless;x/" + key, true, "/v1/webhooks/otpless;x/" + MaskToken(key)},
		{"/" + key, true, "/" + MaskToken(key)},
		{"/v1/webhooks/otpless%2F" + key, true, "/v1/webhooks/" + MaskToken("otpless%2F"+key)},
		{"/v1/requests/0123456789abcdef0123456789abcdef", true, "/v1/requests/0123456789abcdef0123456789abcdef"},
		{"/ui/app.js", true, "/ui/app.js"},
		{"/somewhere/averyveryverylongsegment", false, "/somewhere/averyveryverylongsegment"},
	} {
		if got := logPath(tc.path, tc.notFound); got != tc.want || strings.Contains(got, "secret") {
			t.Errorf("logPath(%q, %t) = %q, want %q", tc.path, tc.notFound, got, tc.want)
		}
	}
}
