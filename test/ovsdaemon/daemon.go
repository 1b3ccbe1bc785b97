// Package ovsdaemon runs private Open vSwitch instances: an ovsdb-server and an
// ovs-vswitchd pair whose database, sockets, pidfiles and logs all live under one
// directory, optionally inside a network namespace.
//
// It serves two users. Integration tests call StartForTest, which gives each test
// its own netns, its own OVS and a cleanup that leaves nothing behind. The lab
// starts one instance per simulated node with Options.Detach set, so the daemons
// outlive the `lab up` process; `lab down` later finds them again with Attach and
// stops them by pidfile.
//
// Layout of Options.Dir:
//
//	conf.db                  the OVSDB file (created with ovsdb-tool when absent)
//	run/db.sock              ovsdb-server's unix socket (DBEndpoint)
//	run/<bridge>.mgmt        per-bridge OpenFlow management sockets (ovs-ofctl finds them via OVS_RUNDIR)
//	run/ovs-vswitchd.pid     pidfiles; run/ovs-vswitchd.<pid>.ctl is the unixctl socket
//	log/ovsdb-server.log, log/ovs-vswitchd.log
//	ovsdaemon.json           how the instance was started, so Attach can restart vswitchd
//
// # Network namespaces
//
// When Options.NetNS is set, every OVS program this package runs (the two daemons and
// the ovs-vsctl/ovs-ofctl/ovs-appctl helpers) is executed through
// `nsenter --net=<path> -- <program>`. nsenter enters the namespace and then execs the
// program in the same process, so the pid we start is the daemon's pid. The alternative,
// setns(2) on a locked OS thread followed by fork/exec, works too but ties correctness
// to the Go scheduler's thread handling (a thread left in another netns must never be
// reused); an exec of a tiny util-linux tool per command keeps the Go process's own
// threads untouched. The client tools only talk to unix sockets and would work from
// any netns, but running them inside keeps the behaviour identical to a shell in the
// node. ovs-vswitchd must run inside: with datapath_type=netdev it creates the bridge's
// internal port as a tap device in its own namespace and opens ports by name there.
//
// Deleting a network namespace does not kill the processes in it: always Stop first.
package ovsdaemon

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Options says where and how to run an instance.
type Options struct {
	// Dir holds all state: conf.db, run/ (sockets, pidfiles, <br>.mgmt), log/.
	// Keep it short: unix socket paths are limited to 107 bytes.
	Dir string
	// NetNS is the path of a network namespace file to run the daemons in
	// ("" = the current netns).
	NetNS string
	// Detach makes the daemons survive this process (ovs --detach + pidfiles).
	// Otherwise they are children of this process, killed by Stop (and sent
	// SIGTERM if this process dies first, on Linux).
	Detach bool
	// ExtraVswitchdArgs are appended to ovs-vswitchd's command line
	// (for example "-vdpif_netdev:dbg").
	ExtraVswitchdArgs []string
	// Schema is the path of vswitch.ovsschema; "" searches the usual places.
	Schema string
}

// Daemon is one running OVS instance. Its methods are safe for concurrent use.
type Daemon struct {
	o      Options
	dir    string
	runDir string
	logDir string

	mu    sync.Mutex
	procs map[string]*child // non-detached children by program name
}

// child is a non-detached daemon process and the channel closed when it exits.
type child struct {
	cmd  *exec.Cmd
	done chan struct{}
	err  error // valid after done is closed
}

const (
	dbServer = "ovsdb-server"
	vswitchd = "ovs-vswitchd"

	stateFile = "ovsdaemon.json"

	// readyTimeout bounds each wait for a daemon to come up or go away when the
	// caller's context has no earlier deadline.
	readyTimeout = 20 * time.Second
	pollInterval = 5 * time.Millisecond
)

// ErrNotRunning is returned by Attach when the directory holds no live instance.
var ErrNotRunning = errors.New("ovs instance not running")

