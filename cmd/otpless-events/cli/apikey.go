package cli

import (
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"github.com/otpless-events/otpless-events/server/auth"
)

func newAPIKey(stdout io.Writer) *cobra.Command {
	var name, scopes string
	cmd := &cobra.Command{
		Use:   "apikey",
		Short: "Make a new API key and the configuration line that grants it",
		Long: "Prints a new random API key, to give to the client, and the line to add to the server's\n" +
			"API keys ($" + envAPIKeys + " or --api-keys-file), which holds only the key's hash.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := bindEnv(cmd.Flags()); err != nil {
				return err
			}
			if err := auth.CheckKeyName(name); err != nil {
				return err
			}
			sc, err := auth.ParseScopes(scopes)
			if err != nil {
				return err
			}
			key := auth.NewSecret("oek_")
			// A key that did not reach stdout (a full disk, a closed pipe)
			// is lost: say so, rather than exit 0.
			_, err = fmt.Fprintf(stdout, "key:    %s\nconfig: %s\n", key, auth.FormatAPIKey(name, key, sc))
			return err
		},
	}
	cmd.Flags().StringVar(&name, "name", "client", "name of the key, shown in logs and limits")
	cmd.Flags().StringVar(&scopes, "scopes", "read", "comma-separated scopes: read, read_pii, watch, mint_watch_token, ingest, admin")
	documentEnv(cmd.Flags())
	return cmd
}
