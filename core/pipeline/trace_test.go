package pipeline

import (
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/seine-cni/seine/ovs/openflow"
)

func tracerFor(t *testing.T, scenario string) *Tracer {
	t.Helper()
	tr, err := NewTracer(buildOrFail(t, scenarioByName(t, scenario), 1))
	if err != nil {
		t.Fatalf("tracer: %v", err)
	}
	return tr
}

func trace(t *testing.T, tr *Tracer, p Packet) *Trace {
	t.Helper()
	res, err := tr.Trace(p)
	if err != nil {
		t.Fatalf("trace %s: %v", p, err)
	}
	return res
}

// wantOutput checks that the packet left through port only, and returns it.
func wantOutput(t *testing.T, res *Trace, port uint32) Emitted {
	t.Helper()
	out, ok := res.Output()
	if !ok || out.Port != port {
		t.Fatalf("want one output to %s, got:\n%s", portName(port), res)
	}
	return out
}

func wantDrop(t *testing.T, res *Trace, in Table, why string) {
	t.Helper()
	if len(res.Outputs) != 0 || len(res.Steps) == 0 {
		t.Fatalf("want a drop in %s, got:\n%s", in, res)
	}
	if last := res.Steps[len(res.Steps)-1].Table; last != in || !strings.Contains(res.Dropped, why) {
		t.Fatalf("want a drop in %s (%q), got %q in %s:\n%s", in, why, res.Dropped, last, res)
	}
}

func wantMACs(t *testing.T, p Packet, src, dst net.HardwareAddr) {
	t.Helper()
	if p.EthSrc.String() != src.String() || p.EthDst.String() != dst.String() {
		t.Errorf("MACs %s -> %s, want %s -> %s", p.EthSrc, p.EthDst, src, dst)
	}
}

func wantTTL(t *testing.T, p Packet, ttl uint8) {
	t.Helper()
	if p.TTL != ttl {
		t.Errorf("TTL %d, want %d", p.TTL, ttl)
	}
}

func wantDest(t *testing.T, o Emitted, mark RegMark) {
	t.Helper()
	if !mark.Is(o.Regs[mark.Field.Reg]) {
		t.Errorf("reg%d=%#x does not carry %s", mark.Field.Reg, o.Regs[mark.Field.Reg], mark)
	}
}

func TestTracePodToLocalPod(t *testing.T) {
	for _, sc := range scenarios() {
		t.Run(sc.name, func(t *testing.T) {
			tr := tracerFor(t, sc.name)
			// Same subnet: the pod learnt db's MAC from the ARP responder and
			// the bridge switches the frame untouched.
			res := trace(t, tr, TCPPacket(portWeb, webMAC, dbMAC, webIP, dbIP, 40000, 5432))
			out := wantOutput(t, res, portDB)
			wantMACs(t, out.Packet, webMAC, dbMAC)
			wantTTL(t, out.Packet, 64)
			wantDest(t, out, ToLocalPodMark)

			// Addressed to the gateway MAC: the bridge routes it.
			res = trace(t, tr, TCPPacket(portWeb, webMAC, gatewayMAC, webIP, dbIP, 40001, 5432))
			out = wantOutput(t, res, portDB)
			wantMACs(t, out.Packet, gatewayMAC, dbMAC)
			wantTTL(t, out.Packet, 63)
		})
	}
}

func TestTracePodToRemotePodThroughTunnel(t *testing.T) {
	for _, name := range []string{"routed-encap-geneve", "bridged-encap-vxlan", "windows-encap-geneve"} {
		t.Run(name, func(t *testing.T) {
			tr := tracerFor(t, name)
			for _, peer := range []struct {
				pod, node netip.Addr
			}{{peerBPod, peerBIP}, {peerCPod, peerCIP}} {
				res := trace(t, tr, TCPPacket(portWeb, webMAC, gatewayMAC, webIP, peer.pod, 40000, 80))
				out := wantOutput(t, res, portTunnel)
				if out.Packet.TunDst != peer.node {
					t.Errorf("to %s: tun_dst=%s, want %s", peer.pod, out.Packet.TunDst, peer.node)
				}
				wantMACs(t, out.Packet, gatewayMAC, GlobalVirtualMAC)
				wantTTL(t, out.Packet, 63)
				wantDest(t, out, ToTunnelMark)
			}
		})
	}
}