// Start creates the database if absent, starts ovsdb-server and ovs-vswitchd, and
// returns once db.sock answers and ovs-vswitchd has applied the database
// configuration (its cur_cfg caught up with next_cfg, as ovs-vsctl waits for).
func Start(ctx context.Context, o Options) (*Daemon, error) {
	if o.Dir == "" {
		return nil, errors.New("ovsdaemon: Options.Dir is empty")
	}
	if err := platformSupported(); err != nil {
		return nil, err
	}
	dir, err := filepath.Abs(o.Dir)
	if err != nil {
		return nil, fmt.Errorf("ovsdaemon: %w", err)
	}
	o.Dir = dir
	d := newDaemon(o)
	for _, p := range []string{d.runDir, d.logDir} {
		if err := os.MkdirAll(p, 0o755); err != nil {
			return nil, fmt.Errorf("ovsdaemon: %w", err)
		}
	}
	for _, prog := range []string{dbServer, vswitchd} {
		if pid, ok := d.livePid(prog); ok {
			return nil, fmt.Errorf("ovsdaemon: %s already running in %s (pid %d)", prog, dir, pid)
		}
	}
	if err := d.writeState(); err != nil {
		return nil, err
	}
	if err := d.createDB(ctx); err != nil {
		return nil, err
	}
	if err := d.startDBServer(ctx); err != nil {
		return nil, errors.Join(err, d.Stop(context.WithoutCancel(ctx)))
	}
	if err := d.StartVswitchd(ctx); err != nil {
		return nil, errors.Join(err, d.Stop(context.WithoutCancel(ctx)))
	}
	return d, nil
}

// Attach returns a Daemon for an instance already running from dir, typically one
// started with Detach by another process. Its daemons are stopped by pidfile.
func Attach(dir string) (*Daemon, error) {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("ovsdaemon: %w", err)
	}
	o := Options{Dir: dir}
	b, err := os.ReadFile(filepath.Join(dir, stateFile))
	switch {
	case err == nil:
		if err := json.Unmarshal(b, &o); err != nil {
			return nil, fmt.Errorf("ovsdaemon: read %s: %w", stateFile, err)
		}
		o.Dir = dir
	case errors.Is(err, fs.ErrNotExist):
	default:
		return nil, fmt.Errorf("ovsdaemon: %w", err)
	}
	// Whatever the original mode, this process did not start the daemons: they are
	// managed through pidfiles, and a restarted vswitchd must outlive us too.
	o.Detach = true
	d := newDaemon(o)
	if _, ok := d.livePid(dbServer); !ok {
		return nil, fmt.Errorf("ovsdaemon: attach %s: %w", dir, ErrNotRunning)
	}
	return d, nil
}

func newDaemon(o Options) *Daemon {
	return &Daemon{
		o:      o,
		dir:    o.Dir,
		runDir: filepath.Join(o.Dir, "run"),
		logDir: filepath.Join(o.Dir, "log"),
		procs:  map[string]*child{},
	}
}

// Dir is the instance directory.
func (d *Daemon) Dir() string { return d.dir }

// RunDir holds sockets and pidfiles (OVS_RUNDIR).
func (d *Daemon) RunDir() string { return d.runDir }

// NetNS is the network namespace path the daemons run in ("" = current).
func (d *Daemon) NetNS() string { return d.o.NetNS }

// DBSocketPath is ovsdb-server's unix socket.
func (d *Daemon) DBSocketPath() string { return filepath.Join(d.runDir, "db.sock") }

// DBEndpoint is the OVSDB endpoint in OVS syntax, "unix:<dir>/run/db.sock".
func (d *Daemon) DBEndpoint() string { return "unix:" + d.DBSocketPath() }

// MgmtSocketPath is the OpenFlow management socket of bridge.
func (d *Daemon) MgmtSocketPath(bridge string) string {
	return filepath.Join(d.runDir, bridge+".mgmt")
}

// VswitchdCtlPath is ovs-vswitchd's unixctl socket, ovs-vswitchd.<pid>.ctl, or ""
// when vswitchd is not running.
func (d *Daemon) VswitchdCtlPath() string {
	pid, ok := d.livePid(vswitchd)
	if !ok {
		return ""
	}
	return filepath.Join(d.runDir, fmt.Sprintf("%s.%d.ctl", vswitchd, pid))
}

