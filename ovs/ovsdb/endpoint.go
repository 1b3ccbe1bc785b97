package ovsdb

import (
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"strings"
)

// Endpoint is a parsed OVSDB endpoint.
type Endpoint struct {
	Scheme  string // "unix" or "tcp"; on Windows also "npipe" or "winpipe"
	Address string // socket path, host:port, or pipe name
}

// String returns the endpoint in OVS syntax.
func (e Endpoint) String() string { return e.Scheme + ":" + e.Address }

// ParseEndpoint parses an endpoint in OVS syntax: "unix:<absolute path>" or
// "tcp:<host>:<port>" (IPv6 hosts in brackets).
//
// This is the dialer seam. libovsdb v0.7.0 dials by itself and knows only
// unix, tcp and ssl sockets; it takes no dial function. ssl needs certificates
// Seine does not manage and is rejected with an error wrapping
// errors.ErrUnsupported. Windows named pipes ("npipe:\\.\pipe\..." or
// "winpipe:...") are accepted on Windows only (parsePipeEndpoint, per OS), and
// there, like "unix:" paths, which OVS for Windows serves as pipes, they are
// reached through a loopback relay (openTransport in transport_windows.go).
func ParseEndpoint(s string) (Endpoint, error) {
	scheme, addr, ok := strings.Cut(s, ":")
	if !ok || addr == "" {
		return Endpoint{}, fmt.Errorf("ovsdb endpoint %q: want unix:<path> or tcp:<host>:<port>", s)
	}
	switch scheme {
	case "unix":
		if !filepath.IsAbs(addr) && !strings.HasPrefix(addr, "/") {
			return Endpoint{}, fmt.Errorf("ovsdb endpoint %q: unix socket path must be absolute", s)
		}
		return Endpoint{Scheme: scheme, Address: addr}, nil
	case "tcp":
		host, port, err := net.SplitHostPort(addr)
		if err != nil || host == "" || port == "" {
			return Endpoint{}, fmt.Errorf("ovsdb endpoint %q: want tcp:<host>:<port>", s)
		}
		return Endpoint{Scheme: scheme, Address: addr}, nil
	case "npipe", "winpipe":
		return parsePipeEndpoint(s, scheme, addr)
	case "ssl":
		return Endpoint{}, fmt.Errorf("ovsdb endpoint %q: %s: %w", s, scheme, errors.ErrUnsupported)
	default:
		return Endpoint{}, fmt.Errorf("ovsdb endpoint %q: unknown scheme %q", s, scheme)
	}
}
