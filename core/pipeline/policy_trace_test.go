package pipeline

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/seine-cni/seine/ovs/openflow"
)

// policyTracer traces the routed-encap-geneve node with policyScenario's
// policies installed.
func policyTracer(t *testing.T) *Tracer {
	t.Helper()
	flows := buildOrFail(t, scenarioByName(t, "routed-encap-geneve"), 1)
	flows = append(flows, policyFlowsOrFail(t, policyScenario(), 1)...)
	tr, err := NewTracer(flows)
	if err != nil {
		t.Fatalf("tracer: %v", err)
	}
	return tr
}

func fromTunnel(p Packet) Packet {
	p.InPort, p.EthSrc, p.EthDst = portTunnel, gatewayMAC, GlobalVirtualMAC
	p.TunSrc, p.TunDst = peerCIP, nodeIP
	return p
}

func TestTracePolicyVerdicts(t *testing.T) {
	tr := policyTracer(t)
	peerC := func(last byte) netip.Addr { return netip.AddrFrom4([4]byte{10, 244, 3, last}) }
	for _, tc := range []struct {
		name    string
		p       Packet
		outPort uint32 // 0: dropped
		dropIn  Table
	}{
		{"web -> db tcp/5432: both rules allow", TCPPacket(portWeb, webMAC, dbMAC, webIP, dbIP, 40000, 5432), portDB, 0},
		{"web -> db tcp/22: web's egress allows nothing there", TCPPacket(portWeb, webMAC, dbMAC, webIP, dbIP, 40001, 22), 0, EgressPolicy},
		{"web -> 8.8.8.8: 0.0.0.0/0 except 10/8", TCPPacket(portWeb, webMAC, gatewayMAC, webIP, externIP, 40002, 443), portGateway, 0},
		{"web -> node-c pod: inside the except", TCPPacket(portWeb, webMAC, gatewayMAC, webIP, peerCPod, 40003, 443), 0, EgressPolicy},
		{"db -> web: neither isolated that way", TCPPacket(portDB, dbMAC, webMAC, dbIP, webIP, 40004, 80), portWeb, 0},
		{"node-b pod -> db tcp/5432", fromTunnel(TCPPacket(0, nil, nil, peerBPod, dbIP, 40005, 5432)), portDB, 0},
		{"node-b pod -> db tcp/5433", fromTunnel(TCPPacket(0, nil, nil, peerBPod, dbIP, 40006, 5433)), 0, IngressPolicy},
		{"node-c .30 -> db udp/55: in the block", fromTunnel(UDPPacket(0, nil, nil, peerC(30), dbIP, 40007, 55)), portDB, 0},
		{"node-c .30 -> db udp/53 and 60: range ends", fromTunnel(UDPPacket(0, nil, nil, peerC(30), dbIP, 40008, 60)), portDB, 0},
		{"node-c .30 -> db udp/61: past the range", fromTunnel(UDPPacket(0, nil, nil, peerC(30), dbIP, 40009, 61)), 0, IngressPolicy},
		{"node-c .200 -> db udp/55: excepted", fromTunnel(UDPPacket(0, nil, nil, peerC(200), dbIP, 40010, 55)), 0, IngressPolicy},
		{"node-c .30 -> db tcp/55: wrong protocol", fromTunnel(TCPPacket(0, nil, nil, peerC(30), dbIP, 40011, 55)), 0, IngressPolicy},
		{"node-b pod -> db sctp/7000 and 7001: the SCTP range", fromTunnel(SCTPPacket(0, nil, nil, peerBPod, dbIP, 40014, 7001)), portDB, 0},
		{"node-b pod -> db sctp/7002: past the range", fromTunnel(SCTPPacket(0, nil, nil, peerBPod, dbIP, 40015, 7002)), 0, IngressPolicy},
		{"node-b pod -> db tcp/7000: an SCTP rule is not TCP", fromTunnel(TCPPacket(0, nil, nil, peerBPod, dbIP, 40016, 7000)), 0, IngressPolicy},
		{"node-b pod -> db udp/7000: nor UDP", fromTunnel(UDPPacket(0, nil, nil, peerBPod, dbIP, 40017, 7000)), 0, IngressPolicy},
		{"node-c .30 -> db sctp/7000: not a peer", fromTunnel(SCTPPacket(0, nil, nil, peerC(30), dbIP, 40018, 7000)), 0, IngressPolicy},
		{"web -> db sctp/7000: web's egress allows only TCP 5432 there", SCTPPacket(portWeb, webMAC, dbMAC, webIP, dbIP, 40019, 7000), 0, EgressPolicy},
		{"host (gateway IP) -> db: the node reaches its pods", TCPPacket(portGateway, gatewayMAC, dbMAC, gatewayIP, dbIP, 40012, 8080), portDB, 0},
		{"host (other source) -> db", TCPPacket(portGateway, gatewayMAC, dbMAC, nodeIP, dbIP, 40013, 8080), 0, IngressPolicy},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res := trace(t, tr, tc.p)
			if tc.outPort != 0 {
				wantOutput(t, res, tc.outPort)
				return
			}
			wantDrop(t, res, tc.dropIn, "drop in table")
		})
	}
}

