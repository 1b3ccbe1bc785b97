package kubelet

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/seine-cni/seine/test/ci"
	"github.com/seine-cni/seine/test/lab/netns"
	"github.com/seine-cni/seine/test/lab/probe"
)

const pluginsModule = "github.com/containernetworking/plugins"
const pluginsVersion = "v1.10.0"

// buildPlugins builds ptp, host-local and loopback from the plugins module at a fixed
// version into a temp dir (the Go build cache makes later runs quick).
func buildPlugins(t testing.TB) string {
	t.Helper()
	ci.RequireCommands(t, "go") // builds the CNI plugins
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Fatal(err)
	}
	bin := t.TempDir()
	args := []string{"install"}
	for _, p := range []string{"plugins/main/ptp", "plugins/ipam/host-local", "plugins/main/loopback"} {
		args = append(args, pluginsModule+"/"+p+"@"+pluginsVersion)
	}
	cmd := exec.Command(goBin, args...)
	cmd.Dir = t.TempDir() // outside the Seine module: the plugins build with their own go.mod
	cmd.Env = append(os.Environ(), "GOBIN="+bin, "GOWORK=off")
	start := time.Now()
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building CNI plugins %s: %v\n%s", pluginsVersion, err, out)
	}
	t.Logf("built ptp, host-local, loopback %s in %v", pluginsVersion, time.Since(start).Round(time.Millisecond))
	return bin
}

func sctpSupported() bool {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM, unix.IPPROTO_SCTP)
	if err != nil {
		return false
	}
	_ = unix.Close(fd)
	return true
}

