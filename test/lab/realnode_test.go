//go:build linux

package lab

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/seine-cni/seine/test/ci"
	"github.com/seine-cni/seine/test/lab/images"
	"github.com/seine-cni/seine/test/lab/netns"
)

// realNodeInputs returns the container runtime and images `make images`
// builds (SEINE_LAB_RUNTIME_BIN, SEINE_LAB_IMAGES), or skips (fails under CI).
func realNodeInputs(t *testing.T) (runtimeBin, imagesDir string) {
	t.Helper()
	ci.RequireRoot(t, "real nodes (namespaces, mounts, cgroups)")
	skip := func(format string, args ...any) { t.Helper(); ci.Skipf(t, format, args...) }
	runtimeBin, imagesDir = os.Getenv("SEINE_LAB_RUNTIME_BIN"), os.Getenv("SEINE_LAB_IMAGES")
	if runtimeBin == "" || imagesDir == "" {
		skip("SEINE_LAB_RUNTIME_BIN and SEINE_LAB_IMAGES are not set: `make images` builds the container runtime and the images (make test sets them)")
	}
	for _, cmd := range []string{"unshare", "mount", "umount"} {
		if _, err := os.Stat("/usr/bin/" + cmd); err != nil {
			skip("real nodes need %s (util-linux, mount)", cmd)
		}
	}
	return runtimeBin, imagesDir
}

// nameServer runs, on every node, a container of Seine's image whose
// busybox nc answers every TCP connection to port 8080 with the pod's
// hostname (its name).
func nameServer(name, image string, replicas int32) *appsv1.Deployment {
	sel := map[string]string{"app": name}
	return &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: appsv1.DeploymentSpec{
			Replicas: &replicas,
			Selector: &metav1.LabelSelector{MatchLabels: sel},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: sel},
				Spec: corev1.PodSpec{
					TopologySpreadConstraints: []corev1.TopologySpreadConstraint{{
						MaxSkew: 1, TopologyKey: "kubernetes.io/hostname",
						WhenUnsatisfiable: corev1.DoNotSchedule,
						LabelSelector:     &metav1.LabelSelector{MatchLabels: sel},
					}},
					Containers: []corev1.Container{{
						Name: "name", Image: image,
						Command: []string{"/bin/sh", "-c", "echo serving $(hostname); exec nc -ll -p 8080 -e hostname"},
						Ports:   []corev1.ContainerPort{{ContainerPort: 8080}},
						ReadinessProbe: &corev1.Probe{
							ProbeHandler:  corev1.ProbeHandler{TCPSocket: &corev1.TCPSocketAction{Port: intstr.FromInt32(8080)}},
							PeriodSeconds: 2,
						},
					}},
				},
			},
		},
	}
}

// readFrom connects to addr from inside the network namespace at nsPath
// and returns what the server sends before it closes.
func readFrom(ctx context.Context, nsPath, addr string) (string, error) {
	var conn net.Conn
	if err := netns.Do(nsPath, func() error {
		var err error
		d := net.Dialer{Timeout: 2 * time.Second}
		conn, err = d.DialContext(ctx, "tcp", addr)
		return err
	}); err != nil {
		return "", err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(3 * time.Second))
	b, err := io.ReadAll(conn)
	return strings.TrimSpace(string(b)), err
}

