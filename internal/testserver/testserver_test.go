package testserver

import (
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// A port of the server's taken between its stop and its start (here: by
// this test, for a moment) is waited for: Restart starts on the same ports
// once it is free.
func TestRestartWaitsForItsPorts(t *testing.T) {
	t.Parallel()
	ts := Start(t, nil)
	httpURL, grpcAddr := ts.HTTPURL, ts.GRPCAddr
	ts.Stop(t)
	_, addr, _ := strings.Cut(httpURL, "://")
	taken, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	time.AfterFunc(200*time.Millisecond, func() { taken.Close() })
	ts.Restart(t)
	if ts.HTTPURL != httpURL || ts.GRPCAddr != grpcAddr {
		t.Fatalf("restarted on %s and %s, want %s and %s", ts.HTTPURL, ts.GRPCAddr, httpURL, grpcAddr)
	}
	resp, err := ts.HTTPClient().Get(ts.HTTPURL + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /healthz after the restart: %d", resp.StatusCode)
	}
}
