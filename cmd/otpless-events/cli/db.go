package cli

import (
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"

	"github.com/otpless-events/otpless-events/server"
	"github.com/otpless-events/otpless-events/server/store"
	"github.com/otpless-events/otpless-events/server/store/sqlitestore"
)

func newDB(stdout, stderr io.Writer) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "db",
		Short: "Maintain or copy the stored data while the server is stopped",
		Long: "Offline maintenance of the embedded database, found as serve finds it (--data-dir, --store),\n" +
			"and copy, which moves what a store holds into another. Each refuses to run while a server\n" +
			"has the SQLite database open, and a server started meanwhile refuses to start.",
		// Runnable, so that cobra checks the arguments: a command that is
		// not answers an unknown subcommand (db chek) with its help and
		// exit 0, as though it had run.
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	cmd.AddCommand(newDBCheck(stdout))
	cmd.AddCommand(newDBVacuum(stdout))
	cmd.AddCommand(newDBCopy(stdout, stderr))
	return cmd
}

// dbFlags adds to a db subcommand serve's flags that say where the store
// is (with serve's defaults and environment variables), and takes no
// arguments.
func dbFlags(cmd *cobra.Command) *server.Config {
	def := server.DefaultConfig()
	cfg := &server.Config{}
	cmd.Args = cobra.NoArgs
	cmd.Flags().StringVar(&cfg.DataDir, "data-dir", def.DataDir, "directory of the embedded database, as for serve")
	cmd.Flags().StringVar(&cfg.Store, "store", def.Store, "sqlite://PATH or a file path, as for serve (default: SQLite in --data-dir)")
	return cfg
}

// dbCommand completes a db subcommand of the embedded database: dbFlags,
// and run with the database's file.
func dbCommand(cmd *cobra.Command, run func(cmd *cobra.Command, path string) error) *cobra.Command {
	cfg := dbFlags(cmd)
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

// copyProgress is how often db copy says how far it got.
const copyProgress = 5 * time.Second

func newDBCopy(stdout, stderr io.Writer) *cobra.Command {
	var to string
	cmd := &cobra.Command{
		Use:   "copy --to DSN",
		Short: "Copy every stored webhook, with its events, into another store (SQLite or PostgreSQL)",
		Long: "Copies what the store of --data-dir or --store holds (SQLite or PostgreSQL) into the store\n" +
			"of --to (postgres://…, sqlite://PATH or a file path; a SQLite file is created), webhook by\n" +
			"webhook in the order the source stored them, through the destination's own commits: it\n" +
			"folds its own snapshots, with revisions of its own. What retention purged stays purged.\n" +
			"Events the destination holds already are duplicates, so a copy run again, or after an\n" +
			"interruption, adds only what is missing. A PostgreSQL source is read from one snapshot\n" +
			"(replicas may go on writing; what they commit meanwhile is not copied).",
	}
	cfg := dbFlags(cmd)
	cmd.Flags().Lookup("store").Usage = "the source: a store DSN as for serve, sqlite://PATH, a file path or postgres://… (default: SQLite in --data-dir)"
	cmd.Flags().StringVar(&to, "to", "", "the destination store: postgres://…, sqlite://PATH or a file path")
	documentEnv(cmd.Flags())
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		if err := bindEnv(cmd.Flags()); err != nil {
			return err
		}
		if to == "" {
			return errors.New("--to is required: the store to copy into")
		}
		log, err := newLogger(stderr, "text", "info")
		if err != nil {
			return err
		}
		ctx := cmd.Context()
		from, dst, created, err := cfg.OpenCopy(ctx, to, log)
		if err != nil {
			if mend := copyMend(err); mend != "" {
				return fmt.Errorf("%w (%s)", err, mend)
			}
			return err
		}
		defer from.(store.Store).Close()
		defer dst.Close()
		last := time.Now()
		st, err := store.Copy(ctx, from, dst, func(st store.CopyStats) {
			if time.Since(last) >= copyProgress {
				last = time.Now()
				fmt.Fprintf(stderr, "%d webhooks read so far\n", st.Webhooks)
			}
		})
		if err != nil {
			mend := copyMend(err)
			switch {
			case mend == "":
				mend = "run db copy again to go on"
			case created != "" && errors.Is(err, store.ErrDamaged):
				// No run goes past the damage: a store this run created
				// would be left half filled, for serve or a run to
				// another destination to meet.
				mend += removeCreated(dst, created)
			}
			return fmt.Errorf("%w (%s before; %s)", err, copySummary(st), mend)
		}
		if err := dst.Close(); err != nil {
			return fmt.Errorf("destination: %w", err)
		}
		fmt.Fprintln(stdout, copySummary(st))
		return nil
	}
	return cmd
}

