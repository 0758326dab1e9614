// Command otpless-events receives OTPLESS webhooks and serves live auth
// request state over gRPC and HTTP. See `otpless-events --help`.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"google.golang.org/grpc/grpclog"

	"github.com/otpless-events/otpless-events/cmd/otpless-events/cli"
)

func main() {
	grpclog.SetLoggerV2(cli.GRPCLogger())
	ctx, cancel := context.WithCancel(context.Background())
	// The first signal asks the command to finish (serve shuts down
	// gracefully); a second one ends the process at once, with the status
	// a shell gives a process that signal killed. Not by putting the
	// signal's own action back: for a process started with SIGINT ignored
	// (a shell script's background job), that action is to ignore it.
	signals := make(chan os.Signal, 2)
	signal.Notify(signals, os.Interrupt, syscall.SIGTERM)
	go func() {
		<-signals
		cancel()
		sig := <-signals
		os.Exit(128 + int(sig.(syscall.Signal)))
	}()
	os.Exit(cli.Main(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}
