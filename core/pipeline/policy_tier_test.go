package pipeline

import (
	"errors"
	"net/netip"
	"slices"
	"strings"
	"testing"
)

// tierScenario is policyScenario's node with tiered policies (the OpenFlow
// priorities stand for what the agent's allocator gives them, higher is
// evaluated first) beside a Kubernetes NetworkPolicy:
//
//   - K8s "db": db-0 isolated for ingress; TCP 5432 allowed from web-0 and
//     node-b's pod.
//   - securityops (60000): ingress to db-0 from node-b's pod: Drop.
//   - application (40000): ingress to db-0 from web-0: Pass.
//   - application (30000): ingress to db-0 from node-c's pods, TCP 22: Allow.
//   - application (50000): egress from web-0 to node-b's pod, TCP 80: Reject;
//     (20000) egress from web-0 to node-b's pod: Allow.
//   - baseline (10000): ingress to web-0 from node-b's pod: Drop; ingress
//     to db-0 from node-c's pods: Allow.
func tierScenario() PolicySet {
	host := func(a netip.Addr) PolicyPeer { return PolicyPeer{CIDR: netip.PrefixFrom(a, 32)} }
	nodeC := PolicyPeer{CIDR: pfx("10.244.3.0/24")}
	return PolicySet{
		IngressIsolated: []uint32{portDB},
		NodeSources:     []netip.Addr{gatewayIP},
		Rules: []PolicyRule{
			{Policy: "db", Key: "0", Direction: PolicyIngress, Targets: []uint32{portDB},
				Peers: []PolicyPeer{host(webIP), host(peerBPod)}, Services: []PolicyService{{Protocol: ProtoTCP, Port: 5432}}},
			{Policy: "secops", Key: "0", Direction: PolicyIngress, Targets: []uint32{portDB}, Peers: []PolicyPeer{host(peerBPod)},
				Tier: TierMain, Action: ActionDrop, Priority: 60000},
			{Policy: "app", Key: "0", Direction: PolicyIngress, Targets: []uint32{portDB}, Peers: []PolicyPeer{host(webIP)},
				Tier: TierMain, Action: ActionPass, Priority: 40000},
			{Policy: "app", Key: "1", Direction: PolicyIngress, Targets: []uint32{portDB}, Peers: []PolicyPeer{nodeC},
				Services: []PolicyService{{Protocol: ProtoTCP, Port: 22}}, Tier: TierMain, Action: ActionAllow, Priority: 30000},
			{Policy: "app", Key: "2", Direction: PolicyEgress, Targets: []uint32{portWeb}, Peers: []PolicyPeer{host(peerBPod)},
				Services: []PolicyService{{Protocol: ProtoTCP, Port: 80}}, Tier: TierMain, Action: ActionReject, Priority: 50000},
			{Policy: "app", Key: "3", Direction: PolicyEgress, Targets: []uint32{portWeb}, Peers: []PolicyPeer{host(peerBPod)},
				Tier: TierMain, Action: ActionAllow, Priority: 20000},
			{Policy: "base", Key: "0", Direction: PolicyIngress, Targets: []uint32{portWeb}, Peers: []PolicyPeer{host(peerBPod)},
				Tier: TierBaseline, Action: ActionDrop, Priority: 10000},
			{Policy: "base", Key: "1", Direction: PolicyIngress, Targets: []uint32{portDB}, Peers: []PolicyPeer{nodeC},
				Tier: TierBaseline, Action: ActionAllow, Priority: 8000},
		},
	}
}

// TestPolicyTierGolden compares the tiered flows with
// testdata/policy-tiered.flows (-update to regenerate).
func TestPolicyTierGolden(t *testing.T) {
	checkGolden(t, "policy-tiered", Text(policyFlowsOrFail(t, tierScenario(), goldenRound)))
}

