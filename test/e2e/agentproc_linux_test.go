package e2e

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/seine-cni/seine/test/lab"
)

// agentPID is the pid of the node's seine-agent from the lab's pidfile
// ("<pid> <start time>"), or 0 when it is not running.
func (e *env) agentPID(node string) int {
	b, err := os.ReadFile(filepath.Join(e.c.PIDDir(), "agent-"+node+".pid"))
	if err != nil {
		return 0
	}
	var pid int
	var start uint64
	if _, err := fmt.Sscan(string(b), &pid, &start); err != nil {
		return 0
	}
	if st, err := procStart(pid); err != nil || st != start {
		return 0
	}
	return pid
}

// procStart is field 22 of /proc/<pid>/stat (start time in clock ticks).
func procStart(pid int) (uint64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	if len(f) < 20 || f[0] == "Z" {
		return 0, fmt.Errorf("pid %d is gone", pid)
	}
	var st uint64
	_, err = fmt.Sscan(f[19], &st)
	return st, err
}

// stopAgent stops the node's seine-agent with SIGTERM and waits for it to exit.
func (e *env) stopAgent(node string) {
	e.t.Helper()
	pid := e.agentPID(node)
	if pid == 0 {
		e.t.Fatalf("seine-agent of %s is not running", node)
	}
	if err := syscall.Kill(pid, syscall.SIGTERM); err != nil {
		e.t.Fatal(err)
	}
	e.waitFor("seine-agent of "+node+" to exit", 20*time.Second, func() error {
		if _, err := procStart(pid); err == nil {
			return fmt.Errorf("pid %d still running", pid)
		}
		return nil
	})
}

// startAgent starts the node's seine-agent again the way the lab does
// (lab.StartAgent: detached, in the node's namespace, logging to the lab's
// log, recorded in the lab's pidfile so that `lab down` stops it), and waits
// until /readyz answers ok.
func (e *env) startAgent(node string) {
	e.t.Helper()
	if err := e.c.StartAgent(node); err != nil {
		e.t.Fatal(err)
	}
	e.waitReady(node)
}

// waitReady polls the agent's /readyz inside the node's namespace.
func (e *env) waitReady(node string) {
	e.t.Helper()
	e.waitFor("seine-agent of "+node+" to be ready", time.Minute, func() error {
		code, body, err := lab.HTTPGetInNS(e.ctx, e.c.NetNSPath(node), "http://127.0.0.1:10350/readyz")
		if err != nil {
			return err
		}
		if code != http.StatusOK {
			return fmt.Errorf("readyz %d: %s", code, body)
		}
		return nil
	})
}

// waitFor polls cond every 100ms until it returns nil, failing the test
// after timeout with cond's last error.
func (e *env) waitFor(what string, timeout time.Duration, cond func() error) {
	e.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) || e.ctx.Err() != nil {
			e.t.Fatalf("waiting for %s: %v", what, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
