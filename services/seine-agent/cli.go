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
	"path/filepath"
	"strings"
	"syscall"

	"github.com/kardianos/service"

	"github.com/seine-cni/seine/core/agent"
)

// serviceName is the agent's name in systemd and in the Windows SCM; the
// MSI (installer/windows/seine.wxs) uses the same.
const serviceName = "seine-agent"

// controller is what the service subcommands ask of the OS's service
// manager: the part of kardianos/service's Service they use, so tests can
// hand in a fake.
type controller interface {
	Install() error
	Uninstall() error
	Start() error
	Stop() error
	Status() (service.Status, error)
}

// serviceSpec is how the service runs the agent: `seine-agent run --config
// <Config> [--log-file <LogFile>] [--service]` from Executable.
type serviceSpec struct {
	Executable string
	Config     string
	LogFile    string
	// Service: the process is the Windows service and must talk to the
	// SCM (see underSCM).
	Service bool
}

// args are the service's command-line arguments after the executable.
func (s serviceSpec) args() []string {
	a := []string{"run", "--config", s.Config}
	if s.LogFile != "" {
		a = append(a, "--log-file", s.LogFile)
	}
	if s.Service {
		a = append(a, "--service")
	}
	return a
}

// cli holds what the subcommands need from the outside world; newCLI wires
// the real ones and tests replace them.
type cli struct {
	log            *slog.Logger
	stdout, stderr io.Writer
	// control opens the service manager's handle on the agent's service.
	control func(serviceSpec) (controller, error)
	// underSCM reports whether a service manager that must be spoken to
	// (the Windows SCM) started this process, given --service; systemd
	// needs no such talk.
	underSCM func(flag bool) bool
	// serve runs p under that service manager until it stops the service.
	serve func(p *program) error
	// runAgent runs the agent until ctx ends.
	runAgent func(ctx context.Context, log *slog.Logger, cfg *agent.Config) error
	// preflight checks the host can run a node before the agent starts
	// (HNS on Windows), so a hopeless start fails at once.
	preflight func(cfg *agent.Config) error
	// setRecovery makes the service manager restart a failed agent where
	// that is not part of installing it (Windows recovery actions).
	setRecovery func() error
	// exit ends the process after the agent failed under the SCM.
	exit func(code int)
}

func newCLI(log *slog.Logger, stdout, stderr io.Writer) *cli {
	return &cli{
		log: log, stdout: stdout, stderr: stderr,
		control:  newController,
		underSCM: underSCM,
		serve:    serve,
		runAgent: func(ctx context.Context, log *slog.Logger, cfg *agent.Config) error {
			return agent.RunWithConfig(ctx, log, cfg, newBackend)
		},
		preflight:   preflight,
		setRecovery: setRecovery,
		exit:        os.Exit,
	}
}

const usage = `usage: seine-agent <command> [flags]

commands:
  run        run the agent (in the foreground, or as the service when the SCM starts it)
  install    install the agent as a system service (systemd unit, Windows service)
  uninstall  remove the system service
  start      start the system service
  stop       stop the system service
  status     print the system service's state
  configure  set keys of a configuration file (the MSI's properties)
  purge      remove what the agent wrote (state, its CNI config, log)
  recovery   make the service manager restart the agent when it fails (Windows)
`

func (c *cli) run(args []string) error {
	if len(args) == 0 {
		fmt.Fprint(c.stderr, usage)
		return errors.New("missing subcommand")
	}
	cmd, args := args[0], args[1:]
	switch cmd {
	case "run":
		return c.runCmd(args)
	case "install":
		return c.installCmd(args)
	case "uninstall", "start", "stop", "status":
		return c.controlCmd(cmd, args)
	case "configure":
		return c.configureCmd(args)
	case "purge":
		return c.purgeCmd(args)
	case "recovery":
		if err := c.flags(cmd, nil).Parse(args); err != nil {
			return err
		}
		return c.setRecovery()
	case "help", "-h", "--help":
		fmt.Fprint(c.stdout, usage)
		return nil
	default:
		fmt.Fprint(c.stderr, usage)
		return fmt.Errorf("unknown subcommand %q", cmd)
	}
}

// flags is a subcommand's flag set; with cfg it has --config and --log-file.
func (c *cli) flags(name string, spec *serviceSpec) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(c.stderr)
	if spec != nil {
		fs.StringVar(&spec.Config, "config", defaultConfigPath, "the agent's configuration file")
		fs.StringVar(&spec.LogFile, "log-file", "", "also write the agent's log to this file (a Windows service has no console)")
	}
	return fs
}