// DBServerCtlPath is ovsdb-server's unixctl socket, or "" when it is not running.
func (d *Daemon) DBServerCtlPath() string {
	pid, ok := d.livePid(dbServer)
	if !ok {
		return ""
	}
	return filepath.Join(d.runDir, fmt.Sprintf("%s.%d.ctl", dbServer, pid))
}

// PidfilePath is the pidfile of prog ("ovsdb-server" or "ovs-vswitchd").
func (d *Daemon) PidfilePath(prog string) string {
	return filepath.Join(d.runDir, prog+".pid")
}

// Env is the environment that points ovs-* tools at this instance.
func (d *Daemon) Env() []string {
	return []string{
		"OVS_RUNDIR=" + d.runDir,
		"OVS_LOGDIR=" + d.logDir,
		"OVS_DBDIR=" + d.dir,
	}
}

// Vsctl runs ovs-vsctl against this instance's database (inside the netns) and
// returns its standard output unmodified.
func (d *Daemon) Vsctl(ctx context.Context, args ...string) (string, error) {
	return d.run(ctx, "ovs-vsctl", append([]string{"--db=" + d.DBEndpoint(), "--timeout=10"}, args...)...)
}

// Ofctl runs ovs-ofctl (inside the netns); bridges are found through OVS_RUNDIR.
func (d *Daemon) Ofctl(ctx context.Context, args ...string) (string, error) {
	return d.run(ctx, "ovs-ofctl", args...)
}

// Appctl runs `ovs-appctl -t target args...`; target is a program name resolved
// through the pidfile in RunDir ("ovs-vswitchd", "ovsdb-server") or a socket path.
func (d *Daemon) Appctl(ctx context.Context, target string, args ...string) (string, error) {
	return d.run(ctx, "ovs-appctl", append([]string{"-t", target}, args...)...)
}

// Command returns an *exec.Cmd for an arbitrary program run inside the instance's
// netns with Env set, for tools this package has no wrapper for.
func (d *Daemon) Command(ctx context.Context, prog string, args ...string) *exec.Cmd {
	name, argv := wrapNetNS(d.o.NetNS, prog, args)
	cmd := exec.CommandContext(ctx, name, argv...)
	cmd.Env = append(os.Environ(), d.Env()...)
	return cmd
}

func (d *Daemon) run(ctx context.Context, prog string, args ...string) (string, error) {
	cmd := d.Command(ctx, prog, args...)
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("%s %s: %w: %s", prog, strings.Join(args, " "), err,
			strings.TrimSpace(stderr.String()))
	}
	return stdout.String(), nil
}

func (d *Daemon) writeState() error {
	b, err := json.MarshalIndent(d.o, "", "  ")
	if err != nil {
		return fmt.Errorf("ovsdaemon: %w", err)
	}
	if err := os.WriteFile(filepath.Join(d.dir, stateFile), b, 0o644); err != nil {
		return fmt.Errorf("ovsdaemon: %w", err)
	}
	return nil
}

var schemaPaths = []string{
	"/usr/share/openvswitch/vswitch.ovsschema",
	"/usr/local/share/openvswitch/vswitch.ovsschema",
}

func (d *Daemon) createDB(ctx context.Context) error {
	db := filepath.Join(d.dir, "conf.db")
	if _, err := os.Stat(db); err == nil {
		return nil
	}
	schema := d.o.Schema
	if schema == "" {
		for _, p := range schemaPaths {
			if _, err := os.Stat(p); err == nil {
				schema = p
				break
			}
		}
		if schema == "" {
			return fmt.Errorf("ovsdaemon: vswitch.ovsschema not found in %v", schemaPaths)
		}
	}
	out, err := exec.CommandContext(ctx, "ovsdb-tool", "create", db, schema).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ovsdaemon: ovsdb-tool create %s: %w: %s", db, err, strings.TrimSpace(string(out)))
	}
	return nil
}

