// Package pgtest gives tests a PostgreSQL database: the DSN from
// OTPLESS_EVENTS_TEST_POSTGRES_DSN (tests skip without it, and fail when it is
// set but the server cannot be reached, so that CI cannot pass by skipping),
// a fresh schema per test, and a TCP proxy that a test can cut to play an
// outage without touching the shared server.
//
// It is for tests only; it may import pgx and the standard library.
package pgtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net"
	"net/url"
	"os"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// EnvDSN names the environment variable holding the test database's DSN, a
// postgres:// URL such as
// postgres://postgres@127.0.0.1:5432/test?sslmode=disable.
const EnvDSN = "OTPLESS_EVENTS_TEST_POSTGRES_DSN"

// DSN returns the test database's DSN, or skips tb when EnvDSN is unset.
func DSN(tb testing.TB) string {
	tb.Helper()
	dsn := os.Getenv(EnvDSN)
	if dsn == "" {
		tb.Skipf("PostgreSQL tests skipped: set %s to a postgres:// DSN (e.g. postgres://postgres@127.0.0.1:5432/test?sslmode=disable)", EnvDSN)
	}
	return dsn
}

// Schema creates a fresh, empty schema otpless_test_<random> and drops it,
// with everything in it, when tb ends. It returns the DSN with search_path
// set to the schema, and the schema's name. It skips tb when EnvDSN is unset
// and fails it when the server cannot be reached.
func Schema(tb testing.TB) (dsn, schema string) {
	tb.Helper()
	base := DSN(tb)
	schema = "otpless_test_" + randomHex(6)
	exec(tb, base, "CREATE SCHEMA "+pgx.Identifier{schema}.Sanitize())
	tb.Cleanup(func() { exec(tb, base, "DROP SCHEMA "+pgx.Identifier{schema}.Sanitize()+" CASCADE") })
	return WithParam(tb, base, "search_path", schema), schema
}

// SchemaName returns a fresh schema name, not created, whose schema (if
// something creates it) is dropped when tb ends.
func SchemaName(tb testing.TB) string {
	tb.Helper()
	base := DSN(tb)
	schema := "otpless_test_" + randomHex(6)
	tb.Cleanup(func() { exec(tb, base, "DROP SCHEMA IF EXISTS "+pgx.Identifier{schema}.Sanitize()+" CASCADE") })
	return schema
}

// exec runs sql on a connection of its own.
func exec(tb testing.TB, dsn, sql string) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		tb.Fatalf("PostgreSQL from %s unreachable: %v", EnvDSN, err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, sql); err != nil {
		tb.Fatalf("%s: %v", sql, err)
	}
}

// WithParam returns the URL dsn with query parameter name set to value.
func WithParam(tb testing.TB, dsn, name, value string) string {
	tb.Helper()
	u := parse(tb, dsn)
	q := u.Query()
	q.Set(name, value)
	u.RawQuery = q.Encode()
	return u.String()
}

// WithAddr returns the URL dsn pointing at addr (host:port) instead.
func WithAddr(tb testing.TB, dsn, addr string) string {
	tb.Helper()
	u := parse(tb, dsn)
	u.Host = addr
	return u.String()
}

// Addr returns the host:port of the URL dsn (port 5432 when it has none).
func Addr(tb testing.TB, dsn string) string {
	tb.Helper()
	u := parse(tb, dsn)
	port := u.Port()
	if port == "" {
		port = "5432"
	}
	return net.JoinHostPort(u.Hostname(), port)
}

func parse(tb testing.TB, dsn string) *url.URL {
	tb.Helper()
	u, err := url.Parse(dsn)
	if err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") {
		tb.Fatalf("%s must be a postgres:// URL", EnvDSN)
	}
	return u
}

// randomHex returns n random bytes in lowercase hex (schema names are
// folded to lowercase unless quoted, and search_path=… does not quote).
func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}
