package flowexport_test

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/vmware/go-ipfix/pkg/entities"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/seine-cni/seine/core/agent/policy"
	controlplane "github.com/seine-cni/seine/core/apis/controlplane/v1beta1"
	"github.com/seine-cni/seine/test/agenttest"
	"github.com/seine-cni/seine/test/lab/probe"
	"github.com/seine-cni/seine/test/ovsdaemon"
)

// TestAgentExportsPolicyVerdicts runs a real seine-agent (test/agenttest:
// real OVS, userspace datapath, pods through seine-cni) exporting to
// go-ipfix's collector, with a Kubernetes NetworkPolicy letting client
// reach server on TCP 8080 and a Seine ClusterNetworkPolicy dropping TCP
// 22 from client. The allowed connection's record names the Kubernetes
// policy and its rule (read from the connection's ct_label); the denied
// ones, which conntrack never holds, come from the drop flows' packet-ins:
// one record per 5-tuple and poll interval for the tiered Drop (its policy and rule) and one
// for the isolated server's default drop (type Kubernetes, no name), each
// with action Drop and flowEndReason 3.
func TestAgentExportsPolicyVerdicts(t *testing.T) {
	ovsdaemon.SkipUnlessCanRun(t)
	cp, addr := agentCollector(t)
	n := agenttest.StartWith(t, agentExport(addr))
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	type pod struct {
		name, ns string
		ip       netip.Addr
	}
	add := func(name string, ports ...int32) pod {
		ns, ip := addPod(t, ctx, n, "node-1", name, n)
		var cps []corev1.ContainerPort
		for _, p := range ports {
			cps = append(cps, corev1.ContainerPort{ContainerPort: p, Protocol: corev1.ProtocolTCP})
		}
		if len(cps) > 0 {
			stop, err := probe.Serve(ctx, ns, name, cps)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(stop)
		}
		return pod{name: name, ns: ns, ip: ip}
	}
	cli := add("client")
	srv := add("server", 8080, 22, 9090)

	member := func(p pod) controlplane.GroupMember {
		return controlplane.GroupMember{Pod: controlplane.PodReference{Namespace: "default", Name: p.name},
			IPs: []controlplane.IPAddress{p.ip.AsSlice()}, NodeName: "node-1"}
	}
	tcp := func(port int32) controlplane.Service {
		p := intstr.FromInt32(port)
		return controlplane.Service{Protocol: controlplane.ProtocolTCP, Port: &p}
	}
	from := controlplane.NetworkPolicyPeer{AddressGroups: []string{"clients"}}
	drop := controlplane.RuleActionDrop
	tp, prio := int32(100), 1.0
	state := policy.State{
		AppliedToGroups: map[string]*controlplane.AppliedToGroup{"server": {ObjectMeta: metav1.ObjectMeta{Name: "server"}, Members: []controlplane.GroupMember{member(srv)}}},
		AddressGroups:   map[string]*controlplane.AddressGroup{"clients": {ObjectMeta: metav1.ObjectMeta{Name: "clients"}, Members: []controlplane.GroupMember{member(cli)}}},
		NetworkPolicies: map[string]*controlplane.NetworkPolicy{
			"k8s": {
				ObjectMeta:      metav1.ObjectMeta{Name: "k8s", UID: types.UID("uid-k8s"), Generation: 1},
				SourceRef:       &controlplane.NetworkPolicyReference{Type: controlplane.K8sNetworkPolicy, Namespace: "default", Name: "allow-client"},
				AppliedToGroups: []string{"server"},
				PolicyTypes:     []controlplane.PolicyType{controlplane.PolicyTypeIngress},
				Rules:           []controlplane.NetworkPolicyRule{{Direction: controlplane.DirectionIn, From: from, Services: []controlplane.Service{tcp(8080)}}},
			},
			"sec": {
				ObjectMeta:      metav1.ObjectMeta{Name: "sec", UID: types.UID("uid-sec"), Generation: 1},
				SourceRef:       &controlplane.NetworkPolicyReference{Type: controlplane.SeineClusterNetworkPolicy, Name: "deny-ssh"},
				AppliedToGroups: []string{"server"}, TierPriority: &tp, Priority: &prio, Tier: "securityops",
				Rules: []controlplane.NetworkPolicyRule{{Direction: controlplane.DirectionIn, From: from, Services: []controlplane.Service{tcp(22)},
					Action: &drop, Name: "no-ssh"}},
			},
		},
	}
	if err := n.Agent.Policy().Sync(ctx, state); err != nil {
		t.Fatal(err)
	}

	if reply, err := probe.Probe(ctx, cli.ns, "tcp", fmt.Sprintf("%s:8080", srv.ip), 5*time.Second); err != nil || reply != "server" {
		t.Fatalf("client -> server tcp/8080 (allowed): %q, %v", reply, err)
	}
	for _, port := range []int{22, 9090} {
		if reply, err := probe.Probe(ctx, cli.ns, "tcp", fmt.Sprintf("%s:%d", srv.ip, port), 1500*time.Millisecond); !errors.Is(err, probe.ErrTimeout) {
			t.Fatalf("client -> server tcp/%d: want a timeout (denied), got %q, %v", port, reply, err)
		}
	}

	want := map[string]string{
		"8080": "reason=3 src=default/client dst=default/server type=1 in=1:default/allow-client/ingress/0:1 out=0://:0",
		"22":   "reason=3 src=default/client dst=default/server type=1 in=3:/deny-ssh/no-ssh:2 out=0://:0",
		"9090": "reason=3 src=default/client dst=default/server type=1 in=1://:2 out=0://:0",
	}
	got := map[string]string{}
	denied := map[string]uint64{}
	end := time.After(60 * time.Second)
	for len(got) < len(want) {
		select {
		case m := <-cp.GetMsgChan():
			set := m.GetSet()
			if set.GetSetType() != entities.Data {
				continue
			}
			for _, r := range set.GetRecords() {
				f := r.GetElementMap()
				port := fmt.Sprint(f["destinationTransportPort"])
				if _, ok := want[port]; !ok || fmt.Sprint(f["sourceIPv4Address"]) != cli.ip.String() {
					continue
				}
				line := fmt.Sprintf("reason=%v src=%v/%v dst=%v/%v type=%v in=%v:%v/%v/%v:%v out=%v:%v/%v/%v:%v",
					f["flowEndReason"], f["sourcePodNamespace"], f["sourcePodName"], f["destinationPodNamespace"], f["destinationPodName"], f["flowType"],
					f["ingressNetworkPolicyType"], f["ingressNetworkPolicyNamespace"], f["ingressNetworkPolicyName"], f["ingressNetworkPolicyRuleName"], f["ingressNetworkPolicyRuleAction"],
					f["egressNetworkPolicyType"], f["egressNetworkPolicyNamespace"], f["egressNetworkPolicyName"], f["egressNetworkPolicyRuleName"], f["egressNetworkPolicyRuleAction"])
				if _, seen := got[port]; !seen {
					logRecord(t, m.GetObsDomainID(), r)
				}
				got[port] = line
				if port != "8080" {
					denied[port] += f["packetTotalCount"].(uint64)
				}
			}
		case <-end:
			t.Fatalf("records: %v, want ports 8080, 22 and 9090", got)
		}
	}
	for port, w := range want {
		if got[port] != w {
			t.Errorf("tcp/%s:\n got %s\nwant %s", port, got[port], w)
		}
	}
	for port, pkts := range denied {
		if pkts < 1 {
			t.Errorf("tcp/%s: denied record counts %d packets", port, pkts)
		}
	}
	t.Logf("denied SYNs counted: %v", denied)
}

// logRecord logs a decoded record's elements in template order, one per
// line, as go-ipfix's collector decoded them (the README's example).
func logRecord(t *testing.T, domain uint32, r entities.Record) {
	t.Helper()
	var b strings.Builder
	fmt.Fprintf(&b, "record from observation domain %d, template %d:\n", domain, r.GetTemplateID())
	for _, e := range r.GetOrderedElementList() {
		fmt.Fprintf(&b, "  %s: %v\n", e.GetName(), elementValue(e))
	}
	t.Log(b.String())
}

func elementValue(e entities.InfoElementWithValue) any {
	switch e.GetDataType() {
	case entities.Unsigned8:
		return e.GetUnsigned8Value()
	case entities.Unsigned16:
		return e.GetUnsigned16Value()
	case entities.Unsigned32, entities.DateTimeSeconds:
		return e.GetUnsigned32Value()
	case entities.Unsigned64:
		return e.GetUnsigned64Value()
	case entities.Ipv4Address, entities.Ipv6Address:
		return e.GetIPAddressValue()
	case entities.String:
		return fmt.Sprintf("%q", e.GetStringValue())
	}
	return e.GetInfoElement().DataType
}
