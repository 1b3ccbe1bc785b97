package main

import (
	"log/slog"

	"github.com/seine-cni/seine/core/agent"
	"github.com/seine-cni/seine/core/nodecheck"
	"github.com/seine-cni/seine/linux"
	"github.com/seine-cni/seine/ovs/openflow"
	"github.com/seine-cni/seine/ovs/ovsdb"
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

// openflowDialer: openflow's default (unix sockets).
var openflowDialer openflow.Dialer

func exe(name string) string { return name }

// newDiagnostics is the Linux backend's Diagnostics, in the process's own
// network namespace.
func newDiagnostics(cfg *agent.Config, log *slog.Logger) (platform.Diagnostics, func(), error) {
	dp := ovsdb.DatapathSystem
	if cfg.OVS.DatapathType == "netdev" {
		dp = ovsdb.DatapathNetdev
	}
	b, err := linux.New(platform.Config{Logger: log, OVSRunDir: cfg.OVS.RunDir, Datapath: dp})
	if err != nil {
		return nil, nil, err
	}
	return b, func() { b.Close() }, nil
}

// openBackend opens the Linux backend in this process's network namespace
// for node-cleanup.
func openBackend(log *slog.Logger) func(*agent.Config, platform.OVSDB) (platform.Backend, error) {
	return func(cfg *agent.Config, db platform.OVSDB) (platform.Backend, error) {
		dp := ovsdb.DatapathSystem
		if cfg.OVS.DatapathType == "netdev" {
			dp = ovsdb.DatapathNetdev
		}
		return linux.New(platform.Config{Logger: log, OVSDB: db, OVSRunDir: cfg.OVS.RunDir, Datapath: dp})
	}
}
