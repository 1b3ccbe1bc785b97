package pipeline

import (
	"bytes"
	"net/netip"
	"strings"
	"testing"

	"github.com/seine-cni/seine/core/proxy"
	"github.com/seine-cni/seine/ovs/openflow"
)

// serviceTracer traces the service golden node; pick chooses the bucket
// (by index) of every select group, as dp_hash would for some 5-tuple.
func serviceTracer(t *testing.T, pick int) *Tracer {
	t.Helper()
	flows, groups := serviceFlowsOf(t)
	tr, err := NewTracer(flows)
	if err != nil {
		t.Fatalf("tracer: %v", err)
	}
	tr.AddGroups(groups...)
	tr.Select = func(*openflow.GroupEntry, Packet) int { return pick }
	return tr
}

func wantTuple(t *testing.T, p Packet, src netip.Addr, sport uint16, dst netip.Addr, dport uint16) {
	t.Helper()
	if p.IPSrc != src || p.SrcPort != sport || p.IPDst != dst || p.DstPort != dport {
		t.Errorf("packet %s:%d -> %s:%d, want %s:%d -> %s:%d", p.IPSrc, p.SrcPort, p.IPDst, p.DstPort, src, sport, dst, dport)
	}
}

// reply is p's answer from its destination.
func reply(p Packet, inPort uint32) Packet {
	r := p
	r.InPort = inPort
	r.EthSrc, r.EthDst = p.EthDst, p.EthSrc
	r.IPSrc, r.IPDst, r.SrcPort, r.DstPort = p.IPDst, p.IPSrc, p.DstPort, p.SrcPort
	r.TTL = 64
	if r.IPProto == ProtoTCP {
		r.TCPFlags = 0x012
	}
	return r
}

// A pod reaches a ClusterIP; the connection is DNATed to a local endpoint
// (delivered with rewritten MACs) or a remote one (tunnelled); replies
// come back from the cluster IP.
func TestTraceClusterIP(t *testing.T) {
	// db-0 -> web:80, bucket 0: web-0 on this node.
	tr := serviceTracer(t, 0)
	syn := TCPPacket(portDB, dbMAC, gatewayMAC, dbIP, webVIP, 40000, 80)
	out := wantOutput(t, trace(t, tr, syn), portWeb)
	wantTuple(t, out.Packet, dbIP, 40000, webIP, 8080)
	wantMACs(t, out.Packet, gatewayMAC, webMAC)
	back := wantOutput(t, trace(t, tr, reply(out.Packet, portWeb)), portDB)
	wantTuple(t, back.Packet, webVIP, 80, dbIP, 40000)
	// The next packet of the connection takes the same endpoint without a
	// group.
	ack := syn
	ack.TCPFlags = 0x010
	tr.Select = func(*openflow.GroupEntry, Packet) int {
		t.Fatal("group consulted for an established connection")
		return 0
	}
	wantTuple(t, wantOutput(t, trace(t, tr, ack), portWeb).Packet, dbIP, 40000, webIP, 8080)

	// bucket 1: the endpoint on node-b, through the tunnel.
	tr = serviceTracer(t, 1)
	out = wantOutput(t, trace(t, tr, syn), portTunnel)
	wantTuple(t, out.Packet, dbIP, 40000, peerBPod, 8080)
	if out.Packet.TunDst != peerBIP {
		t.Errorf("tun_dst %s, want %s", out.Packet.TunDst, peerBIP)
	}
	r := reply(out.Packet, portTunnel)
	r.TunSrc, r.TunDst = peerBIP, nodeIP
	back = wantOutput(t, trace(t, tr, r), portDB)
	wantTuple(t, back.Packet, webVIP, 80, dbIP, 40000)
	wantMACs(t, back.Packet, gatewayMAC, dbMAC)
}

