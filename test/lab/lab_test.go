//go:build linux

package lab

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/seine-cni/seine/test/ci"
	"github.com/seine-cni/seine/test/lab/probe"
)

// labBinaries returns the control-plane binary (built by `make
// kube-binaries`, minutes) and builds the lab CLI and CNI plugins (seconds)
// unless the environment names them.
func labBinaries(t *testing.T) (kube, labBin, cniBin string) {
	t.Helper()
	ci.RequireRoot(t, "the lab (it creates network namespaces and starts OVS)")
	ci.RequireCommands(t, "ovs-vswitchd", "ovsdb-server", "ip", "nsenter", "ethtool", "iptables-save")
	kube = os.Getenv("SEINE_LAB_KUBE_BIN")
	if kube == "" {
		ci.Skipf(t, "SEINE_LAB_KUBE_BIN is not set: build the control plane with `make kube-binaries` (make test does this and sets it)")
	}
	labBin, cniBin = os.Getenv("SEINE_LAB_BIN"), os.Getenv("SEINE_LAB_CNI_BIN")
	dir := t.TempDir()
	build := func(out, dir string, pkgs ...string) {
		cmd := exec.Command("go", append([]string{"build", "-o", out}, pkgs...)...)
		cmd.Dir = dir
		if b, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("go build %s: %v\n%s", pkgs, err, b)
		}
	}
	if labBin == "" {
		labBin = filepath.Join(dir, "lab")
		build(labBin, ".", "github.com/seine-cni/seine/test/lab/cmd/lab")
	}
	if cniBin == "" {
		cniBin = filepath.Join(dir, "cni")
		build(cniBin+"/", "cniplugins", "github.com/containernetworking/plugins/plugins/main/ptp",
			"github.com/containernetworking/plugins/plugins/ipam/host-local")
	}
	return kube, labBin, cniBin
}

// snapshotHost lists what of the machine's own namespaces a lab could
// leave behind, one line per item: links, named network namespaces, mounts
// and iptables rules (without counters, which change on their own).
func snapshotHost(t *testing.T) []string {
	t.Helper()
	run := func(name string, args ...string) string {
		out, err := exec.Command(name, args...).Output()
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		return string(out)
	}
	var items []string
	for _, l := range strings.Split(run("ip", "-o", "link", "show"), "\n") {
		if f := strings.Fields(l); len(f) > 1 {
			items = append(items, "link "+strings.TrimSuffix(f[1], ":"))
		}
	}
	for _, l := range strings.Split(run("ip", "netns", "list"), "\n") {
		if f := strings.Fields(l); len(f) > 0 {
			items = append(items, "netns "+f[0])
		}
	}
	mounts, _ := os.ReadFile("/proc/self/mountinfo")
	for _, l := range strings.Split(string(mounts), "\n") {
		if f := strings.Fields(l); len(f) > 4 {
			items = append(items, "mount "+f[4])
		}
	}
	for _, l := range strings.Split(run("iptables-save"), "\n") {
		if strings.HasPrefix(l, "-A") || strings.HasPrefix(l, ":") || strings.HasPrefix(l, "*") {
			items = append(items, "iptables "+strings.SplitN(l, " [", 2)[0])
		}
	}
	slices.Sort(items)
	return items
}

// hostChanges compares two snapshots of the machine. A change is the lab's
// when it names the lab (its namespace prefix, state directory or
// controller link: everything it makes in the machine's namespaces does) or
// is an iptables rule (no lab touches the machine's own tables). Other
// changes come from whatever else runs on the machine meanwhile (another
// lab, another test's namespaces) and are returned apart.
func hostChanges(before, after []string, c *Config) (ours, others []string) {
	names := []string{c.NSPrefix, c.StateDir, c.ControllerLink()}
	mine := func(item string) bool {
		if strings.HasPrefix(item, "iptables ") {
			return true
		}
		for _, n := range names {
			if strings.Contains(item, n) {
				return true
			}
		}
		return false
	}
	diff := func(sign string, a, b []string) {
		for _, item := range a {
			if _, found := slices.BinarySearch(b, item); found {
				continue
			}
			if mine(item) {
				ours = append(ours, sign+item)
			} else {
				others = append(others, sign+item)
			}
		}
	}
	diff("+ ", after, before)
	diff("- ", before, after)
	return ours, others
}

