package ovsdb

import (
	"context"
	"fmt"
	"log/slog"
	"net"

	"github.com/seine-cni/seine/ovs/internal/winpipe"
)

// parsePipeEndpoint accepts a named pipe ("npipe:\\.\pipe\x", "winpipe:x").
func parsePipeEndpoint(s, scheme, addr string) (Endpoint, error) {
	name, err := winpipe.Name(addr)
	if err != nil {
		return Endpoint{}, fmt.Errorf("ovsdb endpoint %q: %w", s, err)
	}
	return Endpoint{Scheme: scheme, Address: name}, nil
}

// openTransport gives libovsdb, which dials only unix and tcp sockets, a
// loopback relay to a pipe: to the pipe named by an npipe/winpipe endpoint,
// or to the pipe OVS for Windows serves for a "unix:" path (it has no unix
// sockets). Each connection libovsdb makes, reconnections included, opens
// the pipe anew. stop closes the relay; tcp endpoints are dialled directly.
func openTransport(ep Endpoint, log *slog.Logger) (addr string, stop func(), err error) {
	var name string
	switch ep.Scheme {
	case "npipe", "winpipe":
		name = ep.Address
	case "unix":
		name = winpipe.NameForPath("", ep.Address)
	default:
		return ep.String(), func() {}, nil
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	// Only this process may use the relay: any other would reach OVSDB
	// with its rights (the agent's: all of it) for as long as it runs.
	r, err := winpipe.NewRelay(func(ctx context.Context) (net.Conn, error) {
		return winpipe.Dial(ctx, name)
	}, winpipe.OwnProcess, log.With("component", "ovsdb-pipe-relay", "pipe", name))
	if err != nil {
		return "", nil, fmt.Errorf("relay to pipe %s: %w", name, err)
	}
	return "tcp:" + r.Addr(), func() { r.Close() }, nil
}
