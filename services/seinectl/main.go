// Command seinectl is Seine's command-line tool, with kubectl's conventions
// (-o table|wide|json|yaml, --kubeconfig). On a node it checks the install
// (check), prepares the node for the agent (node-prep: the DaemonSet's init
// container and the Windows PowerShell module call it), collects a support
// bundle (bundle) and shows the node's pods and flows (get pods|flows);
// against the cluster it runs Traceflows (traceflow). The OS backend, for the bundle's diagnostics, is
// chosen in main_<os>.go only.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
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

const usage = `seinectl: Seine's command-line tool

usage:
  seinectl version   [-o table|json|yaml] [--kubeconfig FILE]
  seinectl check     [--config FILE] [--cni-conf-dir DIR] [-o table|wide|json|yaml]
  seinectl node-prep [--config FILE] [--config-template FILE --node-name NAME]
                     [--cni-bin-dir DIR] [--install-cni FILE] [--check] [-o ...]
  seinectl node-cleanup [--config FILE] [--host-root DIR] [--cni-bin-dir DIR]
                     [--cni-conf-dir DIR] [-o ...]
  seinectl bundle    -o FILE.tar.gz [--config FILE] [--agent-log FILE] [--kubeconfig FILE]
  seinectl get pods  [--config FILE] [-o table|wide|json|yaml]
  seinectl get flows [--config FILE] [--table N] [-o table|wide|json|yaml]
  seinectl traceflow -S NS/POD -D NS/POD|NS/SERVICE|IP [-p tcp|udp|icmp] [--sport N] [--dport N]
                     [--live [--dropped-only]] [-t SECONDS] [--keep] [-o table|json|yaml]
                     [--kubeconfig FILE] [--context NAME] (seinectl traceflow -h: details)
`

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
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return usageErr("no command")
	}
	cmd, args := args[0], args[1:]
	switch cmd {
	case "version":
		return runVersion(ctx, args, stdout, stderr)
	case "check":
		return runCheck(ctx, args, stdout, stderr, log)
	case "node-prep":
		return runNodePrep(args, stdout, stderr)
	case "node-cleanup":
		return runNodeCleanup(ctx, args, stdout, stderr, log)
	case "bundle":
		return runBundle(ctx, args, stdout, stderr, log)
	case "get":
		return runGet(ctx, args, stdout, stderr, log)
	case "traceflow", "tf":
		return runTraceflow(ctx, args, stdout, stderr)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return nil
	}
	fmt.Fprint(stderr, usage)
	return usageErr("unknown command %q", cmd)
}

// flags is a subcommand's flag set; parse turns flag errors into usage errors.
type flags struct {
	*flag.FlagSet
}

func newFlags(name string, stderr io.Writer) flags {
	fs := flag.NewFlagSet("seinectl "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	return flags{fs}
}

func (f flags) parse(args []string) error {
	if err := f.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return &exitError{code: 2, err: err}
	}
	if f.NArg() > 0 {
		return usageErr("%s: unexpected arguments %v", f.Name(), f.Args())
	}
	return nil
}

func (f flags) output(def string) *string {
	return f.String("o", def, "output format: table, wide, json or yaml")
}
