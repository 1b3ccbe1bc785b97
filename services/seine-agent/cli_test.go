package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kardianos/service"

	"github.com/seine-cni/seine/core/agent"
)

var update = flag.Bool("update", false, "rewrite the golden files under testdata/")

// fakeController records what the subcommands asked of the service manager.
type fakeController struct {
	calls  []string
	status service.Status
	err    error // returned by every call
}

func (f *fakeController) do(name string) error { f.calls = append(f.calls, name); return f.err }
func (f *fakeController) Install() error       { return f.do("install") }
func (f *fakeController) Uninstall() error     { return f.do("uninstall") }
func (f *fakeController) Start() error         { return f.do("start") }
func (f *fakeController) Stop() error          { return f.do("stop") }
func (f *fakeController) Status() (service.Status, error) {
	return f.status, f.do("status")
}

// testCLI is a cli whose outside world is fakes; specs records each
// serviceSpec the service manager was opened with.
type testCLI struct {
	*cli
	ctl      *fakeController
	specs    []serviceSpec
	out, err bytes.Buffer
	recovery int
}

func newTestCLI(t *testing.T) *testCLI {
	t.Helper()
	tc := &testCLI{ctl: &fakeController{}}
	tc.cli = &cli{
		log:    slog.New(slog.NewTextHandler(&tc.err, nil)),
		stdout: &tc.out, stderr: &tc.err,
		control: func(s serviceSpec) (controller, error) {
			tc.specs = append(tc.specs, s)
			return tc.ctl, nil
		},
		underSCM:    func(flag bool) bool { return flag },
		serve:       func(*program) error { t.Error("serve called outside the SCM"); return nil },
		runAgent:    func(context.Context, *slog.Logger, *agent.Config) error { t.Error("agent ran"); return nil },
		preflight:   func(*agent.Config) error { return nil },
		setRecovery: func() error { tc.recovery++; return nil },
		exit:        func(code int) { t.Errorf("exit(%d)", code) },
	}
	return tc
}

// writeConfig writes a valid agent configuration and returns its path.
func writeConfig(t *testing.T, dir string) string {
	t.Helper()
	path := filepath.Join(dir, "seine-agent.yaml")
	if err := os.WriteFile(path, []byte(validConfig(dir)), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func validConfig(dir string) string {
	return fmt.Sprintf(`nodeName: node-a
kubeconfig: %[1]s/kubeconfig
ovs:
  dbEndpoint: unix:%[1]s/db.sock
  runDir: %[1]s/run
  bridge: br-int
topology: routedHost
trafficMode: encap
tunnelType: geneve
cniSocket: %[1]s/cni.sock
cniConfDir: %[1]s/net.d
stateDir: %[1]s/state
`, dir)
}

func TestControlSubcommands(t *testing.T) {
	for _, tt := range []struct {
		args   []string
		status service.Status
		err    error
		calls  string
		out    string
		fails  bool
	}{
		{args: []string{"start"}, calls: "start", out: "seine-agent: start done\n"},
		{args: []string{"stop"}, calls: "stop", out: "seine-agent: stop done\n"},
		{args: []string{"uninstall"}, calls: "uninstall", out: "seine-agent: uninstall done\n"},
		{args: []string{"status"}, status: service.StatusRunning, calls: "status", out: "running\n"},
		{args: []string{"status"}, status: service.StatusStopped, calls: "status", out: "stopped\n"},
		{args: []string{"status"}, err: service.ErrNotInstalled, calls: "status", out: "not installed\n"},
		{args: []string{"status"}, err: errors.New("access denied"), calls: "status", fails: true},
		{args: []string{"stop"}, err: errors.New("access denied"), calls: "stop", fails: true},
		{args: []string{"start", "--bogus"}, fails: true},
		{args: []string{"frobnicate"}, fails: true},
		{args: nil, fails: true},
	} {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			tc := newTestCLI(t)
			tc.ctl.status, tc.ctl.err = tt.status, tt.err
			err := tc.run(tt.args)
			if (err != nil) != tt.fails {
				t.Fatalf("run(%q) = %v, want failure %v", tt.args, err, tt.fails)
			}
			if got := strings.Join(tc.ctl.calls, ","); got != tt.calls {
				t.Errorf("service manager calls %q, want %q", got, tt.calls)
			}
			if !tt.fails && tc.out.String() != tt.out {
				t.Errorf("stdout %q, want %q", tc.out.String(), tt.out)
			}
		})
	}
}