// A pod reaching itself through its Service: SNAT to the gateway IP (a pod
// drops packets from its own address), output back into its port, and
// the reply un-SNATed and un-DNATed.
func TestTraceHairpin(t *testing.T) {
	tr := serviceTracer(t, 0)
	syn := TCPPacket(portWeb, webMAC, gatewayMAC, webIP, webVIP, 40000, 80)
	out := wantOutput(t, trace(t, tr, syn), portWeb)
	if out.Packet.IPSrc != gatewayIP || out.Packet.IPDst != webIP || out.Packet.DstPort != 8080 {
		t.Fatalf("hairpin packet %s, want from %s to %s:8080", out.Packet, gatewayIP, webIP)
	}
	back := wantOutput(t, trace(t, tr, reply(out.Packet, portWeb)), portWeb)
	wantTuple(t, back.Packet, webVIP, 80, webIP, 40000)
	// Later packets from the client are SNATed like the first.
	ack := syn
	ack.TCPFlags = 0x010
	again := wantOutput(t, trace(t, tr, ack), portWeb)
	if again.Packet.IPSrc != gatewayIP || again.Packet.SrcPort != out.Packet.SrcPort {
		t.Errorf("second packet %s, want the first's source %s:%d", again.Packet, gatewayIP, out.Packet.SrcPort)
	}
}

// A client on the uplink reaches a node port whose endpoint is local: the
// host never sees it, the endpoint sees the client's address, and the
// reply goes back out of the uplink to the client's MAC.
func TestTraceNodePortLocalEndpoint(t *testing.T) {
	tr := serviceTracer(t, 0)
	syn := TCPPacket(portUplink, clientMAC, nodeMAC, clientIP, nodeIP, 50000, 30081)
	out := wantOutput(t, trace(t, tr, syn), portWeb)
	wantTuple(t, out.Packet, clientIP, 50000, webIP, 8080)
	back := wantOutput(t, trace(t, tr, reply(out.Packet, portWeb)), portUplink)
	wantTuple(t, back.Packet, nodeIP, 30081, clientIP, 50000)
	wantMACs(t, back.Packet, nodeMAC, clientMAC)
	wantTTL(t, back.Packet, 63)
}

// A client on the uplink reaches a node port whose endpoint is on another
// node: SNAT to the gateway IP so the reply comes back here, then back out
// of the uplink from the node port.
func TestTraceNodePortRemoteEndpoint(t *testing.T) {
	tr := serviceTracer(t, 1)
	syn := TCPPacket(portUplink, clientMAC, nodeMAC, clientIP, nodeIP, 50000, 30081)
	out := wantOutput(t, trace(t, tr, syn), portTunnel)
	if out.Packet.IPSrc != gatewayIP || out.Packet.IPDst != peerBPod || out.Packet.DstPort != 8080 {
		t.Fatalf("tunnelled %s, want %s -> %s:8080", out.Packet, gatewayIP, peerBPod)
	}
	r := reply(out.Packet, portTunnel)
	r.TunSrc, r.TunDst = peerBIP, nodeIP
	back := wantOutput(t, trace(t, tr, r), portUplink)
	wantTuple(t, back.Packet, nodeIP, 30081, clientIP, 50000)
	wantMACs(t, back.Packet, nodeMAC, clientMAC)
}

