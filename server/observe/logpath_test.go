package observe

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
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
		{"/webhooks/otpless/" + key, "/webhooks/otpless/" + MaskToken(key)},
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

// In the path of an error answer outside the request routes, a mistyped
// webhook URL's key is logged as its fingerprint too; the request routes'
// ids, and the paths of other answers, are kept.
func TestLogPathOfErrors(t *testing.T) {
	const key = "whk_Lh8kQ0secretsecretsecret"
	for _, tc := range []struct {
		method, path string
		code         int
		want         string
	}{
		{"POST", "/v1/webhook/otpless/" + key, 404, "/v1/webhook/otpless/" + MaskToken(key)},
		{"POST", "/v1/webhooks/otpless;x/" + key, 404, "/v1/webhooks/otpless;x/" + MaskToken(key)},
		{"POST", "/" + key, 404, "/" + MaskToken(key)},
		{"POST", "/v1/webhook/otpless/" + key, 400, "/v1/webhook/otpless/" + MaskToken(key)},
		{"POST", "/v1/webhook/otpless/0123456789abcdef", 404, "/v1/webhook/otpless/" + MaskToken("0123456789abcdef")},
		{"POST", "/v1/webhooks/otpless%252F" + key, 404, "/v1/webhooks/" + MaskToken("otpless%2F"+key)},
		{"POST", "/v1/requests/x/" + key, 404, "/v1/requests/x/" + MaskToken(key)},
		{"POST", "/v1/requests/x/" + key + "/events", 404, "/v1/requests/x/" + MaskToken(key) + "/events"},
		{"GET", "/v1/requests/x/" + key + ":watch", 404, "/v1/requests/x/" + MaskToken(key+":watch")},
		{"POST", "/v1/requests/" + key + ":foo", 404, "/v1/requests/" + MaskToken(key+":foo")},
		{"POST", "/v1/requests/" + key + ":watchTokens", 404, "/v1/requests/" + MaskToken(key+":watchTokens")},
		{"POST", "/v1/requests/0123456789abcdef0123456789abcdef:watchToken", 400, "/v1/requests/0123456789abcdef0123456789abcdef:watchToken"},
		{"GET", "/v1/requests/0123456789abcdef0123456789abcdef:watch", 429, "/v1/requests/0123456789abcdef0123456789abcdef:watch"},
		{"GET", "/v1/requests/0123456789abcdef0123456789abcdef", 404, "/v1/requests/0123456789abcdef0123456789abcdef"},
		{"GET", "/v1/requests/0123456789abcdef0123456789abcdef/events", 401, "/v1/requests/0123456789abcdef0123456789abcdef/events"},
		{"GET", "/ui/app.js", 404, "/ui/app.js"},
		{"GET", "/somewhere/averyveryverylongsegment", 200, "/somewhere/averyveryverylongsegment"},
	} {
		var buf bytes.Buffer
		o := New(slog.New(slog.NewJSONHandler(&buf, nil)))
		h := o.HTTP(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(tc.code) }))
		h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest(tc.method, tc.path, nil))
		var line struct{ Path string }
		if err := json.Unmarshal(buf.Bytes(), &line); err != nil {
			t.Fatalf("%s: %v", buf.Bytes(), err)
		}
		if line.Path != tc.want || strings.Contains(line.Path, "secret") {
			t.Errorf("%s %s answered %d logs path %q, want %q", tc.method, tc.path, tc.code, line.Path, tc.want)
		}
	}
}

// Routes are named as the gateway serves them: an empty webhook key is
// the webhook route (the gateway takes it for no key), and a watch token
// is minted on a route of its own.
func TestRouteOf(t *testing.T) {
	t.Parallel()
	for path, want := range map[string]string{
		"/v1/webhooks/otpless":        "webhook",
		"/v1/webhooks/otpless/wk_abc": "webhook",
		"/v1/webhooks/otpless/":       "webhook",
		"/v1/webhooks/otpless/a/b":    "other",
		"/v1/requests/r1":             "request",
		"/v1/requests/r1/events":      "events",
		"/v1/requests/r1:watch":       "watch",
		"/v1/requests/r1:watchToken":  "watch_token",
		"/v1/requests/r1:foo":         "request_other",
		"/v1/requests/r1/events/x":    "request_other",
		"/readyz":                     "readyz",
		"/nothing":                    "other",
	} {
		if got := routeOf(path); got != want {
			t.Errorf("routeOf(%q) = %q, want %q", path, got, want)
		}
	}
}

// clip keeps a text of the bound whole, and cuts a longer one at the start
// of a character, never inside one.
func TestClip(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		s    string
		n    int
		want string
	}{
		{"abc", 3, "abc"},
		{"abcd", 3, "abc…"},
		{"ab€", 3, "ab…"},
		{"a€", 3, "a…"},
		{"€€", 1, "…"},
		{"\x80\x80", 1, "…"}, // no character starts: nothing is kept
	} {
		if got := clip(tc.s, tc.n); got != tc.want {
			t.Errorf("clip(%q, %d) = %q, want %q", tc.s, tc.n, got, tc.want)
		}
	}
}
