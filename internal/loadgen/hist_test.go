package loadgen

import (
	"math/rand/v2"
	"slices"
	"testing"
	"time"
)

func TestBucketBounds(t *testing.T) {
	t.Parallel()
	for _, v := range []uint64{0, 1, 127, 128, 129, 255, 256, 1000, 1 << 20, 123456789, 1<<63 + 12345} {
		i := bucket(v)
		if v > upper(i) || (i > 0 && v <= upper(i-1)) {
			t.Errorf("value %d in bucket %d, which spans (%d, %d]", v, i, upper(i-1), upper(i))
		}
		if v >= 128 && float64(upper(i)-v)/float64(v) > 1.0/128 {
			t.Errorf("bucket of %d reaches %d: more than 1/128 off", v, upper(i))
		}
	}
}

func TestQuantiles(t *testing.T) {
	t.Parallel()
	var h Histogram
	if h.Quantile(0.5) != 0 {
		t.Fatal("empty histogram has a median")
	}
	rng := rand.New(rand.NewPCG(1, 2))
	values := make([]time.Duration, 100000)
	for i := range values {
		values[i] = time.Duration(rng.ExpFloat64() * float64(time.Millisecond))
		h.Record(values[i])
	}
	slices.Sort(values)
	for _, q := range []float64{0.5, 0.9, 0.99, 0.999} {
		want := values[int(q*float64(len(values)))-1]
		got := h.Quantile(q)
		if d := float64(got-want) / float64(want); d < -0.01 || d > 0.01 {
			t.Errorf("p%v = %v, want %v (±1%%)", q*100, got, want)
		}
	}
	// Few values: the nearest rank, the least value with at least q of
	// them at or below it (1..160 ns are recorded exactly).
	var small Histogram
	for v := range 160 {
		small.Record(time.Duration(v + 1))
	}
	if got := small.Quantile(0.99); got != 159 {
		t.Errorf("p99 of 1..160 ns = %v, want 159ns", got)
	}
	if h.Max() != values[len(values)-1] || h.Quantile(1) != h.Max() || h.Count() != uint64(len(values)) {
		t.Errorf("max %v, p100 %v, count %d; want %v, %v, %d", h.Max(), h.Quantile(1), h.Count(), values[len(values)-1], values[len(values)-1], len(values))
	}
}