// externalTrafficPolicy Local: clients outside the node get only the local
// endpoint (bucket 1 does not exist in the local group) with their address
// kept; clients on the node use every endpoint.
func TestTraceExternalTrafficPolicyLocal(t *testing.T) {
	tr := serviceTracer(t, 0)
	syn := TCPPacket(portUplink, clientMAC, nodeMAC, clientIP, nodeIP, 50000, 30080)
	out := wantOutput(t, trace(t, tr, syn), portDB)
	wantTuple(t, out.Packet, clientIP, 50000, dbIP, 5432)
	// From a pod on this node to the external IP: the cluster group, whose
	// bucket 1 is node-c's endpoint.
	tr = serviceTracer(t, 1)
	out = wantOutput(t, trace(t, tr, TCPPacket(portWeb, webMAC, gatewayMAC, webIP, extSvcIP, 40000, 80)), portTunnel)
	wantTuple(t, out.Packet, webIP, 40000, peerCPod, 5432)
	// From the host to its own node port (DNATed by the host to the
	// virtual node-port IP): the cluster group as well, and the endpoint
	// on node-c sees this node's address (TestTraceHostToTunnelledEndpoint).
	p := TCPPacket(portGateway, gatewayMAC, ServiceNextHopMAC, gatewayIP, NodePortVirtualIP, 40001, 30080)
	out = wantOutput(t, trace(t, tr, p), portTunnel)
	if out.Packet.IPSrc != nodeIP || out.Packet.IPDst != peerCPod || out.Packet.DstPort != 5432 {
		t.Errorf("tunnelled %s, want %s -> %s:5432", out.Packet, nodeIP, peerCPod)
	}
}

// The host's own connection to a Service whose endpoint is a pod on a
// tunnelled peer (its own node port of an externalTrafficPolicy Local
// Service, kube-proxy's short-circuit, or a cluster IP) reaches the
// endpoint from the node's address, as kube-proxy's masquerade of the
// node's own traffic does, not from the gateway address the host chose.
// The endpoint's node sends the reply back through the tunnel
// (TestTraceTunnelledNodeConnectionReply); here it is un-SNATed and
// un-DNATed and goes back to the gateway.
func TestTraceHostToTunnelledEndpoint(t *testing.T) {
	for _, c := range []struct {
		name  string
		vip   netip.Addr
		port  uint16
		pick  int
		pod   netip.Addr
		peer  netip.Addr
		dport uint16
	}{
		{"own node port, etp Local", NodePortVirtualIP, 30080, 1, peerCPod, peerCIP, 5432},
		{"cluster IP", webVIP, 80, 1, peerBPod, peerBIP, 8080},
	} {
		t.Run(c.name, func(t *testing.T) {
			tr := serviceTracer(t, c.pick)
			syn := TCPPacket(portGateway, gatewayMAC, ServiceNextHopMAC, gatewayIP, c.vip, 40001, c.port)
			out := wantOutput(t, trace(t, tr, syn), portTunnel)
			if out.Packet.IPSrc != nodeIP || out.Packet.IPDst != c.pod || out.Packet.DstPort != c.dport || out.Packet.TunDst != c.peer {
				t.Fatalf("tunnelled %s (tun_dst %s), want %s -> %s:%d to %s", out.Packet, out.Packet.TunDst, nodeIP, c.pod, c.dport, c.peer)
			}
			r := reply(out.Packet, portTunnel)
			r.EthSrc, r.EthDst = gatewayMAC, GlobalVirtualMAC
			r.TunSrc, r.TunDst = c.peer, nodeIP
			back := wantOutput(t, trace(t, tr, r), portGateway)
			wantTuple(t, back.Packet, c.vip, c.port, gatewayIP, 40001)
			// Later packets from the host are SNATed like the first.
			ack := syn
			ack.TCPFlags = 0x010
			again := wantOutput(t, trace(t, tr, ack), portTunnel)
			if again.Packet.IPSrc != nodeIP || again.Packet.SrcPort != out.Packet.SrcPort {
				t.Errorf("second packet %s, want the first's source %s:%d", again.Packet, nodeIP, out.Packet.SrcPort)
			}
		})
	}
}