// Only new connections are checked: the reply of a connection web-0 may
// not open passes web-0's egress policy.
func TestTracePolicyEstablishedReply(t *testing.T) {
	tr := policyTracer(t)
	// web-0 may not open connections to node-b's pods (10/8 is excepted).
	wantDrop(t, trace(t, tr, TCPPacket(portWeb, webMAC, gatewayMAC, webIP, peerBPod, 40000, 80)), EgressPolicy, "drop in table")
	// node-b's pod opens one to web-0 (not isolated for ingress) ...
	in := fromTunnel(TCPPacket(0, nil, nil, peerBPod, webIP, 50000, 80))
	wantOutput(t, trace(t, tr, in), portWeb)
	// ... and web-0's reply goes out through the tunnel.
	reply := TCPPacket(portWeb, webMAC, gatewayMAC, webIP, peerBPod, 80, 50000)
	res := trace(t, tr, reply)
	wantOutput(t, res, portTunnel)
	if !strings.Contains(res.String(), "ct_state=-new+trk") {
		t.Errorf("reply did not take the established bypass:\n%s", res)
	}
	// A denied SYN is never committed: retrying it is still denied.
	wantDrop(t, trace(t, tr, TCPPacket(portWeb, webMAC, gatewayMAC, webIP, peerBPod, 40000, 80)), EgressPolicy, "drop in table")
}

// Policies do not touch ARP.
func TestTracePolicyLeavesARP(t *testing.T) {
	tr := policyTracer(t)
	reply := ARPRequest(portWeb, webMAC, webIP, dbIP)
	reply.ARPOp, reply.EthDst, reply.ARPTHA = 2, dbMAC, dbMAC
	wantOutput(t, trace(t, tr, reply), portDB)
}

// The tracer's conjunction model: incomplete conjunctions fall through to
// lower priorities; complete ones use their conj_id flow.
func TestTracerConjunctions(t *testing.T) {
	a := openflow.NewActions
	m := openflow.NewMatch
	flows := []*openflow.Flow{
		openflow.NewFlow(0, 100).Match(m().IP().InPort(1)).Actions(a().Conjunction(7, 1, 2)),
		openflow.NewFlow(0, 100).Match(m().IP().IPDst(pfx("10.0.0.0/8"))).Actions(a().Conjunction(7, 2, 2)),
		openflow.NewFlow(0, 100).Match(m().IP().ConjID(7)).Actions(a().Output(5)),
		openflow.NewFlow(0, 50).Match(m().IP()).Actions(a().Output(6)),
	}
	tr, err := NewTracer(flows)
	if err != nil {
		t.Fatal(err)
	}
	wantOutput(t, trace(t, tr, TCPPacket(1, webMAC, dbMAC, webIP, dbIP, 1, 2)), 5)
	wantOutput(t, trace(t, tr, TCPPacket(2, webMAC, dbMAC, webIP, dbIP, 1, 2)), 6)     // clause 1 missing
	wantOutput(t, trace(t, tr, TCPPacket(1, webMAC, dbMAC, webIP, externIP, 1, 2)), 6) // clause 2 missing
}

// The kube-proxy mode: a pod's connection to a Service goes to the host
// unjudged; the host sends it back DNATed to an endpoint, and egress
// policy judges it then as the pod's, against the endpoint; its replies go
// back through the host, which un-DNATs them.
func TestTraceKubeProxyModePolicy(t *testing.T) {
	st := scenarioByName(t, "routed-encap-geneve")
	st.Node.ServiceCIDRs = []netip.Prefix{pfx("10.96.0.0/16")}
	flows := append(buildOrFail(t, st, 1), policyFlowsOrFail(t, policyScenario(), 1)...)
	tr, err := NewTracer(flows)
	if err != nil {
		t.Fatal(err)
	}
	vip := netip.MustParseAddr("10.96.0.10")
	// web is egress-isolated: 10/8 is not allowed, but the cluster IP is
	// the host's to translate.
	out := wantOutput(t, trace(t, tr, TCPPacket(portWeb, webMAC, gatewayMAC, webIP, vip, 41000, 5432)), portGateway)
	if out.Packet.IPDst != vip {
		t.Errorf("first pass reached the host as %s", out.Packet)
	}
	// Back from the host, DNATed to db:5432, which web may reach.
	back := TCPPacket(portGateway, gatewayMAC, dbMAC, webIP, dbIP, 41000, 5432)
	wantOutput(t, trace(t, tr, back), portDB)
	// ... or to node-c's pod, which it may not.
	denied := TCPPacket(portGateway, gatewayMAC, GlobalVirtualMAC, webIP, peerCPod, 41001, 5432)
	if res := trace(t, tr, denied); len(res.Outputs) != 0 || res.Steps[len(res.Steps)-1].Table != EgressPolicy {
		t.Errorf("host-DNATed connection to a denied endpoint:\n%s", res)
	}
	// db's reply goes to the host (which un-DNATs it), not to web.
	r := TCPPacket(portDB, dbMAC, gatewayMAC, dbIP, webIP, 5432, 41000)
	r.TCPFlags = 0x012
	if o := wantOutput(t, trace(t, tr, r), portGateway); o.Packet.EthDst.String() != gatewayMAC.String() {
		t.Errorf("reply to the gateway with dl_dst %s", o.Packet.EthDst)
	}
	// The host's own connections are untouched: the gateway IP is the
	// node's.
	wantOutput(t, trace(t, tr, TCPPacket(portGateway, gatewayMAC, dbMAC, gatewayIP, dbIP, 41002, 8080)), portDB)
}
