// Command seinectl is Seine's command-line tool, with kubectl's conventions:
// spf13/cobra commands with shell completion, kubectl's kubeconfig flags
// (client-go's clientcmd), k8s.io/cli-runtime's printers, and usable as a
// kubectl plugin (installed as kubectl-seine). On a node it checks the install (check), prepares the
// node for the agent (node-prep: the DaemonSet's init container and the
// Windows PowerShell module call it), collects a support bundle (bundle) and
// shows the node's pods and flows (get pods|flows); against the cluster it
// reads Seine's objects (get agentinfo|controllerinfo|networkpolicy|...) and
// runs Traceflows (traceflow). The OS backend, for the bundle's
// diagnostics, is chosen in main_<os>.go only.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// version is set at link time: -ldflags "-X main.version=v1.2.3".
var version = "dev"

// exitError carries the process's exit code: 1 when checks failed, 2 for
// usage errors.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

func usageErr(format string, args ...any) error {
	return &exitError{code: 2, err: fmt.Errorf(format, args...)}
}

func main() {
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr, log)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "seinectl:", err)
		code := 1
		if ee := (*exitError)(nil); errors.As(err, &ee) {
			code = ee.code
		}
		os.Exit(code)
	}
}

// run is seinectl with its arguments (without the program name).
func run(ctx context.Context, args []string, stdout, stderr io.Writer, log *slog.Logger) error {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	c := &cli{stdout: stdout, stderr: stderr, log: log, kube: newKubeFlags(), prog: filepath.Base(os.Args[0])}
	root := c.root()
	root.SetArgs(args)
	if len(args) == 0 {
		root.SetOut(stderr)
		_ = root.Usage()
		return usageErr("no command")
	}
	err := root.ExecuteContext(ctx)
	if err == nil {
		return nil
	}
	if ee := (*exitError)(nil); !errors.As(err, &ee) && !c.ran {
		// Cobra refused the command line before any command ran: an
		// unknown command, flag or argument.
		return &exitError{code: 2, err: fmt.Errorf("%w (seinectl --help: usage)", err)}
	}
	return err
}

// cli is what every command shares: its output, its logger and the
// kubeconfig flags.
type cli struct {
	stdout, stderr io.Writer
	log            *slog.Logger
	kube           *kubeFlags
	// prog is the program's file name: as kubectl-seine, seinectl is the
	// kubectl plugin `kubectl seine`.
	prog string
	// ran is set once a command's own code starts: an error before that
	// is cobra's, a usage error.
	ran bool
}

// root is seinectl's command tree. Installed as kubectl-seine it is also
// `kubectl seine`; its help then says so.
func (c *cli) root() *cobra.Command {
	root := &cobra.Command{
		Use:   "seinectl",
		Short: "Seine's command-line tool",
		Long: `seinectl checks, prepares and cleans up a Seine node, collects support
bundles, shows a node's pods and flows, and reads Seine's objects from the
cluster (agent and controller info, internal network policies, policy stats,
Traceflows), with kubectl's flags and output formats.`,
		SilenceUsage:     true,
		SilenceErrors:    true,
		PersistentPreRun: func(*cobra.Command, []string) { c.ran = true },
	}
	if plugin, ok := strings.CutPrefix(strings.TrimSuffix(c.prog, ".exe"), "kubectl-"); ok {
		root.Annotations = map[string]string{cobra.CommandDisplayNameAnnotation: "kubectl " + strings.ReplaceAll(plugin, "_", "-")}
	}
	root.SetOut(c.stdout)
	root.SetErr(c.stderr)
	root.SetFlagErrorFunc(func(cmd *cobra.Command, err error) error {
		return &exitError{code: 2, err: fmt.Errorf("%s: %w", cmd.CommandPath(), err)}
	})
	c.kube.addFlags(root.PersistentFlags())
	root.AddCommand(c.versionCmd(), c.checkCmd(), c.nodePrepCmd(), c.nodeCleanupCmd(), c.bundleCmd(), c.supportBundleCmd(), c.getCmd(), c.traceflowCmd())
	return root
}

// noArgs refuses positional arguments with a usage error.
func noArgs(cmd *cobra.Command, args []string) error {
	if len(args) > 0 {
		return usageErr("%s: unexpected arguments %v", cmd.CommandPath(), args)
	}
	return nil
}

// outputFlag adds -o for the commands that print a report or a list.
func outputFlag(cmd *cobra.Command, def string) *string {
	return cmd.Flags().StringP("output", "o", def, "output format: table, wide, json or yaml")
}

// kubeFlagsSet tells whether the command line names a cluster (for the
// commands that only reach one when asked to).
func kubeFlagsSet(cmd *cobra.Command) bool {
	for _, f := range []string{"kubeconfig", "context", "server"} {
		if cmd.Flags().Changed(f) {
			return true
		}
	}
	return false
}

// kubeFlags are kubectl's kubeconfig flags (--kubeconfig, --context, -n,
// --server, --token, ...), from client-go's clientcmd as kubectl's own
// come. cli-runtime's ConfigFlags would add the same flags but link its
// resource builder and kustomize too: seinectl grew from 32 to 74 MB
// (stripped) with it, and 2 MB without.
type kubeFlags struct {
	rules     *clientcmd.ClientConfigLoadingRules
	overrides clientcmd.ConfigOverrides
}

func newKubeFlags() *kubeFlags {
	return &kubeFlags{rules: clientcmd.NewDefaultClientConfigLoadingRules()}
}

func (k *kubeFlags) addFlags(fs *pflag.FlagSet) {
	fs.StringVar(&k.rules.ExplicitPath, "kubeconfig", "", "kubeconfig file (default: $KUBECONFIG, ~/.kube/config)")
	clientcmd.BindOverrideFlags(&k.overrides, fs, clientcmd.RecommendedConfigOverrideFlags(""))
}

func (k *kubeFlags) clientConfig() clientcmd.ClientConfig {
	return clientcmd.NewNonInteractiveDeferredLoadingClientConfig(k.rules, &k.overrides)
}

func (k *kubeFlags) restConfig() (*rest.Config, error) {
	rc, err := k.clientConfig().ClientConfig()
	if err != nil {
		return nil, fmt.Errorf("kubeconfig: %w", err)
	}
	return rc, nil
}

// clients are a clientset and a dynamic client of the cluster the flags
// name.
func (k *kubeFlags) clients() (kubernetes.Interface, dynamic.Interface, error) {
	rc, err := k.restConfig()
	if err != nil {
		return nil, nil, err
	}
	cs, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return nil, nil, err
	}
	dyn, err := dynamic.NewForConfig(rc)
	if err != nil {
		return nil, nil, err
	}
	return cs, dyn, nil
}

// namespace is -n, else the context's namespace, else "default".
func (k *kubeFlags) namespace() (string, error) {
	ns, _, err := k.clientConfig().Namespace()
	if err != nil {
		return "", fmt.Errorf("kubeconfig: %w", err)
	}
	return ns, nil
}
