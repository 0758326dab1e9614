// Package cli is the otpless-events command line: one cobra command per
// subcommand, every flag also readable from an OTPLESS_EVENTS_* environment
// variable. main only calls Main, so tests drive the same code.
package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// EnvPrefix starts the environment variable of every flag:
// --grpc-addr is OTPLESS_EVENTS_GRPC_ADDR.
const EnvPrefix = "OTPLESS_EVENTS_"

// Main runs the command line, with stdin for what reads standard input
// (send -), and returns the process exit code.
func Main(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	root := newRoot(stdout, stderr)
	root.SetIn(stdin)
	root.SetArgs(args)
	if err := root.ExecuteContext(ctx); err != nil {
		if !errors.As(err, new(errReported)) {
			fmt.Fprintln(stderr, "error:", err)
		}
		return 1
	}
	return 0
}

// errReported is an error the command has logged already.
type errReported struct{ error }

func (e errReported) Unwrap() error { return e.error }

func newRoot(stdout, stderr io.Writer) *cobra.Command {
	root := &cobra.Command{
		Use:           "otpless-events",
		Short:         "Receive OTPLESS webhooks and serve live auth-request state",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.AddCommand(newServe(stdout, stderr))
	root.AddCommand(newAPIKey(stdout))
	root.AddCommand(newWatch(stdout, stderr))
	root.AddCommand(newGet(stdout))
	root.AddCommand(newSend(stdout))
	root.AddCommand(newBench(stdout, stderr))
	root.AddCommand(newDB(stdout, stderr))
	return root
}

// EnvName returns the environment variable that sets flag name.
func EnvName(name string) string {
	return EnvPrefix + strings.ToUpper(strings.ReplaceAll(name, "-", "_"))
}

// bindEnv sets every flag not given on the command line from its environment
// variable. An empty variable leaves a flag that is not text as it is
// ("" is no boolean, number or duration; VAR= is a common way to unset).
func bindEnv(flags *pflag.FlagSet) error {
	var err error
	flags.VisitAll(func(f *pflag.Flag) {
		if err != nil || f.Changed {
			return
		}
		if v, ok := os.LookupEnv(EnvName(f.Name)); ok && (v != "" || strings.HasPrefix(f.Value.Type(), "string")) {
			if serr := flags.Set(f.Name, v); serr != nil {
				err = fmt.Errorf("%s: %w", EnvName(f.Name), serr)
			}
		}
	})
	return err
}

// documentEnv appends the environment variable to every flag's usage.
func documentEnv(flags *pflag.FlagSet) {
	flags.VisitAll(func(f *pflag.Flag) {
		f.Usage += " [$" + EnvName(f.Name) + "]"
	})
}

func newLogger(w io.Writer, format, level string) (*slog.Logger, error) {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("log level %q: want debug, info, warn or error", level)
	}
	opts := &slog.HandlerOptions{Level: lvl}
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("log format %q: want text or json", format)
}
