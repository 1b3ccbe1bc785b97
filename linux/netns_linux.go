package linux

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/seine-cni/seine/platform"
)

// netNS is a network namespace the backend works in: a netlink handle whose
// sockets live there (so netlink calls need no thread switching) and Do for
// what only works from a thread inside it (/proc/sys/net, ioctls, exec).
//
// The hazard: a namespace belongs to an OS thread, and Go moves goroutines
// between threads. ns.Do locks the goroutine to its thread, switches that
// thread, runs the function, and switches back (if switching back fails the
// thread stays locked and dies with the goroutine, so no other goroutine ever
// runs in the wrong namespace). Code inside Do must not start goroutines that
// rely on the namespace: they run on other threads. exec.Cmd is fine: the
// child is forked from the locked thread and inherits its namespace.
type netNS struct {
	path string   // "" for the process's own namespace
	ns   ns.NetNS // nil for the process's own namespace
	nl   *netlink.Handle
}

// openNetNS opens the namespace at path ("" for the process's own).
func openNetNS(path string) (*netNS, error) {
	if path == "" {
		h, err := netlink.NewHandle()
		if err != nil {
			return nil, fmt.Errorf("netlink: %w", err)
		}
		return &netNS{nl: h}, nil
	}
	n, err := ns.GetNS(path)
	if err != nil {
		return nil, fmt.Errorf("open netns %s: %w", path, err)
	}
	h, err := netlink.NewHandleAt(netns.NsHandle(n.Fd()))
	if err != nil {
		_ = n.Close()
		return nil, fmt.Errorf("netlink in netns %s: %w", path, err)
	}
	return &netNS{path: path, ns: n, nl: h}, nil
}

// openPodNetNS opens a pod's namespace; a path that is not one (or no
// longer exists) is an error wrapping platform.ErrNoNetNS.
func openPodNetNS(path string) (*netNS, error) {
	n, err := openNetNS(path)
	var notExist ns.NSPathNotExistErr
	var notNS ns.NSPathNotNSErr
	if errors.As(err, &notExist) || errors.As(err, &notNS) {
		return nil, fmt.Errorf("%w: %w", platform.ErrNoNetNS, err)
	}
	return n, err
}

func (n *netNS) String() string {
	if n.path == "" {
		return "the host netns"
	}
	return "netns " + n.path
}

// Close closes the netlink sockets and the namespace file.
func (n *netNS) Close() error {
	n.nl.Close()
	if n.ns != nil {
		return n.ns.Close()
	}
	return nil
}

// Do runs fn on a thread inside the namespace.
func (n *netNS) Do(fn func() error) error {
	if n.ns == nil {
		return fn()
	}
	return n.ns.Do(func(ns.NetNS) error { return fn() })
}

// run executes a program inside the namespace with stdin and returns its
// standard output; the error carries its standard error.
func (n *netNS) run(ctx context.Context, stdin []byte, prog string, args ...string) ([]byte, error) {
	var stdout, stderr bytes.Buffer
	err := n.Do(func() error {
		cmd := exec.CommandContext(ctx, prog, args...)
		if stdin != nil {
			cmd.Stdin = bytes.NewReader(stdin)
		}
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		return cmd.Run()
	})
	if err != nil {
		msg := strings.TrimSpace(stderr.String())
		if msg == "" {
			return nil, fmt.Errorf("%s %s: %w", prog, strings.Join(args, " "), err)
		}
		return nil, fmt.Errorf("%s %s: %w: %s", prog, strings.Join(args, " "), err, msg)
	}
	return stdout.Bytes(), nil
}

// sysctlPath is the /proc/sys file of a "/"-separated key
// ("net/ipv4/conf/eth0/rp_filter"; the "/" form keeps interface names with
// dots unambiguous).
func sysctlPath(key string) string { return filepath.Join("/proc/sys", filepath.Clean("/"+key)) }

// readSysctl reads a sysctl inside the namespace (/proc/sys/net shows the
// namespace of the reading thread).
func (n *netNS) readSysctl(key string) (string, error) {
	var v []byte
	err := n.Do(func() error {
		var err error
		v, err = os.ReadFile(sysctlPath(key))
		return err
	})
	if err != nil {
		return "", fmt.Errorf("sysctl %s in %s: %w", key, n, err)
	}
	return strings.TrimSpace(string(v)), nil
}

// setSysctl writes value unless the sysctl already has it; it reports
// whether it wrote.
func (n *netNS) setSysctl(key, value string) (bool, error) {
	var changed bool
	err := n.Do(func() error {
		p := sysctlPath(key)
		cur, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		if strings.TrimSpace(string(cur)) == value {
			return nil
		}
		changed = true
		return os.WriteFile(p, []byte(value), 0o644)
	})
	if err != nil {
		return false, fmt.Errorf("sysctl %s=%s in %s: %w", key, value, n, err)
	}
	return changed, nil
}

// hasIPv6 reports whether the namespace has IPv6 (the kernel may be built or
// booted without it).
func (n *netNS) hasIPv6() bool {
	_, err := n.readSysctl("net/ipv6/conf/all/disable_ipv6")
	return err == nil
}

// dumpRetries bounds the retries of a netlink dump the kernel interrupted
// because the table changed meanwhile (netlink.ErrDumpInterrupted).
const dumpRetries = 5

// retryDump calls dump until it is not interrupted (or dumpRetries times).
func retryDump[T any](dump func() (T, error)) (T, error) {
	var v T
	var err error
	for range dumpRetries {
		v, err = dump()
		if !errors.Is(err, netlink.ErrDumpInterrupted) {
			return v, err
		}
	}
	return v, err
}
