package ovsdaemon

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/seine-cni/seine/test/ci"
)

// NewNetNS creates a throwaway network namespace with lo up, bind-mounted on a
// file under t.TempDir(), and returns the file's path. Cleanup kills any process
// still inside (deleting a netns does not), unmounts and removes it.
// It skips the test when not running as root (fails it under CI).
func NewNetNS(t testing.TB) string {
	t.Helper()
	ci.RequireRoot(t, "ovsdaemon: creating a network namespace")
	path := filepath.Join(t.TempDir(), "netns")
	if err := CreateNetNS(path); err != nil {
		t.Fatalf("ovsdaemon: %v", err)
	}
	t.Cleanup(func() {
		if pids := killNetNSProcesses(path); len(pids) > 0 {
			t.Logf("ovsdaemon: processes %v were still running in netns %s; killed them", pids, path)
		}
		if err := DeleteNetNS(path); err != nil {
			t.Errorf("ovsdaemon: %v", err)
		}
	})
	return path
}

// CreateNetNS creates a new network namespace, brings its lo up and bind-mounts
// it on path (created if absent; its directory must exist).
//
// The namespace is made by unshare(CLONE_NEWNET) on a goroutine locked to its OS
// thread (see inNewThread). That thread is never unlocked: when the goroutine
// returns while still locked, the Go runtime terminates the thread instead of
// reusing it, so no other goroutine can ever run in the new namespace by accident.
func CreateNetNS(path string) error {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_RDONLY, 0o444)
	if err != nil {
		return fmt.Errorf("create netns file: %w", err)
	}
	_ = f.Close()
	if err := <-inNewThread(func() error { return enterNewNetNS(path) }); err != nil {
		_ = unix.Unmount(path, unix.MNT_DETACH)
		_ = os.Remove(path)
		return err
	}
	return nil
}

// inNewThread runs f on a goroutine locked to an OS thread that is discarded
// afterwards, never on the process's main thread: the main thread cannot be
// terminated (the runtime parks it instead) and its namespaces are what
// /proc/<pid>/ns/* show for the whole process, so moving it would silently move
// the process as others see it.
func inNewThread(f func() error) <-chan error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		if unix.Gettid() == unix.Getpid() {
			// Hold the main thread here so that the goroutine below gets another.
			defer runtime.UnlockOSThread()
			errc <- <-inNewThread(f)
			return
		}
		// Deliberately no UnlockOSThread: the thread dies with the goroutine.
		errc <- f()
	}()
	return errc
}

func enterNewNetNS(path string) error {
	if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
		return fmt.Errorf("unshare netns: %w", err)
	}
	self := fmt.Sprintf("/proc/%d/task/%d/ns/net", os.Getpid(), unix.Gettid())
	if err := unix.Mount(self, path, "none", unix.MS_BIND, ""); err != nil {
		return fmt.Errorf("bind-mount netns on %s: %w", path, err)
	}
	if err := setLinkUp("lo"); err != nil {
		return fmt.Errorf("netns %s: %w", path, err)
	}
	return nil
}

// setLinkUp sets IFF_UP on the named link of the calling thread's netns.
func setLinkUp(name string) error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("socket: %w", err)
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		return fmt.Errorf("ifreq %s: %w", name, err)
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
		return fmt.Errorf("get flags of %s: %w", name, err)
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	if err := unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr); err != nil {
		return fmt.Errorf("set %s up: %w", name, err)
	}
	return nil
}

// DeleteNetNS unmounts and removes a namespace file made by CreateNetNS. It does
// not kill processes inside: stop them first. Deleting an absent one is not an error.
func DeleteNetNS(path string) error {
	if err := unix.Unmount(path, unix.MNT_DETACH); err != nil &&
		!errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("unmount netns %s: %w", path, err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove netns %s: %w", path, err)
	}
	return nil
}

// NetNSPids lists the processes whose network namespace is the one mounted at path.
func NetNSPids(path string) ([]int, error) {
	var want unix.Stat_t
	if err := unix.Stat(path, &want); err != nil {
		return nil, fmt.Errorf("stat netns %s: %w", path, err)
	}
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil, fmt.Errorf("list processes: %w", err)
	}
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		var st unix.Stat_t
		if unix.Stat("/proc/"+e.Name()+"/ns/net", &st) != nil {
			continue // gone, or a zombie
		}
		if st.Dev == want.Dev && st.Ino == want.Ino {
			pids = append(pids, pid)
		}
	}
	return pids, nil
}

// killNetNSProcesses SIGKILLs every process in the netns at path, waits briefly
// for them to die, and returns their pids.
func killNetNSProcesses(path string) []int {
	pids, err := NetNSPids(path)
	if err != nil || len(pids) == 0 {
		return nil
	}
	for _, pid := range pids {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	deadline := time.Now().Add(5 * time.Second)
	for _, pid := range pids {
		for processAlive(pid) && time.Now().Before(deadline) {
			time.Sleep(pollInterval)
		}
	}
	return pids
}

// IsMounted reports whether path is a mount point (used by tests to check that
// a netns was unmounted).
func IsMounted(path string) (bool, error) {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return false, err
	}
	return mountinfoHas(string(b), path), nil
}
