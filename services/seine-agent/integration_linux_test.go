package main

// An integration test of the agent on a real node: a private OVS
// (test/ovsdaemon) with the netdev datapath in a throwaway "node" netns, the
// linux backend, and the real seine-cni binary driven through libcni as a
// container runtime does. Only the API server is a fake clientset.

import (
	"context"
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	current "github.com/containernetworking/cni/pkg/types/100"

	"github.com/seine-cni/seine/test/agenttest"
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
	n := agenttest.Start(t)
	return &realNode{d: n.OVS, nodeNS: n.NetNS, podNS: ovsdaemon.NewNetNS(t), cni: n.CNI, list: n.Config}
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

func mustRun(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %v: %v\n%s", name, args, err, out)
	}
	return string(out)
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
