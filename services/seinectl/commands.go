package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

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

func kubeClient(kubeconfig string) (kubernetes.Interface, error) {
	rc, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return nil, fmt.Errorf("kubeconfig: %w", err)
	}
	return kubernetes.NewForConfig(rc)
}

func runVersion(_ context.Context, args []string, stdout, stderr io.Writer) error {
	f := newFlags("version", stderr)
	out := f.output(formatTable)
	kubeconfig := f.String("kubeconfig", "", "also ask this cluster's API server for its version")
	if err := f.parse(args); err != nil {
		return err
	}
	if err := checkFormat(*out, true); err != nil {
		return err
	}
	v := buildInfo()
	if *kubeconfig != "" {
		cs, err := kubeClient(*kubeconfig)
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
		return printStructured(stdout, *out, v)
	}
	fmt.Fprintf(stdout, "seinectl %s", v.Version)
	if v.Commit != "" {
		fmt.Fprintf(stdout, " (commit %.12s)", v.Commit)
	}
	fmt.Fprintf(stdout, " %s %s\n", v.GoVersion, v.Platform)
	if v.Server != "" {
		fmt.Fprintf(stdout, "server %s\n", v.Server)
	}
	return nil
}

func runCheck(ctx context.Context, args []string, stdout, stderr io.Writer, log *slog.Logger) error {
	f := newFlags("check", stderr)
	out := f.output(formatTable)
	config := f.String("config", defaults.configPath, "the agent's configuration file")
	binDir := f.String("bin-dir", defaults.binDir, "where seine-agent and seinectl are installed")
	cniBinDir := f.String("cni-bin-dir", defaults.cniBinDir, "the runtime's CNI plugin directory (holds seine-cni as \"seine\")")
	cniConfDir := f.String("cni-conf-dir", "", "the runtime's CNI configuration directory (default: the config's cniConfDir)")
	if err := f.parse(args); err != nil {
		return err
	}
	if err := checkFormat(*out, true); err != nil {
		return err
	}
	r := nodecheck.Check(ctx, nodecheck.CheckOptions{
		ConfigPath:     *config,
		Binaries:       binaries(*binDir, *cniBinDir),
		CNIConfDir:     *cniConfDir,
		Host:           nodeHost,
		OpenFlowDialer: openflowDialer,
		Logger:         log,
		PrivateDirs:    defaults.privateDirs,
	})
	if err := printReport(stdout, *out, r); err != nil {
		return err
	}
	if r.Failed() {
		return errChecksFailed
	}
	return nil
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

func runNodePrep(args []string, stdout, stderr io.Writer) error {
	f := newFlags("node-prep", stderr)
	out := f.output(formatTable)
	o := nodecheck.PrepOptions{Host: nodeHost, PrivateConfigDir: defaults.privateDirs}
	f.StringVar(&o.ConfigPath, "config", defaults.configPath, "the agent's configuration file (written from --config-template if given)")
	f.StringVar(&o.TemplatePath, "config-template", "", "render the configuration from this template with --node-name")
	f.StringVar(&o.NodeName, "node-name", "", "this node's Kubernetes name")
	f.StringVar(&o.CNIBinDir, "cni-bin-dir", defaults.cniBinDir, "the runtime's CNI plugin directory")
	f.StringVar(&o.InstallCNI, "install-cni", "", "install this seine-cni binary into --cni-bin-dir as the \"seine\" plugin")
	f.BoolVar(&o.CheckOnly, "check", false, "report what is missing, change nothing")
	if err := f.parse(args); err != nil {
		return err
	}
	if err := checkFormat(*out, true); err != nil {
		return err
	}
	r := nodecheck.Prep(o)
	if err := printReport(stdout, *out, r); err != nil {
		return err
	}
	if r.Failed() {
		return errChecksFailed
	}
	return nil
}

// maxLogBytes bounds each log file in a bundle (its tail is kept);
// agentLogLines bounds the agent pod's log fetched from the API server.
const (
	maxLogBytes   = 20 << 20
	agentLogLines = 20000
)

func runBundle(ctx context.Context, args []string, stdout, stderr io.Writer, log *slog.Logger) error {
	f := newFlags("bundle", stderr)
	out := f.String("o", "", "the bundle file to write (.tar.gz)")
	config := f.String("config", defaults.configPath, "the agent's configuration file")
	agentLog := f.String("agent-log", defaults.agentLog, "the agent's log file, if it logs to one")
	kubeconfig := f.String("kubeconfig", "", "also collect what this cluster says about Seine")
	namespace := f.String("namespace", "kube-system", "the namespace of Seine's pods")
	if err := f.parse(args); err != nil {
		return err
	}
	if *out == "" {
		return usageErr("bundle: -o FILE.tar.gz is required")
	}
	sources := []bundle.Source{bundle.File("agent/seine-agent.yaml", *config)}
	if *agentLog != "" {
		sources = append(sources, bundle.Tail("agent/seine-agent.log", *agentLog, maxLogBytes))
	}
	cfg, cfgErr := agent.LoadConfig(*config)
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
		r := nodecheck.Check(ctx, nodecheck.CheckOptions{ConfigPath: *config, Binaries: binaries(defaults.binDir, defaults.cniBinDir),
			Host: nodeHost, OpenFlowDialer: openflowDialer, Logger: log})
		return printReport(w, formatWide, r)
	}})
	if *kubeconfig != "" {
		cs, err := kubeClient(*kubeconfig)
		if err != nil {
			return err
		}
		sources = append(sources, bundle.Kube("kube/cluster.txt", cs, *namespace))
		if cfgErr == nil {
			sources = append(sources, bundle.AgentPodLog("kube/seine-agent.log", cs, *namespace, cfg.NodeName, agentLogLines))
		}
	}
	var buf bytes.Buffer
	collectErr, err := bundle.Write(ctx, &buf, sources, bundle.Options{})
	if err != nil {
		return err
	}
	if err := os.WriteFile(*out, buf.Bytes(), 0o600); err != nil {
		return fmt.Errorf("bundle: %w", err)
	}
	fmt.Fprintf(stdout, "wrote %s (%d bytes)\n", *out, buf.Len())
	if collectErr != nil {
		fmt.Fprintf(stderr, "some parts could not be collected (see %s in the bundle):\n%v\n", bundle.SummaryFile, collectErr)
	}
	return nil
}
