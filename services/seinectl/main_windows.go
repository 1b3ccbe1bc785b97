package main

import (
	"log/slog"

	"github.com/seine-cni/seine/core/agent"
	"github.com/seine-cni/seine/core/nodecheck"
	"github.com/seine-cni/seine/ovs/openflow"
	"github.com/seine-cni/seine/platform"
	"github.com/seine-cni/seine/windows"
)

var defaults = struct {
	configPath, binDir, cniBinDir, agentLog string
	// privateDirs: the configuration's directory is the agent's data
	// directory (kubeconfig, state, CNI socket, DEL spool).
	privateDirs bool
}{
	configPath:  `C:\ProgramData\Seine\seine-agent.yaml`,
	binDir:      `C:\Program Files\Seine`,
	cniBinDir:   `C:\opt\cni\bin`,
	agentLog:    `C:\ProgramData\Seine\logs\seine-agent.log`,
	privateDirs: true,
}

// nodeHost sets and checks directories' ACLs (windows.DirACL).
var nodeHost nodecheck.Host = nodecheck.WindowsHost{ACL: windows.DirACL{}}

// openflowDialer reaches OVS for Windows' management named pipes.
var openflowDialer openflow.Dialer = openflow.PipeDialer

func exe(name string) string { return name + ".exe" }

// newDiagnostics: the Windows backend lands with the Windows node issue;
// until then the bundle says so in its summary.
func newDiagnostics(*agent.Config, *slog.Logger) (platform.Diagnostics, func(), error) {
	return nil, nil, platform.NotSupported("windows diagnostics (no Windows backend yet)")
}

// openBackend: the Windows backend is not wired into seinectl yet.
func openBackend(*slog.Logger) func(*agent.Config, platform.OVSDB) (platform.Backend, error) {
	return func(*agent.Config, platform.OVSDB) (platform.Backend, error) {
		return nil, platform.NotSupported("node-cleanup on Windows")
	}
}