func TestInstall(t *testing.T) {
	dir := t.TempDir()
	cfg := writeConfig(t, dir)
	tc := newTestCLI(t)
	if err := tc.run([]string{"install", "--config", cfg, "--log-file", filepath.Join(dir, "agent.log")}); err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(tc.ctl.calls, ","); got != "install" {
		t.Errorf("service manager calls %q, want install", got)
	}
	if tc.recovery != 1 {
		t.Errorf("recovery actions set %d times, want 1", tc.recovery)
	}
	if len(tc.specs) != 1 {
		t.Fatalf("service manager opened %d times, want 1", len(tc.specs))
	}
	exe, _ := os.Executable()
	want := serviceSpec{Executable: exe, Config: cfg, LogFile: filepath.Join(dir, "agent.log"), Service: scmService}
	if tc.specs[0] != want {
		t.Errorf("service spec %+v, want %+v", tc.specs[0], want)
	}
	wantArgs := []string{"run", "--config", cfg, "--log-file", filepath.Join(dir, "agent.log")}
	if scmService {
		wantArgs = append(wantArgs, "--service")
	}
	if got := serviceConfig(tc.specs[0]).Arguments; strings.Join(got, " ") != strings.Join(wantArgs, " ") {
		t.Errorf("service arguments %q, want %q", got, wantArgs)
	}
}

func TestInstallRefusesBadConfig(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(bad, []byte("nodeName: x\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, cfg := range []string{bad, filepath.Join(dir, "missing.yaml")} {
		tc := newTestCLI(t)
		if err := tc.run([]string{"install", "--config", cfg}); err == nil {
			t.Errorf("install with %s succeeded", cfg)
		}
		if len(tc.ctl.calls) != 0 {
			t.Errorf("install with %s called the service manager: %q", cfg, tc.ctl.calls)
		}
	}
}

func TestInstallRecoveryUnsupportedIsFine(t *testing.T) {
	dir := t.TempDir()
	tc := newTestCLI(t)
	tc.setRecovery = setRecovery // the real one: unsupported on Linux
	if err := tc.run([]string{"install", "--config", writeConfig(t, dir)}); err != nil {
		t.Fatal(err)
	}
}

// TestRunForeground: `run` outside a service manager runs the agent with the
// loaded configuration, after the preflight, until the agent returns.
func TestRunForeground(t *testing.T) {
	dir := t.TempDir()
	cfgPath := writeConfig(t, dir)
	logFile := filepath.Join(dir, "log", "agent.log")
	tc := newTestCLI(t)
	var ran *agent.Config
	tc.runAgent = func(ctx context.Context, log *slog.Logger, cfg *agent.Config) error {
		ran = cfg
		log.Info("agent says hello")
		return nil
	}
	if err := tc.run([]string{"run", "--config", cfgPath, "--log-file", logFile}); err != nil {
		t.Fatal(err)
	}
	if ran == nil || ran.NodeName != "node-a" {
		t.Fatalf("agent ran with %+v, want node-a's configuration", ran)
	}
	b, err := os.ReadFile(logFile)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), "agent says hello") || !strings.Contains(string(b), "node=node-a") {
		t.Errorf("log file lacks the agent's line:\n%s", b)
	}
}

func TestRunPreflightFails(t *testing.T) {
	dir := t.TempDir()
	tc := newTestCLI(t)
	tc.preflight = func(*agent.Config) error { return errors.New("the Host Network Service (hns) is not installed") }
	err := tc.run([]string{"run", "--config", writeConfig(t, dir)})
	if err == nil || !strings.Contains(err.Error(), "hns") || !strings.Contains(err.Error(), "node-a") {
		t.Fatalf("run = %v, want the preflight's error naming the node", err)
	}
}

// TestRunUnderSCM: with --service, run hands a program to serve; its Start
// fails with the preflight's error (so the SCM stops the service with it),
// and the message lands in the log file.
func TestRunUnderSCM(t *testing.T) {
	dir := t.TempDir()
	logFile := filepath.Join(dir, "agent.log")
	tc := newTestCLI(t)
	tc.preflight = func(*agent.Config) error { return errors.New("the Host Network Service (hns) is not installed") }
	var startErr error
	tc.serve = func(p *program) error {
		startErr = p.Start()
		return startErr
	}
	if err := tc.run([]string{"run", "--config", writeConfig(t, dir), "--log-file", logFile, "--service"}); err == nil {
		t.Fatal("run under the SCM succeeded without HNS")
	}
	if startErr == nil {
		t.Fatal("program.Start succeeded without HNS")
	}
	b, _ := os.ReadFile(logFile)
	if !strings.Contains(string(b), "seine-agent cannot start") || !strings.Contains(string(b), "Host Network Service") {
		t.Errorf("log file lacks the reason:\n%s", b)
	}
}