// The evaluation order of core/tiers/README.md, traced through the node's
// whole pipeline.
func TestTraceTierVerdicts(t *testing.T) {
	flows := buildOrFail(t, scenarioByName(t, "routed-encap-geneve"), 1)
	flows = append(flows, policyFlowsOrFail(t, tierScenario(), 1)...)
	tr, err := NewTracer(flows)
	if err != nil {
		t.Fatal(err)
	}
	peerC := netip.AddrFrom4([4]byte{10, 244, 3, 30})
	for _, tc := range []struct {
		name    string
		p       Packet
		outPort uint32 // 0: dropped
		dropIn  Table
	}{
		{"node-b -> db tcp/5432: a securityops Drop beats the K8s allow",
			fromTunnel(TCPPacket(0, nil, nil, peerBPod, dbIP, 40000, 5432)), 0, IngressTier},
		{"web -> db tcp/5432: Pass, then the K8s allow", TCPPacket(portWeb, webMAC, dbMAC, webIP, dbIP, 40001, 5432), portDB, 0},
		{"web -> db tcp/22: Pass, then the K8s isolation", TCPPacket(portWeb, webMAC, dbMAC, webIP, dbIP, 40002, 22), 0, IngressPolicy},
		{"node-c -> db tcp/22: a tier Allow needs no K8s allow", fromTunnel(TCPPacket(0, nil, nil, peerC, dbIP, 40003, 22)), portDB, 0},
		{"node-c -> db udp/53: db is isolated by K8s, so the baseline Allow is never reached",
			fromTunnel(UDPPacket(0, nil, nil, peerC, dbIP, 40004, 53)), 0, IngressPolicy},
		{"node-b -> web tcp/80: web is isolated by no K8s policy: the baseline Drop applies",
			fromTunnel(TCPPacket(0, nil, nil, peerBPod, webIP, 40005, 80)), 0, IngressBaseline},
		{"node-c -> web tcp/80: nothing decides: allowed", fromTunnel(TCPPacket(0, nil, nil, peerC, webIP, 40006, 80)), portWeb, 0},
		{"web -> node-b tcp/81: the lower Allow", TCPPacket(portWeb, webMAC, gatewayMAC, webIP, peerBPod, 40007, 81), portTunnel, 0},
		{"host -> db tcp/9999: the node reaches its pods", TCPPacket(portGateway, gatewayMAC, dbMAC, gatewayIP, dbIP, 40008, 9999), portDB, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res := trace(t, tr, tc.p)
			if tc.outPort != 0 {
				wantOutput(t, res, tc.outPort)
				return
			}
			wantDrop(t, res, tc.dropIn, "drop in table")
			if len(res.PacketIns) != 0 {
				t.Errorf("a drop sent a packet-in:\n%s", res)
			}
		})
	}
	// The higher Reject beats the lower Allow: the agent is asked to
	// answer, through the reject meter, and the packet goes no further.
	res := trace(t, tr, TCPPacket(portWeb, webMAC, gatewayMAC, webIP, peerBPod, 40009, 80))
	if len(res.Outputs) != 0 || len(res.PacketIns) != 1 || res.PacketIns[0].Table != EgressTier ||
		string(res.PacketIns[0].Userdata) != string([]byte{PacketInPolicyReject}) || res.PacketIns[0].MeterID != PolicyRejectMeter {
		t.Errorf("web -> node-b tcp/80: want one reject packet-in from EgressTier and no output:\n%s", res)
	}
}

// Tiered rules are checked: a priority outside the range, a Kubernetes
// rule with an action, an unknown tier.
func TestPolicyTierBadInput(t *testing.T) {
	base := PolicyRule{Policy: "p", Key: "0", Direction: PolicyIngress, Targets: []uint32{portDB}, Peers: []PolicyPeer{{CIDR: pfx("10.0.0.0/8")}}}
	for name, mod := range map[string]func(*PolicyRule){
		"priority below the range": func(r *PolicyRule) { r.Tier, r.Priority = TierMain, TierPrioMin-1 },
		"priority above the range": func(r *PolicyRule) { r.Tier, r.Priority = TierBaseline, TierPrioMax+1 },
		"k8s rule that drops":      func(r *PolicyRule) { r.Action = ActionDrop },
		"unknown tier":             func(r *PolicyRule) { r.Tier, r.Priority = 9, 2000 },
		"unknown action":           func(r *PolicyRule) { r.Tier, r.Priority, r.Action = TierMain, 2000, 9 },
	} {
		r := base
		mod(&r)
		if _, err := PolicyFlows(PolicySet{Rules: []PolicyRule{r}}, 1); !errors.Is(err, ErrBadPolicy) {
			t.Errorf("%s: %v, want ErrBadPolicy", name, err)
		}
	}
	// Without tiered rules the tier tables get nothing but the pipeline's
	// miss flows: a node without tiered policy keeps its flows.
	for _, f := range policyFlowsOrFail(t, policyScenario(), 1) {
		if tbl := Table(f.TableID()); tbl == EgressTier || tbl == IngressTier || tbl == EgressBaseline || tbl == IngressBaseline {
			t.Errorf("Kubernetes policy put a flow in %s: %s", tbl, f)
		}
	}
	if got := Text(policyFlowsOrFail(t, tierScenario(), 1)); !strings.Contains(got, "table=75, priority=65000,ip,reg0=0x400/0x400 actions=goto_table:90") {
		t.Errorf("the tier table does not pass reject answers:\n%s", got)
	}
}