// process is a running process: its pid and start time (pids are reused).
type process struct {
	name  string
	pid   int
	start uint64
}

// runningComponents lists the lab's running components (those it keeps a
// pidfile for), to look for them again once the lab is down.
func (c *Config) runningComponents() []process {
	var ps []process
	for _, name := range c.components() {
		if pid := c.componentPID(name); pid != 0 {
			if start, err := procStartTime(pid); err == nil {
				ps = append(ps, process{name, pid, start})
			}
		}
	}
	return ps
}

// labProcesses lists the processes still running that belonged to the lab:
// components it started (by pid and start time) and any process whose
// command line names its state directory. Processes of other labs (which
// run the same binaries) are not its.
func labProcesses(stateDir string, components []process) []string {
	var found []string
	for _, p := range components {
		if start, err := procStartTime(p.pid); err == nil && start == p.start && !isZombie(p.pid) {
			found = append(found, fmt.Sprintf("%d: component %s", p.pid, p.name))
		}
	}
	dirs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, f := range dirs {
		b, err := os.ReadFile(f)
		if err != nil || len(b) == 0 {
			continue
		}
		cmd := string(bytes.ReplaceAll(b, []byte{0}, []byte{' '}))
		if strings.Contains(cmd, stateDir) {
			found = append(found, filepath.Base(filepath.Dir(f))+": "+cmd)
		}
	}
	return found
}

