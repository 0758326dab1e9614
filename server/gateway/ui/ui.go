// Package ui is the live status page served at /ui/: plain HTML, CSS and
// JavaScript embedded in the binary (no build step, no framework). The page
// follows one auth request over the watch route's Server-Sent Events and
// draws its timeline; it is also the reference for frontends that wait for
// SUCCESS.
//
// It imports nothing from the service; the gateway mounts it.
package ui

import (
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"io/fs"
	"net/http"
	"path"
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
	etags := contentTags(sub)
	files := http.StripPrefix(strings.TrimSuffix(Path, "/"), http.FileServerFS(sub))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		if r.URL.Path == strings.TrimSuffix(Path, "/") {
			Redirect(w, r, http.StatusMovedPermanently)
			return
		}
		// The embedded files have no modification time: a hash of their
		// content lets a browser revalidate what it keeps (no-cache) and
		// take an upgrade's files at once.
		name := strings.TrimPrefix(r.URL.Path, Path)
		if name == "" || strings.HasSuffix(name, "/") {
			name = path.Join(name, "index.html")
		}
		tag, ok := etags[name]
		if ok {
			h.Set("ETag", tag)
		}
		// The page is opened at a URL that may hold ?access_token=, which
		// would be the key of its copy in the browser's disk cache: only
		// the files it loads by their bare names (its script and style)
		// are kept.
		if ok && name != "index.html" {
			h.Set("Cache-Control", "no-cache")
		} else {
			h.Set("Cache-Control", "no-store")
		}
		// The page URL may carry ?access_token=: never send it on as a
		// referrer, and let nothing but the page's own files run.
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("Content-Security-Policy", "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
		h.Set("X-Content-Type-Options", "nosniff")
		files.ServeHTTP(w, r)
	})
}

// Redirect sends r to the page with its query (a link's request_id and
// access_token), answering code. The query may hold a watch token: the
// redirect is not to be kept, nor its URL sent on as a referrer.
func Redirect(w http.ResponseWriter, r *http.Request, code int) {
	target := Path
	if r.URL.RawQuery != "" {
		target += "?" + r.URL.RawQuery
	}
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Referrer-Policy", "no-referrer")
	http.Redirect(w, r, target, code)
}

// contentTags gives each file of the tree a strong ETag, a hash of its
// content, by its path in the tree.
func contentTags(fsys fs.FS) map[string]string {
	tags := map[string]string{}
	err := fs.WalkDir(fsys, ".", func(name string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := fs.ReadFile(fsys, name)
		if err != nil {
			return err
		}
		sum := sha256.Sum256(b)
		tags[name] = `"` + hex.EncodeToString(sum[:16]) + `"`
		return nil
	})
	if err != nil {
		panic(err) // the embedded tree is fixed at build time
	}
	return tags
}
