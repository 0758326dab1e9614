package cli

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/otpless-events/otpless-events/server"
	"github.com/otpless-events/otpless-events/server/store"
)

// configRow is one row of the README's configuration table.
type configRow struct {
	flag, env, def, what string
	line                 int
}

// readConfigTable parses the table under "## Configuration" in README.md:
// | `--flag` | `ENV` | default | what |.
func readConfigTable(t *testing.T) []configRow {
	t.Helper()
	readme := readREADME(t)
	var rows []configRow
	in := false
	sc := bufio.NewScanner(strings.NewReader(readme))
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		if strings.HasPrefix(line, "## ") {
			in = line == "## Configuration"
			continue
		}
		if !in || !strings.HasPrefix(line, "| `--") {
			continue
		}
		cells := strings.Split(strings.Trim(line, "|"), "|")
		if len(cells) < 4 {
			t.Fatalf("README.md:%d: want | flag | environment | default | what |, got %q", n, line)
		}
		for i := range cells {
			cells[i] = strings.TrimSpace(cells[i])
		}
		rows = append(rows, configRow{flag: unquote(cells[0]), env: unquote(cells[1]), def: cells[2], what: cells[3], line: n})
	}
	if len(rows) == 0 {
		t.Fatal("README.md has no configuration table under ## Configuration")
	}
	return rows
}

