// Package testnet is for tests that need an address where nothing listens.
// It is for tests only.
package testnet

import (
	"net"
	"testing"
)

// ClosedAddr returns an address of 127.0.0.1 where nothing listens, nor can
// until the test ends: a dial there is refused.
//
// A port taken by listening and closing is free again at once, and any
// listener on the machine binding port 0 can be given it (under go test
// ./..., another package's test server), which then answers the dials
// meant to be refused. This one is the local end of a connection the test
// keeps open: a dial to it is refused, as no socket listens there, and
// Linux binds it to no other socket while the connection holds it.
func ClosedAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	client, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close() })
	// Accepted, so that closing the listener leaves the connection up: one
	// reset drops its port.
	server, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { server.Close() })
	return client.LocalAddr().String()
}
