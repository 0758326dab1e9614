package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/encoding/protojson"

	eventsv1 "github.com/otpless-events/otpless-events/gen/otpless/events/v1"
)

func newGet(stdout io.Writer) *cobra.Command {
	var client clientFlags
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "get REQUEST_ID",
		Short: "Print a request's current snapshot, as JSON",
		Long: "Prints the request's AuthRequest snapshot as JSON, as \"request\" in GET /v1/requests/{id} has it.\n" +
			"Needs an API key with the read scope ($" + envAPIKey + " or --api-key-file) when the server checks credentials.",
		Args: requestIDArg,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := bindEnv(cmd.Flags()); err != nil {
				return err
			}
			if timeout < 0 {
				return errors.New("--timeout must not be negative (0: never)")
			}
			conn, err := client.dial()
			if err != nil {
				return err
			}
			defer conn.Close()
			ctx := cmd.Context()
			if timeout > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, timeout)
				defer cancel()
			}
			resp, err := eventsv1.NewRequestServiceClient(conn).GetRequest(ctx, &eventsv1.GetRequestRequest{RequestId: args[0]})
			if err != nil {
				if timedOut(ctx, err) {
					return fmt.Errorf("request %s: no answer within --timeout %s", args[0], timeout)
				}
				return rpcError("request "+args[0], err)
			}
			b, err := protojson.MarshalOptions{Multiline: true, Indent: "  ", EmitDefaultValues: true}.Marshal(resp.GetRequest())
			if err != nil {
				return err
			}
			_, err = fmt.Fprintf(stdout, "%s\n", printableJSON(b))
			return err
		},
	}
	cmd.Flags().DurationVar(&timeout, "timeout", 30*time.Second, "give up when the server has not answered in this long (0: never)")
	client.register(cmd.Flags(), true)
	documentEnv(cmd.Flags())
	return cmd
}
