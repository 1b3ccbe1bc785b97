//go:build !linux && !windows

package main

import (
	"log/slog"

	"github.com/seine-cni/seine/core/agent"
	"github.com/seine-cni/seine/core/nodecheck"
	"github.com/seine-cni/seine/ovs/openflow"
	"github.com/seine-cni/seine/platform"
)

var defaults = struct {
	configPath, binDir, cniBinDir, agentLog string
	privateDirs                             bool
}{
	configPath: "/etc/seine/seine-agent.yaml",
	binDir:     "/usr/local/bin",
	cniBinDir:  "/opt/cni/bin",
}

var nodeHost nodecheck.Host = nodecheck.UnixHost{}

var openflowDialer openflow.Dialer

func exe(name string) string { return name }

func newDiagnostics(*agent.Config, *slog.Logger) (platform.Diagnostics, func(), error) {
	return nil, nil, platform.NotSupported("diagnostics on this OS")
}

// openBackend: not on this OS.
func openBackend(*slog.Logger) func(*agent.Config, platform.OVSDB) (platform.Backend, error) {
	return func(*agent.Config, platform.OVSDB) (platform.Backend, error) {
		return nil, platform.NotSupported("node-cleanup on this OS")
	}
}
