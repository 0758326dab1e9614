package cli

import (
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"github.com/otpless-events/otpless-events/server"
	"github.com/otpless-events/otpless-events/server/store/sqlitestore"
)

func newDB(stdout io.Writer) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "db",
		Short: "Maintain the embedded SQLite database while the server is stopped",
		Long: "Offline maintenance of the embedded database, found as serve finds it (--data-dir, --store).\n" +
			"Each refuses to run while a server has the database open, and a server started\n" +
			"meanwhile refuses to start.",
	}
	cmd.AddCommand(newDBCheck(stdout))
	cmd.AddCommand(newDBVacuum(stdout))
	return cmd
}

// dbCommand completes a db subcommand: serve's flags that say where the
// database is (with serve's defaults and environment variables), and run
// with the database's file.
func dbCommand(cmd *cobra.Command, run func(cmd *cobra.Command, path string) error) *cobra.Command {
	def := server.DefaultConfig()
	cfg := &server.Config{}
	cmd.Args = cobra.NoArgs
	cmd.Flags().StringVar(&cfg.DataDir, "data-dir", def.DataDir, "directory of the embedded database, as for serve")
	cmd.Flags().StringVar(&cfg.Store, "store", def.Store, "sqlite://PATH or a file path, as for serve (default: SQLite in --data-dir)")
	documentEnv(cmd.Flags())
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		if err := bindEnv(cmd.Flags()); err != nil {
			return err
		}
		path, err := cfg.SQLitePath()
		if err != nil {
			return fmt.Errorf("%s works on the embedded SQLite database only: %w", cmd.CommandPath(), err)
		}
		return run(cmd, path)
	}
	return cmd
}

func newDBCheck(stdout io.Writer) *cobra.Command {
	var quick bool
	cmd := &cobra.Command{
		Use:   "check",
		Short: "Check the database file for damage (SQLite's integrity_check); exit 1 on any",
	}
	cmd.Flags().BoolVar(&quick, "quick", false, "run quick_check: faster on a large file, but does not compare indexes with their tables")
	return dbCommand(cmd, func(cmd *cobra.Command, path string) error {
		problems, err := sqlitestore.Check(cmd.Context(), path, quick)
		if err != nil {
			return err
		}
		if len(problems) == 0 {
			fmt.Fprintf(stdout, "%s: ok\n", path)
			return nil
		}
		for _, p := range problems {
			fmt.Fprintf(stdout, "%s: %s\n", path, p)
		}
		return fmt.Errorf("%s is damaged (SQLite's report above)", path)
	})
}

func newDBVacuum(stdout io.Writer) *cobra.Command {
	return dbCommand(&cobra.Command{
		Use:   "vacuum",
		Short: "Rewrite the database file (SQLite's VACUUM): no free pages, nothing left of purged personal data",
		Long: "Rewrites every page of the database file, so that copies of rows a retention purge\n" +
			"changed, left in the pages' unused space, are gone, and the file holds no free pages.\n" +
			"It may need free disk space of twice the file's size.",
	}, func(cmd *cobra.Command, path string) error {
		before, after, err := sqlitestore.Vacuum(cmd.Context(), path)
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "%s: %d bytes before, %d after\n", path, before, after)
		return nil
	})
}
