package main

import (
	"context"

	"github.com/spf13/cobra"

	"github.com/seine-cni/seine/core/nodecheck"
)

// nodeCleanupCmd is `seinectl node-cleanup`: it removes from this node what
// seine-agent and node-prep made (nodecheck.Cleanup), once the agent is
// stopped and while Open vSwitch still runs. The cleanup DaemonSet
// (installer/kubernetes/seine-cleanup.yml) runs it with the node's root
// mounted at /host.
func (c *cli) nodeCleanupCmd() *cobra.Command {
	o := nodecheck.CleanupOptions{Host: nodeHost, Logger: c.log, OpenBackend: openBackend(c.log)}
	cmd := c.reportCmd("node-cleanup", "Remove what Seine made on this node (agent stopped, Open vSwitch running)",
		func(ctx context.Context) *nodecheck.Report { return nodecheck.Cleanup(ctx, o) })
	f := cmd.Flags()
	f.StringVar(&o.ConfigPath, "config", defaults.configPath, "the configuration the agent ran with (a node path)")
	f.StringVar(&o.HostRoot, "host-root", "", "where the node's root is mounted (every path is a node path under it)")
	f.StringVar(&o.CNIBinDir, "cni-bin-dir", defaults.cniBinDir, "the runtime's CNI plugin directory (a node path)")
	f.StringVar(&o.CNIConfDir, "cni-conf-dir", "", "the runtime's CNI configuration directory (a node path; default: the config's cniConfDir)")
	return cmd
}