// inNS runs a command inside a namespace and returns its output.
func inNS(t testing.TB, ns string, name string, args ...string) string {
	t.Helper()
	var out []byte
	err := netns.Do(ns, func() (err error) {
		out, err = exec.Command(name, args...).CombinedOutput()
		return err
	})
	if err != nil {
		t.Fatalf("in %s: %s %s: %v: %s", ns, name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// realNode starts a kubelet for a throwaway node namespace with real ptp + host-local +
// loopback plugins and real pod namespaces, podCIDR 10.250.1.0/24 with the given
// host-local range. Everything is torn down when the test ends.
func realNode(t testing.TB, rangeStart, rangeEnd string) (h *harness, nodeNS, hostLocalDir string) {
	t.Helper()
	ci.RequireRoot(t, "creating network namespaces and veths")
	ci.RequireCommands(t, "ip") // inspects the node namespace
	bin := buildPlugins(t)

	h = newHarness(t)
	nodeNS = filepath.Join(h.dir, "node-ns")
	if err := netns.Create(nodeNS); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := netns.Remove(nodeNS); err != nil {
			t.Error(err)
		}
	})
	hostLocalDir = filepath.Join(h.dir, "host-local")
	h.cfg.ops = nil // real namespaces and probe listeners
	h.cfg.NodeNetNS = nodeNS
	h.cfg.CNIBinDirs = []string{bin}
	h.cfg.CNIConfTemplate = `{"cniVersion":"1.0.0","name":"labnet","plugins":[` +
		`{"type":"ptp","ipMasq":false,"mtu":1500,"ipam":{"type":"host-local","dataDir":"` + hostLocalDir + `",` +
		`"ranges":[[{"subnet":"{{.PodCIDR}}","rangeStart":"` + rangeStart + `","rangeEnd":"` + rangeEnd + `"}]],` +
		`"routes":[{"dst":"0.0.0.0/0"}]}},{"type":"loopback"}]}`
	// Whatever the test leaves (it failed half-way), Cleanup DELs with the real plugins
	// before the node namespace goes.
	t.Cleanup(func() {
		cfg := h.cfg
		cfg.Client = nil
		if err := Cleanup(context.Background(), cfg); err != nil {
			t.Errorf("Cleanup: %v", err)
		}
	})
	ctx := context.Background()

	h.start()
	eventually(t, "node registered", func() (bool, string) {
		_, err := h.client.CoreV1().Nodes().Get(ctx, "node-1", metav1.GetOptions{})
		return err == nil, fmt.Sprint(err)
	})
	node, err := h.client.CoreV1().Nodes().Get(ctx, "node-1", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	node.Spec.PodCIDR, node.Spec.PodCIDRs = "10.250.1.0/24", []string{"10.250.1.0/24"} // node IPAM's job
	if _, err := h.client.CoreV1().Nodes().Update(ctx, node, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	return h, nodeNS, hostLocalDir
}

// TestRealPluginsInNodeNamespace: pods get addresses from the rendered range, reach each
// other, a pod finding the range exhausted gets an event and leaves nothing, and deletion
// leaves no namespace, veth or address.
func TestRealPluginsInNodeNamespace(t *testing.T) {
	// Two addresses only, so a third pod exhausts the range.
	h, nodeNS, hostLocalDir := realNode(t, "10.250.1.10", "10.250.1.11")
	ctx := context.Background()

	h.createPod("pod-a")
	h.createPod("pod-b", func(p *corev1.Pod) {
		p.Spec.Containers[0].Ports = append(p.Spec.Containers[0].Ports,
			corev1.ContainerPort{ContainerPort: 9999, Protocol: corev1.ProtocolSCTP})
	})
	a, b := h.waitRunning("pod-a"), h.waitRunning("pod-b")
	if sctpSupported() {
		if got, err := probe.Probe(ctx, h.netnsPath("pod-a"), "sctp", b.Status.PodIP+":9999", 3*time.Second); err != nil || got != "pod-b" {
			t.Errorf("pod-a -> pod-b sctp: %q, %v", got, err)
		}
	} else {
		// No SCTP in this kernel: pod-b runs, with an event for the port it cannot serve.
		eventually(t, "FailedProbeListener for pod-b's SCTP port", func() (bool, string) {
			for _, e := range h.events("pod-b", "FailedProbeListener") {
				return strings.Contains(e.Message, "SCTP/9999"), e.Message
			}
			return false, "no event"
		})
	}
	podRange := netip.MustParsePrefix("10.250.1.0/24")
	for _, p := range []*corev1.Pod{a, b} {
		ip, err := netip.ParseAddr(p.Status.PodIP)
		if err != nil || !podRange.Contains(ip) {
			t.Fatalf("%s IP %q is not from the node's podCIDR", p.Name, p.Status.PodIP)
		}
		if !netns.Exists(h.netnsPath(p.Name)) {
			t.Fatalf("%s has no netns at %s", p.Name, h.netnsPath(p.Name))
		}
		if out := inNS(t, h.netnsPath(p.Name), "ip", "-o", "-4", "addr", "show", "dev", "eth0"); !strings.Contains(out, p.Status.PodIP+"/") {
			t.Errorf("%s eth0: %s", p.Name, out)
		}
	}
	if err := Check(ctx, h.cfg, string(a.UID)); err != nil {
		t.Errorf("CNI CHECK of pod-a: %v", err)
	}

	probeEachOther := func() {
		t.Helper()
		for _, c := range []struct{ from, to *corev1.Pod }{{a, b}, {b, a}} {
			for _, proto := range []string{"tcp", "udp"} {
				port := "8080"
				if proto == "udp" {
					port = "5353"
				}
				got, err := probe.Probe(ctx, h.netnsPath(c.from.Name), proto, c.to.Status.PodIP+":"+port, 3*time.Second)
				if err != nil || got != c.to.Name {
					t.Errorf("%s -> %s %s: %q, %v", c.from.Name, c.to.Name, proto, got, err)
				}
			}
		}
	}
	probeEachOther()
	if _, err := probe.Probe(ctx, h.netnsPath("pod-a"), "tcp", b.Status.PodIP+":9", 3*time.Second); !errors.Is(err, probe.ErrRefused) {
		t.Errorf("probe of a closed port: %v, want ErrRefused", err)
	}

	// A third pod finds the range exhausted: an event, no namespace, still Pending.
	h.createPod("pod-c")
	eventually(t, "FailedCreatePodSandBox for pod-c", func() (bool, string) {
		for _, e := range h.events("pod-c", "FailedCreatePodSandBox") {
			if strings.Contains(e.Message, "no IP addresses available") {
				return true, ""
			}
			return false, e.Message
		}
		return false, "no event"
	})
	// Restart between attempts: pod-c leaves nothing behind, pod-a and pod-b are adopted.
	h.stop()
	if _, err := os.Stat(h.netnsPath("pod-c")); !os.IsNotExist(err) {
		t.Errorf("pod-c netns left after failed ADDs: %v", err)
	}
	if c, _ := h.getPod("pod-c"); c.Status.Phase != corev1.PodPending || c.Status.PodIP != "" {
		t.Errorf("pod-c status %+v", c.Status)
	}
	h.start()
	eventually(t, "listeners of adopted pods", func() (bool, string) {
		_, err := probe.Probe(ctx, h.netnsPath("pod-a"), "tcp", b.Status.PodIP+":8080", time.Second)
		return err == nil, fmt.Sprint(err)
	})
	probeEachOther()

	// Deleting pod-a frees its address; pod-c's retry gets it.
	h.markDeleted("pod-a")
	eventually(t, "pod-a deleted", func() (bool, string) {
		_, err := h.getPod("pod-a")
		return err != nil, "still there"
	})
	if _, err := os.Stat(h.netnsPath("pod-a")); !os.IsNotExist(err) {
		t.Errorf("pod-a netns left: %v", err)
	}
	c := h.waitRunning("pod-c")
	if c.Status.PodIP != a.Status.PodIP {
		t.Errorf("pod-c got %s, want pod-a's freed %s", c.Status.PodIP, a.Status.PodIP)
	}

	// Delete the rest: no namespace, veth or address may remain.
	h.markDeleted("pod-b")
	h.markDeleted("pod-c")
	for _, name := range []string{"pod-b", "pod-c"} {
		eventually(t, name+" deleted", func() (bool, string) {
			_, err := h.getPod(name)
			return err != nil, "still there"
		})
	}
	if entries, _ := os.ReadDir(h.cfg.NetNSDir); len(entries) != 0 {
		t.Errorf("pod namespaces left: %v", entries)
	}
	links := inNS(t, nodeNS, "ip", "-o", "link", "show")
	if strings.Count(strings.TrimSpace(links), "\n") != 0 || !strings.Contains(links, "lo:") {
		t.Errorf("links left in the node namespace:\n%s", links)
	}
	if addrs := inNS(t, nodeNS, "ip", "-o", "-4", "addr", "show"); strings.Contains(addrs, "10.250.1.") {
		t.Errorf("pod-range addresses left in the node namespace:\n%s", addrs)
	}
	leases, _ := os.ReadDir(filepath.Join(hostLocalDir, "labnet"))
	for _, e := range leases {
		if strings.HasPrefix(e.Name(), "10.250.1.") {
			t.Errorf("host-local still holds %s", e.Name())
		}
	}
}

// BenchmarkStart30Pods measures how long 30 pods on one node take from creation to
// Running with real plugins (ADD, namespaces, listeners, status through the fake client).
func BenchmarkStart30Pods(b *testing.B) {
	h, _, _ := realNode(b, "10.250.1.10", "10.250.1.250")
	const n = 30
	for i := 0; b.Loop(); i++ {
		start := time.Now()
		var names []string
		for j := range n {
			name := fmt.Sprintf("bench-%d-%d", i, j)
			names = append(names, name)
			h.createPod(name)
		}
		for _, name := range names {
			h.waitRunning(name)
		}
		b.ReportMetric(float64(n)/time.Since(start).Seconds(), "pods/s")
		b.StopTimer()
		for _, name := range names {
			h.markDeleted(name)
		}
		for _, name := range names {
			eventually(b, name+" deleted", func() (bool, string) {
				_, err := h.getPod(name)
				return err != nil, "still there"
			})
		}
		b.StartTimer()
	}
}
