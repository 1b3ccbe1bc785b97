package policy

import (
	"net"
	"net/netip"
	"testing"

	controlplane "github.com/seine-cni/seine/core/apis/controlplane/v1beta1"
	"github.com/seine-cni/seine/core/pipeline"
	"github.com/seine-cni/seine/core/tiers"
)

// A tiered policy with a per-rule appliedTo (as the controller serves it:
// each rule names its AppliedToGroups, the policy their union) applies
// each rule to its own groups' local pods only, and a rule none of whose
// pods runs here adds nothing. Traced through the node's whole pipeline:
// the Drop of TCP 80 applied to web does not touch db, the Drop of TCP
// 5432 applied to db does not touch web.
func TestResolvePerRuleAppliedTo(t *testing.T) {
	rule := func(port int, groups ...string) controlplane.NetworkPolicyRule {
		r := action(controlplane.RuleActionDrop, controlplane.DirectionIn, controlplane.NetworkPolicyPeer{IPBlocks: []controlplane.IPBlock{block("0.0.0.0/0")}}, 0)
		r.Services, r.AppliedToGroups = []controlplane.Service{tcp(port)}, groups
		return r
	}
	r0, r1, r2 := rule(80, "web"), rule(5432, "db"), rule(22, "far")
	r1.Priority, r2.Priority = 1, 2
	s := State{
		AppliedToGroups: map[string]*controlplane.AppliedToGroup{
			"web": atg("web", member("default", "web-0", "10.244.1.10")),
			"db":  atg("db", member("default", "db-0", "10.244.1.11")),
			"far": atg("far", member("default", "far-0", "10.244.2.5")),
		},
		AddressGroups: map[string]*controlplane.AddressGroup{},
		NetworkPolicies: map[string]*controlplane.NetworkPolicy{
			"sec": tiered("sec", tiers.SecurityOpsPriority, 1, []string{"web", "db", "far"}, r0, r1, r2),
		},
	}
	set, _ := resolveTiered(t, &priorities{}, s)
	targets := map[string][]uint32{}
	for _, r := range set.Rules {
		targets[r.Key] = r.Targets
	}
	if len(set.Rules) != 2 || len(targets["0"]) != 1 || targets["0"][0] != webPod.OFPort ||
		len(targets["1"]) != 1 || targets["1"][0] != dbPod.OFPort {
		t.Fatalf("want rule 0 on web only, rule 1 on db only, rule 2 nowhere:\n%s", renderSet(set))
	}

	// A rule's group missing from the State: that rule is reported (and
	// the policy not realized), the others stay.
	delete(s.AppliedToGroups, "far")
	s.NetworkPolicies["sec"].AppliedToGroups = []string{"web", "db"}
	r := resolve(s, []Pod{webPod, dbPod}, nodeSrc)
	if len(r.problems) != 1 || len(r.set.Rules) != 2 {
		t.Errorf("a missing per-rule group: problems %v, rules:\n%s", r.problems, renderSet(r.set))
	}
	if _, ok := r.gens["sec"]; ok {
		t.Error("a policy with a missing group counts as realized")
	}

	// Traced: the node's pipeline with these rules.
	webMAC, dbMAC := mustMAC(t, "0a:00:00:00:01:0a"), mustMAC(t, "0a:00:00:00:01:0b")
	node := pipeline.State{
		Node: pipeline.NodeConfig{
			Name: "node-a", OS: pipeline.OSLinux, Topology: pipeline.RoutedHost, Mode: pipeline.Encap, Tunnel: pipeline.Geneve,
			NodeIPs:         []netip.Addr{netip.MustParseAddr("192.168.10.11")},
			PodCIDRs:        []netip.Prefix{netip.MustParsePrefix("10.244.1.0/24")},
			ClusterPodCIDRs: []netip.Prefix{netip.MustParsePrefix("10.244.0.0/16")},
			GatewayIP:       nodeSrc[0], GatewayMAC: mustMAC(t, "0a:00:00:00:01:01"),
			Ports: pipeline.Ports{Gateway: 2, Tunnel: 1},
			MTU:   1500,
		},
		Pods: []pipeline.Pod{
			{Namespace: webPod.Namespace, Name: webPod.Name, Port: webPod.OFPort, IPs: webPod.IPs, MAC: webMAC},
			{Namespace: dbPod.Namespace, Name: dbPod.Name, Port: dbPod.OFPort, IPs: dbPod.IPs, MAC: dbMAC},
		},
	}
	flows, err := pipeline.Build(node, 1)
	if err != nil {
		t.Fatal(err)
	}
	pflows, err := pipeline.PolicyFlows(set, 1)
	if err != nil {
		t.Fatal(err)
	}
	tr, err := pipeline.NewTracer(append(flows, pflows...))
	if err != nil {
		t.Fatal(err)
	}
	webIP, dbIP := webPod.IPs[0], dbPod.IPs[0]
	for _, tc := range []struct {
		name string
		p    pipeline.Packet
		out  uint32 // 0: dropped in IngressTier
	}{
		{"db -> web tcp/80: rule 0 applies to web", pipeline.TCPPacket(dbPod.OFPort, dbMAC, webMAC, dbIP, webIP, 40000, 80), 0},
		{"web -> db tcp/80: rule 0 does not apply to db", pipeline.TCPPacket(webPod.OFPort, webMAC, dbMAC, webIP, dbIP, 40001, 80), dbPod.OFPort},
		{"web -> db tcp/5432: rule 1 applies to db", pipeline.TCPPacket(webPod.OFPort, webMAC, dbMAC, webIP, dbIP, 40002, 5432), 0},
		{"db -> web tcp/5432: rule 1 does not apply to web", pipeline.TCPPacket(dbPod.OFPort, dbMAC, webMAC, dbIP, webIP, 40003, 5432), webPod.OFPort},
		{"db -> web tcp/22: rule 2 applies to far only", pipeline.TCPPacket(dbPod.OFPort, dbMAC, webMAC, dbIP, webIP, 40004, 22), webPod.OFPort},
	} {
		res, err := tr.Trace(tc.p)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if tc.out != 0 {
			if o, ok := res.Output(); !ok || o.Port != tc.out {
				t.Errorf("%s: want output to %d:\n%s", tc.name, tc.out, res)
			}
			continue
		}
		if len(res.Outputs) != 0 || len(res.Steps) == 0 || res.Steps[len(res.Steps)-1].Table != pipeline.IngressTier {
			t.Errorf("%s: want a drop in IngressTier:\n%s", tc.name, res)
		}
	}
}

func mustMAC(t *testing.T, s string) net.HardwareAddr {
	t.Helper()
	m, err := net.ParseMAC(s)
	if err != nil {
		t.Fatal(err)
	}
	return m
}