func testConfig(t *testing.T) *Config {
	kube, labBin, cniBin := labBinaries(t)
	off, suffix := Slot()
	return &Config{
		Nodes: 3,
		// The lab's own proof, with the reference plugins; test/e2e runs
		// Seine on the lab.
		CNI:      CNIPtp,
		StateDir: filepath.Join("/run", "seine-labtest"+suffix+"-"+strings.ToLower(randomHex(3))),
		NSPrefix: "seine-labtest" + suffix + "-",
		// Ports apart from a lab a person may be running.
		APIPort: 26443 + off, EtcdPort: 22379 + off,
		KubeBin: kube, LabBin: labBin, CNIBin: cniBin,
		WindowsNodes: 1,
	}
}

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, nil))
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// TestLab brings a 3-node lab up, runs a 6-replica Deployment across the
// nodes, checks addressing, reachability, exec and CNI CHECK, and then that
// `lab down` leaves the machine as it was.
func TestLab(t *testing.T) {
	c := testConfig(t)
	before := snapshotHost(t)
	log := testLogger(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()

	t.Cleanup(func() { Down(context.Background(), log, c.StateDir) })
	start := time.Now()
	if err := Up(ctx, log, c); err != nil {
		t.Fatalf("lab up: %v", err)
	}
	t.Logf("lab up took %s", time.Since(start).Round(time.Millisecond))

	cs, err := c.Client("admin")
	if err != nil {
		t.Fatal(err)
	}
	t.Run("nodes", func(t *testing.T) {
		nodes, err := cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if len(nodes.Items) != 3 {
			t.Fatalf("got %d nodes, want 3", len(nodes.Items))
		}
		cluster := netip.MustParsePrefix(c.ClusterCIDR)
		seen := map[string]bool{}
		for _, n := range nodes.Items {
			p, err := netip.ParsePrefix(n.Spec.PodCIDR)
			if err != nil || !cluster.Contains(p.Addr()) || p.Bits() != c.NodeCIDRMaskSize {
				t.Errorf("node %s: podCIDR %q is not a /%d of %s", n.Name, n.Spec.PodCIDR, c.NodeCIDRMaskSize, cluster)
			}
			if seen[n.Spec.PodCIDR] {
				t.Errorf("node %s: podCIDR %s given twice", n.Name, n.Spec.PodCIDR)
			}
			seen[n.Spec.PodCIDR] = true
			if !NodeReady(&n) {
				t.Errorf("node %s is not Ready", n.Name)
			}
		}
		n3, _ := cs.CoreV1().Nodes().Get(ctx, "node-3", metav1.GetOptions{})
		if n3 == nil || n3.Labels["kubernetes.io/os"] != "windows" {
			t.Errorf("node-3 should pose as a Windows node (kubernetes.io/os=windows), labels %v", n3.GetLabels())
		}
	})

	var pods []corev1.Pod
	t.Run("deployment", func(t *testing.T) {
		if _, err := cs.AppsV1().Deployments("default").Create(ctx, DemoDeployment("web", 6), metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		pods, err = WaitDeploymentReady(ctx, cs, "default", "web", 3*time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		perNode := map[string]int{}
		for _, p := range pods {
			perNode[p.Spec.NodeName]++
			node, err := cs.CoreV1().Nodes().Get(ctx, p.Spec.NodeName, metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			cidr := netip.MustParsePrefix(node.Spec.PodCIDR)
			ip, err := netip.ParseAddr(p.Status.PodIP)
			if err != nil || !cidr.Contains(ip) {
				t.Errorf("pod %s on %s: IP %q is outside the node's podCIDR %s", p.Name, p.Spec.NodeName, p.Status.PodIP, cidr)
			}
		}
		if len(perNode) < 2 {
			t.Errorf("6 replicas landed on %d node(s): %v", len(perNode), perNode)
		}
	})
	if len(pods) == 0 {
		t.FailNow()
	}

	t.Run("reachability", func(t *testing.T) {
		for _, proto := range []string{"tcp", "udp"} {
			port := map[string]string{"tcp": "8080", "udp": "8081"}[proto]
			m, bad, err := c.ProbeMatrix(ctx, pods, proto, port)
			if err != nil {
				t.Fatal(err)
			}
			if bad > 0 {
				t.Errorf("%s: %d pairs failed:\n%s", proto, bad, m)
			}
		}
	})

	t.Run("exec and check", func(t *testing.T) {
		p := pods[0]
		var out bytes.Buffer
		if err := Exec(ctx, c, "default/"+p.Name, []string{"ip", "-o", "-4", "addr", "show", "eth0"}, nil, &out, &out); err != nil {
			t.Fatalf("lab exec: %v: %s", err, out.String())
		}
		if !strings.Contains(out.String(), p.Status.PodIP+"/") {
			t.Errorf("eth0 in pod %s does not hold its IP %s:\n%s", p.Name, p.Status.PodIP, out.String())
		}
		if err := Check(ctx, c, "default/"+p.Name); err != nil {
			t.Errorf("CNI CHECK: %v", err)
		}
	})

	t.Run("pod deletion", func(t *testing.T) {
		p := pods[0]
		ns, err := c.PodNetNS(&p)
		if err != nil {
			t.Fatal(err)
		}
		// Probed from another pod (the machine's own namespace has no route
		// to pods): it answers before the deletion, not after.
		from, err := c.PodNetNS(&pods[1])
		if err != nil {
			t.Fatal(err)
		}
		if reply, err := probe.Probe(ctx, from, "tcp", p.Status.PodIP+":8080", 5*time.Second); err != nil || reply != p.Name {
			t.Fatalf("%s -> %s before the deletion: %q, %v", pods[1].Name, p.Name, reply, err)
		}
		if err := cs.CoreV1().Pods("default").Delete(ctx, p.Name, metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(time.Minute)
		for {
			_, statErr := os.Stat(ns)
			_, getErr := cs.CoreV1().Pods("default").Get(ctx, p.Name, metav1.GetOptions{})
			if os.IsNotExist(statErr) && getErr != nil {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("pod %s: netns still there (%v) or object not deleted (%v)", p.Name, statErr, getErr)
			}
			time.Sleep(100 * time.Millisecond)
		}
		if reply, err := probe.Probe(ctx, from, "tcp", p.Status.PodIP+":8080", 2*time.Second); err == nil {
			t.Errorf("deleted pod %s still answers %s: %q", p.Name, pods[1].Name, reply)
		}
		// The ReplicaSet replaces it.
		if _, err := WaitDeploymentReady(ctx, cs, "default", "web", 2*time.Minute); err != nil {
			t.Error(err)
		}
	})

	var status bytes.Buffer
	if err := Status(ctx, c, &status); err != nil {
		t.Errorf("status: %v", err)
	}
	if strings.Contains(status.String(), "EXITED") {
		t.Errorf("a component exited:\n%s", status.String())
	}

	components := c.runningComponents()
	if len(components) == 0 {
		t.Error("no running lab component found before lab down")
	}
	if err := Down(ctx, log, c.StateDir); err != nil {
		t.Fatalf("lab down: %v", err)
	}
	ours, others := hostChanges(before, snapshotHost(t), c)
	if len(ours) > 0 {
		t.Errorf("lab down left the machine changed (+ added, - removed):\n%s", strings.Join(ours, "\n"))
	}
	if len(others) > 0 {
		t.Logf("changed meanwhile by something else on the machine (not named after this lab):\n%s", strings.Join(others, "\n"))
	}
	if left := labProcesses(c.StateDir, components); len(left) > 0 {
		t.Errorf("processes left behind:\n%s", strings.Join(left, "\n"))
	}
	if _, err := os.Stat(c.StateDir); !os.IsNotExist(err) {
		t.Errorf("state directory %s left behind", c.StateDir)
	}
}

// TestHostChanges: what another lab or test adds or removes meanwhile is
// not this lab's leftover; what names this lab is, and so is any change to
// the machine's iptables.
func TestHostChanges(t *testing.T) {
	c := &Config{StateDir: "/run/seine-labtest1-abc", NSPrefix: "seine-labtest1-", APIPort: 26444}
	before := []string{"iptables -A INPUT -j ACCEPT", "link eth0", "link lo", "link seinectl51443", "mount /", "mount /run/netns/seine-e2e-node-1", "netns seine-e2e-node-1"}
	after := []string{
		"iptables -A INPUT -j ACCEPT", "iptables -A INPUT -j DROP", // a rule added
		"link eth0", "link lo", "link seinectl26444", // ours
		"mount /", "mount /run/netns/seine-labtest1-node-2", "mount /run/seine-labtest1-abc/kubelet", // ours
		"mount /tmp/TestX/netns",              // another test's
		"netns seine-bench-node-1",            // another lab's
		"netns seine-labtest1-fabric (id: 3)", // ours
	}
	ours, others := hostChanges(before, after, c)
	wantOurs := []string{"+ iptables -A INPUT -j DROP", "+ link seinectl26444", "+ mount /run/netns/seine-labtest1-node-2",
		"+ mount /run/seine-labtest1-abc/kubelet", "+ netns seine-labtest1-fabric (id: 3)"}
	wantOthers := []string{"+ mount /tmp/TestX/netns", "+ netns seine-bench-node-1",
		"- link seinectl51443", "- mount /run/netns/seine-e2e-node-1", "- netns seine-e2e-node-1"}
	if !slices.Equal(ours, wantOurs) {
		t.Errorf("ours:\n%s\nwant\n%s", strings.Join(ours, "\n"), strings.Join(wantOurs, "\n"))
	}
	if !slices.Equal(others, wantOthers) {
		t.Errorf("others:\n%s\nwant\n%s", strings.Join(others, "\n"), strings.Join(wantOthers, "\n"))
	}
}

func TestMountsUnder(t *testing.T) {
	info := `22 1 0:20 / /run rw - tmpfs tmpfs rw
500 22 0:4 net:[4026532] /run/seine-lab/nodes/node-1/netns/abc rw - nsfs nsfs rw
501 22 0:4 net:[4026533] /run/seine-lab/nodes/node\0401/netns/x rw - nsfs nsfs rw
502 22 0:4 net:[4026534] /run/seine-lab-other/y rw - nsfs nsfs rw
`
	got, err := mountsUnder(strings.NewReader(info), "/run/seine-lab")
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"/run/seine-lab/nodes/node-1/netns/abc", "/run/seine-lab/nodes/node 1/netns/x"}
	if !slices.Equal(got, want) {
		t.Errorf("mountsUnder = %q, want %q", got, want)
	}
}
