package main

// An integration test of the agent on a real node: a private OVS
// (test/ovsdaemon) with the netdev datapath in a throwaway "node" netns, the
// linux backend, and the real seine-cni binary driven through libcni as a
// container runtime does. Only the API server is a fake clientset.

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	current "github.com/containernetworking/cni/pkg/types/100"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/seine-cni/seine/core/agent"
	"github.com/seine-cni/seine/linux"
	"github.com/seine-cni/seine/ovs/ovsdb"
	"github.com/seine-cni/seine/platform"
	"github.com/seine-cni/seine/test/ovsdaemon"
)

// realNode is a node netns with its own OVS, an uplink, and seine-agent
// (linux backend) serving CNI; libcni drives the real seine-cni binary.
type realNode struct {
	d             *ovsdaemon.Daemon
	nodeNS, podNS string
	cni           *libcni.CNIConfig
	list          *libcni.NetworkConfigList
}

func startRealNode(t testing.TB) *realNode {
	t.Helper()
	ovsdaemon.SkipUnlessCanRun(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	binDir := t.TempDir()
	if out, err := exec.Command("go", "build", "-o", filepath.Join(binDir, "seine"), "github.com/seine-cni/seine/services/seine-cni").CombinedOutput(); err != nil {
		t.Fatalf("build seine-cni: %v\n%s", err, out)
	}

	d := ovsdaemon.StartForTest(t)
	nodeNS := d.NetNS()
	peerNS := ovsdaemon.NewNetNS(t)
	podNS := ovsdaemon.NewNetNS(t)
	inNode := func(args ...string) {
		t.Helper()
		out, err := exec.Command("nsenter", append([]string{"--net=" + nodeNS, "--"}, args...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("%v: %v\n%s", args, err, out)
		}
	}
	// The node's uplink: eth0, a veth to a peer namespace, with the node IP.
	inNode("ip", "link", "add", "eth0", "type", "veth", "peer", "name", "up-peer")
	inNode("ip", "link", "set", "up-peer", "netns", peerNS)
	inNode("ip", "addr", "add", "192.168.77.11/24", "dev", "eth0")
	inNode("ip", "link", "set", "eth0", "up")

	db, err := ovsdb.Connect(ctx, ovsdb.Config{Endpoint: d.DBEndpoint()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(db.Close)
	log := slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
	backend, err := linux.New(platform.Config{Logger: log, OVSDB: db, Datapath: ovsdb.DatapathNetdev, OVSRunDir: d.RunDir(), HostNetNS: nodeNS})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { backend.Close() })
	dir := t.TempDir()
	cfg := &agent.Config{
		NodeName: "node-1",
		OVS:      agent.OVSConfig{DBEndpoint: d.DBEndpoint(), RunDir: d.RunDir(), Bridge: "br-int", DatapathType: "netdev"},
		Topology: "bridgedUplink", Uplink: "eth0", TrafficMode: "encap", TunnelType: "geneve",
		CNISocket: filepath.Join(dir, "cni.sock"), CNIConfDir: filepath.Join(dir, "net.d"), StateDir: filepath.Join(dir, "state"),
	}
	kube := fake.NewClientset(testNode("node-1", "192.168.77.11", "10.244.1.0/24"), testNode("node-2", "192.168.77.12", "10.244.2.0/24"))
	a, err := agent.New(agent.Options{Config: cfg, Logger: log, Kube: kube, OVSDB: db, Backend: backend})
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- a.Run(runCtx) }()
	t.Cleanup(func() {
		stop()
		if err := <-done; err != nil {
			t.Errorf("agent: %v", err)
		}
	})
	confPath := filepath.Join(cfg.CNIConfDir, agent.CNIConfFile)
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if _, err := os.Stat(confPath); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the agent wrote no CNI config; ready: %v", fmtReady(a))
		}
	}
	list, err := libcni.ConfListFromFile(confPath)
	if err != nil {
		t.Fatal(err)
	}
	return &realNode{d: d, nodeNS: nodeNS, podNS: podNS, cni: libcni.NewCNIConfig([]string{binDir}, nil), list: list}
}

