package cli

import (
	"fmt"
	"io"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/encoding/protojson"

	eventsv1 "github.com/otpless-events/otpless-events/gen/otpless/events/v1"
)

func newGet(stdout io.Writer) *cobra.Command {
	var client clientFlags
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
			conn, err := client.dial()
			if err != nil {
				return err
			}
			defer conn.Close()
			resp, err := eventsv1.NewRequestServiceClient(conn).GetRequest(cmd.Context(), &eventsv1.GetRequestRequest{RequestId: args[0]})
			if err != nil {
				return rpcError("request "+args[0], err)
			}
			b, err := protojson.MarshalOptions{Multiline: true, Indent: "  ", EmitUnpopulated: true}.Marshal(resp.GetRequest())
			if err != nil {
				return err
			}
			_, err = fmt.Fprintf(stdout, "%s\n", printableJSON(b))
			return err
		},
	}
	client.register(cmd.Flags(), true)
	documentEnv(cmd.Flags())
	return cmd
}
