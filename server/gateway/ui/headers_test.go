package ui

import (
	"net/http"
	"net/http/httptest"
	"testing"
)

// The redirect from /ui keeps the query, which may hold a watch token: no
// cache keeps it and no referrer carries it on.
func TestRedirectIsNotKept(t *testing.T) {
	t.Parallel()
	rec := httptest.NewRecorder()
	Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/ui?request_id=r1&access_token=owt1.x", nil))
	if rec.Code != http.StatusMovedPermanently || rec.Header().Get("Location") != "/ui/?request_id=r1&access_token=owt1.x" {
		t.Fatalf("%d to %q, want 301 to the page with the query", rec.Code, rec.Header().Get("Location"))
	}
	for name, want := range map[string]string{"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"} {
		if got := rec.Header().Get(name); got != want {
			t.Errorf("%s %q, want %q", name, got, want)
		}
	}
}

// Each file has an ETag of its content, distinct from the others', and a
// request that names it is answered 304.
func TestFilesHaveContentTags(t *testing.T) {
	t.Parallel()
	h := Handler()
	seen := map[string]string{}
	for _, path := range []string{"/ui/", "/ui/app.js", "/ui/style.css"} {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
		tag := rec.Header().Get("ETag")
		if rec.Code != http.StatusOK || len(tag) < 10 || tag[0] != '"' {
			t.Fatalf("%s: %d with ETag %q, want 200 with a strong ETag", path, rec.Code, tag)
		}
		if other, ok := seen[tag]; ok {
			t.Errorf("%s has the ETag of %s", path, other)
		}
		seen[tag] = path

		req := httptest.NewRequest(http.MethodGet, path, nil)
		req.Header.Set("If-None-Match", tag)
		rec = httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != http.StatusNotModified {
			t.Errorf("%s with If-None-Match its ETag: %d, want 304", path, rec.Code)
		}
	}
}

// The page may be opened at a URL holding a watch token: it is not kept
// under that URL (no-store), wherever it is reached from; its script and
// style, loaded by their bare names, are kept and revalidated.
func TestPageIsNotKept(t *testing.T) {
	t.Parallel()
	h := Handler()
	for path, want := range map[string]string{
		"/ui/":                                   "no-store",
		"/ui/?request_id=r1&access_token=owt1.x": "no-store",
		"/ui/index.html?request_id=r1&access_token=x": "no-store", // a redirect to ./ with the query
		"/ui/app.js":    "no-cache",
		"/ui/style.css": "no-cache",
	} {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
		if got := rec.Header().Get("Cache-Control"); got != want {
			t.Errorf("%s: %d with Cache-Control %q, want %q", path, rec.Code, got, want)
		}
	}
}
