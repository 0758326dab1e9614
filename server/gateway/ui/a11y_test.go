package ui

import (
	"math"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// The status and the stream's errors are live regions, so that a screen
// reader announces a login finishing or the watch failing.
func TestLiveRegions(t *testing.T) {
	t.Parallel()
	page, err := static.ReadFile("static/index.html")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		`id="status-badge" class="badge" role="status"`,
		`id="outcome" class="outcome" role="status"`,
		`id="stream-error" class="stream-error" role="alert"`,
	} {
		if !strings.Contains(string(page), want) {
			t.Errorf("index.html lacks %s", want)
		}
	}
}

// Text colours on their backgrounds meet WCAG AA (4.5:1), and the input's
// border 3:1 against the card.
func TestContrast(t *testing.T) {
	t.Parallel()
	css, err := static.ReadFile("static/style.css")
	if err != nil {
		t.Fatal(err)
	}
	vars := map[string]string{}
	for _, m := range regexp.MustCompile(`--([a-z-]+):\s*(#[0-9a-f]{6}|#[0-9a-f]{3});`).FindAllStringSubmatch(string(css), -1) {
		vars[m[1]] = m[2]
	}
	for _, tc := range []struct {
		fg, bg string
		min    float64
	}{
		{vars["muted"], vars["bg"], 4.5}, {vars["muted"], vars["card"], 4.5}, {vars["text"], vars["card"], 4.5},
		{vars["good"], vars["good-bg"], 4.5}, {vars["bad"], vars["bad-bg"], 4.5}, {vars["accent"], vars["warn-bg"], 4.5},
		{"#868e9c", vars["card"], 3},
	} {
		if r := contrast(t, tc.fg, tc.bg); r < tc.min {
			t.Errorf("%s on %s: contrast %.2f, want at least %.1f", tc.fg, tc.bg, r, tc.min)
		}
	}
	if !strings.Contains(string(css), "border: 1px solid #868e9c") {
		t.Error("the input's border is not the colour checked above")
	}
}

func contrast(t *testing.T, a, b string) float64 {
	t.Helper()
	la, lb := luminance(t, a), luminance(t, b)
	return (math.Max(la, lb) + 0.05) / (math.Min(la, lb) + 0.05)
}

func luminance(t *testing.T, hex string) float64 {
	t.Helper()
	if len(hex) == 4 { // #fff
		hex = "#" + strings.Repeat(hex[1:2], 2) + strings.Repeat(hex[2:3], 2) + strings.Repeat(hex[3:4], 2)
	}
	if len(hex) != 7 {
		t.Fatalf("colour %q", hex)
	}
	var l float64
	for i, w := range []float64{0.2126, 0.7152, 0.0722} {
		v, err := strconv.ParseUint(hex[1+2*i:3+2*i], 16, 8)
		if err != nil {
			t.Fatal(err)
		}
		c := float64(v) / 255
		if c <= 0.03928 {
			c /= 12.92
		} else {
			c = math.Pow((c+0.055)/1.055, 2.4)
		}
		l += w * c
	}
	return l
}
