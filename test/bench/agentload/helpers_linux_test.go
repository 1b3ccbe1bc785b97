package agentload

import (
	"context"
	"fmt"
	"net/netip"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/containernetworking/cni/libcni"
	current "github.com/containernetworking/cni/pkg/types/100"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/seine-cni/seine/core/agent/policy"
	controlplane "github.com/seine-cni/seine/core/apis/controlplane/v1beta1"
	"github.com/seine-cni/seine/core/pipeline"
	"github.com/seine-cni/seine/test/agenttest"
)

// pod is a pod added through seine-cni on the bench's node.
type pod struct {
	name, netns string
	ip          netip.Addr
	rt          *libcni.RuntimeConf
}

func runtimeConf(id, name, netns string) *libcni.RuntimeConf {
	return &libcni.RuntimeConf{ContainerID: id, NetNS: netns, IfName: "eth0",
		Args: [][2]string{{"K8S_POD_NAMESPACE", "default"}, {"K8S_POD_NAME", name}}}
}

// add runs CNI ADD and returns the pod's address.
func add(ctx context.Context, n *agenttest.Node, rt *libcni.RuntimeConf) (netip.Addr, error) {
	r, err := n.CNI.AddNetworkList(ctx, n.Config, rt)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("ADD %s: %w", rt.ContainerID, err)
	}
	res, err := current.NewResultFromResult(r)
	if err != nil {
		return netip.Addr{}, err
	}
	ip, _ := netip.AddrFromSlice(res.IPs[0].Address.IP.To4())
	return ip, nil
}

// addPod adds a pod that stays until the benchmark ends.
func addPod(b *testing.B, n *agenttest.Node, name, netns string) pod {
	b.Helper()
	rt := runtimeConf("load-"+name, name, netns)
	ip, err := add(context.Background(), n, rt)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = n.CNI.DelNetworkList(context.Background(), n.Config, rt) })
	return pod{name: name, netns: netns, ip: ip, rt: rt}
}

func member(ns, name string, ip netip.Addr) controlplane.GroupMember {
	m := controlplane.GroupMember{Pod: controlplane.PodReference{Namespace: ns, Name: name}, NodeName: "node-1"}
	if ip.IsValid() {
		m.IPs = []controlplane.IPAddress{ip.AsSlice()}
		m.NodeName = "node-2"
	}
	return m
}

// peerIP is the i-th address of 10.100.0.0/15 (peers on other nodes).
func peerIP(i int) netip.Addr {
	return netip.AddrFrom4([4]byte{10, byte(100 + i>>16), byte(i >> 8), byte(i)})
}

// ingressPolicies is n policies applied to the targets (default/<name>),
// each allowing TCP 80 and UDP 53 in from the members of the address group
// "peers".
func ingressPolicies(gen int64, n int, targets []string, peers []controlplane.GroupMember) policy.State {
	s := policy.State{
		AppliedToGroups: map[string]*controlplane.AppliedToGroup{},
		AddressGroups:   map[string]*controlplane.AddressGroup{"peers": {ObjectMeta: metav1.ObjectMeta{Name: "peers"}, Members: peers}},
		NetworkPolicies: map[string]*controlplane.NetworkPolicy{},
	}
	var ms []controlplane.GroupMember
	for _, t := range targets {
		ms = append(ms, member("default", t, netip.Addr{}))
	}
	s.AppliedToGroups["targets"] = &controlplane.AppliedToGroup{ObjectMeta: metav1.ObjectMeta{Name: "targets"}, Members: ms}
	tcp, udp, p80, p53 := controlplane.ProtocolTCP, controlplane.ProtocolUDP, intstr.FromInt32(80), intstr.FromInt32(53)
	for i := range n {
		name := fmt.Sprintf("allow-%d", i)
		s.NetworkPolicies[name] = &controlplane.NetworkPolicy{
			ObjectMeta:      metav1.ObjectMeta{Name: name, UID: types.UID("uid-" + name), Generation: gen},
			AppliedToGroups: []string{"targets"},
			PolicyTypes:     []controlplane.PolicyType{controlplane.PolicyTypeIngress},
			Rules: []controlplane.NetworkPolicyRule{{Direction: controlplane.DirectionIn,
				From:     controlplane.NetworkPolicyPeer{AddressGroups: []string{"peers"}},
				Services: []controlplane.Service{{Protocol: tcp, Port: &p80}, {Protocol: udp, Port: &p53}}}},
		}
	}
	return s
}

// round returns the round the agent's flows carry (the cookie of table 0's
// flows): a full replay moves it.
func round(ctx context.Context, n *agenttest.Node) (pipeline.Round, error) {
	out, err := n.OVS.Ofctl(ctx, "-O", "OpenFlow15", "dump-flows", "br-int", "table=0")
	if err != nil {
		return 0, err
	}
	m := regexp.MustCompile(`cookie=0x([0-9a-f]+)`).FindStringSubmatch(out)
	if m == nil {
		return 0, fmt.Errorf("no flow in table 0:\n%s", out)
	}
	c, err := strconv.ParseUint(m[1], 16, 64)
	return pipeline.Cookie(c).Round(), err
}

// flowCount is the number of flows on the bridge.
func flowCount(ctx context.Context, n *agenttest.Node) (int, error) {
	out, err := n.OVS.Ofctl(ctx, "-O", "OpenFlow15", "dump-aggregate", "br-int")
	if err != nil {
		return 0, err
	}
	m := regexp.MustCompile(`flow_count=(\d+)`).FindStringSubmatch(out)
	if m == nil {
		return 0, fmt.Errorf("dump-aggregate: %s", out)
	}
	return strconv.Atoi(m[1])
}

// coverage reads one of ovs-vswitchd's coverage counters (dpif_flow_flush:
// datapath flow cache flushes, whoever asked).
func coverage(ctx context.Context, n *agenttest.Node, counter string) (int, error) {
	out, err := n.OVS.Appctl(ctx, "ovs-vswitchd", "coverage/read-counter", counter)
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(strings.TrimSpace(out))
}

// inNetNS starts a command in a network namespace.
func inNetNS(ctx context.Context, netns string, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, "nsenter", append([]string{"--net=" + netns, "--"}, args...)...)
}