func (d *Daemon) startDBServer(ctx context.Context) error {
	// ovs-vswitchd does not fill in the version columns; the init scripts
	// (ovs-ctl) do, and clients read them. Do the same.
	ovsVersion, dbVersion, err := d.versions(ctx)
	if err != nil {
		return err
	}
	args := []string{
		filepath.Join(d.dir, "conf.db"),
		"--remote=punix:" + d.DBSocketPath(),
		"--remote=db:Open_vSwitch,Open_vSwitch,manager_options",
	}
	if err := d.startProg(ctx, dbServer, args); err != nil {
		return err
	}
	err = d.poll(ctx, dbServer, "db.sock to answer", func() bool { return dialUnix(d.DBSocketPath()) })
	if err != nil {
		return err
	}
	if _, err := d.Vsctl(ctx, "--no-wait", "init", "--", "set", "Open_vSwitch", ".",
		"ovs_version="+strconv.Quote(ovsVersion), "db_version="+strconv.Quote(dbVersion)); err != nil {
		return fmt.Errorf("ovsdaemon: %w", err)
	}
	return nil
}

var ovsVersion = sync.OnceValues(func() (string, error) {
	out, err := exec.Command(vswitchd, "--version").Output()
	if err != nil {
		return "", fmt.Errorf("ovsdaemon: %s --version: %w", vswitchd, err)
	}
	first, _, _ := strings.Cut(string(out), "\n")
	f := strings.Fields(first) // "ovs-vswitchd (Open vSwitch) 3.1.0"
	if len(f) == 0 {
		return "", fmt.Errorf("ovsdaemon: %s --version printed %q", vswitchd, out)
	}
	return f[len(f)-1], nil
})

// versions returns the installed ovs-vswitchd's version and conf.db's schema
// version.
func (d *Daemon) versions(ctx context.Context) (string, string, error) {
	ver, err := ovsVersion()
	if err != nil {
		return "", "", err
	}
	out, err := exec.CommandContext(ctx, "ovsdb-tool", "db-version", filepath.Join(d.dir, "conf.db")).Output()
	if err != nil {
		return "", "", fmt.Errorf("ovsdaemon: ovsdb-tool db-version: %w", err)
	}
	return ver, strings.TrimSpace(string(out)), nil
}

// StartVswitchd starts ovs-vswitchd and waits until it has applied the database.
func (d *Daemon) StartVswitchd(ctx context.Context) error {
	if pid, ok := d.livePid(vswitchd); ok {
		return fmt.Errorf("ovsdaemon: %s already running (pid %d)", vswitchd, pid)
	}
	// ovs-vswitchd writes cur_cfg = next_cfg once it has applied the database
	// (bridges, ports, management sockets). A restarted vswitchd finds the old
	// value already equal, so while no vswitchd runs, reset cur_cfg and move
	// next_cfg to a fresh value, then wait for vswitchd to report exactly it.
	out, err := d.Vsctl(ctx, "--no-wait", "get", "Open_vSwitch", ".", "next_cfg")
	if err != nil {
		return fmt.Errorf("ovsdaemon: %w", err)
	}
	next, err := strconv.Atoi(strings.TrimSpace(out))
	if err != nil {
		return fmt.Errorf("ovsdaemon: parse next_cfg %q: %w", out, err)
	}
	next++
	if _, err := d.Vsctl(ctx, "--no-wait", "set", "Open_vSwitch", ".", "cur_cfg=0", "next_cfg="+strconv.Itoa(next)); err != nil {
		return fmt.Errorf("ovsdaemon: %w", err)
	}

	args := append([]string{"unix:" + d.DBSocketPath()}, d.o.ExtraVswitchdArgs...)
	if err := d.startProg(ctx, vswitchd, args); err != nil {
		return err
	}
	err = d.poll(ctx, vswitchd, "its unixctl socket", func() bool {
		p := d.VswitchdCtlPath()
		return p != "" && dialUnix(p)
	})
	if err != nil {
		return err
	}
	// ovs-vsctl wait-until watches the database itself (no polling from here);
	// vswitchd is our child unless detached, so also give up if it dies.
	waitCtx, cancel := context.WithTimeout(ctx, readyTimeout)
	defer cancel()
	waited := make(chan error, 1)
	go func() {
		_, err := d.run(waitCtx, "ovs-vsctl", "--db="+d.DBEndpoint(), "--no-wait",
			"wait-until", "Open_vSwitch", ".", "cur_cfg="+strconv.Itoa(next))
		waited <- err
	}()
	d.mu.Lock()
	c := d.procs[vswitchd]
	d.mu.Unlock()
	var exited <-chan struct{}
	if c != nil {
		exited = c.done
	}
	select {
	case err := <-waited:
		if err != nil {
			return fmt.Errorf("ovsdaemon: waiting for %s to apply the database: %w\n%s", vswitchd, err, d.LogTail(20))
		}
		return nil
	case <-exited:
		cancel()
		<-waited
		return fmt.Errorf("ovsdaemon: %s exited while applying the database: %v\n%s", vswitchd, c.err, d.LogTail(20))
	}
}

