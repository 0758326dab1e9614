package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
)

// FuzzReadStream: however standard input arrives (in reads of any size),
// send posts the JSON values a decoder reads from the whole input, each
// named by the line where it starts, and at a value that is not JSON stops
// naming the line where that value starts.
func FuzzReadStream(f *testing.F) {
	for _, in := range []string{"", `{"a":1}` + "\n\n" + `{"b":2}` + "\n", "{\n  \"a\": 1\n}\n{\n  \"b\": [\n    2\n  ]\n}\n",
		"\uFEFF\n\n  {\"a\":1}\r\n{\"b\":\"x\\ny\"}", `{"a":1}` + "\n\n" + `{"b":2}` + "\nnot json\n", `{"a":1}` + "\n\n" + `{"b":` + "\n",
		"1 2\n\"3\"\n[4,\n5] null\n\n\n\t{}", "\n\n \uFEFF{}", "{\"a\":\"\n\"}\n{}", "{} \n\n ]"} {
		f.Add([]byte(in), uint8(1))
		f.Add([]byte(in), uint8(7))
	}
	f.Fuzz(func(t *testing.T, in []byte, chunk uint8) {
		var got []string
		err := readStream(context.Background(), &chunkReader{b: in, n: int(chunk)%16 + 1}, maxStdinBody, func(b body) error {
			got = append(got, b.where+"="+string(b.data))
			return nil
		})
		want, wantErr := readWhole(in)
		if strings.Join(got, "\x00") != strings.Join(want, "\x00") {
			t.Fatalf("%q in reads of %d: bodies\n%q\nwant\n%q", in, int(chunk)%16+1, got, want)
		}
		switch {
		case wantErr == "" && err != nil:
			t.Fatalf("%q in reads of %d: %v", in, int(chunk)%16+1, err)
		case wantErr != "" && (err == nil || !strings.HasPrefix(err.Error(), wantErr)):
			t.Fatalf("%q in reads of %d: error %v, want %q", in, int(chunk)%16+1, err, wantErr)
		}
	})
}

// readWhole is what readStream posts from in, worked out on the input
// whole: each value and the line it starts on, and the prefix of the error
// that ends it, if one does.
func readWhole(in []byte) (bodies []string, errPrefix string) {
	in = bytes.TrimPrefix(in, bom)
	lineAt := func(off int64) int { return 1 + bytes.Count(in[:off], []byte("\n")) }
	dec := json.NewDecoder(bytes.NewReader(in))
	for {
		var raw json.RawMessage
		err := dec.Decode(&raw)
		if errors.Is(err, io.EOF) {
			return bodies, ""
		}
		if err != nil {
			off := dec.InputOffset()
			for off < int64(len(in)) && strings.IndexByte(" \t\r\n", in[off]) >= 0 {
				off++
			}
			return bodies, fmt.Sprintf("stdin:%d: not JSON", lineAt(off))
		}
		bodies = append(bodies, fmt.Sprintf("stdin:%d=%s", lineAt(dec.InputOffset()-int64(len(raw))), raw))
	}
}

// chunkReader reads b at most n bytes at a time.
type chunkReader struct {
	b []byte
	n int
}

func (r *chunkReader) Read(p []byte) (int, error) {
	if len(r.b) == 0 {
		return 0, io.EOF
	}
	k := copy(p[:min(len(p), r.n)], r.b)
	r.b = r.b[k:]
	return k, nil
}