// TestRealNodes brings up two real nodes (kubelet, containerd and runc in
// each node's own mount namespace) with the reference ptp plugin, runs
// containers of the lab's Seine image on both, reaches every one from
// every node, reads their logs and execs into them with kubectl (pod to
// pod across nodes), and checks that `lab down` leaves the machine as it was:
// no mount, cgroup, process (containerd's shims included), created
// directory or changed sysctl.
func TestRealNodes(t *testing.T) {
	runtimeBin, imagesDir := realNodeInputs(t)
	c := testConfig(t)
	c.Nodes, c.WindowsNodes = 2, 0
	c.Kubelet, c.RuntimeBin, c.ImagesDir = KubeletReal, runtimeBin, imagesDir
	idx, err := images.ReadIndex(imagesDir)
	if err != nil {
		t.Fatal(err)
	}
	before, beforeReal := snapshotHost(t), snapshotRealHost(t)
	log := testLogger(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	t.Cleanup(func() { Down(context.Background(), log, c.StateDir) })
	start := time.Now()
	if err := Up(ctx, log, c); err != nil {
		t.Fatalf("lab up: %v", err)
	}
	t.Logf("lab up with real nodes took %s", time.Since(start).Round(time.Millisecond))
	cs, err := c.Client("admin")
	if err != nil {
		t.Fatal(err)
	}

	t.Run("nodes", func(t *testing.T) {
		nodes, err := cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		for _, n := range nodes.Items {
			info := n.Status.NodeInfo
			if !strings.HasPrefix(info.KubeletVersion, "v1.37") || !strings.HasPrefix(info.ContainerRuntimeVersion, "containerd://2.") {
				t.Errorf("node %s runs kubelet %q, runtime %q", n.Name, info.KubeletVersion, info.ContainerRuntimeVersion)
			}
			if !NodeReady(&n) {
				t.Errorf("node %s is not Ready", n.Name)
			}
		}
	})

	var pods []corev1.Pod
	t.Run("containers", func(t *testing.T) {
		if _, err := cs.AppsV1().Deployments("default").Create(ctx, nameServer("web", idx.Names.Seine, 2), metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		pods, err = WaitDeploymentReady(ctx, cs, "default", "web", 3*time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		if pods[0].Spec.NodeName == pods[1].Spec.NodeName {
			t.Errorf("both pods on %s", pods[0].Spec.NodeName)
		}
		for _, p := range pods {
			if cs := p.Status.ContainerStatuses; len(cs) != 1 || !strings.HasPrefix(cs[0].ContainerID, "containerd://") || cs[0].ImageID == "" {
				t.Errorf("pod %s: container statuses %+v", p.Name, cs)
			}
		}
	})
	if len(pods) == 0 {
		t.FailNow()
	}

	t.Run("reachability", func(t *testing.T) {
		for _, n := range c.NodeList() {
			for _, p := range pods {
				got, err := readFrom(ctx, c.NetNSPath(n.Name), net.JoinHostPort(p.Status.PodIP, "8080"))
				if err != nil || got != p.Name {
					t.Errorf("from %s to pod %s (%s): %q, %v", n.Name, p.Name, p.Status.PodIP, got, err)
				}
			}
		}
	})

	// kube-apiserver -> kubelet:10250 (through the egress proxy, with the
	// lab CA's certificates both ways) -> containerd's streaming server.
	kubectl := func(args ...string) (string, error) {
		cmd := exec.CommandContext(ctx, c.KubeBin, append([]string{"kubectl", "--kubeconfig", c.AdminKubeconfig()}, args...)...)
		out, err := cmd.CombinedOutput()
		return strings.TrimSpace(string(out)), err
	}
	t.Run("logs", func(t *testing.T) {
		for _, p := range pods {
			if out, err := kubectl("logs", p.Name); err != nil || out != "serving "+p.Name {
				t.Errorf("kubectl logs %s: %q, %v", p.Name, out, err)
			}
		}
	})
	t.Run("exec", func(t *testing.T) {
		for i, p := range pods {
			other := pods[(i+1)%len(pods)]
			out, err := kubectl("exec", p.Name, "--", "nc", "-w", "3", other.Status.PodIP, "8080")
			if err != nil || out != other.Name {
				t.Errorf("kubectl exec %s -- nc %s 8080: %q, %v", p.Name, other.Status.PodIP, out, err)
			}
		}
	})

	components, inNodes := c.runningComponents(), c.nodeProcesses(runtimeBin)
	if err := Down(ctx, log, c.StateDir); err != nil {
		t.Fatalf("lab down: %v", err)
	}
	checkLeftovers(t, c, before, beforeReal, components, inNodes)
}

// checkLeftovers fails t when `lab down` left anything of the lab's on the
// machine: what snapshotHost covers, cgroups, sysctls, created mount
// points, the lab's processes and any process of the container runtime
// (containerd's shims name neither the lab nor its state directory) in one
// of the lab's node mount namespaces (mntns, from nodeMountNSes before
// down) or in the machine's own: another lab running at the same time (a
// second lab slot) has its own.
func checkLeftovers(t *testing.T, c *Config, before []string, beforeReal realHostState, components, inNodes []process) {
	t.Helper()
	if ours, _ := hostChanges(before, snapshotHost(t), c); len(ours) > 0 {
		t.Errorf("lab down left the machine changed (+ added, - removed):\n%s", strings.Join(ours, "\n"))
	}
	// Cgroups: only the lab's own (named by its prefix) count, since a lab
	// in the other lab slot makes and removes its own meanwhile; mount
	// points and sysctls are shared with real-node labs still up.
	for _, d := range machineChanges(beforeReal, snapshotRealHost(t), c.NSPrefix) {
		t.Errorf("lab down left the machine changed: %s", d)
	}
	left := labProcesses(c.StateDir, components)
	for _, p := range inNodes {
		if start, err := procStartTime(p.pid); err == nil && start == p.start && !isZombie(p.pid) {
			left = append(left, fmt.Sprintf("%d: %s", p.pid, p.name))
		}
	}
	if len(left) > 0 {
		t.Errorf("processes left behind:\n%s", strings.Join(left, "\n"))
	}
}

// TestNodeContainerd starts a real node's containerd with the lab's
// configuration in the node's namespaces, imports the lab's images into it
// and checks that its CRI plugin loaded and sees them; then `lab down`
// leaves the machine as it was. No control plane, no kubelet.
func TestNodeContainerd(t *testing.T) {
	runtimeBin, imagesDir := realNodeInputs(t)
	c := &Config{
		StateDir: "/run/seine-ctrtest-" + randomHex(3), NSPrefix: "seine-ctrtest-", Nodes: 1,
		Kubelet: KubeletReal, CNI: CNINone, RuntimeBin: runtimeBin, ImagesDir: imagesDir,
	}
	c.Defaults()
	idx, err := images.ReadIndex(imagesDir)
	if err != nil {
		t.Fatal(err)
	}
	before, beforeReal := snapshotHost(t), snapshotRealHost(t)
	log := testLogger(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if err := os.MkdirAll(c.StateDir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := c.Save(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { Down(context.Background(), log, c.StateDir) })
	n := c.NodeList()[0]
	steps := []func() error{
		func() error { return c.createTopology(ctx) },
		func() error { return machine.join(c.StateDir) },
		func() error { return c.createMountNS(ctx, n.Name) },
		func() error { return c.createCgroupRoot(n.Name) },
		func() error {
			return os.WriteFile(c.containerdConfigPath(n.Name), []byte(c.containerdConfig(idx.Names.Pause)), 0o644)
		},
		func() error {
			return c.startComponent(component{
				name: "containerd-" + n.Name, netns: c.NetNSPath(n.Name), mntns: c.NodeMountNS(n.Name),
				argv: []string{filepath.Join(runtimeBin, "containerd"), "--config", c.containerdConfigPath(n.Name)},
			})
		},
		func() error { return c.importImages(ctx, n.Name, idx) },
	}
	for i, s := range steps {
		if err := s(); err != nil {
			t.Fatalf("step %d: %v\n%s", i, err, c.logTail("containerd-"+n.Name, 20))
		}
	}
	sock := filepath.Join(c.NodeRoot(n.Name), containerdSocket)
	out, err := sh(ctx, filepath.Join(runtimeBin, "ctr"), "--address", sock, "plugins", "ls")
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(out, "\n") {
		if strings.Contains(l, "io.containerd.grpc.v1") && strings.Contains(l, "cri") && !strings.HasSuffix(strings.TrimSpace(l), "ok") {
			t.Errorf("containerd's CRI plugin did not load: %s\n%s", l, c.logTail("containerd-"+n.Name, 30))
		}
	}
	if !strings.Contains(out, "cri") {
		t.Errorf("no CRI plugin in containerd:\n%s", out)
	}
	components, inNodes := c.runningComponents(), c.nodeProcesses(runtimeBin)
	if err := Down(ctx, log, c.StateDir); err != nil {
		t.Fatalf("lab down: %v", err)
	}
	checkLeftovers(t, c, before, beforeReal, components, inNodes)
}

// nodeProcesses are the processes running in the lab's node mount
// namespaces, and those of the container runtime (runtimeBin) in the
// machine's own, with their start times: what checkLeftovers expects gone
// after `lab down`. Taken while the lab is up, as the kernel reuses a
// namespace's number once it is gone (another lab's new node may get it).
func (c *Config) nodeProcesses(runtimeBin string) []process {
	ours := map[string]bool{}
	for _, n := range c.NodeList() {
		var st syscall.Stat_t
		if err := syscall.Stat(c.NodeMountNS(n.Name), &st); err == nil {
			ours[fmt.Sprintf("mnt:[%d]", st.Ino)] = true
		}
	}
	self, _ := os.Readlink("/proc/self/ns/mnt")
	var found []process
	cmdlines, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, f := range cmdlines {
		dir := filepath.Dir(f)
		ns, _ := os.Readlink(filepath.Join(dir, "ns", "mnt"))
		b, err := os.ReadFile(f)
		if err != nil || !(ours[ns] || ns == self && strings.HasPrefix(string(b), runtimeBin)) {
			continue
		}
		pid, _ := strconv.Atoi(filepath.Base(dir))
		if start, err := procStartTime(pid); err == nil {
			found = append(found, process{name: strings.ReplaceAll(string(b), "\x00", " "), pid: pid, start: start})
		}
	}
	return found
}