// StopVswitchd stops ovs-vswitchd and waits for it to exit; the database stays up.
func (d *Daemon) StopVswitchd(ctx context.Context) error {
	return d.stopProg(ctx, vswitchd)
}

// RestartVswitchd stops and starts ovs-vswitchd; the database and its contents stay.
func (d *Daemon) RestartVswitchd(ctx context.Context) error {
	if err := d.StopVswitchd(ctx); err != nil {
		return err
	}
	return d.StartVswitchd(ctx)
}

// StopDBServer stops ovsdb-server (clients see the connection drop); the
// database file stays.
func (d *Daemon) StopDBServer(ctx context.Context) error {
	return d.stopProg(ctx, dbServer)
}

// StartDBServer starts ovsdb-server on the existing database and waits until
// db.sock answers.
func (d *Daemon) StartDBServer(ctx context.Context) error {
	if pid, ok := d.livePid(dbServer); ok {
		return fmt.Errorf("ovsdaemon: %s already running (pid %d)", dbServer, pid)
	}
	return d.startDBServer(ctx)
}

// RestartDBServer stops and starts ovsdb-server; ovs-vswitchd reconnects by itself.
func (d *Daemon) RestartDBServer(ctx context.Context) error {
	if err := d.StopDBServer(ctx); err != nil {
		return err
	}
	return d.StartDBServer(ctx)
}

// Stop stops ovs-vswitchd then ovsdb-server and waits for both to exit.
// Stopping a stopped instance is not an error.
func (d *Daemon) Stop(ctx context.Context) error {
	return errors.Join(d.stopProg(ctx, vswitchd), d.stopProg(ctx, dbServer))
}

// startProg starts prog with the common arguments (pidfile, log file, detach).
// With Detach the OVS parent process exits once the daemon is initialised;
// otherwise the daemon stays our child and is tracked in d.procs.
func (d *Daemon) startProg(ctx context.Context, prog string, args []string) error {
	args = append(args,
		"--pidfile="+d.PidfilePath(prog),
		"--log-file="+filepath.Join(d.logDir, prog+".log"),
		"-vconsole:emer",
	)
	if d.o.Detach {
		args = append(args, "--detach", "--no-chdir")
	}
	name, argv := wrapNetNS(d.o.NetNS, prog, args)
	var stderr strings.Builder
	if d.o.Detach {
		// The command returns when the detached daemon reports ready (or fails);
		// it must not be tied to ctx beyond that.
		cmd := exec.CommandContext(ctx, name, argv...)
		cmd.Env = append(os.Environ(), d.Env()...)
		cmd.Stderr = &stderr
		// The daemon inherits the stderr pipe until it detaches; do not wait on
		// it for long if it keeps it.
		cmd.WaitDelay = time.Second
		cmd.SysProcAttr = detachedAttr()
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("ovsdaemon: start %s: %w: %s\n%s", prog, err, strings.TrimSpace(stderr.String()), d.LogTail(20))
		}
		return nil
	}
	cmd := exec.Command(name, argv...) // lifetime is the Daemon's, not ctx's
	cmd.Env = append(os.Environ(), d.Env()...)
	cmd.Stderr = &stderr
	cmd.SysProcAttr = childAttr()
	if err := startChild(cmd); err != nil {
		return fmt.Errorf("ovsdaemon: start %s: %w", prog, err)
	}
	c := &child{cmd: cmd, done: make(chan struct{})}
	go func() {
		c.err = cmd.Wait()
		close(c.done)
	}()
	d.mu.Lock()
	d.procs[prog] = c
	d.mu.Unlock()
	return nil
}

