//go:build !windows

package ovsdb

import (
	"errors"
	"fmt"
	"log/slog"
)

// parsePipeEndpoint refuses named pipes, which exist only on Windows.
func parsePipeEndpoint(s, scheme, _ string) (Endpoint, error) {
	return Endpoint{}, fmt.Errorf("ovsdb endpoint %q: %s needs Windows: %w", s, scheme, errors.ErrUnsupported)
}

// openTransport returns the endpoint for libovsdb to dial itself.
func openTransport(ep Endpoint, _ *slog.Logger) (addr string, stop func(), err error) {
	return ep.String(), func() {}, nil
}