// removeCreated closes dst and removes created, its SQLite file, which the
// copy made, and says so, for db copy's error.
func removeCreated(dst store.Store, created string) string {
	err := dst.Close()
	if err == nil {
		err = sqlitestore.Remove(created)
	}
	if err != nil {
		return fmt.Sprintf("; the destination %s, which this run created, could not be removed: %v", created, err)
	}
	return fmt.Sprintf("; the destination %s, which this run created, removed", created)
}

// copyMend says, of db copy's failure err, why a run again alone would not
// go on: damaged data, the source's or the destination's, which every run
// stops at, or a privilege the database refused, which a grant mends; else
// "".
func copyMend(err error) string {
	switch {
	case errors.Is(err, store.ErrDamaged) && errors.Is(err, store.ErrDestination):
		return "the destination holds damaged data, which every run of db copy into it stops at"
	case errors.Is(err, store.ErrDamaged):
		return "every run of db copy stops at the same damaged data"
	case errors.Is(err, store.ErrDenied):
		return "the database role lacks a privilege: grant it, and a run of db copy then goes on"
	}
	return ""
}

func copySummary(st store.CopyStats) string {
	return fmt.Sprintf("%d webhooks read: %d events stored, %d duplicates, %d new requests", st.Webhooks, st.Events, st.Duplicates, st.Requests)
}

// checkNamed is how many damaged rows db check names.
const checkNamed = 5

func newDBCheck(stdout io.Writer) *cobra.Command {
	var quick bool
	cmd := &cobra.Command{
		Use:   "check",
		Short: "Check the database file and every stored row for damage; exit 1 on any",
		Long: "Runs SQLite's integrity_check on the database file, then reads every stored row and\n" +
			"decodes it as serve and db copy do, counting the rows that do not decode and naming the\n" +
			"first few: SQLite finds those sound, and db copy stops at the first of them.",
	}
	cmd.Flags().BoolVar(&quick, "quick", false, "run quick_check only: faster on a large file, but does not compare indexes with their tables, nor read the stored rows")
	return dbCommand(cmd, func(cmd *cobra.Command, path string) error {
		problems, r, err := sqlitestore.Check(cmd.Context(), path, quick, checkNamed)
		if err != nil {
			return err
		}
		for _, p := range problems {
			fmt.Fprintf(stdout, "%s: %s\n", path, p)
		}
		if len(problems) == 1 && (problems[0] == sqlitestore.NoStore || problems[0] == sqlitestore.NoStoreOtherMigrations) {
			return fmt.Errorf("%s failed the check: it holds no store", path)
		}
		if len(problems) > 0 {
			return fmt.Errorf("%s failed the check: it is damaged (reported above)", path)
		}
		if r.Skipped != "" {
			fmt.Fprintf(stdout, "%s: stored rows not read: %s\n", path, r.Skipped)
		}
		for _, p := range r.First {
			fmt.Fprintf(stdout, "%s: %s\n", path, p)
		}
		if more := r.Damaged - len(r.First); more > 0 {
			fmt.Fprintf(stdout, "%s: and %d more\n", path, more)
		}
		if r.Damaged > 0 {
			rows := fmt.Sprintf("%d stored rows are", r.Damaged)
			if r.Damaged == 1 {
				rows = "1 stored row is"
			}
			return fmt.Errorf("%s failed the check: %s damaged (the first named above): db copy stops at the first of them", path, rows)
		}
		fmt.Fprintf(stdout, "%s: ok\n", path)
		return nil
	})
}

func newDBVacuum(stdout io.Writer) *cobra.Command {
	return dbCommand(&cobra.Command{
		Use:   "vacuum",
		Short: "Rewrite the database file (SQLite's VACUUM): no free pages, nothing left of purged personal data",
		Long: "Rewrites every page of the database file, so that copies of rows a retention purge\n" +
			"changed, left in the pages' unused space, are gone, and the file holds no free pages.\n" +
			"It may need free disk space of twice the file's size. A file that holds no store (empty,\n" +
			"or another program's database) is refused and left as it is.",
	}, func(cmd *cobra.Command, path string) error {
		before, after, err := sqlitestore.Vacuum(cmd.Context(), path)
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "%s: %d bytes before, %d after\n", path, before, after)
		return nil
	})
}
