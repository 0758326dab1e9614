package auth

import (
	"encoding/hex"
	"slices"
	"strings"
	"testing"
)

// FuzzAPIKeys: a configuration line that FormatAPIKey renders for a name
// CheckKeyName accepts parses back to that key, alone or among others; and
// whatever text ParseAPIKeys accepts, the keys it reads have names
// CheckKeyName accepts and, rendered again, parse back to themselves.
func FuzzAPIKeys(f *testing.F) {
	f.Add("reader", "reader-secret", "read", "# a comment\nadmin "+HashKey("x")+" admin;watcher "+HashKey("y")+" watch,read\n")
	f.Add("a#b", "k", " read , read_pii ", "a "+HashKey("k")+" read ; # b "+HashKey("k")+" read\r\nc "+strings.ToUpper(HashKey("k"))+" ,ingest,")
	f.Add("\u00a0x", "", "admin", "x\u2028"+HashKey("k")+"\u0085read")
	f.Add("x", "k", "read,bogus", "x "+HashKey("k")+" read\nx "+HashKey("k")+" watch")
	f.Fuzz(func(t *testing.T, name, key, scopes, text string) {
		if sc, err := ParseScopes(scopes); err == nil && CheckKeyName(name) == nil {
			line := FormatAPIKey(name, key, sc)
			want := APIKey{Name: name, Scopes: sc}
			copy(want.Hash[:], mustHex(t, HashKey(key)))
			for _, text := range []string{line, "\n" + line + "\n", "# first\n" + line + " ; " + name + "2 " + HashKey(key) + " read"} {
				keys, err := ParseAPIKeys(text)
				if err != nil || len(keys) == 0 || !sameKey(keys[0], want) {
					t.Fatalf("%q: got %+v, %v; want %+v", text, keys, err, want)
				}
			}
		}
		keys, err := ParseAPIKeys(text)
		if err != nil {
			return
		}
		lines := make([]string, len(keys))
		for i, k := range keys {
			if err := CheckKeyName(k.Name); err != nil {
				t.Fatalf("%q: read a key named %q: %v", text, k.Name, err)
			}
			lines[i] = k.Name + " " + hex.EncodeToString(k.Hash[:]) + " " + joinScopes(k.Scopes)
		}
		again, err := ParseAPIKeys(strings.Join(lines, "\n"))
		if err != nil || !slices.EqualFunc(again, keys, sameKey) {
			t.Fatalf("%q: read %+v, rendered %q, read again %+v, %v", text, keys, lines, again, err)
		}
	})
}

func sameKey(a, b APIKey) bool {
	return a.Name == b.Name && a.Hash == b.Hash && slices.Equal(a.Scopes, b.Scopes)
}

func mustHex(t *testing.T, s string) []byte {
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
