package cli

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"

	"google.golang.org/grpc/grpclog"
)

// What grpclog logs as an error becomes a line of the server's log, its
// text masked as an error attribute is (the masking handler reads only
// attributes, and grpc-go's text is the line's message).
func TestGRPCErrorsAreLogLines(t *testing.T) {
	var out bytes.Buffer
	l := grpclog.NewLoggerV2(&bytes.Buffer{}, &bytes.Buffer{}, grpcErrors{func() *slog.Logger { return slog.New(slog.NewJSONHandler(&out, nil)) }})
	l.Errorf("Failed to write response: %v", "broken pipe")
	l.Errorf("grpc: failed to unmarshal the received message: %q", "mobile 919812345678")
	got := out.String()
	if !strings.Contains(got, `"level":"WARN"`) || !strings.Contains(got, `"component":"grpc"`) || !strings.Contains(got, "Failed to write response: broken pipe") {
		t.Errorf("logged %q", got)
	}
	if strings.Contains(got, "9812345678") || !strings.Contains(got, "mobile **********78") {
		t.Errorf("logged a phone number in clear: %q", got)
	}
}

// TestDropNotice: the line saying log lines were dropped is written at
// every level, as a warning where warnings are logged.
func TestDropNotice(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ format, level, want string }{
		{"text", "info", "level=WARN"},
		{"text", "warn", "level=WARN"},
		{"text", "error", "level=ERROR"},
		{"json", "error", `"level":"ERROR"`},
	} {
		line := string(dropNotice(tc.format, tc.level)(3))
		if !strings.Contains(line, tc.want) || !strings.Contains(line, "log lines dropped") || !strings.Contains(line, "dropped=3") && !strings.Contains(line, `"dropped":3`) {
			t.Errorf("--log-format %s --log-level %s: %q, want a line with %s saying 3 were dropped", tc.format, tc.level, line, tc.want)
		}
	}
}
