package lab

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// A component is one long-running lab process. It is started detached (its
// own session, output to a log file) so that it outlives `lab up`, and is
// found again through its pidfile, which records the process start time so a
// recycled pid is never mistaken for it.
type component struct {
	name  string   // log and pidfile name, e.g. "kube-apiserver", "kubelet-node-1"
	netns string   // named namespace path to run in, "" for the machine's
	mntns string   // mount namespace file to run in (a real node's), "" for the machine's
	argv  []string // program and arguments
	env   []string
}

func (c *Config) startComponent(p component) error {
	for _, d := range []string{c.LogDir(), c.PIDDir()} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	argv := p.argv
	if p.mntns != "" {
		// A real node's kubelet and containerd: both namespaces.
		argv = append([]string{"nsenter", "--net=" + p.netns, "--mount=" + p.mntns, "--"}, argv...)
	} else if p.netns != "" {
		// nsenter joins only the network namespace and then execs the
		// program: same pid, same mount namespace (so pod namespaces bind-
		// mounted by a kubelet are visible to the whole machine, unlike
		// under `ip netns exec`).
		argv = append([]string{"nsenter", "--net=" + p.netns, "--"}, argv...)
	}
	logf, err := os.OpenFile(filepath.Join(c.LogDir(), p.name+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer logf.Close()
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), p.env...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", p.name, err)
	}
	pid := cmd.Process.Pid
	start, err := procStartTime(pid)
	if err != nil {
		return fmt.Errorf("start %s: %w", p.name, err)
	}
	// Reap it if it dies while we are still running; after we exit, init does.
	go cmd.Wait()
	rec := fmt.Sprintf("%d %d\n", pid, start)
	return os.WriteFile(filepath.Join(c.PIDDir(), p.name+".pid"), []byte(rec), 0o644)
}

// componentPID returns the pid of a running component, or 0.
func (c *Config) componentPID(name string) int {
	b, err := os.ReadFile(filepath.Join(c.PIDDir(), name+".pid"))
	if err != nil {
		return 0
	}
	var pid int
	var start uint64
	if _, err := fmt.Sscan(string(b), &pid, &start); err != nil {
		return 0
	}
	if st, err := procStartTime(pid); err != nil || st != start || isZombie(pid) {
		return 0
	}
	return pid
}

// components lists the names of all components with a pidfile.
func (c *Config) components() []string {
	files, _ := filepath.Glob(filepath.Join(c.PIDDir(), "*.pid"))
	names := make([]string, 0, len(files))
	for _, f := range files {
		names = append(names, strings.TrimSuffix(filepath.Base(f), ".pid"))
	}
	return names
}

// stopComponent sends SIGTERM, waits up to grace, then SIGKILLs.
func (c *Config) stopComponent(name string, grace time.Duration) error {
	pid := c.componentPID(name)
	defer os.Remove(filepath.Join(c.PIDDir(), name+".pid"))
	if pid == 0 {
		return nil
	}
	return killWait(pid, grace)
}

// killWait terminates pid and waits until it is gone.
func killWait(pid int, grace time.Duration) error {
	syscall.Kill(pid, syscall.SIGTERM)
	deadline := time.Now().Add(grace)
	for alive(pid) {
		if time.Now().After(deadline) {
			syscall.Kill(pid, syscall.SIGKILL)
			deadline = time.Now().Add(5 * time.Second)
			grace = 0
		}
		if grace == 0 && time.Now().After(deadline) {
			return fmt.Errorf("pid %d survived SIGKILL", pid)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return nil
}

func alive(pid int) bool {
	err := syscall.Kill(pid, 0)
	return (err == nil || errors.Is(err, syscall.EPERM)) && !isZombie(pid)
}

// procStartTime is field 22 of /proc/<pid>/stat: start time in clock ticks.
func procStartTime(pid int) (uint64, error) {
	f, err := procStatFields(pid)
	if err != nil {
		return 0, err
	}
	return strconv.ParseUint(f[19], 10, 64)
}

func isZombie(pid int) bool {
	f, err := procStatFields(pid)
	return err != nil || f[0] == "Z" || f[0] == "X"
}

// procStatFields returns the fields of /proc/<pid>/stat after the command
// name, so f[0] is the state (field 3).
func procStatFields(pid int) ([]string, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return nil, err
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return nil, fmt.Errorf("parse /proc/%d/stat", pid)
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 20 {
		return nil, fmt.Errorf("parse /proc/%d/stat: %d fields", pid, len(f))
	}
	return f, nil
}

// ComponentPID returns the pid of a running lab component ("seine-controller",
// "kube-apiserver", "agent-node-1", ...), or 0.
func (c *Config) ComponentPID(name string) int { return c.componentPID(name) }
