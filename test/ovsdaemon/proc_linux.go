package ovsdaemon

import (
	"net"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// wrapNetNS returns the program and arguments that run prog inside the network
// namespace at netns (see the package doc for why nsenter).
func wrapNetNS(netns, prog string, args []string) (string, []string) {
	if netns == "" {
		return prog, args
	}
	return "nsenter", append([]string{"--net=" + netns, "--", prog}, args...)
}

// childAttr makes a non-detached daemon get SIGTERM if this process dies, so a
// crashed test does not leak daemons; OVS removes its pidfile and sockets on it.
// Use it only with startChild: see there.
func childAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
}

var (
	spawnOnce sync.Once
	spawnReqs = make(chan func())
)

// startChild starts cmd from one OS thread that lives as long as the process.
// The kernel sends the parent-death signal when the *thread* that forked the
// child exits, not the process, and the Go runtime terminates threads whose
// goroutine exits while locked to them (as netns helpers do, including this
// package's CreateNetNS). Forking from an arbitrary thread would let such a
// helper kill our daemons at random; the spawner thread is locked to its
// goroutine forever, so it never exits before the process does.
func startChild(cmd *exec.Cmd) error {
	spawnOnce.Do(func() {
		go func() {
			runtime.LockOSThread() // never unlocked, and the goroutine never returns
			for f := range spawnReqs {
				f()
			}
		}()
	})
	errc := make(chan error, 1)
	spawnReqs <- func() { errc <- cmd.Start() }
	return <-errc
}

// detachedAttr: OVS's --detach forks and calls setsid itself.
func detachedAttr() *syscall.SysProcAttr { return nil }

func terminate(pid int) error { return syscall.Kill(pid, syscall.SIGTERM) }

func kill(pid int) error { return syscall.Kill(pid, syscall.SIGKILL) }

// processAlive reports whether pid exists and is not a zombie. Detached daemons
// are reparented to pid 1, which need not reap them, so a dead daemon may linger
// as a zombie that kill(pid, 0) still finds.
func processAlive(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	// Format: pid (comm) state ...; comm may contain spaces and parentheses.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 || i+2 >= len(s) {
		return false
	}
	switch s[i+2] {
	case 'Z', 'X', 'x':
		return false
	}
	return true
}

// processIs reports whether pid runs prog (by /proc/<pid>/comm, which the kernel
// truncates to 15 bytes).
func processIs(pid int, prog string) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/comm")
	if err != nil {
		return false
	}
	comm := strings.TrimSpace(string(b))
	if len(prog) > 15 {
		prog = prog[:15]
	}
	return comm == prog
}

// dialUnix reports whether something accepts connections on the unix socket path.
func dialUnix(path string) bool {
	c, err := net.DialTimeout("unix", path, time.Second)
	if err != nil {
		return false
	}
	_ = c.Close()
	return true
}

// platformSupported reports whether instances can run on this OS.
func platformSupported() error { return nil }
