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
				return
			}
			f.Annotations = map[string][]string{fromEnv: {EnvName(f.Name)}}
		}
	})
	return err
}

// fromEnv annotates a flag that bindEnv set from its environment variable.
const fromEnv = "otpless-events/env"

// source names where flag name's value came from: its environment
// variable, or the flag itself (given, or its default).
func source(flags *pflag.FlagSet, name string) string {
	if flags == nil {
		return "--" + name
	}
	if f := flags.Lookup(name); f != nil && len(f.Annotations[fromEnv]) > 0 {
		return f.Annotations[fromEnv][0]
	}
	return "--" + name
}

// documentEnv appends the environment variable to every flag's usage.
func documentEnv(flags *pflag.FlagSet) {
	flags.VisitAll(func(f *pflag.Flag) {
		f.Usage += " [$" + EnvName(f.Name) + "]"
	})
}

func newLogger(w io.Writer, format, level string) (*slog.Logger, error) {
	lvl, err := parseLogLevel(level)
	if err != nil {
		return nil, err
	}
	if err := checkLogFormat(format); err != nil {
		return nil, err
	}
	opts := &slog.HandlerOptions{Level: lvl}
	if format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return slog.New(slog.NewTextHandler(w, opts)), nil
}

func parseLogLevel(level string) (slog.Level, error) {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(level)); err != nil {
		return 0, fmt.Errorf("log level %q: want debug, info, warn or error", level)
	}
	return lvl, nil
}

func checkLogFormat(format string) error {
	if format != "text" && format != "json" {
		return fmt.Errorf("log format %q: want text or json", format)
	}
	return nil
}

// checkedString is a string flag whose value check refuses when it is
// set: the error then names where the value came from, the flag or its
// environment variable (bindEnv), as a number's or a duration's does.
type checkedString struct {
	v     *string
	check func(string) error
}

func (c checkedString) Set(s string) error {
	if err := c.check(s); err != nil {
		return err
	}
	*c.v = s
	return nil
}

func (c checkedString) String() string {
	if c.v == nil {
		return ""
	}
	return *c.v
}

func (c checkedString) Type() string { return "string" }
