package pipeline

import "testing"

// TestDNSInterceptGolden compares DNSInterceptFlows with
// testdata/dns-intercept.flows (-update to regenerate).
func TestDNSInterceptGolden(t *testing.T) {
	checkGolden(t, "dns-intercept", Text(DNSInterceptFlows(goldenRound)))
}

// TestTraceDNSAnswer: with the DNS flow installed, the answer to a pod's
// query (from a pod on another node, and on the routed node from outside
// through the gateway) goes to the agent paused (userdata 06, meter 4) and,
// resumed, reaches the pod; on a Windows flow set too. The query itself, a
// UDP packet from port 53 that opens a connection, and a TCP answer are
// not sent to the agent.
func TestTraceDNSAnswer(t *testing.T) {
	for _, sc := range []string{"routed-encap-geneve", "windows-encap-geneve"} {
		t.Run(sc, func(t *testing.T) {
			flows := buildOrFail(t, scenarioByName(t, sc), 1)
			tr, err := NewTracer(append(flows, DNSInterceptFlows(1)...))
			if err != nil {
				t.Fatal(err)
			}
			wantNoPacketIn := func(what string, res *Trace) {
				t.Helper()
				if len(res.PacketIns) != 0 {
					t.Errorf("%s went to the agent:\n%s", what, res)
				}
			}
			wantAnswer := func(what string, res *Trace) {
				t.Helper()
				wantOutput(t, res, portWeb)
				if len(res.PacketIns) != 1 || !res.PacketIns[0].Paused || res.PacketIns[0].MeterID != DNSResponseMeter ||
					string(res.PacketIns[0].Userdata) != string([]byte{PacketInDNSResponse}) || res.PacketIns[0].Table != IngressTier {
					t.Errorf("%s: want one paused packet-in from IngressTier through meter %d:\n%s", what, DNSResponseMeter, res)
				}
			}
			// web queries a DNS server on node-b over the tunnel; the answer
			// comes back.
			q := UDPPacket(portWeb, webMAC, GlobalVirtualMAC, webIP, peerBPod, 40000, 53)
			wantNoPacketIn("the query", trace(t, tr, q))
			wantAnswer("the answer over the tunnel", trace(t, tr, fromTunnel(UDPPacket(0, nil, nil, peerBPod, webIP, 53, 40000))))
			// A packet from port 53 that nobody asked for opens a connection:
			// not an answer.
			wantNoPacketIn("an unasked packet from port 53", trace(t, tr, fromTunnel(UDPPacket(0, nil, nil, peerBPod, webIP, 53, 40001))))
			// TCP DNS is not taken.
			wantOutput(t, trace(t, tr, TCPPacket(portWeb, webMAC, GlobalVirtualMAC, webIP, peerBPod, 40002, 53)), portTunnel)
			wantNoPacketIn("a TCP answer", trace(t, tr, fromTunnel(TCPPacket(0, nil, nil, peerBPod, webIP, 53, 40002))))
			if sc == "routed-encap-geneve" {
				wantOutput(t, trace(t, tr, UDPPacket(portWeb, webMAC, gatewayMAC, webIP, externIP, 40003, 53)), portGateway)
				wantAnswer("the answer from outside", trace(t, tr, UDPPacket(portGateway, gatewayMAC, webMAC, externIP, webIP, 53, 40003)))
			}
		})
	}
}
