package server

import "time"

// SetRelayPing sets the Options.Ping of the relay a server on PostgreSQL
// runs: how long its listening connection may be quiet before it is
// pinged, and how long the ping may take.
func SetRelayPing(c *Config, d time.Duration) { c.relayPing = d }

// SetSendWait sets how long a message of a gRPC stream may wait for its
// client (flow control) before the server closes the client's connection,
// every stream on it included.
func SetSendWait(c *Config, d time.Duration) { c.sendWait = d }

// SetCertCheck sets how often, at most, the TLS files are read again to
// find a renewed certificate.
func SetCertCheck(c *Config, d time.Duration) { c.certCheck = d }