func TestAgentOnRealOVS(t *testing.T) {
	n := startRealNode(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	d, nodeNS, podNS, cniConf, list := n.d, n.nodeNS, n.podNS, n.cni, n.list
	inNode := func(args ...string) string {
		t.Helper()
		return mustRun(t, "nsenter", append([]string{"--net=" + nodeNS, "--"}, args...)...)
	}
	rt := &libcni.RuntimeConf{
		ContainerID: "0123456789abcdef", NetNS: podNS, IfName: "eth0",
		Args: [][2]string{{"K8S_POD_NAMESPACE", "default"}, {"K8S_POD_NAME", "web-0"}},
	}
	if err := cniConf.GetStatusNetworkList(ctx, list); err != nil {
		t.Fatalf("STATUS: %v", err)
	}
	r, err := cniConf.AddNetworkList(ctx, list, rt)
	if err != nil {
		t.Fatalf("ADD: %v", err)
	}
	res, err := current.NewResultFromResult(r)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.IPs) != 1 || res.IPs[0].Address.String() != "10.244.1.2/24" {
		t.Fatalf("ADD result IPs %v", res.IPs)
	}
	hostIf := res.Interfaces[0].Name
	podAddr := mustRun(t, "nsenter", "--net="+podNS, "--", "ip", "-o", "addr", "show", "dev", "eth0")
	if !strings.Contains(podAddr, "10.244.1.2/24") {
		t.Errorf("pod eth0: %s", podAddr)
	}
	if mtu := mustRun(t, "nsenter", "--net="+podNS, "--", "ip", "-o", "link", "show", "dev", "eth0"); !strings.Contains(mtu, "mtu 1450") {
		t.Errorf("pod eth0 MTU: %s", mtu)
	}
	if ports, _ := d.Vsctl(ctx, "list-ports", "br-int"); !strings.Contains(ports, hostIf) {
		t.Errorf("port %s not on br-int: %s", hostIf, ports)
	}
	if ids, _ := d.Vsctl(ctx, "get", "Port", hostIf, "external_ids"); !strings.Contains(ids, `k8s-pod-name=web-0`) || !strings.Contains(ids, `ip-address="10.244.1.2/24"`) {
		t.Errorf("port external_ids: %s", ids)
	}
	flows, err := d.Ofctl(ctx, "-O", "OpenFlow15", "dump-flows", "br-int")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(flows, "nw_src=10.244.1.2") || !strings.Contains(flows, "nw_dst=10.244.2.0/24") {
		t.Errorf("flows lack the pod's spoof guard or the peer's route:\n%s", flows)
	}
	// The node reaches the pod through the bridge (gateway port, pipeline).
	if out, err := exec.CommandContext(ctx, "nsenter", "--net="+nodeNS, "--", "bash", "-c", "exec 3<>/dev/tcp/10.244.1.2/9").CombinedOutput(); err != nil && !strings.Contains(string(out), "refused") {
		t.Errorf("node -> pod TCP: want a reset from the pod (nothing listens), got %v: %s", err, out)
	}
	if err := cniConf.CheckNetworkList(ctx, list, rt); err != nil {
		t.Errorf("CHECK: %v", err)
	}

	if err := cniConf.DelNetworkList(ctx, list, rt); err != nil {
		t.Fatalf("DEL: %v", err)
	}
	if ports, _ := d.Vsctl(ctx, "list-ports", "br-int"); strings.Contains(ports, hostIf) {
		t.Errorf("port %s left on br-int", hostIf)
	}
	if links := inNode("ip", "-o", "link", "show", "type", "veth"); strings.Contains(links, hostIf) {
		t.Errorf("veth left on the node:\n%s", links)
	}
	if flows, _ := d.Ofctl(ctx, "-O", "OpenFlow15", "dump-flows", "br-int"); strings.Contains(flows, "10.244.1.2") {
		t.Errorf("flows of the pod left:\n%s", flows)
	}
	if out := mustRun(t, "nsenter", "--net="+podNS, "--", "ip", "-o", "link"); strings.Contains(out, "eth0") {
		t.Errorf("pod interface left: %s", out)
	}
	if err := cniConf.DelNetworkList(ctx, list, rt); err != nil {
		t.Errorf("second DEL: %v", err)
	}
}

func fmtReady(a *agent.Agent) string {
	ok, why := a.Ready()
	if ok {
		return "ready"
	}
	return why
}

func mustRun(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %v: %v\n%s", name, args, err, out)
	}
	return string(out)
}

func testNode(name, ip, podCIDR string) *corev1.Node {
	return &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec:       corev1.NodeSpec{PodCIDR: podCIDR, PodCIDRs: []string{podCIDR}},
		Status:     corev1.NodeStatus{Addresses: []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: ip}}},
	}
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// BenchmarkCNIAddDel is one pod's ADD and DEL through libcni, seine-cni, the
// agent, the linux backend and a netdev ovs-vswitchd.
func BenchmarkCNIAddDel(b *testing.B) {
	n := startRealNode(b)
	ctx := context.Background()
	for i := 0; b.Loop(); i++ {
		rt := &libcni.RuntimeConf{
			ContainerID: fmt.Sprintf("bench-%d", i), NetNS: n.podNS, IfName: "eth0",
			Args: [][2]string{{"K8S_POD_NAMESPACE", "default"}, {"K8S_POD_NAME", "bench"}},
		}
		if _, err := n.cni.AddNetworkList(ctx, n.list, rt); err != nil {
			b.Fatal(err)
		}
		if err := n.cni.DelNetworkList(ctx, n.list, rt); err != nil {
			b.Fatal(err)
		}
	}
}
