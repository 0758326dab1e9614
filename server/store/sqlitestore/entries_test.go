package sqlitestore

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
)

func TestEntriesRoundTrip(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for n := range 200 {
		var (
			want     []entry
			column   []byte
			boundary = map[int]bool{0: true}
		)
		for range rng.IntN(6) {
			e := entry{
				webhookID: rng.Int64N(1 << (rng.IntN(8) * 8)),
				timeMs:    rng.Int64() - 1<<62, // negative too: times before 1970
				eventID:   fmt.Sprintf("ev-%x", rng.Uint64()>>rng.IntN(64)),
				data:      make([]byte, rng.IntN(300)),
			}
			for i := range e.data {
				e.data[i] = byte(rng.Uint32()) // any byte, NUL and invalid UTF-8 too
			}
			want = append(want, e)
			column = appendEntry(column, e)
			boundary[len(column)] = true
		}
		got, err := parseEntries(column)
		if err != nil || !slices.EqualFunc(got, want, equalEntry) {
			t.Fatalf("case %d: parseEntries(appendEntry(%v)) = %v, %v", n, want, got, err)
		}
		// A column cut short anywhere but between entries is refused.
		for cut := range len(column) {
			_, err := parseEntries(column[:cut])
			if boundary[cut] != (err == nil) {
				t.Fatalf("case %d: column cut at %d of %d: %v", n, cut, len(column), err)
			}
			if err != nil && !errors.Is(err, errBadEntries) {
				t.Fatalf("case %d: cut at %d: %v, want errBadEntries", n, cut, err)
			}
		}
	}
}

func equalEntry(a, b entry) bool {
	return a.webhookID == b.webhookID && a.timeMs == b.timeMs && a.eventID == b.eventID && string(a.data) == string(b.data)
}

// Concatenated columns are one column: Commit appends with SQL's ||.
func TestEntriesConcatenate(t *testing.T) {
	a := appendEntry(nil, entry{1, 10, "a", []byte{0, 0xff}})
	b := appendEntry(nil, entry{300, -5, "b", nil})
	got, err := parseEntries(append(slices.Clone(a), b...))
	if err != nil || len(got) != 2 || got[0].eventID != "a" || got[1].webhookID != 300 || got[1].timeMs != -5 || len(got[1].data) != 0 {
		t.Fatalf("parseEntries(a || b) = %v, %v", got, err)
	}
}