// The host reaches a peer's pods through its "via <peer gateway> onlink"
// route: the ARP responder gives it the global virtual MAC, and the TTL the
// host already decremented is left alone.
func TestTraceHostToRemotePod(t *testing.T) {
	for _, name := range []string{"routed-encap-geneve", "bridged-encap-vxlan"} {
		t.Run(name, func(t *testing.T) {
			tr := tracerFor(t, name)
			arp := wantOutput(t, trace(t, tr, ARPRequest(portGateway, gatewayMAC, gatewayIP, peerBGw)), portGateway)
			p := TCPPacket(portGateway, gatewayMAC, arp.Packet.ARPSHA, gatewayIP, peerBPod, 40000, 80)
			out := wantOutput(t, trace(t, tr, p), portTunnel)
			wantMACs(t, out.Packet, gatewayMAC, GlobalVirtualMAC)
			wantTTL(t, out.Packet, 64)
			if out.Packet.TunDst != peerBIP {
				t.Errorf("tun_dst=%s, want %s", out.Packet.TunDst, peerBIP)
			}
		})
	}
}

func TestTraceHybridEncapsulatesAcrossSubnetsOnly(t *testing.T) {
	tr := tracerFor(t, "routed-hybrid-gre")
	// node-b shares the node subnet: the host routes to it.
	out := wantOutput(t, trace(t, tr, TCPPacket(portWeb, webMAC, gatewayMAC, webIP, peerBPod, 40000, 80)), portGateway)
	wantMACs(t, out.Packet, webMAC, gatewayMAC)
	if out.Packet.TunDst.IsValid() {
		t.Errorf("same-subnet peer got tun_dst %s", out.Packet.TunDst)
	}
	// node-c is across a router: tunnel.
	out = wantOutput(t, trace(t, tr, TCPPacket(portWeb, webMAC, gatewayMAC, webIP, peerCPod, 40000, 80)), portTunnel)
	if out.Packet.TunDst != peerCIP {
		t.Errorf("tun_dst=%s, want %s", out.Packet.TunDst, peerCIP)
	}
	// The host asks for the gateway of the tunnelled peer only.
	wantOutput(t, trace(t, tr, ARPRequest(portGateway, gatewayMAC, gatewayIP, peerCGw)), portGateway)
	wantDrop(t, trace(t, tr, ARPRequest(portGateway, gatewayMAC, gatewayIP, peerBGw)), Output, "")
}

func TestTraceNoEncap(t *testing.T) {
	t.Run("routed", func(t *testing.T) {
		tr := tracerFor(t, "routed-noencap")
		for _, dst := range []netip.Addr{peerBPod, peerCPod} {
			out := wantOutput(t, trace(t, tr, TCPPacket(portWeb, webMAC, gatewayMAC, webIP, dst, 40000, 80)), portGateway)
			wantTTL(t, out.Packet, 64) // the host decrements it
		}
	})
	t.Run("bridged", func(t *testing.T) {
		tr := tracerFor(t, "bridged-noencap")
		// node-b's MAC is known: straight out of the uplink.
		out := wantOutput(t, trace(t, tr, TCPPacket(portWeb, webMAC, gatewayMAC, webIP, peerBPod, 40000, 80)), portUplink)
		wantMACs(t, out.Packet, nodeMAC, peerBMAC)
		wantTTL(t, out.Packet, 63)
		wantDest(t, out, ToUplinkMark)
		// node-c's is not: the host routes it.
		wantOutput(t, trace(t, tr, TCPPacket(portWeb, webMAC, gatewayMAC, webIP, peerCPod, 40000, 80)), portGateway)
		// A peer routes to our pod through the uplink.
		in := TCPPacket(portUplink, peerBMAC, nodeMAC, peerBPod, webIP, 50000, 80)
		out = wantOutput(t, trace(t, tr, in), portWeb)
		wantMACs(t, out.Packet, gatewayMAC, webMAC)
		wantTTL(t, out.Packet, 63)
		// A frame for another MAC on the underlay is not ours to route.
		in.EthDst = routerMAC
		wantOutput(t, trace(t, tr, in), openflow.PortLocal)
	})
}

