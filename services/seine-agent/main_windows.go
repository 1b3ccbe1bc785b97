package main

import (
	"fmt"

	"github.com/seine-cni/seine/platform"
)

// newBackend: the Windows backend lands with the Windows node issue; until
// then the agent says so instead of starting half a node.
func newBackend(platform.Config) (platform.Backend, error) {
	return nil, fmt.Errorf("seine-agent backend for this OS: %w", platform.NotSupported("node agent"))
}