// poll waits until ready returns true, failing early if prog died.
func (d *Daemon) poll(ctx context.Context, prog, what string, ready func() bool) error {
	ctx, cancel := context.WithTimeout(ctx, readyTimeout)
	defer cancel()
	t := time.NewTicker(pollInterval)
	defer t.Stop()
	for {
		if ready() {
			return nil
		}
		d.mu.Lock()
		c := d.procs[prog]
		d.mu.Unlock()
		var exited <-chan struct{}
		if c != nil {
			exited = c.done
		}
		select {
		case <-exited:
			return fmt.Errorf("ovsdaemon: %s exited while waiting for %s: %v\n%s", prog, what, c.err, d.LogTail(20))
		case <-ctx.Done():
			return fmt.Errorf("ovsdaemon: waiting for %s: %w\n%s", what, ctx.Err(), d.LogTail(20))
		case <-t.C:
		}
	}
}

// stopProg sends SIGTERM to prog (by child handle or pidfile), waits for it to exit,
// and escalates to SIGKILL if it has not exited when ctx (or readyTimeout) expires.
func (d *Daemon) stopProg(ctx context.Context, prog string) error {
	d.mu.Lock()
	c := d.procs[prog]
	delete(d.procs, prog)
	d.mu.Unlock()

	ctx, cancel := context.WithTimeout(ctx, readyTimeout)
	defer cancel()
	if c != nil {
		select {
		case <-c.done:
			return nil
		default:
		}
		_ = terminate(c.cmd.Process.Pid)
		select {
		case <-c.done:
			return nil
		case <-ctx.Done():
			_ = c.cmd.Process.Kill()
			<-c.done
			return fmt.Errorf("ovsdaemon: %s did not exit on SIGTERM, killed: %w", prog, ctx.Err())
		}
	}
	pid, ok := d.livePid(prog)
	if !ok {
		return nil
	}
	if err := terminate(pid); err != nil && processAlive(pid) {
		return fmt.Errorf("ovsdaemon: stop %s (pid %d): %w", prog, pid, err)
	}
	t := time.NewTicker(pollInterval)
	defer t.Stop()
	for processAlive(pid) {
		select {
		case <-ctx.Done():
			_ = kill(pid)
			return fmt.Errorf("ovsdaemon: %s (pid %d) did not exit on SIGTERM, killed: %w", prog, pid, ctx.Err())
		case <-t.C:
		}
	}
	return nil
}

// Pid returns the pid of prog ("ovsdb-server" or "ovs-vswitchd") if it is running.
func (d *Daemon) Pid(prog string) (int, bool) { return d.livePid(prog) }

// livePid reads prog's pidfile and reports the pid if that process is alive and is
// prog (pids are reused; a stale pidfile must not make us signal a stranger).
func (d *Daemon) livePid(prog string) (int, bool) {
	b, err := os.ReadFile(d.PidfilePath(prog))
	if err != nil {
		return 0, false
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 {
		return 0, false
	}
	if !processAlive(pid) || !processIs(pid, prog) {
		return 0, false
	}
	return pid, true
}

// LogTail returns the last n lines of each daemon's log, for failure messages.
func (d *Daemon) LogTail(n int) string {
	var b strings.Builder
	for _, prog := range []string{dbServer, vswitchd} {
		p := filepath.Join(d.logDir, prog+".log")
		data, err := os.ReadFile(p)
		if err != nil {
			fmt.Fprintf(&b, "== %s: %v\n", p, err)
			continue
		}
		lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
		if len(lines) > n {
			lines = lines[len(lines)-n:]
		}
		fmt.Fprintf(&b, "== %s (last %d lines)\n%s\n", p, len(lines), strings.Join(lines, "\n"))
	}
	return b.String()
}
