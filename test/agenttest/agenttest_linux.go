package agenttest

import (
	"context"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	fakediscovery "k8s.io/client-go/discovery/fake"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/seine-cni/seine/core/agent"
	"github.com/seine-cni/seine/core/metrics"
	"github.com/seine-cni/seine/linux"
	"github.com/seine-cni/seine/ovs/ovsdb"
	"github.com/seine-cni/seine/platform"
	"github.com/seine-cni/seine/test/ovsdaemon"
)

// NodeIP is the node's address on its uplink; its podCIDR is 10.244.1.0/24
// and a peer node-2 (Node2IP, 10.244.2.0/24) exists in the API.
const NodeIP = "192.168.77.11"

// Node is a running node.
type Node struct {
	OVS    *ovsdaemon.Daemon
	NetNS  string // the node's network namespace
	Agent  *agent.Agent
	CNI    *libcni.CNIConfig // finds seine-cni as the "seine" plugin
	Config *libcni.NetworkConfigList
	Kube   *fake.Clientset // the agent's API: node-1 and node-2
	// Metrics is the agent's registry (its /metrics), with libovsdb's.
	Metrics *prometheus.Registry
	// AgentConfig is the agent's configuration (its paths are under the
	// test's temporary directory).
	AgentConfig *agent.Config
	// CNIBinDir holds seine-cni as the "seine" plugin.
	CNIBinDir string

	stop func() error
}

// StopAgent stops the agent and returns what its Run returned; the node's
// OVS keeps running. Later calls return the same.
func (n *Node) StopAgent() error { return n.stop() }

// Options change how a node is set up.
type Options struct {
	// SysfsRoot is the Linux backend's platform.Config.SysfsRoot: a tree
	// standing for /sys that describes (emulated) SR-IOV VFs.
	SysfsRoot string
	// FlowExport is the agents' flow export configuration (both nodes of
	// a pair).
	FlowExport *agent.FlowExportConfig
}

// Start sets the node up and returns once the agent has written its CNI
// configuration (it is ready). Everything is undone in tb's cleanup. It
// skips with the reason when OVS cannot run here.
func Start(tb testing.TB) *Node { return StartWith(tb, Options{}) }

// StartWith is Start with options.
func StartWith(tb testing.TB, o Options) *Node {
	tb.Helper()
	ovsdaemon.SkipUnlessCanRun(tb)
	binDir := buildCNI(tb)
	d := ovsdaemon.StartForTest(tb)
	peerNS := ovsdaemon.NewNetNS(tb)
	// The node's uplink: eth0, a veth to a peer namespace, with the node IP.
	inNS(tb, d.NetNS(), "ip", "link", "add", "eth0", "type", "veth", "peer", "name", "up-peer")
	inNS(tb, d.NetNS(), "ip", "link", "set", "up-peer", "netns", peerNS)
	return startNode(tb, d, binDir, "node-1", NodeIP, o)
}

// Node2IP is node-2's address in StartPair.
const Node2IP = "192.168.77.12"

// StartPair starts node-1 and node-2 (10.244.2.0/24 at Node2IP), each a
// Start node whose uplink is one end of the same veth pair, so the two
// reach each other directly: pods on one reach pods on the other through
// the Geneve tunnel, as on two machines.
func StartPair(tb testing.TB, o Options) (*Node, *Node) {
	tb.Helper()
	ovsdaemon.SkipUnlessCanRun(tb)
	binDir := buildCNI(tb)
	d1, d2 := ovsdaemon.StartForTest(tb), ovsdaemon.StartForTest(tb)
	inNS(tb, d1.NetNS(), "ip", "link", "add", "eth0", "type", "veth", "peer", "name", "eth0-n2")
	inNS(tb, d1.NetNS(), "ip", "link", "set", "eth0-n2", "netns", d2.NetNS())
	inNS(tb, d2.NetNS(), "ip", "link", "set", "eth0-n2", "name", "eth0")
	return startNode(tb, d1, binDir, "node-1", NodeIP, o), startNode(tb, d2, binDir, "node-2", Node2IP, Options{FlowExport: o.FlowExport})
}

func buildCNI(tb testing.TB) string {
	tb.Helper()
	binDir := tb.TempDir()
	if out, err := exec.Command("go", "build", "-o", filepath.Join(binDir, "seine"), "github.com/seine-cni/seine/services/seine-cni").CombinedOutput(); err != nil {
		tb.Fatalf("build seine-cni: %v\n%s", err, out)
	}
	return binDir
}

