package pipeline

import (
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/seine-cni/seine/ovs/openflow"
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
		if strings.Contains(l, ", table=50,") || strings.Contains(l, ", table=80,") || strings.Contains(l, ", table=91,") || strings.Contains(l, ", table=92,") {
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
		// SCTP needs no kernel SCTP to be traced: the masked sctp_dst range
		// (7000-7001), its ends, and TCP/UDP on the same port.
		fromTunnel(SCTPPacket(0, nil, nil, peerBPod, dbIP, 40014, 7000)),
		fromTunnel(SCTPPacket(0, nil, nil, peerBPod, dbIP, 40015, 7001)),
		fromTunnel(SCTPPacket(0, nil, nil, peerBPod, dbIP, 40016, 7002)),
		fromTunnel(SCTPPacket(0, nil, nil, peerBPod, dbIP, 40017, 6999)),
		fromTunnel(TCPPacket(0, nil, nil, peerBPod, dbIP, 40018, 7000)),
		fromTunnel(UDPPacket(0, nil, nil, peerBPod, dbIP, 40019, 7000)),
		fromTunnel(SCTPPacket(0, nil, nil, peerC30, dbIP, 40020, 7000)),
		SCTPPacket(portWeb, webMAC, dbMAC, webIP, dbIP, 40021, 7000),
	} {
		o.compareTrace(t, flows, p)
	}
}

// TestOVSSharedClauseSplit installs 5,000 rules sharing one port clause
// (and one target clause) into ovs-vswitchd with the node's pipeline in
// one bundle: every flow fits in a message, OVS holds every flow (a flow
// too large to dump would be missing), and ofproto/trace allows exactly
// the rules' peers on the rules' port, whichever copy of the split clauses
// carries their conjunctions.
func TestOVSSharedClauseSplit(t *testing.T) {
	d, ac, ctx := startOVS(t)
	st := scenarioByName(t, "routed-encap-geneve")
	o := newBridge(t, d, ac, ctx, st)
	flows := append(buildOrFail(t, st, goldenRound), policyFlowsOrFail(t, sharedPortRules(5000), goldenRound)...)
	if err := o.conn.AddFlows(ctx, flows...); err != nil {
		t.Fatalf("install %d flows: %v", len(flows), err)
	}
	held, err := o.conn.DumpFlows(ctx, openflow.TableAll, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(held) != len(flows) {
		t.Errorf("OVS holds %d flows, %d were installed", len(held), len(flows))
	}
	copies := 0
	for _, f := range held {
		if strings.Contains(f.Flow.MatchString(), "metadata=0/") {
			copies++
		}
	}
	if copies != 14 { // 7 extra copies of the port clause, 7 of the target clause
		t.Errorf("OVS holds %d metadata copies of clauses, want 14", copies)
	}
	for _, tc := range []struct {
		peer  int
		port  uint16
		allow bool
	}{{0, 80, true}, {1, 80, true}, {2047, 80, true}, {4999, 80, true}, {4999, 81, false}, {5000, 80, false}} {
		p := fromTunnel(TCPPacket(0, nil, nil, sharedPortPeer(tc.peer), dbIP, 40000, tc.port))
		tr := o.ofprotoTrace(t, p)
		if got := slices.Contains(tr.outputs, portDB); got != tc.allow {
			t.Errorf("peer %d -> db tcp/%d: delivered %v, want %v\n%s", tc.peer, tc.port, got, tc.allow, tr.text)
		}
	}
}