// A rule with Log sends the connection's first packet to the agent through
// the log meter, with userdata naming its policy, rule, action and
// direction, and then does what it does: the Drop drops, the Allow
// continues to the tunnel, the Reject asks for its answer too. Rules
// without Log send nothing.
func TestTraceTierLogged(t *testing.T) {
	s := tierScenario()
	for i := range s.Rules {
		switch s.Rules[i].Policy + "/" + s.Rules[i].Key {
		case "secops/0", "app/2", "app/3":
			s.Rules[i].Log = true
		}
	}
	flows := buildOrFail(t, scenarioByName(t, "routed-encap-geneve"), 1)
	flows = append(flows, policyFlowsOrFail(t, s, 1)...)
	tr, err := NewTracer(flows)
	if err != nil {
		t.Fatal(err)
	}
	logged := func(res *Trace) []PolicyLogInfo { return policyLogPacketIns(t, res) }
	// The securityops Drop, logged.
	res := trace(t, tr, fromTunnel(TCPPacket(0, nil, nil, peerBPod, dbIP, 41000, 5432)))
	got := logged(res)
	if len(res.Outputs) != 0 || len(got) != 1 ||
		got[0] != (PolicyLogInfo{Action: ActionDrop, Direction: PolicyIngress, Policy: "secops", Key: "0", Log: true}) {
		t.Errorf("node-b -> db tcp/5432: want one log packet-in of secops/0 (Drop, ingress) and a drop, got %+v:\n%s", got, res)
	}
	// The Allow, logged, still forwards.
	res = trace(t, tr, TCPPacket(portWeb, webMAC, gatewayMAC, webIP, peerBPod, 41001, 81))
	wantOutput(t, res, portTunnel)
	if got := logged(res); len(got) != 1 || got[0] != (PolicyLogInfo{Action: ActionAllow, Direction: PolicyEgress, Policy: "app", Key: "3", Log: true}) {
		t.Errorf("web -> node-b tcp/81: want one log packet-in of app/3 (Allow, egress), got %+v:\n%s", got, res)
	}
	// The Reject, logged: two packet-ins, the log and the reject.
	res = trace(t, tr, TCPPacket(portWeb, webMAC, gatewayMAC, webIP, peerBPod, 41002, 80))
	if got := logged(res); len(res.Outputs) != 0 || len(res.PacketIns) != 2 || len(got) != 1 || got[0].Action != ActionReject {
		t.Errorf("web -> node-b tcp/80: want a log and a reject packet-in, got %+v:\n%s", got, res)
	}
	// Not logged: the Pass of app/0.
	res = trace(t, tr, TCPPacket(portWeb, webMAC, dbMAC, webIP, dbIP, 41003, 5432))
	wantOutput(t, res, portDB)
	if len(res.PacketIns) != 0 {
		t.Errorf("web -> db tcp/5432 (Pass, not logged): packet-ins:\n%s", res)
	}
	if _, ok := ParsePolicyLogUserdata([]byte{PacketInPolicyReject}); ok {
		t.Error("a reject's userdata parsed as a log's")
	}
}