// A peer's node reaching a local pod through the tunnel from its node
// address (its own connection to a Service, SNATed there as above): the
// pod's reply goes back through the tunnel to that peer, where the
// connection's NAT is, not to the gateway, from where the host would send
// it straight to the peer's address past the peer's conntrack.
func TestTraceTunnelledNodeConnectionReply(t *testing.T) {
	tr := serviceTracer(t, 0)
	in := TCPPacket(portTunnel, gatewayMAC, GlobalVirtualMAC, peerBIP, webIP, 50000, 8080)
	in.TunSrc, in.TunDst = peerBIP, nodeIP
	out := wantOutput(t, trace(t, tr, in), portWeb)
	wantTuple(t, out.Packet, peerBIP, 50000, webIP, 8080)
	back := wantOutput(t, trace(t, tr, reply(out.Packet, portWeb)), portTunnel)
	if back.Packet.TunDst != peerBIP {
		t.Errorf("reply tun_dst %s, want %s", back.Packet.TunDst, peerBIP)
	}
	wantTuple(t, back.Packet, webIP, 8080, peerBIP, 50000)
	// A connection of the pod to that address is not taken into the
	// tunnel: it is not a reply.
	res := trace(t, tr, TCPPacket(portWeb, webMAC, gatewayMAC, webIP, peerBIP, 41000, 22))
	for _, o := range res.Outputs {
		if o.Port == portTunnel {
			t.Errorf("pod's own connection to a peer's node address tunnelled:\n%s", res)
		}
	}
}

// loadBalancerSourceRanges: a client outside the ranges is dropped, one
// inside reaches the local endpoint.
func TestTraceSourceRanges(t *testing.T) {
	tr := serviceTracer(t, 0)
	wantDrop(t, trace(t, tr, TCPPacket(portUplink, clientMAC, nodeMAC, strangerIP, lbIP, 50000, 80)), ServiceLB, "drop in table 40")
	out := wantOutput(t, trace(t, tr, TCPPacket(portUplink, clientMAC, nodeMAC, clientIP, lbIP, 50000, 80)), portDB)
	wantTuple(t, out.Packet, clientIP, 50000, dbIP, 5432)
	// The external IP has no ranges.
	out = wantOutput(t, trace(t, tr, TCPPacket(portUplink, clientMAC, nodeMAC, strangerIP, extSvcIP, 50000, 80)), portDB)
	wantTuple(t, out.Packet, strangerIP, 50000, dbIP, 5432)
}

// A port without endpoints is rejected by the agent (a metered packet-in);
// internalTrafficPolicy Local without local endpoints drops.
func TestTraceRejectAndDrop(t *testing.T) {
	tr := serviceTracer(t, 0)
	res := trace(t, tr, UDPPacket(portWeb, webMAC, gatewayMAC, webIP, webVIP, 40000, 53))
	if len(res.Outputs) != 0 || len(res.PacketIns) != 1 {
		t.Fatalf("want one packet-in and no output:\n%s", res)
	}
	pi := res.PacketIns[0]
	if pi.Table != ServiceLB || !bytes.Equal(pi.Userdata, []byte{PacketInReject}) || pi.MeterID != ServiceRejectMeter {
		t.Errorf("packet-in %+v", pi)
	}
	wantTuple(t, pi.Packet, webIP, 40000, webVIP, 53)
	wantDrop(t, trace(t, tr, TCPPacket(portWeb, webMAC, gatewayMAC, webIP, localVIP, 40000, 80)), ServiceLB, "drop in table 40")
}

