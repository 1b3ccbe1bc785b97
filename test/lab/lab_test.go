//go:build linux

package lab

import (
	"bytes"
	"context"
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

	"github.com/seine-cni/seine/test/lab/probe"
)

// labBinaries returns the control-plane binary (built by `make
// kube-binaries`, minutes) and builds the lab CLI and CNI plugins (seconds)
// unless the environment names them.
func labBinaries(t *testing.T) (kube, labBin, cniBin string) {
	t.Helper()
	// In CI (root, make test) the lab must run: a skip there would hide a
	// broken set-up.
	skip := t.Skipf
	if os.Getenv("CI") != "" {
		skip = t.Fatalf
	}
	if os.Geteuid() != 0 {
		skip("the lab needs root: it creates network namespaces and starts OVS")
	}
	for _, cmd := range []string{"ovs-vswitchd", "ovsdb-server", "ip", "nsenter", "ethtool", "iptables-save"} {
		if _, err := exec.LookPath(cmd); err != nil {
			skip("the lab needs %s (make deps installs it)", cmd)
		}
	}
	kube = os.Getenv("SEINE_LAB_KUBE_BIN")
	if kube == "" {
		skip("SEINE_LAB_KUBE_BIN is not set: build the control plane with `make kube-binaries` (make test does this and sets it)")
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

// hostState is what the lab must leave as it found it.
type hostState struct {
	links, netns, iptables, mounts string
}

func snapshotHost(t *testing.T) hostState {
	t.Helper()
	run := func(name string, args ...string) string {
		out, err := exec.Command(name, args...).Output()
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		return string(out)
	}
	var links []string
	for _, l := range strings.Split(run("ip", "-o", "link", "show"), "\n") {
		if f := strings.Fields(l); len(f) > 1 {
			links = append(links, f[1])
		}
	}
	mounts, _ := os.ReadFile("/proc/self/mountinfo")
	var ms []string
	for _, l := range strings.Split(string(mounts), "\n") {
		if f := strings.Fields(l); len(f) > 4 {
			ms = append(ms, f[4])
		}
	}
	slices.Sort(ms)
	ipt := run("iptables-save")
	// Counters and the header's timestamp change on their own.
	var rules []string
	for _, l := range strings.Split(ipt, "\n") {
		if strings.HasPrefix(l, "-A") || strings.HasPrefix(l, ":") || strings.HasPrefix(l, "*") {
			rules = append(rules, strings.SplitN(l, " [", 2)[0])
		}
	}
	return hostState{
		links:    strings.Join(links, " "),
		netns:    run("ip", "netns", "list"),
		iptables: strings.Join(rules, "\n"),
		mounts:   strings.Join(ms, "\n"),
	}
}

// labProcesses lists processes whose command line names the lab's state
// directory or binaries.
func labProcesses(stateDir, labBin, kubeBin string) []string {
	var found []string
	dirs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, f := range dirs {
		b, err := os.ReadFile(f)
		if err != nil || len(b) == 0 {
			continue
		}
		cmd := string(bytes.ReplaceAll(b, []byte{0}, []byte{' '}))
		if strings.Contains(cmd, stateDir) || strings.Contains(cmd, kubeBin) || strings.HasPrefix(cmd, labBin+" ") {
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
		if _, err := probe.Probe(ctx, "", "tcp", p.Status.PodIP+":8080", time.Second); err == nil {
			t.Errorf("deleted pod %s still answers", p.Name)
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

	if err := Down(ctx, log, c.StateDir); err != nil {
		t.Fatalf("lab down: %v", err)
	}
	after := snapshotHost(t)
	if before != after {
		t.Errorf("lab down left the machine changed:\nbefore: %+v\nafter:  %+v", before, after)
	}
	if left := labProcesses(c.StateDir, c.LabBin, c.KubeBin); len(left) > 0 {
		t.Errorf("processes left behind:\n%s", strings.Join(left, "\n"))
	}
	if _, err := os.Stat(c.StateDir); !os.IsNotExist(err) {
		t.Errorf("state directory %s left behind", c.StateDir)
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