func TestTraceFromTunnel(t *testing.T) {
	tr := tracerFor(t, "routed-encap-geneve")
	in := TCPPacket(portTunnel, gatewayMAC, GlobalVirtualMAC, peerCPod, webIP, 50000, 80)
	in.TunSrc, in.TunDst = peerCIP, nodeIP
	out := wantOutput(t, trace(t, tr, in), portWeb)
	wantMACs(t, out.Packet, gatewayMAC, webMAC)
	wantTTL(t, out.Packet, 63)

	// To the gateway IP (the reply to host traffic sent through the tunnel).
	in.IPDst = gatewayIP
	out = wantOutput(t, trace(t, tr, in), portGateway)
	wantDest(t, out, ToGatewayMark)

	// To a pod address nobody owns: dropped, not handed to the host.
	in.IPDst = netip.MustParseAddr("10.244.1.99")
	wantDrop(t, trace(t, tr, in), L3Forwarding, "drop in table 60")
	in.IPDst = unknownIP
	wantDrop(t, trace(t, tr, in), L3Forwarding, "drop in table 60")
}

func TestTraceToHostAndExternal(t *testing.T) {
	t.Run("routed", func(t *testing.T) {
		tr := tracerFor(t, "routed-encap-geneve")
		out := wantOutput(t, trace(t, tr, TCPPacket(portWeb, webMAC, gatewayMAC, webIP, nodeIP, 40000, 10250)), portGateway)
		wantTTL(t, out.Packet, 64)
		out = wantOutput(t, trace(t, tr, TCPPacket(portWeb, webMAC, gatewayMAC, webIP, externIP, 40000, 443)), portGateway)
		wantMACs(t, out.Packet, webMAC, gatewayMAC)
		// Host -> pod is switched.
		out = wantOutput(t, trace(t, tr, TCPPacket(portGateway, gatewayMAC, webMAC, gatewayIP, webIP, 40000, 80)), portWeb)
		wantMACs(t, out.Packet, gatewayMAC, webMAC)
		wantTTL(t, out.Packet, 64)
	})
	t.Run("bridged", func(t *testing.T) {
		tr := tracerFor(t, "bridged-encap-vxlan")
		// The node IP is on the bridge's LOCAL port.
		out := wantOutput(t, trace(t, tr, TCPPacket(portWeb, webMAC, gatewayMAC, webIP, nodeIP, 40000, 10250)), openflow.PortLocal)
		wantMACs(t, out.Packet, gatewayMAC, nodeMAC)
		wantDest(t, out, ToHostMark)
		wantOutput(t, trace(t, tr, TCPPacket(portWeb, webMAC, gatewayMAC, webIP, externIP, 40000, 443)), portGateway)
	})
}