// ClientIP affinity: the first connection learns its endpoint; the next
// ones from the same client take it whatever the group would pick, other
// clients choose afresh. A day-long timeout learns a flow without timeout.
func TestTraceAffinity(t *testing.T) {
	tr := serviceTracer(t, 1)
	out := wantOutput(t, trace(t, tr, TCPPacket(portDB, dbMAC, gatewayMAC, dbIP, stickyVIP, 40000, 80)), portTunnel)
	wantTuple(t, out.Packet, dbIP, 40000, peerBPod, 8080)
	learned := tr.Flows(SessionAffinity)
	if len(learned) != 2 { // the learned flow and the miss
		t.Fatalf("table 41 after the first connection: %v", learned)
	}
	if got := pipelineCookie(learned[0]).Category(); got != CategoryAffinity {
		t.Errorf("learned flow %s: category %s", learned[0], got)
	}
	if !strings.Contains(learned[0].String(), "idle_timeout=10800,") {
		t.Errorf("learned flow %s: want idle_timeout=10800", learned[0])
	}
	tr.Select = func(*openflow.GroupEntry, Packet) int { return 0 }
	out = wantOutput(t, trace(t, tr, TCPPacket(portDB, dbMAC, gatewayMAC, dbIP, stickyVIP, 40001, 80)), portTunnel)
	wantTuple(t, out.Packet, dbIP, 40001, peerBPod, 8080)
	// Another client gets bucket 0 (itself, through the hairpin).
	out = wantOutput(t, trace(t, tr, TCPPacket(portWeb, webMAC, gatewayMAC, webIP, stickyVIP, 40000, 80)), portWeb)
	if out.Packet.IPDst != webIP || out.Packet.DstPort != 8080 {
		t.Errorf("second client reached %s:%d, want %s:8080", out.Packet.IPDst, out.Packet.DstPort, webIP)
	}

	// A day: no idle_timeout in the learned flow (the agent expires it).
	trace(t, tr, UDPPacket(portWeb, webMAC, gatewayMAC, webIP, dayVIP, 40000, 53))
	for _, f := range tr.Flows(SessionAffinity) {
		if strings.Contains(f.String(), "nw_dst=10.96.0.14") && strings.Contains(f.String(), "timeout") {
			t.Errorf("day-long affinity learned %s with a timeout", f)
		}
	}
}

func pipelineCookie(f *openflow.Flow) Cookie { return Cookie(f.CookieValue()) }

// The host reaches a ClusterIP through the gateway, addressing the service
// next hop's MAC: every packet of the connection is routed to the endpoint
// with rewritten MACs, and replies go back to the gateway.
func TestTraceHostToClusterIP(t *testing.T) {
	tr := serviceTracer(t, 0)
	syn := TCPPacket(portGateway, gatewayMAC, ServiceNextHopMAC, gatewayIP, webVIP, 41000, 80)
	out := wantOutput(t, trace(t, tr, syn), portWeb)
	wantTuple(t, out.Packet, gatewayIP, 41000, webIP, 8080)
	wantMACs(t, out.Packet, gatewayMAC, webMAC)
	ack := syn
	ack.TCPFlags = 0x010
	wantMACs(t, wantOutput(t, trace(t, tr, ack), portWeb).Packet, gatewayMAC, webMAC)
	back := wantOutput(t, trace(t, tr, reply(out.Packet, portWeb)), portGateway)
	wantTuple(t, back.Packet, webVIP, 80, gatewayIP, 41000)
	// The host's own connection to its node port (DNATed by the host to
	// the node-port target, from the node IP): the reply goes back to the
	// gateway, where the host's conntrack expects it, not to the node IP's
	// port.
	np := TCPPacket(portGateway, gatewayMAC, ServiceNextHopMAC, nodeIP, NodePortVirtualIP, 41001, 30081)
	out = wantOutput(t, trace(t, tr, np), portWeb)
	back = wantOutput(t, trace(t, tr, reply(out.Packet, portWeb)), portGateway)
	wantTuple(t, back.Packet, NodePortVirtualIP, 30081, nodeIP, 41001)
	// A packet to a service address no frontend takes is not forwarded by
	// the next hop's MAC.
	res := trace(t, tr, TCPPacket(portGateway, gatewayMAC, ServiceNextHopMAC, gatewayIP, webVIP, 41000, 81))
	if len(res.Outputs) != 0 {
		t.Errorf("unknown service port forwarded:\n%s", res)
	}
}

