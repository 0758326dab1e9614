package cli

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"

	"google.golang.org/grpc/grpclog"
)

// What grpclog logs as an error becomes a line of the server's log.
func TestGRPCErrorsAreLogLines(t *testing.T) {
	var out bytes.Buffer
	l := grpclog.NewLoggerV2(&bytes.Buffer{}, &bytes.Buffer{}, grpcErrors{func() *slog.Logger { return slog.New(slog.NewJSONHandler(&out, nil)) }})
	l.Errorf("Failed to write response: %v", "broken pipe")
	if got := out.String(); !strings.Contains(got, `"level":"WARN"`) || !strings.Contains(got, `"component":"grpc"`) || !strings.Contains(got, "Failed to write response: broken pipe") {
		t.Errorf("logged %q", got)
	}
}