// readREADME returns the README.md of the module.
func readREADME(t *testing.T) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for ; ; dir = filepath.Dir(dir) {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			break
		}
		if filepath.Dir(dir) == dir {
			t.Fatal("no go.mod above the test")
		}
	}
	readme, err := os.ReadFile(filepath.Join(dir, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	return string(readme)
}

// codeSpan matches a cell that is exactly one code span.
var codeSpan = regexp.MustCompile("^`([^`]*)`$")

func unquote(cell string) string {
	if m := codeSpan.FindStringSubmatch(cell); m != nil {
		return m[1]
	}
	return cell
}

// TestREADMEConfigurationTable keeps the README's table and serve's flags
// in step: the same flags, each with its environment variable, and the
// flag's default (a code span must be the default itself; words or an
// empty cell stand for an empty default).
func TestREADMEConfigurationTable(t *testing.T) {
	t.Parallel()
	var out bytes.Buffer
	flags := newServe(&out, &out).Flags()
	rows := readConfigTable(t)

	documented := map[string]bool{}
	for _, r := range rows {
		name := strings.TrimPrefix(r.flag, "--")
		documented[name] = true
		f := flags.Lookup(name)
		if f == nil {
			t.Errorf("README.md:%d documents %s, which serve does not have", r.line, r.flag)
			continue
		}
		if want := EnvName(name); r.env != want {
			t.Errorf("README.md:%d: %s is set by %s, not %s", r.line, r.flag, want, r.env)
		}
		def := defaultText(f)
		switch m := codeSpan.FindStringSubmatch(r.def); {
		case m != nil && m[1] != def:
			t.Errorf("README.md:%d: %s defaults to %q, not %q", r.line, r.flag, def, m[1])
		case m == nil && def != "":
			t.Errorf("README.md:%d: %s defaults to %q; write it as a code span", r.line, r.flag, def)
		}
	}
	flags.VisitAll(func(f *pflag.Flag) {
		if !documented[f.Name] {
			t.Errorf("serve's --%s (default %q) is missing from the README's configuration table", f.Name, defaultText(f))
		}
	})
}

// TestREADMEConfigurationBounds: a bound the table gives a flag ("at least
// 10ms", "at most 512 MiB") is one serve enforces: a value just past it is
// refused at start, the error naming the bound. (grpc-go raised a
// --grpc-keepalive under its 1s minimum without a word.)
func TestREADMEConfigurationBounds(t *testing.T) {
	t.Parallel()
	bound := regexp.MustCompile(`\bat (least|most) (\d+)( MiB| webhooks|ms|s|h)\b`)
	// Canceled: a value serve takes fails later, at the store, without the
	// bound's words, rather than serving.
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	checked := 0
	for _, r := range readConfigTable(t) {
		for _, m := range bound.FindAllStringSubmatch(r.what, -1) {
			checked++
			step := int64(1)
			if m[1] == "least" {
				step = -1
			}
			var past string
			if n, err := strconv.ParseInt(m[2], 10, 64); m[3] == " MiB" && err == nil {
				past = strconv.FormatInt(n<<20+step, 10)
			} else if m[3] == " webhooks" && err == nil {
				past = strconv.FormatInt(n+step, 10)
			} else if d, err := time.ParseDuration(m[2] + m[3]); err == nil {
				past = (d + time.Duration(step)).String()
			} else {
				t.Fatalf("README.md:%d: bound %q: %v", r.line, m[0], err)
			}
			var out, errOut bytes.Buffer
			code := Main(ctx, []string{"serve", "--data-dir", t.TempDir(), "--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0",
				"--metrics-addr", "", r.flag, past}, nil, &out, &errOut)
			if code != 1 || !strings.Contains(errOut.String(), m[0]) {
				t.Errorf("README.md:%d says %s is %s, but serve %s %s: exit %d, %q", r.line, r.flag, m[0], r.flag, past, code, errOut.String())
			}
		}
	}
	if checked < 6 { // --health-interval, --max-watch-duration, --max-batch, --retention-interval, --max-body-bytes, --grpc-keepalive
		t.Errorf("found %d bounds in the README's configuration table, want at least 6", checked)
	}
}

// defaultText is a flag's default as the README shows it; an empty list is
// empty.
func defaultText(f *pflag.Flag) string {
	if f.DefValue == "[]" {
		return ""
	}
	return f.DefValue
}

// TestServeHelpNamesEnvironment: `serve --help` names every flag's
// environment variable.
func TestServeHelpNamesEnvironment(t *testing.T) {
	t.Parallel()
	var out bytes.Buffer
	cmd := newServe(&out, &out)
	cmd.SetOut(&out)
	cmd.SetArgs([]string{"--help"})
	if err := cmd.Execute(); err != nil {
		t.Fatal(err)
	}
	help := out.String()
	cmd.Flags().VisitAll(func(f *pflag.Flag) {
		if f.Name == "help" {
			return
		}
		if !strings.Contains(help, "--"+f.Name) || !strings.Contains(help, "$"+EnvName(f.Name)) {
			t.Errorf("serve --help does not document --%s and $%s", f.Name, EnvName(f.Name))
		}
	})
}

// TestDBFlagsAsServe: a flag of a db subcommand that serve has too is
// serve's (the same default, so the configuration table holds for it),
// and one of its own is named in the README.
func TestDBFlagsAsServe(t *testing.T) {
	t.Parallel()
	var out bytes.Buffer
	serve := newServe(&out, &out).Flags()
	readme := readREADME(t)
	for _, sub := range newDB(&out, &out).Commands() {
		sub.Flags().VisitAll(func(f *pflag.Flag) {
			if sf := serve.Lookup(f.Name); sf != nil {
				if f.DefValue != sf.DefValue {
					t.Errorf("db %s --%s defaults to %q, serve's to %q", sub.Name(), f.Name, f.DefValue, sf.DefValue)
				}
				return
			}
			if !strings.Contains(readme, "`db "+sub.Name()+" --"+f.Name+"`") {
				t.Errorf("db %s --%s is not in the README (as `db %s --%s`)", sub.Name(), f.Name, sub.Name(), f.Name)
			}
		})
	}
}

// TestEveryCommandNamesEnvironment: every flag of every command, as the
// package promises, is also read from its environment variable, which its
// help names.
func TestEveryCommandNamesEnvironment(t *testing.T) {
	t.Parallel()
	var out bytes.Buffer
	var visit func(cmd *cobra.Command)
	visit = func(cmd *cobra.Command) {
		for _, sub := range cmd.Commands() {
			visit(sub)
		}
		if !cmd.Runnable() {
			return
		}
		cmd.Flags().VisitAll(func(f *pflag.Flag) {
			if !strings.Contains(f.Usage, "$"+EnvName(f.Name)) {
				t.Errorf("%s --%s: its help does not name $%s", cmd.CommandPath(), f.Name, EnvName(f.Name))
			}
		})
	}
	visit(newRoot(&out, &out))
}

// TestAPIKeyReadsEnvironment: apikey's flags are read from the
// environment, as every command's are.
func TestAPIKeyReadsEnvironment(t *testing.T) {
	t.Setenv(EnvName("name"), "from-env")
	t.Setenv(EnvName("scopes"), "watch")
	var out, errOut bytes.Buffer
	if code := Main(t.Context(), []string{"apikey"}, nil, &out, &errOut); code != 0 {
		t.Fatalf("exit %d: %s", code, errOut.String())
	}
	if !strings.Contains(out.String(), "config: from-env ") || !strings.HasSuffix(strings.TrimSpace(out.String()), " watch") {
		t.Errorf("apikey with $%s and $%s set printed %q, want a key named from-env with the watch scope", EnvName("name"), EnvName("scopes"), out.String())
	}
}

// TestREADMECopySummary: the summary the README shows db copy printing is
// the one it prints, its counts apart: the webhooks read (W), events
// stored (E) and new requests (R) are three numbers, not one (a run of the
// README's own scenario prints 8, 8 and 2).
func TestREADMECopySummary(t *testing.T) {
	t.Parallel()
	line := copySummary(store.CopyStats{Webhooks: 1, Events: 2, Requests: 3})
	line = strings.NewReplacer("1 ", "W ", "2 ", "E ", "3 ", "R ").Replace(line)
	if !strings.Contains(readREADME(t), "\n# "+line+"\n") {
		t.Errorf("README.md does not show db copy's summary as %q", "# "+line)
	}
}

// Each Config field that Validate names (server.SettingError) is mapped to
// a flag of serve that exists, by a path of fields that exists: a typo in
// either would leave a refusal unnamed.
func TestSettingFlagsExist(t *testing.T) {
	t.Parallel()
	flags := newServe(io.Discard, io.Discard).Flags()
	for field, name := range settingFlags {
		if flags.Lookup(name) == nil {
			t.Errorf("settingFlags[%q] = %q, which is no flag of serve", field, name)
		}
		typ := reflect.TypeFor[server.Config]()
		for part := range strings.SplitSeq(field, ".") {
			f, ok := typ.FieldByName(part)
			if !ok {
				t.Errorf("settingFlags: server.Config has no field %s", field)
				break
			}
			typ = f.Type
		}
	}
}
