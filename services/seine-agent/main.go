// Command seine-agent is Seine's node agent.
//
//	seine-agent run --config <file> [--log-file <file>]
//	seine-agent install --config <file> [--log-file <file>]
//	seine-agent uninstall | start | stop | status
//	seine-agent configure --config <file> --set key=value ...
//	seine-agent purge --config <file> [--log-file <file>]
//
// `run` runs the agent in the foreground (DaemonSet, lab, systemd) or, when
// the Windows Service Control Manager started it, as the seine-agent service.
// The other subcommands manage the system service through
// github.com/kardianos/service (a systemd unit on Linux, an SCM service on
// Windows) or prepare and clean up its files for the installers. See
// README.md.
package main

import (
	"errors"
	"log/slog"
	"os"
)

func main() {
	c := newCLI(slog.New(slog.NewTextHandler(os.Stderr, nil)), os.Stdout, os.Stderr)
	if err := c.run(os.Args[1:]); err != nil {
		var logged loggedError
		if !errors.As(err, &logged) {
			c.log.Error("seine-agent failed", "err", err)
		}
		os.Exit(1)
	}
}