// NetworkPolicy on Service traffic sees the connection after DNAT: egress
// rules match the endpoint, not the cluster IP, and ingress rules the
// client's own address (node ports keep it). The gateway IP still passes
// ingress: it is the node itself (host processes, kubelet probes,
// hostNetwork pods) and the source of a pod reaching itself through a
// Service (hairpin), which Kubernetes never lets a policy block. Traffic
// from outside the node never carries it: a node port to a local endpoint
// is not masqueraded, and one to a remote endpoint is SNATed to this
// node's gateway IP, which is not the remote node's.
func TestTraceServicePolicyVerdicts(t *testing.T) {
	flows, groups := serviceFlowsOf(t)
	flows = append(flows, policyFlowsOrFail(t, policyScenario(), goldenRound)...)
	tr, err := NewTracer(flows)
	if err != nil {
		t.Fatal(err)
	}
	tr.AddGroups(groups...)
	tr.Select = func(*openflow.GroupEntry, Packet) int { return 0 }
	for _, tc := range []struct {
		name    string
		p       Packet
		outPort uint32 // 0: dropped
		dropIn  Table
	}{
		{"web -> np cluster IP -> db:5432: web's egress and db's ingress allow the endpoint",
			TCPPacket(portWeb, webMAC, gatewayMAC, webIP, npVIP, 41000, 80), portDB, 0},
		{"web -> web cluster IP -> web:8080: web's egress denies the endpoint (10/8 excepted)",
			TCPPacket(portWeb, webMAC, gatewayMAC, webIP, webVIP, 41001, 80), 0, EgressPolicy},
		{"external client -> node port -> db: the client's address, which db does not allow",
			TCPPacket(portUplink, clientMAC, nodeMAC, clientIP, nodeIP, 41002, 30080), 0, IngressPolicy},
		{"host -> np cluster IP -> db: the node reaches its pods",
			TCPPacket(portGateway, gatewayMAC, ServiceNextHopMAC, gatewayIP, npVIP, 41003, 80), portDB, 0},
		{"db -> np cluster IP -> db (hairpin): SNATed to the gateway IP, which passes",
			TCPPacket(portDB, dbMAC, gatewayMAC, dbIP, npVIP, 41004, 80), portDB, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res := trace(t, tr, tc.p)
			if tc.outPort != 0 {
				wantOutput(t, res, tc.outPort)
				return
			}
			if len(res.Outputs) != 0 || res.Steps[len(res.Steps)-1].Table != tc.dropIn {
				t.Fatalf("want a drop in %s:\n%s", tc.dropIn, res)
			}
		})
	}
}

// noEncap: a client on the uplink reaches a node port whose endpoint is on
// another node. Both legs leave by the port they came in on (the uplink):
// the SNATed connection to the endpoint's node, and its reply back to the
// client, un-NATed.
func TestTraceNodePortRemoteEndpointNoEncap(t *testing.T) {
	st := baseState(OSLinux, BridgedUplink, NoEncap, 0)
	st.Node.ServiceProxy = true
	flows := buildOrFail(t, st, goldenRound)
	var groups []*openflow.GroupEntry
	svcs, ids := serviceFixtures()
	for _, s := range svcs {
		set, err := ServiceFlows(st.Node, s, ids[s.Key()], goldenRound)
		if err != nil {
			t.Fatal(err)
		}
		flows, groups = append(flows, set.Flows...), append(groups, set.Groups...)
	}
	tr, err := NewTracer(flows)
	if err != nil {
		t.Fatal(err)
	}
	tr.AddGroups(groups...)
	tr.Select = func(*openflow.GroupEntry, Packet) int { return 1 } // peer B's endpoint
	syn := TCPPacket(portUplink, clientMAC, nodeMAC, clientIP, nodeIP, 50000, 30081)
	out := wantOutput(t, trace(t, tr, syn), portUplink)
	wantTuple(t, out.Packet, gatewayIP, 50000, peerBPod, 8080)
	wantMACs(t, out.Packet, nodeMAC, peerBMAC)
	r := reply(out.Packet, portUplink)
	back := wantOutput(t, trace(t, tr, r), portUplink)
	wantTuple(t, back.Packet, nodeIP, 30081, clientIP, 50000)
	wantMACs(t, back.Packet, nodeMAC, clientMAC)
}

