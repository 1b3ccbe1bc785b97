package main

import (
	"context"
	"io"
	"log/slog"

	"github.com/seine-cni/seine/core/nodecheck"
)

// runNodeCleanup is `seinectl node-cleanup`: it removes from this node what
// seine-agent and node-prep made (nodecheck.Cleanup), once the agent is
// stopped and while Open vSwitch still runs. The cleanup DaemonSet
// (installer/kubernetes/seine-cleanup.yml) runs it with the node's root
// mounted at /host.
func runNodeCleanup(ctx context.Context, args []string, stdout, stderr io.Writer, log *slog.Logger) error {
	f := newFlags("node-cleanup", stderr)
	out := f.output(formatTable)
	o := nodecheck.CleanupOptions{Host: nodeHost, Logger: log, OpenBackend: openBackend(log)}
	f.StringVar(&o.ConfigPath, "config", defaults.configPath, "the configuration the agent ran with (a node path)")
	f.StringVar(&o.HostRoot, "host-root", "", "where the node's root is mounted (every path is a node path under it)")
	f.StringVar(&o.CNIBinDir, "cni-bin-dir", defaults.cniBinDir, "the runtime's CNI plugin directory (a node path)")
	f.StringVar(&o.CNIConfDir, "cni-conf-dir", "", "the runtime's CNI configuration directory (a node path; default: the config's cniConfDir)")
	if err := f.parse(args); err != nil {
		return err
	}
	if err := checkFormat(*out, true); err != nil {
		return err
	}
	r := nodecheck.Cleanup(ctx, o)
	if err := printReport(stdout, *out, r); err != nil {
		return err
	}
	if r.Failed() {
		return errChecksFailed
	}
	return nil
}