// With ExportDenied every denied connection's first packet goes to the
// agent once, through the log meter, naming its rule (a Drop, a Reject,
// an isolated pod's default drop with no rule); an allowed one sends
// none; a logged Drop sends its log packet-in alone (it serves both).
// Without ExportDenied the same packets send nothing new. Linux's and
// Windows' flow sets alike.
func TestTraceDeniedExported(t *testing.T) {
	for _, sc := range []string{"routed-encap-geneve", "windows-encap-geneve"} {
		t.Run(sc, func(t *testing.T) { testTraceDeniedExported(t, sc) })
	}
}

func testTraceDeniedExported(t *testing.T, sc string) {
	denied := func(s PolicySet) func(p Packet) []PolicyLogInfo {
		flows := buildOrFail(t, scenarioByName(t, sc), 1)
		flows = append(flows, policyFlowsOrFail(t, s, 1)...)
		tr, err := NewTracer(flows)
		if err != nil {
			t.Fatal(err)
		}
		return func(p Packet) []PolicyLogInfo {
			res := trace(t, tr, p)
			out := policyLogPacketIns(t, res)
			if len(out) > 0 && len(res.Outputs) != 0 {
				t.Errorf("%s: a denied packet was output:\n%s", p, res)
			}
			return out
		}
	}
	tier := tierScenario()
	for i := range tier.Rules {
		if tier.Rules[i].Policy == "base" && tier.Rules[i].Key == "0" {
			tier.Rules[i].Log = true
		}
	}
	k8s := policyScenario()
	tier.ExportDenied, k8s.ExportDenied = true, true
	cases := []struct {
		name string
		set  PolicySet
		p    Packet
		want []PolicyLogInfo
	}{
		{"tier Drop", tier, fromTunnel(TCPPacket(0, nil, nil, peerBPod, dbIP, 43000, 5432)),
			[]PolicyLogInfo{{Action: ActionDrop, Direction: PolicyIngress, Policy: "secops", Key: "0"}}},
		{"tier Reject", tier, TCPPacket(portWeb, webMAC, gatewayMAC, webIP, peerBPod, 43001, 80),
			[]PolicyLogInfo{{Action: ActionReject, Direction: PolicyEgress, Policy: "app", Key: "2"}}},
		{"logged baseline Drop", tier, fromTunnel(TCPPacket(0, nil, nil, peerBPod, webIP, 43002, 8080)),
			[]PolicyLogInfo{{Action: ActionDrop, Direction: PolicyIngress, Policy: "base", Key: "0", Log: true}}},
		{"tier Allow", tier, TCPPacket(portWeb, webMAC, gatewayMAC, webIP, peerBPod, 43003, 81), nil},
		{"isolated ingress", k8s, fromTunnel(TCPPacket(0, nil, nil, peerBPod, dbIP, 43004, 22)),
			[]PolicyLogInfo{{Action: ActionDrop, Direction: PolicyIngress}}},
		{"isolated egress", k8s, TCPPacket(portWeb, webMAC, dbMAC, webIP, dbIP, 43005, 22),
			[]PolicyLogInfo{{Action: ActionDrop, Direction: PolicyEgress}}},
		{"allowed", k8s, TCPPacket(portWeb, webMAC, dbMAC, webIP, dbIP, 43006, 5432), nil},
	}
	for _, c := range cases {
		if got := denied(c.set)(c.p); !slices.Equal(got, c.want) {
			t.Errorf("%s: packet-ins %+v, want %+v", c.name, got, c.want)
		}
		off := c.set
		off.ExportDenied = false
		var want []PolicyLogInfo
		for _, w := range c.want {
			if w.Log {
				want = append(want, w)
			}
		}
		if got := denied(off)(c.p); !slices.Equal(got, want) {
			t.Errorf("%s without ExportDenied: packet-ins %+v, want %+v", c.name, got, want)
		}
	}
}

// policyLogPacketIns are the logged and denied rules' packet-ins of a
// trace; each must go through PolicyLogMeter.
func policyLogPacketIns(t *testing.T, res *Trace) []PolicyLogInfo {
	t.Helper()
	var out []PolicyLogInfo
	for _, pi := range res.PacketIns {
		if info, ok := ParsePolicyLogUserdata(pi.Userdata); ok {
			if pi.MeterID != PolicyLogMeter {
				t.Errorf("a log or denied packet-in through meter %d, want %d", pi.MeterID, PolicyLogMeter)
			}
			out = append(out, info)
		}
	}
	return out
}
