package sriov_test

// A pod on an SR-IOV VF with real packets. This machine has no SR-IOV NIC,
// so the VF is emulated: a veth pair in node-1's namespace whose one end
// ("ens1f0v0") is the VF's netdev and the other ("ens1f0_0") its
// representor, with a sysfs tree (test/sriovfs) describing a switchdev PF
// whose VF 0 they are. From the CNI request on, everything is the
// production path: seine-cni through libcni with runtimeConfig.deviceID,
// the agent, the Linux backend's discovery (sriovnet over the tree) and
// AttachVF, the representor as the pod's OVS port, the pipeline's flows.
// Two nodes (test/agenttest.StartPair) each run a private netdev OVS and
// an agent, joined by their uplinks and a Geneve tunnel.

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	current "github.com/containernetworking/cni/pkg/types/100"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/seine-cni/seine/core/agent/policy"
	controlplane "github.com/seine-cni/seine/core/apis/controlplane/v1beta1"
	"github.com/seine-cni/seine/core/sriov"
	"github.com/seine-cni/seine/test/agenttest"
	"github.com/seine-cni/seine/test/lab/probe"
	"github.com/seine-cni/seine/test/ovsdaemon"
	"github.com/seine-cni/seine/test/sriovfs"
)

type pod struct {
	name, node, netns string
	ip                netip.Addr
	rt                *libcni.RuntimeConf
}

// addPod runs CNI ADD on n (with the VF at deviceID when not "") and
// serves probe answers on TCP and UDP 8080 in the pod.
func addPod(t *testing.T, n *agenttest.Node, node, name, deviceID string) pod {
	t.Helper()
	ctx := context.Background()
	netns := ovsdaemon.NewNetNS(t)
	rt := &libcni.RuntimeConf{
		ContainerID: "sriov-test-" + name, NetNS: netns, IfName: "eth0",
		Args: [][2]string{{"K8S_POD_NAMESPACE", "default"}, {"K8S_POD_NAME", name}},
	}
	if deviceID != "" {
		rt.CapabilityArgs = map[string]any{"deviceID": deviceID}
	}
	r, err := n.CNI.AddNetworkList(ctx, n.Config, rt)
	if err != nil {
		t.Fatalf("ADD %s: %v", name, err)
	}
	res, err := current.NewResultFromResult(r)
	if err != nil {
		t.Fatal(err)
	}
	ip, _ := netip.AddrFromSlice(res.IPs[0].Address.IP.To4())
	stop, err := probe.Serve(ctx, netns, name, []corev1.ContainerPort{
		{ContainerPort: 8080, Protocol: corev1.ProtocolTCP}, {ContainerPort: 8080, Protocol: corev1.ProtocolUDP}})
	if err != nil {
		t.Fatalf("serve in %s: %v", name, err)
	}
	t.Cleanup(stop)
	return pod{name: name, node: node, netns: netns, ip: ip, rt: rt}
}

func reach(src, dst pod, proto string, timeout time.Duration) (string, error) {
	return probe.Probe(context.Background(), src.netns, proto, fmt.Sprintf("%s:8080", dst.ip), timeout)
}

func wantReach(t *testing.T, src, dst pod, proto string) {
	t.Helper()
	if got, err := reach(src, dst, proto, 5*time.Second); err != nil || got != dst.name {
		t.Errorf("%s (%s) -> %s (%s) %s: got %q, %v; want %q", src.name, src.node, dst.name, dst.node, proto, got, err, dst.name)
	}
}

func wantDropped(t *testing.T, src, dst pod, proto string) {
	t.Helper()
	if got, err := reach(src, dst, proto, 1500*time.Millisecond); !errors.Is(err, probe.ErrTimeout) {
		t.Errorf("%s (%s) -> %s (%s) %s: got %q, %v; want a timeout (dropped by the policy)", src.name, src.node, dst.name, dst.node, proto, got, err)
	}
}

