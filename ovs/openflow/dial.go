package openflow

import (
	"context"
	"fmt"
	"net"
	"strings"
)

// Dialer opens the transport to a switch. The default understands
// "unix:<path>" (a bridge's <rundir>/<bridge>.mgmt socket) and
// "tcp:<host>:<port>"; Windows can plug in a named-pipe dialer here.
type Dialer func(ctx context.Context, addr string) (net.Conn, error)

// DefaultDialer dials "unix:" and "tcp:" addresses.
func DefaultDialer(ctx context.Context, addr string) (net.Conn, error) {
	var d net.Dialer
	switch {
	case strings.HasPrefix(addr, "unix:"):
		return d.DialContext(ctx, "unix", strings.TrimPrefix(addr, "unix:"))
	case strings.HasPrefix(addr, "tcp:"):
		return d.DialContext(ctx, "tcp", strings.TrimPrefix(addr, "tcp:"))
	}
	return nil, fmt.Errorf("openflow: unsupported address %q (want unix:<path> or tcp:<host>:<port>)", addr)
}
