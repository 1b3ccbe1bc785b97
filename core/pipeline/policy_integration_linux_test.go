package pipeline

import (
	"os"
	"slices"
	"strings"
	"testing"
)

// TestOVSHoldsPolicyFlows installs a node's pipeline and policyScenario's
// policy flows into ovs-vswitchd in one bundle, checks that OVS holds
// exactly the policy golden file in the policy tables (so OVS accepts the
// merged conjunctions, masked ports and conj_id flows as built), and traces
// the verdict packets through ofproto/trace and the tracer: the same
// tables, the same outputs or the same drop.
func TestOVSHoldsPolicyFlows(t *testing.T) {
	d, ac, ctx := startOVS(t)
	st := scenarioByName(t, "routed-encap-geneve")
	o := newBridge(t, d, ac, ctx, st)
	flows := append(buildOrFail(t, st, goldenRound), policyFlowsOrFail(t, policyScenario(), goldenRound)...)
	if err := o.conn.AddFlows(ctx, flows...); err != nil {
		t.Fatalf("install: %v", err)
	}
	golden, err := os.ReadFile(goldenPath("policy-basic"))
	if err != nil {
		t.Fatal(err)
	}
	want := sortedLines(textLines(string(golden)))
	var got []string
	for _, l := range o.dump(t) {
		if strings.Contains(l, ", table=50,") || strings.Contains(l, ", table=80,") {
			if !strings.Contains(l, "priority=0 ") {
				got = append(got, l)
			}
		}
	}
	if !slices.Equal(got, want) {
		t.Errorf("OVS holds other policy flows than the golden file:\n%s", lineDiff(strings.Join(want, "\n"), strings.Join(got, "\n")))
	}
	peerC30, peerC200 := pfx("10.244.3.30/32").Addr(), pfx("10.244.3.200/32").Addr()
	for _, p := range []Packet{
		TCPPacket(portWeb, webMAC, dbMAC, webIP, dbIP, 40000, 5432),
		TCPPacket(portWeb, webMAC, dbMAC, webIP, dbIP, 40001, 22),
		TCPPacket(portWeb, webMAC, gatewayMAC, webIP, externIP, 40002, 443),
		TCPPacket(portWeb, webMAC, gatewayMAC, webIP, peerCPod, 40003, 443),
		TCPPacket(portDB, dbMAC, webMAC, dbIP, webIP, 40004, 80),
		fromTunnel(TCPPacket(0, nil, nil, peerBPod, dbIP, 40005, 5432)),
		fromTunnel(TCPPacket(0, nil, nil, peerBPod, dbIP, 40006, 5433)),
		fromTunnel(UDPPacket(0, nil, nil, peerC30, dbIP, 40007, 55)),
		fromTunnel(UDPPacket(0, nil, nil, peerC30, dbIP, 40009, 61)),
		fromTunnel(UDPPacket(0, nil, nil, peerC200, dbIP, 40010, 55)),
		TCPPacket(portGateway, gatewayMAC, dbMAC, gatewayIP, dbIP, 40012, 8080),
		TCPPacket(portGateway, gatewayMAC, dbMAC, nodeIP, dbIP, 40013, 8080),
	} {
		o.compareTrace(t, flows, p)
	}
}
