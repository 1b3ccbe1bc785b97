package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"

	"github.com/spf13/cobra"
	"k8s.io/client-go/kubernetes"

	"github.com/seine-cni/seine/core/agent"
	"github.com/seine-cni/seine/core/bundle"
	"github.com/seine-cni/seine/core/nodecheck"
)

// errChecksFailed is returned (exit code 1) when a check or step failed;
// the report says which.
var errChecksFailed = &exitError{code: 1, err: errors.New("some checks failed")}

// versionInfo is what `seinectl version` prints.
type versionInfo struct {
	Version   string `json:"version"`
	Commit    string `json:"commit,omitempty"`
	GoVersion string `json:"goVersion"`
	Platform  string `json:"platform"`
	Server    string `json:"serverVersion,omitempty"`
}

func buildInfo() versionInfo {
	v := versionInfo{Version: version, GoVersion: runtime.Version(), Platform: runtime.GOOS + "/" + runtime.GOARCH}
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" {
				v.Commit = s.Value
			}
		}
	}
	return v
}

// kubeClient is a clientset for the cluster the kubeconfig flags name.
func (c *cli) kubeClient() (kubernetes.Interface, error) {
	rc, err := c.kube.restConfig()
	if err != nil {
		return nil, err
	}
	return kubernetes.NewForConfig(rc)
}

func (c *cli) versionCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "version",
		Short: "Print seinectl's version (and the API server's, given a cluster)",
		Args:  noArgs,
	}
	out := outputFlag(cmd, formatTable)
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		if err := checkFormat(*out, true); err != nil {
			return err
		}
		v := buildInfo()
		if kubeFlagsSet(cmd) {
			cs, err := c.kubeClient()
			if err != nil {
				return err
			}
			sv, err := cs.Discovery().ServerVersion()
			if err != nil {
				return fmt.Errorf("server version: %w", err)
			}
			v.Server = sv.GitVersion
		}
		if *out == formatJSON || *out == formatYAML {
			return printStructured(c.stdout, *out, v)
		}
		fmt.Fprintf(c.stdout, "seinectl %s", v.Version)
		if v.Commit != "" {
			fmt.Fprintf(c.stdout, " (commit %.12s)", v.Commit)
		}
		fmt.Fprintf(c.stdout, " %s %s\n", v.GoVersion, v.Platform)
		if v.Server != "" {
			fmt.Fprintf(c.stdout, "server %s\n", v.Server)
		}
		return nil
	}
	return cmd
}

func (c *cli) checkCmd() *cobra.Command {
	o := nodecheck.CheckOptions{Host: nodeHost, OpenFlowDialer: openflowDialer, Logger: c.log, PrivateDirs: defaults.privateDirs}
	var binDir, cniBinDir string
	cmd := c.reportCmd("check", "Check this node's install: binaries, config, CNI, OVS, the agent's health",
		func(ctx context.Context) *nodecheck.Report {
			o.Binaries = binaries(binDir, cniBinDir)
			return nodecheck.Check(ctx, o)
		})
	f := cmd.Flags()
	f.StringVar(&o.ConfigPath, "config", defaults.configPath, "the agent's configuration file")
	f.StringVar(&binDir, "bin-dir", defaults.binDir, "where seine-agent and seinectl are installed")
	f.StringVar(&cniBinDir, "cni-bin-dir", defaults.cniBinDir, "the runtime's CNI plugin directory (holds seine-cni as \"seine\")")
	f.StringVar(&o.CNIConfDir, "cni-conf-dir", "", "the runtime's CNI configuration directory (default: the config's cniConfDir)")
	return cmd
}

// reportCmd is a command that runs a node check or step and prints its
// report (-o table|wide|json|yaml); a failed check or step is exit
// status 1.
func (c *cli) reportCmd(use, short string, run func(context.Context) *nodecheck.Report) *cobra.Command {
	cmd := &cobra.Command{Use: use, Short: short, Args: noArgs}
	out := outputFlag(cmd, formatTable)
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		if err := checkFormat(*out, true); err != nil {
			return err
		}
		r := run(cmd.Context())
		if err := printReport(c.stdout, *out, r); err != nil {
			return err
		}
		if r.Failed() {
			return errChecksFailed
		}
		return nil
	}
	return cmd
}

// binaries are the programs a node needs: the agent and seinectl in binDir,
// the CNI plugin under its type's name in cniBinDir.
func binaries(binDir, cniBinDir string) []string {
	return []string{
		filepath.Join(binDir, exe("seine-agent")),
		filepath.Join(binDir, exe("seinectl")),
		filepath.Join(cniBinDir, nodeHost.PluginFile("seine")),
	}
}

