// Command seine-agent is Seine's node agent. `seine-agent run --config
// <file>` runs it in the foreground (DaemonSet or lab); the service
// subcommands (install, uninstall, start, stop, status) come with the
// service-management issue.
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

	"github.com/seine-cni/seine/core/agent"
)

func main() {
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	if err := run(os.Args[1:], log, os.Stderr); err != nil {
		log.Error("seine-agent failed", "err", err)
		os.Exit(1)
	}
}

func run(args []string, log *slog.Logger, stderr io.Writer) error {
	if len(args) == 0 || args[0] != "run" {
		fmt.Fprintln(stderr, "usage: seine-agent run --config <file>")
		return errors.New("unknown or missing subcommand")
	}
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	fs.SetOutput(stderr)
	config := fs.String("config", "/etc/seine/seine-agent.yaml", "the agent's configuration file")
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	cfg, err := agent.LoadConfig(*config)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	log = log.With("node", cfg.NodeName)
	return agent.RunWithConfig(ctx, log, cfg, newBackend)
}