func TestTraceBridgedUplink(t *testing.T) {
	for _, name := range []string{"bridged-encap-vxlan", "windows-encap-geneve", "bridged-noencap"} {
		t.Run(name, func(t *testing.T) {
			tr := tracerFor(t, name)
			gw := mustMAC("52:54:00:00:10:01")
			// ARP and IP for the node IP reach the host untouched.
			arp := ARPRequest(portUplink, gw, netip.MustParseAddr("192.168.10.1"), nodeIP)
			out := wantOutput(t, trace(t, tr, arp), openflow.PortLocal)
			if out.Packet.ARPOp != 1 || out.Packet.ARPTPA != nodeIP {
				t.Errorf("ARP changed on its way to the host: %s", out.Packet)
			}
			ssh := TCPPacket(portUplink, gw, nodeMAC, netip.MustParseAddr("192.168.10.1"), nodeIP, 50000, 22)
			out = wantOutput(t, trace(t, tr, ssh), openflow.PortLocal)
			wantTTL(t, out.Packet, 64)
			// The host's traffic, encapsulated tunnel packets included, leaves by the uplink.
			reply := ARPRequest(openflow.PortLocal, nodeMAC, nodeIP, peerBIP)
			wantOutput(t, trace(t, tr, reply), portUplink)
			cfg := scenarioByName(t, name).Node
			if cfg.Mode == NoEncap {
				return
			}
			// Tunnel packets for the node IP go to LOCAL by the tunnel flow,
			// where OVS terminates them.
			udp := UDPPacket(portUplink, gw, nodeMAC, peerCIP, nodeIP, 51000, cfg.Tunnel.UDPPort())
			res := trace(t, tr, udp)
			wantOutput(t, res, openflow.PortLocal)
			if p := res.Steps[0].Flow.Priority(); p != prioHigh {
				t.Errorf("tunnel packet matched the priority %d flow, want the tunnel flow:\n%s", p, res)
			}
		})
	}
}

func TestTraceSpoofGuard(t *testing.T) {
	tr := tracerFor(t, "routed-encap-geneve")
	// Another pod's IP, another pod's MAC, and a MAC nobody has.
	for _, p := range []Packet{
		TCPPacket(portWeb, webMAC, gatewayMAC, dbIP, externIP, 40000, 443),
		TCPPacket(portWeb, dbMAC, gatewayMAC, webIP, externIP, 40000, 443),
		TCPPacket(portWeb, mustMAC("0a:00:00:00:99:99"), gatewayMAC, webIP, externIP, 40000, 443),
		ARPRequest(portWeb, webMAC, dbIP, gatewayIP),
		ARPRequest(portWeb, dbMAC, webIP, gatewayIP),
		ARPRequest(portGateway, webMAC, gatewayIP, webIP),
	} {
		wantDrop(t, trace(t, tr, p), SpoofGuard, "drop in table 10")
	}
	// Unknown ports are dropped by the classifier.
	wantDrop(t, trace(t, tr, TCPPacket(99, webMAC, gatewayMAC, webIP, externIP, 1, 2)), Classifier, "drop in table 0")
	// The routed host has no uplink on the bridge.
	wantDrop(t, trace(t, tr, ARPRequest(openflow.PortLocal, nodeMAC, nodeIP, gatewayIP)), Classifier, "")
}

func TestTraceARPResponder(t *testing.T) {
	tr := tracerFor(t, "routed-encap-geneve")
	cases := []struct {
		name   string
		req    Packet
		answer net.HardwareAddr
		ip     netip.Addr
	}{
		{"pod asks for gateway", ARPRequest(portWeb, webMAC, webIP, gatewayIP), gatewayMAC, gatewayIP},
		{"pod asks for pod", ARPRequest(portWeb, webMAC, webIP, dbIP), dbMAC, dbIP},
		{"host asks for pod", ARPRequest(portGateway, gatewayMAC, gatewayIP, dbIP), dbMAC, dbIP},
		{"host asks for peer gateway", ARPRequest(portGateway, gatewayMAC, gatewayIP, peerCGw), GlobalVirtualMAC, peerCGw},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			out := wantOutput(t, trace(t, tr, c.req), c.req.InPort)
			p := out.Packet
			if p.ARPOp != 2 || p.ARPSPA != c.ip || p.ARPSHA.String() != c.answer.String() ||
				p.ARPTPA != c.req.ARPSPA || p.ARPTHA.String() != c.req.ARPSHA.String() {
				t.Errorf("bad reply %s", p)
			}
			wantMACs(t, p, c.answer, c.req.EthSrc)
		})
	}
	// Requests for addresses the bridge does not own go unanswered, and
	// are not flooded.
	res := trace(t, tr, ARPRequest(portWeb, webMAC, webIP, netip.MustParseAddr("10.244.1.99")))
	wantDrop(t, res, Output, "")
	// Replies are forwarded by destination MAC.
	reply := ARPRequest(portWeb, webMAC, webIP, gatewayIP)
	reply.ARPOp, reply.EthDst, reply.ARPTHA = 2, gatewayMAC, gatewayMAC
	wantOutput(t, trace(t, tr, reply), portGateway)
}