func (c *cli) nodePrepCmd() *cobra.Command {
	o := nodecheck.PrepOptions{Host: nodeHost, PrivateConfigDir: defaults.privateDirs}
	cmd := c.reportCmd("node-prep", "Prepare this node for the agent (--check: only report what is missing)",
		func(context.Context) *nodecheck.Report { return nodecheck.Prep(o) })
	f := cmd.Flags()
	f.StringVar(&o.ConfigPath, "config", defaults.configPath, "the agent's configuration file (written from --config-template if given)")
	f.StringVar(&o.TemplatePath, "config-template", "", "render the configuration from this template with --node-name")
	f.StringVar(&o.NodeName, "node-name", "", "this node's Kubernetes name")
	f.StringVar(&o.CNIBinDir, "cni-bin-dir", defaults.cniBinDir, "the runtime's CNI plugin directory")
	f.StringVar(&o.InstallCNI, "install-cni", "", "install this seine-cni binary into --cni-bin-dir as the \"seine\" plugin")
	f.BoolVar(&o.CheckOnly, "check", false, "report what is missing, change nothing")
	return cmd
}

// maxLogBytes bounds each log file in a bundle (its tail is kept);
// agentLogLines bounds the agent pod's log fetched from the API server.
const (
	maxLogBytes   = 20 << 20
	agentLogLines = 20000
)

func (c *cli) bundleCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "bundle -o FILE.tar.gz",
		Short: "Write a support bundle of this node",
		Args:  noArgs,
	}
	f := cmd.Flags()
	var o bundleOptions
	f.StringVarP(&o.out, "output", "o", "", "the bundle file to write (.tar.gz)")
	f.StringVar(&o.config, "config", defaults.configPath, "the agent's configuration file")
	f.StringVar(&o.agentLog, "agent-log", defaults.agentLog, "the agent's log file, if it logs to one")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		if o.out == "" {
			return usageErr("bundle: -o FILE.tar.gz is required")
		}
		// Seine's namespace: -n, else kube-system.
		o.namespace = "kube-system"
		if cmd.Flags().Changed("namespace") {
			o.namespace = c.kube.overrides.Context.Namespace
		}
		if kubeFlagsSet(cmd) {
			cs, err := c.kubeClient()
			if err != nil {
				return err
			}
			o.kube = cs
		}
		return c.bundle(cmd.Context(), o)
	}
	return cmd
}

// bundleOptions are seinectl bundle's flags; kube is set when the command
// line names a cluster.
type bundleOptions struct {
	out, config, agentLog, namespace string
	kube                             kubernetes.Interface
}

func (c *cli) bundle(ctx context.Context, o bundleOptions) error {
	log, stdout, stderr := c.log, c.stdout, c.stderr
	sources := []bundle.Source{bundle.File("agent/seine-agent.yaml", o.config)}
	if o.agentLog != "" {
		sources = append(sources, bundle.Tail("agent/seine-agent.log", o.agentLog, maxLogBytes))
	}
	cfg, cfgErr := agent.LoadConfig(o.config)
	if cfgErr != nil {
		noConfig := func(name string) bundle.Source {
			return bundle.Source{Name: name, Collect: func(context.Context, io.Writer) error {
				return fmt.Errorf("no agent config: %w", cfgErr)
			}}
		}
		sources = append(sources, noConfig("ovs/ovsdb.txt"), noConfig("ovs/flows.txt"), noConfig("host/diagnostics.txt"))
	} else {
		sources = append(sources,
			bundle.OVSDB("ovs/ovsdb.txt", cfg.OVS.DBEndpoint, log),
			bundle.OpenFlow("ovs/flows.txt", nodecheck.MgmtAddr(cfg), openflowDialer, log))
		diag, closeDiag, err := newDiagnostics(cfg, log)
		if closeDiag != nil {
			defer closeDiag()
		}
		sources = append(sources, bundle.Diagnostics("host/diagnostics.txt", diag, err))
	}
	sources = append(sources, bundle.Source{Name: "check.txt", Collect: func(ctx context.Context, w io.Writer) error {
		r := nodecheck.Check(ctx, nodecheck.CheckOptions{ConfigPath: o.config, Binaries: binaries(defaults.binDir, defaults.cniBinDir),
			Host: nodeHost, OpenFlowDialer: openflowDialer, Logger: log})
		return printReport(w, formatWide, r)
	}})
	if o.kube != nil {
		sources = append(sources, bundle.Kube("kube/cluster.txt", o.kube, o.namespace))
		if cfgErr == nil {
			sources = append(sources, bundle.AgentPodLog("kube/seine-agent.log", o.kube, o.namespace, cfg.NodeName, agentLogLines))
		}
	}
	var buf bytes.Buffer
	collectErr, err := bundle.Write(ctx, &buf, sources, bundle.Options{})
	if err != nil {
		return err
	}
	if err := os.WriteFile(o.out, buf.Bytes(), 0o600); err != nil {
		return fmt.Errorf("bundle: %w", err)
	}
	fmt.Fprintf(stdout, "wrote %s (%d bytes)\n", o.out, buf.Len())
	if collectErr != nil {
		fmt.Fprintf(stderr, "some parts could not be collected (see %s in the bundle):\n%v\n", bundle.SummaryFile, collectErr)
	}
	return nil
}
