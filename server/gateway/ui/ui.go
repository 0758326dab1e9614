// Package ui is the live status page served at /ui/: plain HTML, CSS and
// JavaScript embedded in the binary (no build step, no framework). The page
// follows one auth request over the watch route's Server-Sent Events and
// draws its timeline; it is also the reference for frontends that wait for
// SUCCESS.
//
// It imports nothing from the service; the gateway mounts it.
package ui

import (
	"embed"
	"io/fs"
	"net/http"
	"strings"
)

// Path is where the page is served.
const Path = "/ui/"

//go:embed static
var static embed.FS

// Handler serves the page and its assets under Path; /ui redirects there.
func Handler() http.Handler {
	sub, err := fs.Sub(static, "static")
	if err != nil {
		panic(err) // the embedded tree is fixed at build time
	}
	files := http.StripPrefix(strings.TrimSuffix(Path, "/"), http.FileServerFS(sub))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == strings.TrimSuffix(Path, "/") {
			target := Path
			if r.URL.RawQuery != "" {
				target += "?" + r.URL.RawQuery
			}
			http.Redirect(w, r, target, http.StatusMovedPermanently)
			return
		}
		h := w.Header()
		// The page URL may carry ?access_token=: never send it on as a
		// referrer, and let nothing but the page's own files run.
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("Content-Security-Policy", "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Cache-Control", "no-cache")
		files.ServeHTTP(w, r)
	})
}
