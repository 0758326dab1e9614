package cli

import (
	"bytes"
	"encoding/json"
	"reflect"
	"testing"
	"unicode"
	"unicode/utf8"
)

// FuzzPrintableJSON: printableJSON leaves no control character in JSON
// (DEL and the C1 controls, which JSON may hold unescaped, are the ones it
// escapes), and what it returns is JSON holding the same value.
func FuzzPrintableJSON(f *testing.F) {
	for _, s := range []string{`{"a":"b"}`, "{\"a\":\"\u009b2J\u007f\"}", "[\"\u0085\", 1e700, {\"k\u009f\": null}]", `"\u009b"`,
		"{\"a\":\"\\\u0080\"}", " \"x\u00a0\u0080y\" "} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		if !json.Valid(b) || !utf8.Valid(b) {
			return
		}
		out := printableJSON(b)
		if i := bytes.IndexFunc(out, unicode.IsControl); i >= 0 && out[i] >= 0x7f {
			t.Fatalf("%q: printed %q, a control character at %d", b, out, i)
		}
		want, err := decode(b)
		if err != nil {
			t.Fatal(err)
		}
		if got, err := decode(out); err != nil || !reflect.DeepEqual(got, want) {
			t.Fatalf("%q: printed %q, which reads as %#v, %v; want %#v", b, out, got, err, want)
		}
	})
}

// decode reads the JSON value b, its numbers as written.
func decode(b []byte) (any, error) {
	d := json.NewDecoder(bytes.NewReader(b))
	d.UseNumber()
	var v any
	err := d.Decode(&v)
	return v, err
}
