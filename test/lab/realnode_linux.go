package lab

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// A real node runs a real kubelet (labkube kubelet) and containerd with
// runc, both inside the node's network namespace and a persistent mount
// namespace of the node's own, so that everything a node owns on disk is
// private to it while the programs and images come from the machine:
//
//   - the mount namespace is a slave of the machine's (it sees the lab's
//     files and binaries; nothing it mounts appears on the machine) and its
//     root is made shared inside, so the kubelet's volume mounts and the
//     pod network namespaces containerd mounts propagate into containers;
//   - nodeMounts lists the node-private directories bound over the paths a
//     node owns; their sources live below the node's directory;
//   - kubelet and containerd run in that one namespace: the kubelet's
//     tmpfs mounts for Secrets and ServiceAccount tokens must be visible to
//     runc, and each is started with nsenter --net --mount.
//
// The mount points must exist on the machine's file system; those that do
// not are created, and the last real-node lab down removes them again
// (hostshare_linux.go), so the machine is left as it was.

// nodeMounts are the paths a node owns, bound to node-private directories.
// The paths are canonical (no /var/run: it links to /run).
var nodeMounts = []string{
	"/var/lib/kubelet",
	"/var/lib/containerd",
	"/run/containerd",
	"/etc/cni/net.d",
	"/opt/cni/bin",
	"/run/netns",
	"/run/openvswitch",
	"/var/lib/openvswitch",
	"/var/log/openvswitch",
	"/var/lib/seine",
	"/run/seine",
	"/var/log/seine", // the policy audit log
	"/var/log/pods",
	"/var/log/containers",
	// Seine's DaemonSet mounts /lib/modules (type Directory); this
	// machine's kernel has no modules directory.
	"/usr/lib/modules",
}

// nodeFiles are files a node's pods mount by hostPath (FileOrCreate): the
// machine's file when it exists (xtables.lock is shared by design),
// otherwise a created one, removed by `lab down`.
var nodeFiles = []string{"/run/xtables.lock"}

// mountNSDir holds the nodes' mount namespace files; it is a private bind
// mount of itself, as a persistent mount namespace must not be bound below
// a shared mount.
func (c *Config) mountNSDir() string { return c.path("mntns") }

// NodeMountNS is the file holding a real node's mount namespace.
func (c *Config) NodeMountNS(node string) string { return filepath.Join(c.mountNSDir(), node) }

// NodeRoot is the directory below which a real node's private directories
// live: NodeRoot(n)/var/lib/kubelet is the node's /var/lib/kubelet.
func (c *Config) NodeRoot(node string) string { return c.path("nodes", node, "root") }

// createMountNS makes the node's persistent mount namespace and binds the
// node's private directories into it.
func (c *Config) createMountNS(ctx context.Context, node string) error {
	dir := c.mountNSDir()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	if !isMountPoint(dir) {
		if _, err := sh(ctx, "mount", "--bind", dir, dir); err != nil {
			return err
		}
		if _, err := sh(ctx, "mount", "--make-private", dir); err != nil {
			return err
		}
	}
	nsFile := c.NodeMountNS(node)
	if err := os.WriteFile(nsFile, nil, 0o444); err != nil {
		return err
	}
	// A slave of the machine's namespace: the lab's later mounts (network
	// namespaces of new nodes) reach the node; the node's never leave it.
	if _, err := sh(ctx, "unshare", "--mount="+nsFile, "--propagation", "slave", "true"); err != nil {
		return err
	}
	steps := [][]string{{"mount", "--make-rshared", "/"}}
	for _, p := range nodeMounts {
		src := filepath.Join(c.NodeRoot(node), p)
		if err := os.MkdirAll(src, 0o755); err != nil {
			return err
		}
		steps = append(steps, []string{"mount", "--bind", src, p})
	}
	for _, s := range steps {
		if _, err := c.inMountNS(ctx, node, s...); err != nil {
			return err
		}
	}
	return nil
}

// inMountNS runs a command in the node's mount namespace.
func (c *Config) inMountNS(ctx context.Context, node string, args ...string) (string, error) {
	return sh(ctx, "nsenter", append([]string{"--mount=" + c.NodeMountNS(node), "--"}, args...)...)
}

// isMountPoint reports whether p is a mount point of this namespace.
func isMountPoint(p string) bool {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return false
	}
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) > 4 && unescapeMount(f[4]) == p {
			return true
		}
	}
	return false
}

// removeMountNamespaces releases every node's mount namespace (the
// namespace, with all its mounts, goes once no process is left in it) and
// the private mount holding their files.
func (c *Config) removeMountNamespaces() error {
	var errs []error
	files, _ := filepath.Glob(filepath.Join(c.mountNSDir(), "*"))
	for _, f := range files {
		errs = appendErr(errs, unmountIfMounted(f))
	}
	if isMountPoint(c.mountNSDir()) {
		errs = appendErr(errs, unmountIfMounted(c.mountNSDir()))
	}
	return errors.Join(errs...)
}

func unmountIfMounted(p string) error {
	if !isMountPoint(p) {
		return nil
	}
	out, err := sh(context.Background(), "umount", p)
	if err != nil {
		return fmt.Errorf("umount %s: %w %s", p, err, out)
	}
	return nil
}

// killMountNS kills every process whose mount namespace is the node's (its
// kubelet, containerd and the containerd shims) and waits for them.
func (c *Config) killMountNS(node string) error {
	target, err := nsID(c.NodeMountNS(node))
	if err != nil {
		return nil // no namespace: nothing runs in it
	}
	var errs []error
	for range 3 {
		pids := pidsInMountNS(target)
		if len(pids) == 0 {
			return nil
		}
		for _, pid := range pids {
			errs = appendErr(errs, killWait(pid, 5*time.Second))
		}
	}
	if pids := pidsInMountNS(target); len(pids) > 0 {
		errs = append(errs, fmt.Errorf("node %s: processes %v survive in its mount namespace", node, pids))
	}
	return errors.Join(errs...)
}

// nsID is the namespace a bind-mounted namespace file refers to, as
// /proc/<pid>/ns/* links name it ("mnt:[4026532...]").
func nsID(file string) (string, error) {
	var st unix.Stat_t
	if err := unix.Stat(file, &st); err != nil {
		return "", err
	}
	return fmt.Sprintf("mnt:[%d]", st.Ino), nil
}

func pidsInMountNS(id string) []int {
	var pids []int
	links, _ := filepath.Glob("/proc/[0-9]*/ns/mnt")
	for _, l := range links {
		t, err := os.Readlink(l)
		if err != nil || t != id {
			continue
		}
		var pid int
		if _, err := fmt.Sscanf(l, "/proc/%d/ns/mnt", &pid); err == nil && pid != os.Getpid() {
			pids = append(pids, pid)
		}
	}
	return pids
}
