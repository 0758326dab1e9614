package server

import "time"

// SetRelayPing sets the Options.Ping of the relay a server on PostgreSQL
// runs: how long its listening connection may be quiet before it is
// pinged, and how long the ping may take.
func SetRelayPing(c *Config, d time.Duration) { c.relayPing = d }