// runCmd is `seine-agent run`: under the Windows SCM the agent runs as a
// service; anywhere else (DaemonSet, lab, systemd) in the foreground until
// SIGINT or SIGTERM. Its failure is logged here, while the log file is
// still open.
func (c *cli) runCmd(args []string) error {
	var spec serviceSpec
	fs := c.flags("run", &spec)
	fs.BoolVar(&spec.Service, "service", false, "run as the Windows service (the SCM's command line has it)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	log, closeLog, err := c.openLog(spec.LogFile)
	if err != nil {
		return err
	}
	defer closeLog()
	if err := c.runLogged(log, spec); err != nil {
		log.Error("seine-agent failed", "err", err)
		return loggedError{err}
	}
	return nil
}

// loggedError is an error that was already logged.
type loggedError struct{ error }

func (e loggedError) Unwrap() error { return e.error }

func (c *cli) runLogged(log *slog.Logger, spec serviceSpec) error {
	p := &program{log: log, prepare: func() (*agent.Config, error) { return c.prepare(spec.Config) }, run: c.runAgent}
	if c.underSCM(spec.Service) {
		p.exit = func(err error) {
			log.Error("seine-agent stopped: the service manager will restart it", "err", err)
			c.exit(1)
		}
		return c.serve(p)
	}
	cfg, err := p.prepare()
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return c.runAgent(ctx, log.With("node", cfg.NodeName), cfg)
}

// prepare loads the configuration and checks the host before the agent runs.
func (c *cli) prepare(path string) (*agent.Config, error) {
	cfg, err := agent.LoadConfig(path)
	if err != nil {
		return nil, err
	}
	if err := c.preflight(cfg); err != nil {
		return nil, fmt.Errorf("node %s cannot run the agent: %w", cfg.NodeName, err)
	}
	return cfg, nil
}

// openLog adds path (appended to, its directory created) to the log's
// destinations.
func (c *cli) openLog(path string) (*slog.Logger, func(), error) {
	if path == "" {
		return c.log, func() {}, nil
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, nil, fmt.Errorf("log file: %w", err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return nil, nil, fmt.Errorf("log file: %w", err)
	}
	w := teeWriter{f, c.stderr}
	return slog.New(slog.NewTextHandler(w, nil)), func() { f.Close() }, nil
}

// teeWriter writes to every writer, failing only when all of them fail: a
// Windows service's stderr may be no handle at all, which must not silence
// the log file (as io.MultiWriter, stopping at the first error, would).
type teeWriter []io.Writer

func (t teeWriter) Write(p []byte) (int, error) {
	var errs []error
	for _, w := range t {
		if _, err := w.Write(p); err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) == len(t) {
		return 0, errors.Join(errs...)
	}
	return len(p), nil
}

// installCmd registers the service to run `seine-agent run` with the given
// (absolute) configuration, which must be valid.
func (c *cli) installCmd(args []string) error {
	spec := serviceSpec{LogFile: defaultServiceLogFile}
	if err := c.flags("install", &spec).Parse(args); err != nil {
		return err
	}
	var err error
	if spec.Config, err = filepath.Abs(spec.Config); err != nil {
		return err
	}
	if spec.LogFile != "" {
		if spec.LogFile, err = filepath.Abs(spec.LogFile); err != nil {
			return err
		}
	}
	if _, err := agent.LoadConfig(spec.Config); err != nil {
		return fmt.Errorf("install: %w", err)
	}
	if spec.Executable, err = os.Executable(); err != nil {
		return fmt.Errorf("install: %w", err)
	}
	spec.Service = scmService
	s, err := c.control(spec)
	if err != nil {
		return err
	}
	if err := s.Install(); err != nil {
		return fmt.Errorf("install %s service: %w", serviceName, err)
	}
	if err := c.setRecovery(); err != nil && !errors.Is(err, errors.ErrUnsupported) {
		return fmt.Errorf("install %s service: %w", serviceName, err)
	}
	fmt.Fprintf(c.stdout, "installed the %s service: %s %s\n", serviceName, spec.Executable, strings.Join(spec.args(), " "))
	return nil
}

// controlCmd is uninstall, start, stop and status.
func (c *cli) controlCmd(cmd string, args []string) error {
	if err := c.flags(cmd, nil).Parse(args); err != nil {
		return err
	}
	s, err := c.control(serviceSpec{})
	if err != nil {
		return err
	}
	switch cmd {
	case "uninstall":
		err = s.Uninstall()
	case "start":
		err = s.Start()
	case "stop":
		err = s.Stop()
	case "status":
		st, err := s.Status()
		if errors.Is(err, service.ErrNotInstalled) {
			fmt.Fprintln(c.stdout, "not installed")
			return nil
		}
		if err != nil {
			return fmt.Errorf("status of %s service: %w", serviceName, err)
		}
		fmt.Fprintln(c.stdout, statusText(st))
		return nil
	}
	if err != nil {
		return fmt.Errorf("%s %s service: %w", cmd, serviceName, err)
	}
	fmt.Fprintf(c.stdout, "%s: %s done\n", serviceName, cmd)
	return nil
}

func statusText(s service.Status) string {
	switch s {
	case service.StatusRunning:
		return "running"
	case service.StatusStopped:
		return "stopped"
	default:
		return "unknown"
	}
}
