package lab

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/seine-cni/seine/test/lab/images"
)

// Paths of a real node's files the lab writes, below the node's directory.
func (c *Config) containerdConfigPath(node string) string {
	return c.path("nodes", node, "containerd.toml")
}
func (c *Config) kubeletConfigPath(node string) string {
	return c.path("nodes", node, "kubelet.yaml")
}

// ResolvConfPath is the resolv.conf the kubelets give pods without a
// cluster DNS: it names no server, so no pod ever asks the machine's
// resolver.
func (c *Config) ResolvConfPath() string { return c.path("resolv.conf") }

// containerdSocket is where a real node's containerd listens, inside the
// node's mount namespace (below NodeRoot on the machine).
const containerdSocket = "/run/containerd/containerd.sock"

// containerdConfig is a real node's containerd configuration (version 3).
// Every path is the node's own through its mount namespace; the CNI
// configuration and plugins are where Seine's DaemonSet installs them.
func (c *Config) containerdConfig(pause string) string {
	return fmt.Sprintf(`version = 3
root = '/var/lib/containerd'
state = '/run/containerd'
# Plugins the lab's nodes never use; the rest start in a second.
disabled_plugins = ['io.containerd.snapshotter.v1.btrfs', 'io.containerd.snapshotter.v1.zfs',
  'io.containerd.snapshotter.v1.devmapper', 'io.containerd.snapshotter.v1.blockfile',
  'io.containerd.snapshotter.v1.erofs', 'io.containerd.tracing.processor.v1.otlp',
  'io.containerd.internal.v1.tracing']

[grpc]
  address = '%s'

[plugins.'io.containerd.internal.v1.opt']
  # Default /opt/containerd: it would be created on the machine.
  path = '/var/lib/containerd/opt'

[plugins.'io.containerd.cri.v1.images']
  snapshotter = 'overlayfs'
  [plugins.'io.containerd.cri.v1.images'.pinned_images]
    sandbox = '%s'

[plugins.'io.containerd.cri.v1.runtime']
  # true when the lab lacks CAP_SYS_RESOURCE (a machine that is itself a
  # container): runc cannot lower a process's oom_score_adj below its
  # parent's then, and every sandbox (-998) would fail to start.
  restrict_oom_score_adj = %t
  [plugins.'io.containerd.cri.v1.runtime'.cni]
    bin_dirs = ['/opt/cni/bin']
    conf_dir = '/etc/cni/net.d'
    max_conf_num = 1
    use_internal_loopback = true
  [plugins.'io.containerd.cri.v1.runtime'.containerd]
    default_runtime_name = 'runc'
    [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
      runtime_type = 'io.containerd.runc.v2'
      [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
        SystemdCgroup = false
        BinaryName = '%s'

[plugins.'io.containerd.grpc.v1.cri']
  # The kubelet reaches the streaming server (exec, logs, port-forward)
  # on the node's loopback.
  stream_server_address = '127.0.0.1'
  stream_server_port = '0'
`, containerdSocket, pause, !hasCapability(capSysResource), filepath.Join(c.RuntimeBin, "runc"))
}

// kubeletConfig is a real node's KubeletConfiguration. See
// ../shared/notes/real-nodes.md for where each choice comes from.
func (c *Config) realKubeletConfig(n Node) string {
	return fmt.Sprintf(`apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
# This machine has the cgroup v1 hierarchy; kubelet 1.37 refuses it unless told.
failCgroupV1: false
failSwapOn: false
cgroupDriver: cgroupfs
cgroupsPerQOS: true
# Created by the lab in every v1 hierarchy the kubelet checks, removed by lab down.
cgroupRoot: %s
containerRuntimeEndpoint: unix://%s
address: 0.0.0.0
port: 10250
readOnlyPort: 0
# Signed by the lab CA for the node's address and name: kube-apiserver
# verifies it (--kubelet-certificate-authority).
tlsCertFile: %s
tlsPrivateKeyFile: %s
healthzBindAddress: 127.0.0.1
healthzPort: 10248
authentication:
  anonymous:
    enabled: false
  webhook:
    enabled: true
  x509:
    clientCAFile: %s
authorization:
  mode: Webhook
# Pods must never use the machine's resolver: the cluster's DNS
# (InstallClusterDNS) is theirs, and this file, which names no server, is
# what pods of dnsPolicy Default and host-network pods get.
resolvConf: %s
clusterDomain: %s
clusterDNS:
- %s
# All nodes share one disk: no image GC (it would remove the imported
# images, which no registry can give back) and no disk-pressure eviction.
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard:
  memory.available: 1Mi
  nodefs.available: "0%%"
  nodefs.inodesFree: "0%%"
  imagefs.available: "0%%"
  imagefs.inodesFree: "0%%"
serializeImagePulls: false
`, c.NodeCgroupRoot(n.Name), containerdSocket, c.pki("kubelet-"+n.Name+".crt"), c.pki("kubelet-"+n.Name+".key"), c.pki("ca.crt"), c.ResolvConfPath(), ClusterDomain, c.ClusterDNSIP())
}