func inNS(tb testing.TB, netns string, args ...string) {
	tb.Helper()
	if out, err := exec.Command("nsenter", append([]string{"--net=" + netns, "--"}, args...)...).CombinedOutput(); err != nil {
		tb.Fatalf("%v: %v\n%s", args, err, out)
	}
}

// startNode gives the node's eth0 its address and runs the agent.
func startNode(tb testing.TB, d *ovsdaemon.Daemon, binDir, name, ip string, o Options) *Node {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	tb.Cleanup(cancel)
	nodeNS := d.NetNS()
	inNS(tb, nodeNS, "ip", "addr", "add", ip+"/24", "dev", "eth0")
	inNS(tb, nodeNS, "ip", "link", "set", "eth0", "up")
	reg := prometheus.NewRegistry()
	db, err := ovsdb.Connect(ctx, ovsdb.Config{Endpoint: d.DBEndpoint(),
		Metrics: reg, MetricsNamespace: metrics.LibOVSDBNamespace, MetricsSubsystem: metrics.LibOVSDBSubsystem})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(db.Close)
	log := slog.New(slog.NewTextHandler(logWriter{tb}, &slog.HandlerOptions{Level: slog.LevelWarn}))
	backend, err := linux.New(platform.Config{Logger: log, OVSDB: db, Datapath: ovsdb.DatapathNetdev, OVSRunDir: d.RunDir(), HostNetNS: nodeNS, SysfsRoot: o.SysfsRoot})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { backend.Close() })
	dir := tb.TempDir()
	cfg := &agent.Config{
		NodeName: name,
		OVS:      agent.OVSConfig{DBEndpoint: d.DBEndpoint(), RunDir: d.RunDir(), Bridge: "br-int", DatapathType: "netdev"},
		Topology: "bridgedUplink", Uplink: "eth0", TrafficMode: "encap", TunnelType: "geneve",
		CNISocket: filepath.Join(dir, "cni.sock"), CNIConfDir: filepath.Join(dir, "net.d"), StateDir: filepath.Join(dir, "state"),
		FlowExport: o.FlowExport, PolicyAuditLogFile: filepath.Join(dir, "log", "networkpolicy", "np.log"),
	}
	kube := fake.NewClientset(k8sNode("node-1", NodeIP, "10.244.1.0/24"), k8sNode("node-2", Node2IP, "10.244.2.0/24"))
	// The discovery of an apiserver that serves ServiceCIDRs (1.33+),
	// which the agent checks before following them.
	kube.Discovery().(*fakediscovery.FakeDiscovery).Resources = []*metav1.APIResourceList{{
		GroupVersion: "networking.k8s.io/v1", APIResources: []metav1.APIResource{{Name: "servicecidrs"}},
	}}
	a, err := agent.New(agent.Options{Config: cfg, Logger: log, Kube: kube, OVSDB: db, Backend: backend, Metrics: reg})
	if err != nil {
		tb.Fatal(err)
	}
	runCtx, cancelRun := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- a.Run(runCtx) }()
	stop := sync.OnceValue(func() error {
		cancelRun()
		return <-done
	})
	tb.Cleanup(func() {
		if err := stop(); err != nil {
			tb.Errorf("agent: %v", err)
		}
	})
	confPath := filepath.Join(cfg.CNIConfDir, agent.CNIConfFile)
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if _, err := os.Stat(confPath); err == nil {
			break
		}
		if time.Now().After(deadline) {
			ok, why := a.Ready()
			tb.Fatalf("the agent wrote no CNI config (ready %v: %s)", ok, why)
		}
	}
	list, err := libcni.ConfListFromFile(confPath)
	if err != nil {
		tb.Fatal(err)
	}
	return &Node{OVS: d, NetNS: nodeNS, Agent: a, CNI: libcni.NewCNIConfig([]string{binDir}, nil), Config: list, Kube: kube, Metrics: reg,
		AgentConfig: cfg, CNIBinDir: binDir, stop: stop}
}

func k8sNode(name, ip, podCIDR string) *corev1.Node {
	return &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec:       corev1.NodeSpec{PodCIDR: podCIDR, PodCIDRs: []string{podCIDR}},
		Status:     corev1.NodeStatus{Addresses: []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: ip}}},
	}
}

type logWriter struct{ tb testing.TB }

func (w logWriter) Write(p []byte) (int, error) {
	w.tb.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}
