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
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	// The first signal asks the command to finish (serve shuts down
	// gracefully); a second one ends the process at once.
	context.AfterFunc(ctx, stop)
	code := cli.Main(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