// startRealNode makes the node's mount namespace and cgroups, starts its
// containerd, imports the lab's images into it and starts its kubelet.
func (c *Config) startRealNode(ctx context.Context, n Node, idx *images.Index) error {
	if err := c.createMountNS(ctx, n.Name); err != nil {
		return fmt.Errorf("mount namespace: %w", err)
	}
	if err := c.createCgroupRoot(n.Name); err != nil {
		return err
	}
	if err := os.WriteFile(c.containerdConfigPath(n.Name), []byte(c.containerdConfig(idx.Names.Pause)), 0o644); err != nil {
		return err
	}
	if err := os.WriteFile(c.kubeletConfigPath(n.Name), []byte(c.realKubeletConfig(n)), 0o644); err != nil {
		return err
	}
	if c.CNI == CNIPtp {
		if err := c.installPtp(n.Name); err != nil {
			return err
		}
	}
	ns, mnt := c.NetNSPath(n.Name), c.NodeMountNS(n.Name)
	if err := c.startComponent(component{
		name: "containerd-" + n.Name, netns: ns, mntns: mnt,
		argv: []string{filepath.Join(c.RuntimeBin, "containerd"), "--config", c.containerdConfigPath(n.Name)},
		// The shim finds runc through BinaryName; PATH for anything else.
		env: []string{"PATH=" + c.RuntimeBin + ":" + os.Getenv("PATH")},
	}); err != nil {
		return err
	}
	if err := c.importImages(ctx, n.Name, idx); err != nil {
		return err
	}
	return c.startComponent(component{
		name: "kubelet-" + n.Name, netns: ns, mntns: mnt,
		argv: []string{c.KubeBin, "kubelet",
			"--config=" + c.kubeletConfigPath(n.Name),
			"--kubeconfig=" + c.KubeconfigPath(n.Name),
			"--hostname-override=" + n.Name,
			"--node-ip=" + n.IP,
			"--v=1"},
		env: []string{"PATH=" + c.RuntimeBin + ":" + os.Getenv("PATH")},
	})
}