// TestRunFailureLogged: a failing foreground run writes its error to the
// log file before closing it, and says it did.
func TestRunFailureLogged(t *testing.T) {
	dir := t.TempDir()
	logFile := filepath.Join(dir, "agent.log")
	tc := newTestCLI(t)
	tc.runAgent = func(context.Context, *slog.Logger, *agent.Config) error { return errors.New("ovsdb is gone") }
	err := tc.run([]string{"run", "--config", writeConfig(t, dir), "--log-file", logFile})
	var logged loggedError
	if !errors.As(err, &logged) {
		t.Fatalf("run = %v, want a loggedError", err)
	}
	b, _ := os.ReadFile(logFile)
	if !strings.Contains(string(b), "seine-agent failed") || !strings.Contains(string(b), "ovsdb is gone") {
		t.Errorf("log file lacks the failure:\n%s", b)
	}
}

// TestProgramStopStart: Stop cancels the running agent and waits for it.
func TestProgramStopStart(t *testing.T) {
	running := make(chan struct{})
	p := &program{
		log:     slog.New(slog.NewTextHandler(t.Output(), nil)),
		prepare: func() (*agent.Config, error) { return &agent.Config{NodeName: "n"}, nil },
		run: func(ctx context.Context, _ *slog.Logger, _ *agent.Config) error {
			close(running)
			<-ctx.Done()
			return fmt.Errorf("agent: %w", ctx.Err())
		},
		exit: func(err error) { t.Errorf("exit(%v) after Stop", err) },
	}
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	<-running
	if err := p.Stop(); err != nil {
		t.Fatalf("Stop = %v, want nil (the agent only saw its context end)", err)
	}
}

// TestProgramAgentFails: an agent that returns on its own makes the program
// call exit with its error, so the SCM sees the process fail and restarts it.
func TestProgramAgentFails(t *testing.T) {
	exited := make(chan error, 1)
	p := &program{
		log:     slog.New(slog.NewTextHandler(t.Output(), nil)),
		prepare: func() (*agent.Config, error) { return &agent.Config{NodeName: "n"}, nil },
		run: func(context.Context, *slog.Logger, *agent.Config) error {
			return errors.New("ovs-vswitchd went away")
		},
		exit: func(err error) { exited <- err },
	}
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		if !strings.Contains(err.Error(), "ovs-vswitchd went away") {
			t.Errorf("exit(%v), want the agent's error", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("exit not called after the agent failed")
	}
}

type failingWriter struct{}

func (failingWriter) Write([]byte) (int, error) { return 0, errors.New("invalid handle") }

// TestTeeWriter: a dead stderr does not silence the log file, whichever
// comes first.
func TestTeeWriter(t *testing.T) {
	var a, b bytes.Buffer
	for _, w := range []teeWriter{{failingWriter{}, &a}, {&b, failingWriter{}}} {
		if n, err := w.Write([]byte("line\n")); n != 5 || err != nil {
			t.Errorf("Write = %d, %v; want 5, nil", n, err)
		}
	}
	if a.String() != "line\n" || b.String() != "line\n" {
		t.Errorf("writers got %q and %q", a.String(), b.String())
	}
	if _, err := (teeWriter{failingWriter{}, failingWriter{}}).Write([]byte("x")); err == nil {
		t.Error("Write succeeded with every writer failing")
	}
}

// TestLogFileAppends: a second run adds to the log file.
func TestLogFileAppends(t *testing.T) {
	logFile := filepath.Join(t.TempDir(), "agent.log")
	for _, msg := range []string{"first", "second"} {
		tc := newTestCLI(t)
		log, closeLog, err := tc.openLog(logFile)
		if err != nil {
			t.Fatal(err)
		}
		log.Info(msg)
		closeLog()
	}
	b, _ := os.ReadFile(logFile)
	if !strings.Contains(string(b), "msg=first") || !strings.Contains(string(b), "msg=second") {
		t.Errorf("log file:\n%s", b)
	}
}
