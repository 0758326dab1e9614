// Package api implements the gRPC services of otpless.events.v1 on top of the
// normalizer, the group-commit writer, the store and the broker: request
// validation, proto <-> store, and the one place where domain errors become
// gRPC status codes (Status).
//
// It may import the generated API, server/normalize, server/state,
// server/store, server/broker, server/auth and server/pii; never the
// gateway or the wiring.
package api