// importImages waits for the node's containerd and imports every image of
// the lab into its k8s.io namespace (the one CRI reads), unpacked for the
// overlayfs snapshotter.
func (c *Config) importImages(ctx context.Context, node string, idx *images.Index) error {
	// ctr unpacks layers itself, mounting snapshots at the paths containerd
	// names (/var/lib/containerd/...): it must run in the node's mount
	// namespace, where those paths are the node's.
	ctr := func(args ...string) (string, error) {
		return c.inMountNS(ctx, node, append([]string{filepath.Join(c.RuntimeBin, "ctr"), "--address", containerdSocket, "--namespace", "k8s.io"}, args...)...)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		_, err := ctr("version")
		if err == nil {
			break
		}
		if c.componentPID("containerd-"+node) == 0 {
			return fmt.Errorf("containerd-%s exited:\n%s", node, c.logTail("containerd-"+node, 15))
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("containerd-%s not answering: %w", node, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	for _, img := range idx.Images {
		if _, err := ctr("images", "import", "--local", "--platform", "linux/amd64", filepath.Join(c.ImagesDir, img.File)); err != nil {
			return fmt.Errorf("import %s into %s: %w", img.Name, node, err)
		}
	}
	out, err := ctr("images", "list", "--quiet")
	if err != nil {
		return err
	}
	for _, img := range idx.Images {
		if !strings.Contains(out, img.Name+"\n") {
			return fmt.Errorf("node %s: image %s missing after import (have %q)", node, img.Name, out)
		}
	}
	return nil
}

// installPtp copies the reference plugins into the node's /opt/cni/bin;
// the lab writes their configuration once the node has a podCIDR.
func (c *Config) installPtp(node string) error {
	dst := filepath.Join(c.NodeRoot(node), "/opt/cni/bin")
	for _, p := range []string{"ptp", "host-local"} {
		b, err := os.ReadFile(filepath.Join(c.cniBinDir(), p))
		if err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(dst, p), b, 0o755); err != nil {
			return err
		}
	}
	return nil
}

// writeRealPtpConfig writes the ptp configuration into a real node's
// /etc/cni/net.d once its podCIDR is known; containerd notices it and the
// node turns Ready.
func (c *Config) writeRealPtpConfig(node, podCIDR string) error {
	tmpl, err := os.ReadFile(c.CNITemplatePath())
	if err != nil {
		return err
	}
	conf := strings.NewReplacer("{{.PodCIDR}}", podCIDR, "{{.NodeName}}", node).Replace(string(tmpl))
	dir := filepath.Join(c.NodeRoot(node), "/etc/cni/net.d")
	tmp := filepath.Join(dir, ".10-lab-ptp.conflist")
	if err := os.WriteFile(tmp, []byte(conf), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, filepath.Join(dir, "10-lab-ptp.conflist"))
}

// upRealNodes is the rest of Up for real nodes: machine settings the
// kubelets change are recorded, mount points made, every node started, and
// (with ptp) each node's CNI configuration written once it has a podCIDR.
func (c *Config) upRealNodes(ctx context.Context, log *slog.Logger, cs kubernetes.Interface, start time.Time) error {
	idx, err := images.ReadIndex(c.ImagesDir)
	if err != nil {
		return err
	}
	if err := machine.join(c.StateDir); err != nil {
		return err
	}
	if err := os.WriteFile(c.ResolvConfPath(), []byte("# seine lab: pods get no resolver but the cluster's\n"), 0o644); err != nil {
		return err
	}
	if c.CNI == CNIPtp {
		if err := c.writeCNITemplate(); err != nil {
			return err
		}
	}
	for _, n := range c.NodeList() {
		if err := c.startRealNode(ctx, n, idx); err != nil {
			return fmt.Errorf("node %s: %w", n.Name, err)
		}
		log.Info("node started", "node", n.Name, "elapsed", time.Since(start).Round(time.Millisecond))
	}
	if c.CNI == CNIPtp {
		if err := c.configurePtp(ctx, cs); err != nil {
			return err
		}
	}
	if c.CNI == CNINone {
		// Registered, NotReady until a network plugin is installed.
		if err := c.waitNodesRegistered(ctx, cs, 3*time.Minute); err != nil {
			return err
		}
	} else {
		nodes, err := c.waitNodesReady(ctx, cs, 3*time.Minute)
		if err != nil {
			return err
		}
		if err := c.routePodCIDRs(ctx, nodes); err != nil {
			return err
		}
	}
	if err := waitServiceAccount(ctx, cs, 2*time.Minute); err != nil {
		return err
	}
	log.Info("lab up", "nodes", c.Nodes, "kubelet", c.Kubelet, "elapsed", time.Since(start).Round(time.Millisecond), "kubeconfig", c.AdminKubeconfig())
	return nil
}

// configurePtp writes each real node's ptp configuration as soon as the
// node has a podCIDR.
func (c *Config) configurePtp(ctx context.Context, cs kubernetes.Interface) error {
	done := map[string]bool{}
	deadline := time.Now().Add(3 * time.Minute)
	for len(done) < c.Nodes {
		for _, n := range c.NodeList() {
			if done[n.Name] {
				continue
			}
			node, err := cs.CoreV1().Nodes().Get(ctx, n.Name, metav1.GetOptions{})
			if err != nil || node.Spec.PodCIDR == "" {
				continue
			}
			if err := c.writeRealPtpConfig(n.Name, node.Spec.PodCIDR); err != nil {
				return err
			}
			done[n.Name] = true
		}
		if err := c.nodeComponentsAlive(); err != nil {
			return err
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("nodes without a podCIDR after 3m: have %v", done)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
	return nil
}

// waitNodesRegistered waits until every node object exists with a podCIDR.
func (c *Config) waitNodesRegistered(ctx context.Context, cs kubernetes.Interface, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		var missing []string
		for _, n := range c.NodeList() {
			node, err := cs.CoreV1().Nodes().Get(ctx, n.Name, metav1.GetOptions{})
			if err != nil || node.Spec.PodCIDR == "" {
				missing = append(missing, n.Name)
			}
		}
		if len(missing) == 0 {
			return nil
		}
		if err := c.nodeComponentsAlive(); err != nil {
			return err
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("nodes %v not registered with a podCIDR after %s", missing, timeout)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// nodeComponentsAlive reports the first node process that exited, with its log.
func (c *Config) nodeComponentsAlive() error {
	for _, n := range c.NodeList() {
		for _, comp := range c.nodeComponents(n.Name) {
			if c.componentPID(comp) == 0 {
				return fmt.Errorf("%s exited:\n%s", comp, c.logTail(comp, 15))
			}
		}
	}
	return nil
}

// capSysResource is CAP_SYS_RESOURCE's bit in /proc/<pid>/status CapEff.
const capSysResource = 24

// hasCapability reports whether this process has capability bit capBit in
// its effective set; false when that cannot be read.
func hasCapability(capBit uint) bool {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return false
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "CapEff:"); ok {
			n, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
			return err == nil && n&(1<<capBit) != 0
		}
	}
	return false
}
