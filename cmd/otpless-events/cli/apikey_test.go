package cli

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/otpless-events/otpless-events/server/auth"
)

func TestAPIKeyCommand(t *testing.T) {
	t.Parallel()
	var out, errOut bytes.Buffer
	if code := Main(context.Background(), []string{"apikey", "--name", "web", "--scopes", "read,watch"}, nil, &out, &errOut); code != 0 {
		t.Fatalf("exit %d: %s", code, errOut.String())
	}
	var key, config string
	for _, line := range strings.Split(out.String(), "\n") {
		if v, ok := strings.CutPrefix(line, "key:"); ok {
			key = strings.TrimSpace(v)
		}
		if v, ok := strings.CutPrefix(line, "config:"); ok {
			config = strings.TrimSpace(v)
		}
	}
	keys, err := auth.ParseAPIKeys(config)
	if err != nil || len(keys) != 1 {
		t.Fatalf("config line %q: %v", config, err)
	}
	p, err := auth.NewKeyring(keys, nil).Authenticate(key)
	if err != nil || p.Name != "web" || !p.Has(auth.ScopeWatch) || p.Has(auth.ScopeReadPII) {
		t.Fatalf("the printed key authenticates as %+v, %v", p, err)
	}
	if strings.Contains(config, key) {
		t.Fatal("the config line holds the key itself")
	}
	if code := Main(context.Background(), []string{"apikey", "--scopes", "fly"}, nil, &out, &errOut); code == 0 {
		t.Fatal("unknown scope accepted")
	}
	// A name that would make a line serve refuses, or skips as a comment.
	for _, name := range []string{"", "web app", "#web", "web;app", " web"} {
		out.Reset()
		if code := Main(context.Background(), []string{"apikey", "--name", name}, nil, &out, &errOut); code == 0 {
			t.Errorf("name %q accepted: %s", name, out.String())
		}
	}
}

// fullWriter refuses every write, as a full disk or a closed pipe does.
type fullWriter struct{}

func (fullWriter) Write([]byte) (int, error) { return 0, errors.New("no space left on device") }

// A key that could not be written is lost: apikey must not say it made one.
func TestAPIKeyUnwritable(t *testing.T) {
	t.Parallel()
	var errOut bytes.Buffer
	if code := Main(context.Background(), []string{"apikey"}, nil, fullWriter{}, &errOut); code == 0 {
		t.Fatal("exit 0 for a key that was never written")
	}
	if !strings.Contains(errOut.String(), "no space left on device") {
		t.Errorf("stderr %q does not say why", errOut.String())
	}
}