func inNS(t *testing.T, netns string, args ...string) string {
	t.Helper()
	out, err := exec.Command("nsenter", append([]string{"--net=" + netns, "--"}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("%v: %v\n%s", args, err, out)
	}
	return string(out)
}

func TestVFPodRealPackets(t *testing.T) {
	root := t.TempDir()
	n1, n2 := agenttest.StartPair(t, agenttest.Options{SysfsRoot: root})
	// The emulated NIC: VF 0 of switchdev PF ens1f0 is the veth pair
	// ens1f0v0 (the VF) / ens1f0_0 (its representor) on node-1.
	inNS(t, n1.NetNS, "ip", "link", "add", "ens1f0v0", "address", "02:f0:00:00:00:00", "type", "veth", "peer", "name", "ens1f0_0")
	sriovfs.Write(t, root, sriovfs.PF{PCI: "0000:5e:00.0", Name: "ens1f0", SwitchID: "b8cef603003c1e5a", NumVFs: 1, TotalVFs: 8,
		VFs: []sriovfs.VF{{PCI: "0000:5e:00.2", Netdev: "ens1f0v0", Rep: "ens1f0_0"}}})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	vf := addPod(t, n1, "node-1", "vf-0", "0000:5e:00.2")
	local := addPod(t, n1, "node-1", "local-0", "")
	remote := addPod(t, n2, "node-2", "remote-0", "")

	// The VF is the pod's eth0, with Seine's MAC; the representor is its
	// OVS port, with the VF's record.
	link := inNS(t, vf.netns, "ip", "-o", "link", "show", "eth0")
	if mac := sriov.PodMAC(vf.rt.ContainerID, "eth0").String(); !strings.Contains(link, "link/ether "+mac) || !strings.Contains(link, "mtu 1450") {
		t.Errorf("VF pod eth0: %s; want MAC %s, MTU 1450", link, mac)
	}
	if got := inNS(t, n1.NetNS, "ip", "-o", "link", "show"); strings.Contains(got, "ens1f0v0") {
		t.Errorf("the VF is still on the node:\n%s", got)
	}
	ids, err := n1.OVS.Vsctl(ctx, "get", "Port", "ens1f0_0", "external_ids")
	if err != nil || !strings.Contains(ids, "k8s-pod-name=vf-0") || !strings.Contains(ids, `sriov-vf=`) {
		t.Errorf("representor port external_ids: %s, %v", ids, err)
	}

	t.Run("busy and missing VFs", func(t *testing.T) {
		portsBefore, _ := n1.OVS.Vsctl(ctx, "list-ports", "br-int")
		for _, tc := range []struct{ pci, want string }{
			{"0000:5e:00.2", "not in the node's network namespace (in use by another pod?)"},
			{"0000:5e:00.6", "no PCI device 0000:5e:00.6 on this node"},
		} {
			netns := ovsdaemon.NewNetNS(t)
			rt := &libcni.RuntimeConf{ContainerID: "sriov-test-busy", NetNS: netns, IfName: "eth0",
				Args:           [][2]string{{"K8S_POD_NAMESPACE", "default"}, {"K8S_POD_NAME", "busy-0"}},
				CapabilityArgs: map[string]any{"deviceID": tc.pci}}
			_, err := n1.CNI.AddNetworkList(ctx, n1.Config, rt)
			if err == nil || !strings.Contains(err.Error(), "SR-IOV VF unavailable") || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("ADD on VF %s: %v; want an error saying %q", tc.pci, err, tc.want)
			}
			if got := inNS(t, netns, "ip", "-o", "link", "show"); strings.Count(got, "\n") != 1 {
				t.Errorf("the refused pod's namespace has links:\n%s", got)
			}
			if ports, _ := n1.OVS.Vsctl(ctx, "list-ports", "br-int"); ports != portsBefore {
				t.Errorf("br-int ports after the refused ADD:\n%s\nwant\n%s", ports, portsBefore)
			}
			if err := n1.CNI.DelNetworkList(ctx, n1.Config, rt); err != nil {
				t.Errorf("DEL after the refused ADD: %v", err)
			}
		}
	})

	t.Run("reachability", func(t *testing.T) {
		for _, proto := range []string{"tcp", "udp"} {
			wantReach(t, vf, local, proto)
			wantReach(t, local, vf, proto)
			wantReach(t, vf, remote, proto)
			wantReach(t, remote, vf, proto)
		}
	})

	t.Run("network policy", func(t *testing.T) {
		// The VF pod accepts TCP 8080 from local-0 only.
		state := policy.State{
			AppliedToGroups: map[string]*controlplane.AppliedToGroup{"vf": {ObjectMeta: metav1.ObjectMeta{Name: "vf"},
				Members: []controlplane.GroupMember{member(vf)}}},
			AddressGroups: map[string]*controlplane.AddressGroup{"local": {ObjectMeta: metav1.ObjectMeta{Name: "local"},
				Members: []controlplane.GroupMember{member(local)}}},
			NetworkPolicies: map[string]*controlplane.NetworkPolicy{"vf": {
				ObjectMeta:      metav1.ObjectMeta{Name: "vf", UID: types.UID("uid-vf"), Generation: 1},
				AppliedToGroups: []string{"vf"},
				PolicyTypes:     []controlplane.PolicyType{controlplane.PolicyTypeIngress},
				Rules: []controlplane.NetworkPolicyRule{{Direction: controlplane.DirectionIn,
					From:     controlplane.NetworkPolicyPeer{AddressGroups: []string{"local"}},
					Services: []controlplane.Service{{Protocol: controlplane.ProtocolTCP, Port: ptr(intstr.FromInt32(8080))}}}},
			}},
		}
		pc := n1.Agent.Policy()
		if err := pc.Sync(ctx, state); err != nil {
			t.Fatal(err)
		}
		wantReach(t, local, vf, "tcp")
		wantDropped(t, local, vf, "udp")
		wantDropped(t, remote, vf, "tcp")
		wantReach(t, vf, remote, "tcp") // egress is not isolated; replies pass
		if err := pc.Sync(ctx, policy.State{}); err != nil {
			t.Fatal(err)
		}
		wantReach(t, remote, vf, "tcp")
	})

	// DEL gives the VF back to node-1 as it was.
	if err := n1.CNI.DelNetworkList(ctx, n1.Config, vf.rt); err != nil {
		t.Fatalf("DEL: %v", err)
	}
	if got := inNS(t, n1.NetNS, "ip", "-o", "link", "show", "ens1f0v0"); !strings.Contains(got, "link/ether 02:f0:00:00:00:00") || !strings.Contains(got, "mtu 1500") {
		t.Errorf("VF after DEL: %s", got)
	}
	if ports, _ := n1.OVS.Vsctl(ctx, "list-ports", "br-int"); strings.Contains(ports, "ens1f0_0") {
		t.Errorf("representor still on br-int: %s", ports)
	}
	for _, p := range []pod{local} {
		if err := n1.CNI.DelNetworkList(ctx, n1.Config, p.rt); err != nil {
			t.Errorf("DEL %s: %v", p.name, err)
		}
	}
	if err := n2.CNI.DelNetworkList(ctx, n2.Config, remote.rt); err != nil {
		t.Errorf("DEL %s: %v", remote.name, err)
	}
}

func member(p pod) controlplane.GroupMember {
	return controlplane.GroupMember{Pod: controlplane.PodReference{Namespace: "default", Name: p.name},
		IPs: []controlplane.IPAddress{p.ip.AsSlice()}, NodeName: p.node}
}

func ptr[T any](v T) *T { return &v }
