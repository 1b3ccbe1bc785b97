//go:build !unix

package appctl

import (
	"net"
	"testing"
)

// socketpair falls back to an in-memory pipe where socketpair(2) is missing.
func socketpair(t *testing.T) (net.Conn, net.Conn) {
	a, b := net.Pipe()
	t.Cleanup(func() { a.Close(); b.Close() })
	return a, b
}
