//go:build !linux

package ovsdaemon

import (
	"errors"
	"fmt"
	"net"
	"os/exec"
	"runtime"
	"syscall"
	"time"
)

// OVS instances are managed on Linux only: starting works nowhere else, and every
// process helper reports that.
var errUnsupported = fmt.Errorf("ovsdaemon on %s: %w", runtime.GOOS, errors.ErrUnsupported)

func platformSupported() error { return errUnsupported }

func wrapNetNS(netns, prog string, args []string) (string, []string) { return prog, args }

func childAttr() *syscall.SysProcAttr    { return nil }
func detachedAttr() *syscall.SysProcAttr { return nil }

func startChild(cmd *exec.Cmd) error { return cmd.Start() }

func terminate(int) error { return errUnsupported }
func kill(int) error      { return errUnsupported }

func processAlive(int) bool      { return false }
func processIs(int, string) bool { return false }

func dialUnix(path string) bool {
	c, err := net.DialTimeout("unix", path, time.Second)
	if err != nil {
		return false
	}
	_ = c.Close()
	return true
}
