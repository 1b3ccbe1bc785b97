package netns

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"

	"github.com/containernetworking/plugins/pkg/ns"
	"golang.org/x/sys/unix"
)

// Create makes a new network namespace, bind-mounts it at path (the file must not exist;
// its directory is created) and brings its loopback interface up. On error nothing is left.
func Create(path string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("create netns %s: %w", path, err)
	}
	f, err := os.OpenFile(path, os.O_RDONLY|os.O_CREATE|os.O_EXCL, 0o444)
	if err != nil {
		return fmt.Errorf("create netns %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		_ = os.Remove(path)
		return fmt.Errorf("create netns %s: %w", path, err)
	}

	errc := make(chan error, 1)
	go func() {
		// The thread is never unlocked: once unshared it belongs to the new namespace,
		// and the runtime destroys a locked thread when its goroutine exits.
		runtime.LockOSThread()
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("unshare: %w", err)
			return
		}
		if err := unix.Mount("/proc/thread-self/ns/net", path, "none", unix.MS_BIND, ""); err != nil {
			errc <- fmt.Errorf("bind mount: %w", err)
			return
		}
		errc <- loopbackUp()
	}()
	if err := <-errc; err != nil {
		_ = Remove(path)
		return fmt.Errorf("create netns %s: %w", path, err)
	}
	return nil
}

// loopbackUp sets IFF_UP on lo in the calling thread's namespace.
func loopbackUp() error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("lo up: %w", err)
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq("lo")
	if err != nil {
		return fmt.Errorf("lo up: %w", err)
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
		return fmt.Errorf("lo up: get flags: %w", err)
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	if err := unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr); err != nil {
		return fmt.Errorf("lo up: set flags: %w", err)
	}
	return nil
}

// Remove unmounts the namespace at path and removes the file. A path that does not exist,
// or is not mounted, is not an error: Remove is idempotent.
func Remove(path string) error {
	if err := unix.Unmount(path, unix.MNT_DETACH); err != nil &&
		!errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("remove netns %s: unmount: %w", path, err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove netns %s: %w", path, err)
	}
	return nil
}

// Exists reports whether path is a mounted network namespace (not merely a file).
func Exists(path string) bool {
	return ns.IsNSorErr(path) == nil
}

// Do runs fn on an OS thread locked into the namespace at path; "" runs fn directly in
// the caller's namespace. Sockets fn creates stay in that namespace and may be used from
// any goroutine afterwards; goroutines fn starts do not inherit the namespace, and neither
// do processes started by them (a process started by fn itself does).
func Do(path string, fn func() error) error {
	if path == "" {
		return fn()
	}
	var fnErr error
	err := ns.WithNetNSPath(path, func(ns.NetNS) error {
		fnErr = fn()
		return nil
	})
	if err != nil {
		return fmt.Errorf("enter netns %s: %w", path, err)
	}
	return fnErr
}

// PrivateMountNS reports whether this process runs in a different mount namespace than
// PID 1. Bind mounts made there (the pod namespaces) are invisible to the rest of the
// machine, which is what happens under `ip netns exec`.
func PrivateMountNS() bool {
	self, err1 := os.Readlink("/proc/self/ns/mnt")
	init, err2 := os.Readlink("/proc/1/ns/mnt")
	return err1 == nil && err2 == nil && self != init
}
