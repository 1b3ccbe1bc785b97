package cnibench

import (
	"context"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/seine-cni/seine/core/agent"
	"github.com/seine-cni/seine/linux"
	"github.com/seine-cni/seine/ovs/ovsdb"
	"github.com/seine-cni/seine/platform"
	"github.com/seine-cni/seine/test/ovsdaemon"
)

// node is a throwaway node netns with a private OVS (netdev datapath), an
// uplink, and seine-agent (linux backend) run in-process serving CNI; libcni
// drives the real seine-cni binary. Only the API server is a fake clientset.
// This is the setup of services/seine-agent/integration_linux_test.go.
type node struct {
	d      *ovsdaemon.Daemon
	nodeNS string
	cni    *libcni.CNIConfig
	list   *libcni.NetworkConfigList
}

func startNode(b *testing.B) *node {
	b.Helper()
	ovsdaemon.SkipUnlessCanRun(b)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	b.Cleanup(cancel)
	binDir := b.TempDir()
	if out, err := exec.Command("go", "build", "-o", filepath.Join(binDir, "seine"), "github.com/seine-cni/seine/services/seine-cni").CombinedOutput(); err != nil {
		b.Fatalf("build seine-cni: %v\n%s", err, out)
	}
	d := ovsdaemon.StartForTest(b)
	nodeNS := d.NetNS()
	peerNS := ovsdaemon.NewNetNS(b)
	inNode := func(args ...string) {
		b.Helper()
		if out, err := exec.Command("nsenter", append([]string{"--net=" + nodeNS, "--"}, args...)...).CombinedOutput(); err != nil {
			b.Fatalf("%v: %v\n%s", args, err, out)
		}
	}
	inNode("ip", "link", "add", "eth0", "type", "veth", "peer", "name", "up-peer")
	inNode("ip", "link", "set", "up-peer", "netns", peerNS)
	inNode("ip", "addr", "add", "192.168.77.11/24", "dev", "eth0")
	inNode("ip", "link", "set", "eth0", "up")

	db, err := ovsdb.Connect(ctx, ovsdb.Config{Endpoint: d.DBEndpoint()})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(db.Close)
	log := slog.New(slog.NewTextHandler(logWriter{b}, &slog.HandlerOptions{Level: slog.LevelWarn}))
	backend, err := linux.New(platform.Config{Logger: log, OVSDB: db, Datapath: ovsdb.DatapathNetdev, OVSRunDir: d.RunDir(), HostNetNS: nodeNS})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { backend.Close() })
	dir := b.TempDir()
	cfg := &agent.Config{
		NodeName: "node-1",
		OVS:      agent.OVSConfig{DBEndpoint: d.DBEndpoint(), RunDir: d.RunDir(), Bridge: "br-int", DatapathType: "netdev"},
		Topology: "bridgedUplink", Uplink: "eth0", TrafficMode: "encap", TunnelType: "geneve",
		CNISocket: filepath.Join(dir, "cni.sock"), CNIConfDir: filepath.Join(dir, "net.d"), StateDir: filepath.Join(dir, "state"),
	}
	kube := fake.NewClientset(k8sNode("node-1", "192.168.77.11", "10.244.1.0/24"), k8sNode("node-2", "192.168.77.12", "10.244.2.0/24"))
	a, err := agent.New(agent.Options{Config: cfg, Logger: log, Kube: kube, OVSDB: db, Backend: backend})
	if err != nil {
		b.Fatal(err)
	}
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- a.Run(runCtx) }()
	b.Cleanup(func() {
		stop()
		if err := <-done; err != nil {
			b.Errorf("agent: %v", err)
		}
	})
	confPath := filepath.Join(cfg.CNIConfDir, agent.CNIConfFile)
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if _, err := os.Stat(confPath); err == nil {
			break
		}
		if time.Now().After(deadline) {
			ok, why := a.Ready()
			b.Fatalf("the agent wrote no CNI config (ready %v: %s)", ok, why)
		}
	}
	list, err := libcni.ConfListFromFile(confPath)
	if err != nil {
		b.Fatal(err)
	}
	return &node{d: d, nodeNS: nodeNS, cni: libcni.NewCNIConfig([]string{binDir}, nil), list: list}
}

func k8sNode(name, ip, podCIDR string) *corev1.Node {
	return &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec:       corev1.NodeSpec{PodCIDR: podCIDR, PodCIDRs: []string{podCIDR}},
		Status:     corev1.NodeStatus{Addresses: []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: ip}}},
	}
}

type logWriter struct{ t testing.TB }

func (w logWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}