// Fragments of a datagram: the flow tables see no ports in a fragment, so
// the Service is found by the datagram's tuple as conntrack saw it (which
// reassembled it): a later fragment to a Service's only UDP port takes its
// group by address alone (day: through affinity), and on a cluster IP with
// two UDP ports by ct_tp_dst (web: syslog has an endpoint, dns none).
func TestTraceFragments(t *testing.T) {
	tr := serviceTracer(t, 0)
	frag := UDPPacket(portWeb, webMAC, gatewayMAC, webIP, dayVIP, 40000, 53)
	frag.LaterFragment = true
	out := wantOutput(t, trace(t, tr, frag), portDB)
	wantTuple(t, out.Packet, webIP, 0, dbIP, 0)

	frag = UDPPacket(portDB, dbMAC, gatewayMAC, dbIP, webVIP, 40001, 514)
	frag.LaterFragment = true
	out = wantOutput(t, trace(t, tr, frag), portWeb)
	wantTuple(t, out.Packet, dbIP, 0, webIP, 0)

	frag = UDPPacket(portDB, dbMAC, gatewayMAC, dbIP, webVIP, 40002, 53)
	frag.LaterFragment = true
	res := trace(t, tr, frag)
	if len(res.Outputs) != 0 || !strings.Contains(res.String(), "controller") {
		t.Errorf("a fragment to the port without endpoints: want the reject's packet-in, got:\n%s", res)
	}
}

// hostVIP is the cluster IP of hostEndpointTracer's Service.
var hostVIP = netip.MustParseAddr("10.96.0.30")

// hostEndpointTracer traces the service golden node with one more Service:
// node port 30090 whose endpoints are hostNetwork pods, on this node
// (bucket 0) and on peer node B (bucket 1).
func hostEndpointTracer(t *testing.T, pick int) *Tracer {
	t.Helper()
	return hostEndpointTracerOf(t, serviceState(), pick)
}

// hostEndpointTracerOf is hostEndpointTracer for node st with the service
// fixtures and that Service.
func hostEndpointTracerOf(t *testing.T, st State, pick int) *Tracer {
	t.Helper()
	flows := buildOrFail(t, st, goldenRound)
	var groups []*openflow.GroupEntry
	svcs, ids := serviceFixtures()
	svcs = append(svcs, &proxy.Service{Namespace: "default", Name: "host", Ports: []proxy.Port{{
		Protocol: proxy.ProtoTCP, Port: 80, ClusterIP: hostVIP, NodePort: 30090, HasEndpoints: true,
		ClusterEndpoints: []proxy.Endpoint{ep(nodeIP, 10080, true), ep(peerBIP, 10080, false)},
	}}})
	ids["default/host"] = map[string]uint32{"/TCP": 20}
	for _, s := range svcs {
		set, err := ServiceFlows(st.Node, s, ids[s.Key()], goldenRound)
		if err != nil {
			t.Fatalf("service %s: %v", s.Key(), err)
		}
		flows, groups = append(flows, set.Flows...), append(groups, set.Groups...)
	}
	tr, err := NewTracer(flows)
	if err != nil {
		t.Fatal(err)
	}
	tr.AddGroups(groups...)
	tr.Select = func(*openflow.GroupEntry, Packet) int { return pick }
	return tr
}

