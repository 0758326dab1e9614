// Package openapi serves the OpenAPI (Swagger 2.0) document of the
// otpless.events.v1 API. `go tool buf generate` writes the document twice:
// to gen/otpless/events/v1/ (where the README points) and to spec/ here,
// because go:embed cannot reach gen/ and buf's clean: true empties every
// output directory, so no hand-written file can live beside the generated
// one. CI regenerates and checks both are unchanged; a test checks the two
// copies are the same.
package openapi

import (
	_ "embed"
	"net/http"
	"strconv"
)

//go:embed spec/openapi.swagger.json
var document []byte

// Document returns the OpenAPI document (JSON). Callers must not modify it.
func Document() []byte { return document }

// Handler serves the document, for GET and HEAD.
func Handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Content-Length", strconv.Itoa(len(document)))
		w.Header().Set("Cache-Control", "no-cache")
		if r.Method == http.MethodGet {
			_, _ = w.Write(document)
		}
	})
}