func TestTraceConntrack(t *testing.T) {
	tr := tracerFor(t, "routed-encap-geneve")
	syn := TCPPacket(portWeb, webMAC, dbMAC, webIP, dbIP, 40000, 5432)
	res := trace(t, tr, syn)
	wantOutput(t, res, portDB)
	if !hasNote(res, "+new+trk") || !hasNote(res, "committed") {
		t.Errorf("first packet not new and committed:\n%s", res)
	}
	back := TCPPacket(portDB, dbMAC, webMAC, dbIP, webIP, 5432, 40000)
	res = trace(t, tr, back)
	wantOutput(t, res, portWeb)
	if !hasNote(res, "+est+rpl+trk") || hasNote(res, "committed") {
		t.Errorf("reply not seen as established reply:\n%s", res)
	}
	again := trace(t, tr, syn)
	if !hasNote(again, "+est+trk") {
		t.Errorf("second packet not established:\n%s", again)
	}
	bad := syn
	bad.CTInvalid = true
	wantDrop(t, trace(t, tr, bad), ConntrackState, "drop in table 31")
}

func TestTraceTTLExpires(t *testing.T) {
	tr := tracerFor(t, "routed-encap-geneve")
	p := TCPPacket(portWeb, webMAC, gatewayMAC, webIP, peerCPod, 40000, 80)
	p.TTL = 1
	wantDrop(t, trace(t, tr, p), L3DecTTL, "TTL expired")
	// Switched traffic keeps TTL 1.
	p = TCPPacket(portWeb, webMAC, dbMAC, webIP, dbIP, 40000, 80)
	p.TTL = 1
	wantTTL(t, wantOutput(t, trace(t, tr, p), portDB).Packet, 1)
}

// The path of a pod-to-pod packet visits the tables in pipeline order.
func TestTracePathFollowsTableOrder(t *testing.T) {
	tr := tracerFor(t, "routed-encap-geneve")
	res := trace(t, tr, TCPPacket(portWeb, webMAC, gatewayMAC, webIP, peerCPod, 40000, 80))
	want := []Table{Classifier, SpoofGuard, UnSNAT, ConntrackZone, ConntrackState, ServiceLB, EgressTier, EgressPolicy, EgressBaseline,
		L3Forwarding, L3DecTTL, L2ForwardingCalc, IngressTier, IngressPolicy, IngressBaseline, ConntrackCommit, EgressMetric, IngressMetric, Output}
	if got := res.Tables(); !slices.Equal(got, want) {
		t.Errorf("tables %v, want %v", got, want)
	}
}

func TestTracerRefusesAmbiguity(t *testing.T) {
	m := openflow.NewMatch().InPort(1)
	flows := []*openflow.Flow{
		openflow.NewFlow(0, 100).Match(m).Actions(openflow.NewActions().Output(2)),
		openflow.NewFlow(0, 100).Match(openflow.NewMatch().IP()).Actions(openflow.NewActions().Output(3)),
	}
	tr, err := NewTracer(flows)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tr.Trace(TCPPacket(1, webMAC, dbMAC, webIP, dbIP, 1, 2)); err == nil || !strings.Contains(err.Error(), "ambiguous") {
		t.Errorf("want an ambiguity error, got %v", err)
	}
	// An ARP packet matches only the in_port flow.
	res, err := tr.Trace(ARPRequest(1, webMAC, webIP, dbIP))
	if err != nil {
		t.Fatal(err)
	}
	wantOutput(t, res, 2)
}

func hasNote(res *Trace, s string) bool {
	for _, st := range res.Steps {
		for _, n := range st.Notes {
			if strings.Contains(n, s) {
				return true
			}
		}
	}
	return false
}