// The host itself reaches a Service whose endpoints are hostNetwork pods
// (this node's IP, a peer node's), through the gateway, on either
// topology: by its cluster IP (from the gateway IP) and by its node port
// (the host DNATs that to NodePortVirtualIP, from the node IP). Both are
// SNATed to ServiceNextHopIP and handed back to the host by the gateway
// they came in on (from its own address the host would drop them as
// martian); the host's answer to ServiceNextHopIP is un-SNATed and
// un-DNATed and goes back to the gateway from the Service's address.
func TestTraceHostToClusterIPHostEndpoints(t *testing.T) {
	routed := baseState(OSLinux, RoutedHost, Encap, Geneve)
	routed.Node.ServiceProxy = true
	for _, topo := range []struct {
		name string
		st   State
	}{{"bridged", serviceState()}, {"routed", routed}} {
		for _, c := range []struct {
			name string
			pick int
			ep   netip.Addr
		}{{"this node", 0, nodeIP}, {"peer node", 1, peerBIP}} {
			for _, f := range []struct {
				name    string
				src, ip netip.Addr
				port    uint16
			}{{"cluster IP", gatewayIP, hostVIP, 80}, {"node port", nodeIP, NodePortVirtualIP, 30090}} {
				t.Run(topo.name+"/"+c.name+"/"+f.name, func(t *testing.T) {
					tr := hostEndpointTracerOf(t, topo.st, c.pick)
					syn := TCPPacket(portGateway, gatewayMAC, ServiceNextHopMAC, f.src, f.ip, 41000, f.port)
					out, r := wantHandedToHost(t, tr, syn, c.ep)
					back := wantOutput(t, trace(t, tr, r), portGateway)
					wantTuple(t, back.Packet, f.ip, f.port, f.src, 41000)
					if back.Packet.EthDst.String() != gatewayMAC.String() {
						t.Errorf("reply to the host to %s, want the gateway's %s", back.Packet.EthDst, gatewayMAC)
					}
					ack := syn
					ack.TCPFlags = 0x010
					again := wantOutput(t, trace(t, tr, ack), portGateway)
					wantTuple(t, again.Packet, ServiceNextHopIP, out.SrcPort, c.ep, 10080)
				})
			}
		}
	}
}

// wantHandedToHost traces p, which must be handed to the host through the
// gateway SNATed to ServiceNextHopIP, for endpoint ep:10080; it returns
// that packet and the host's answer to it, as it enters the bridge.
func wantHandedToHost(t *testing.T, tr *Tracer, p Packet, ep netip.Addr) (out, answer Packet) {
	t.Helper()
	out = wantOutput(t, trace(t, tr, p), portGateway).Packet
	if out.IPSrc != ServiceNextHopIP || out.IPDst != ep || out.DstPort != 10080 {
		t.Fatalf("to the host %s, want %s -> %s:10080", out, ServiceNextHopIP, ep)
	}
	wantMACs(t, out, ServiceNextHopMAC, gatewayMAC)
	answer = reply(out, portGateway)
	answer.EthSrc, answer.EthDst = gatewayMAC, ServiceNextHopMAC
	return out, answer
}

// A client on the uplink reaches a node port whose endpoints are
// hostNetwork pods: this node's IP or a peer node's. The connection is
// SNATed to ServiceNextHopIP and handed to the host through the gateway
// (with the gateway IP as source the host dropped it as martian, or, for
// its own IP, answered its own address itself); the host's answer to
// ServiceNextHopIP comes back through the gateway, is un-SNATed and
// un-DNATed and leaves by the uplink to the client, from the node port.
func TestTraceNodePortHostEndpoints(t *testing.T) {
	for _, c := range []struct {
		name string
		pick int
		ep   netip.Addr
	}{{"this node", 0, nodeIP}, {"peer node", 1, peerBIP}} {
		t.Run(c.name, func(t *testing.T) {
			tr := hostEndpointTracer(t, c.pick)
			syn := TCPPacket(portUplink, clientMAC, nodeMAC, clientIP, nodeIP, 50000, 30090)
			out, r := wantHandedToHost(t, tr, syn, c.ep)
			r.TTL = 63 // the host forwarded it (a peer's answer) or sent it
			back := wantOutput(t, trace(t, tr, r), portUplink)
			wantTuple(t, back.Packet, nodeIP, 30090, clientIP, 50000)
			wantMACs(t, back.Packet, nodeMAC, clientMAC)
			// The client's next packet takes the same way.
			ack := syn
			ack.TCPFlags = 0x010
			again := wantOutput(t, trace(t, tr, ack), portGateway)
			wantTuple(t, again.Packet, ServiceNextHopIP, out.SrcPort, c.ep, 10080)
		})
	}
}
