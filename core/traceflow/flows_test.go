package traceflow

import (
	"flag"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	crd "github.com/seine-cni/seine/core/apis/crd/v1beta1"
	"github.com/seine-cni/seine/core/pipeline"
	"github.com/seine-cni/seine/ovs/openflow"
)

var update = flag.Bool("update", false, "rewrite testdata/*.flows")

const testTag = 5

func tagged(t *testing.T, base []*openflow.Flow) []*openflow.Flow {
	t.Helper()
	copies, skipped, err := TaggedFlows(base, testTag, Cookie(1, testTag))
	if err != nil || len(skipped) > 0 {
		t.Fatalf("%v, %d flows skipped", err, len(skipped))
	}
	return copies
}

// TestTaggedFlowsGolden pins the copies of the routed Geneve node's
// terminal flows (regenerate with -update).
func TestTaggedFlowsGolden(t *testing.T) {
	for _, tc := range []struct {
		name string
		s    pipeline.State
	}{
		{"routed-encap-geneve", nodeState(pipeline.RoutedHost, pipeline.Encap, pipeline.Geneve)},
		{"bridged-noencap", nodeState(pipeline.BridgedUplink, pipeline.NoEncap, 0)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var sb strings.Builder
			for _, f := range tagged(t, baseFlows(t, tc.s)) {
				sb.WriteString(f.String() + "\n")
			}
			file := filepath.Join("testdata", tc.name+".flows")
			if *update {
				if err := os.WriteFile(file, []byte(sb.String()), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			if sb.String() != string(want) {
				t.Errorf("tagged flows differ from %s (go test ./core/traceflow -run TestTaggedFlowsGolden -update):\n%s", file, sb.String())
			}
		})
	}
}

func TestTaggedFlowsProperties(t *testing.T) {
	base := baseFlows(t, nodeState(pipeline.RoutedHost, pipeline.Encap, pipeline.Geneve))
	copies := tagged(t, base)
	if len(copies) == 0 {
		t.Fatal("no copies")
	}
	for _, c := range copies {
		ck := pipeline.Cookie(c.CookieValue())
		if ck.Category() != pipeline.CategoryTraceflow || ck.ID() != testTag {
			t.Errorf("%s: cookie %s", c, ck)
		}
		if !strings.Contains(c.MatchString(), "nw_tos=20") || !strings.Contains(c.ActionsString(), "controller(userdata=02.05.") {
			t.Errorf("copy %s lacks the tag match or the controller action", c)
		}
		if c.TableID() == uint8(pipeline.Classifier) || c.TableID() == uint8(pipeline.ARPResponder) {
			t.Errorf("copy in table %d: %s", c.TableID(), c)
		}
	}
	// Copies of copies are never made: the agent may dump them back.
	again, _, err := TaggedFlows(append(slices.Clone(base), copies...), testTag, Cookie(1, testTag))
	if err != nil || len(again) != len(copies) {
		t.Errorf("copies over a set holding copies: %d flows (want %d), %v", len(again), len(copies), err)
	}
	// Each tag's copies differ only in tag and cookie.
	other, _, err := TaggedFlows(base, MaxTag, Cookie(1, MaxTag))
	if err != nil || len(other) != len(copies) {
		t.Fatalf("tag %d: %d copies, %v", MaxTag, len(other), err)
	}
	for _, bad := range []uint8{0, MaxTag + 1} {
		if _, _, err := TaggedFlows(base, bad, 0); err == nil {
			t.Errorf("tag %d accepted", bad)
		}
	}
	// A flow one priority above a terminal flow leaves no room for its
	// copy: that flow alone is skipped, the others are still copied.
	crowd := append(slices.Clone(base), openflow.NewFlow(uint8(pipeline.IngressPolicy), 191).Match(openflow.NewMatch().IP().IPDstAddr(webIP)).Actions(openflow.NewActions()))
	got, skipped, err := TaggedFlows(crowd, testTag, 0)
	if err != nil || len(skipped) != 1 || skipped[0].Priority() != 190 || len(got) != len(copies) {
		t.Errorf("crowded table: %d copies (want %d), skipped %v, %v", len(got), len(copies), skipped, err)
	}
}

// traceCase is a packet and the observations the trace must give.
type traceCase struct {
	name string
	p    pipeline.Packet
	want []crd.Observation
}

var sgFwd = crd.Observation{Component: crd.ComponentSpoofGuard, Table: "SpoofGuard", Action: crd.ActionForwarded}

func tcp(in uint32, srcMAC, dstMAC string, src, dst netip.Addr, dport uint16) pipeline.Packet {
	return pipeline.TCPPacket(in, mustMAC(srcMAC), mustMAC(dstMAC), src, dst, 40000, dport)
}

func encapCases() []traceCase {
	fwd := func(o crd.Observation) crd.Observation {
		o.Component, o.Table = crd.ComponentForwarding, "Output"
		return o
	}
	return []traceCase{
		{"to a local pod", tcp(portWeb, "0a:00:00:00:01:0a", "0a:00:00:00:01:0b", webIP, dbIP, 5432),
			[]crd.Observation{sgFwd, fwd(crd.Observation{Action: crd.ActionDelivered, OutputPort: "11"})}},
		{"dropped by ingress policy", tcp(portWeb, "0a:00:00:00:01:0a", "0a:00:00:00:01:0b", webIP, dbIP, 80),
			[]crd.Observation{sgFwd, {Component: crd.ComponentNetworkPolicy, ComponentInfo: "IngressPolicy", Table: "IngressPolicy",
				Action: crd.ActionDropped, NetworkPolicy: "prod/db-allow-web", Rule: DefaultDenyRule}}},
		{"to a remote pod", tcp(portWeb, "0a:00:00:00:01:0a", "0a:00:00:00:01:01", webIP, peerPod, 80),
			[]crd.Observation{sgFwd, fwd(crd.Observation{Action: crd.ActionForwarded, OutputPort: "1", TunnelDstIP: peerIP.String()})}},
		{"to the internet", tcp(portWeb, "0a:00:00:00:01:0a", "0a:00:00:00:01:01", webIP, externIP, 443),
			[]crd.Observation{sgFwd, fwd(crd.Observation{Action: crd.ActionForwardedOutOfNetwork, OutputPort: "2"})}},
		{"spoofed source", tcp(portWeb, "0a:00:00:00:01:0a", "0a:00:00:00:01:0b", netip.MustParseAddr("10.244.1.99"), dbIP, 5432),
			[]crd.Observation{{Component: crd.ComponentSpoofGuard, Table: "SpoofGuard", Action: crd.ActionDropped}}},
		{"cluster address no node owns", tcp(portWeb, "0a:00:00:00:01:0a", "0a:00:00:00:01:01", webIP, netip.MustParseAddr("10.244.9.9"), 80),
			[]crd.Observation{sgFwd, {Component: crd.ComponentForwarding, Table: "L3Forwarding", Action: crd.ActionDropped}}},
		{"from the tunnel", tcp(portTunnel, "52:54:00:00:10:0c", "02:53:45:49:4e:45", peerPod, webIP, 80),
			[]crd.Observation{received("tunnel"), fwd(crd.Observation{Action: crd.ActionDelivered, OutputPort: "10"})}},
	}
}

func policies(ingress bool, port uint32) []string {
	if ingress && port == portDB {
		return []string{"prod/db-allow-web"}
	}
	return nil
}

// TestTaggedCopiesTrace traces each packet three times through the node's
// flows: untagged without copies, untagged with the copies (identical: a
// copy never disturbs other traffic) and tagged with them (the same
// outputs or drop, plus exactly one packet-in, which Observe turns into
// the expected observations).
func TestTaggedCopiesTrace(t *testing.T) {
	base := baseFlows(t, nodeState(pipeline.RoutedHost, pipeline.Encap, pipeline.Geneve))
	copies := tagged(t, base)
	node := Node{ClusterCIDRs: []netip.Prefix{clusterNet}, Policies: policies}
	for _, tc := range encapCases() {
		t.Run(tc.name, func(t *testing.T) {
			plain := traceWith(t, base, tc.p)
			withCopies := traceWith(t, append(slices.Clone(base), copies...), tc.p)
			if !reflect.DeepEqual(summary(plain), summary(withCopies)) {
				t.Errorf("untagged packet changed by the copies:\n%v\n%v", summary(plain), summary(withCopies))
			}
			tp := tc.p
			tp.DSCP = testTag
			tr := traceWith(t, append(slices.Clone(base), copies...), tp)
			got := summary(tr)
			for i := range got.outputs {
				got.outputs[i].Packet.DSCP = 0
			}
			if !reflect.DeepEqual(got.outputs, summary(plain).outputs) || (got.dropped == "") != (plain.Dropped == "") {
				t.Errorf("tagged packet took another path:\n%v\n%v", got, summary(plain))
			}
			if len(tr.PacketIns) != 1 {
				t.Fatalf("%d packet-ins, want 1:\n%s", len(tr.PacketIns), tr)
			}
			obs, done := Observe(injectedOf(tc.p), reportOf(tr.PacketIns[0]), node)
			if !reflect.DeepEqual(obs, tc.want) {
				t.Errorf("observations\n got %+v\nwant %+v\n%s", obs, tc.want, tr)
			}
			if wantDone := tc.want[len(tc.want)-1].Action != crd.ActionForwarded; done != wantDone {
				t.Errorf("done %v, want %v", done, wantDone)
			}
		})
	}
}

// TestTaggedCopiesNoEncap: leaving by the uplink to a peer's pod is
// Forwarded (the peer reports the rest), to the internet out of network.
func TestTaggedCopiesNoEncap(t *testing.T) {
	base := baseFlows(t, nodeState(pipeline.BridgedUplink, pipeline.NoEncap, 0))
	all := append(slices.Clone(base), tagged(t, base)...)
	node := Node{ClusterCIDRs: []netip.Prefix{clusterNet}}
	for _, tc := range []struct {
		dst  netip.Addr
		want crd.Action
	}{{peerPod, crd.ActionForwarded}, {externIP, crd.ActionForwardedOutOfNetwork}} {
		p := tcp(portWeb, "0a:00:00:00:01:0a", "0a:00:00:00:01:01", webIP, tc.dst, 80)
		p.DSCP = testTag
		tr := traceWith(t, all, p)
		if len(tr.PacketIns) != 1 {
			t.Fatalf("%s: %d packet-ins:\n%s", tc.dst, len(tr.PacketIns), tr)
		}
		obs, _ := Observe(injectedOf(p), reportOf(tr.PacketIns[0]), node)
		if last := obs[len(obs)-1]; last.Action != tc.want || last.TunnelDstIP != "" {
			t.Errorf("%s: %+v, want %s", tc.dst, last, tc.want)
		}
	}
}

type traceSummary struct {
	outputs   []pipeline.Emitted
	dropped   string
	packetIns int
}

func summary(tr *pipeline.Trace) traceSummary {
	return traceSummary{outputs: slices.Clone(tr.Outputs), dropped: tr.Dropped, packetIns: len(tr.PacketIns)}
}

func traceWith(t *testing.T, flows []*openflow.Flow, p pipeline.Packet) *pipeline.Trace {
	t.Helper()
	tr, err := pipeline.NewTracer(flows)
	if err != nil {
		t.Fatal(err)
	}
	res, err := tr.Trace(p)
	if err != nil {
		t.Fatalf("trace %s: %v", p, err)
	}
	return res
}

func injectedOf(p pipeline.Packet) Injected {
	return Injected{Tag: testTag, Proto: p.IPProto, SrcIP: p.IPSrc, DstIP: p.IPDst, SrcPort: p.SrcPort, DstPort: p.DstPort}
}

// reportOf is the Report FromPacketIn would decode from the tracer's
// packet-in.
func reportOf(pi pipeline.PacketIn) Report {
	p := pi.Packet
	r := Report{Table: uint8(pi.Table), Kind: pi.Userdata[2], Priority: uint16(pi.Userdata[3])<<8 | uint16(pi.Userdata[4]), Regs: pi.Regs, InPort: p.InPort, TunDst: p.TunDst,
		Packet: Packet{SrcIP: p.IPSrc, DstIP: p.IPDst, Proto: p.IPProto, SrcPort: p.SrcPort, DstPort: p.DstPort, Tag: p.DSCP,
			TTL: p.TTL, TCPFlags: uint8(p.TCPFlags)}}
	return r
}

// TestTaggedCopiesTieredTrace: through the pipeline tracer, a tagged
// packet that a tiered rule drops or rejects is reported by the copy of
// that rule's conj_id flow, and Observe names the rule from the copied
// flow's priority (TestTieredCopiesOnRealOVS shows the same with a real
// ovs-vswitchd); untagged packets go as they did without the copies.
func TestTaggedCopiesTieredTrace(t *testing.T) {
	s := nodeState(pipeline.RoutedHost, pipeline.Encap, pipeline.Geneve)
	base, err := pipeline.Build(s, 1)
	if err != nil {
		t.Fatal(err)
	}
	pf, err := pipeline.PolicyFlows(tieredPolicy, 1)
	if err != nil {
		t.Fatal(err)
	}
	base = append(base, pf...)
	copies := tagged(t, base)
	node := Node{ClusterCIDRs: []netip.Prefix{clusterNet}, Rules: tieredRules}
	for _, tc := range []struct {
		name string
		p    pipeline.Packet
		want crd.Observation
	}{
		{"Drop above a Drop", tcp(portWeb, "0a:00:00:00:01:0a", "0a:00:00:00:01:0b", webIP, dbIP, 5432),
			crd.Observation{Component: crd.ComponentNetworkPolicy, ComponentInfo: "IngressTier", Table: "IngressTier", Action: crd.ActionDropped,
				NetworkPolicy: "clusternetworkpolicies.crd.seine.io/secops", Rule: "deny-db"}},
		{"the lower Drop", tcp(portWeb, "0a:00:00:00:01:0a", "0a:00:00:00:01:0b", webIP, dbIP, 22),
			crd.Observation{Component: crd.ComponentNetworkPolicy, ComponentInfo: "IngressTier", Table: "IngressTier", Action: crd.ActionDropped,
				NetworkPolicy: "clusternetworkpolicies.crd.seine.io/app", Rule: "ingress rule 1"}},
		{"Allow above both", tcp(portWeb, "0a:00:00:00:01:0a", "0a:00:00:00:01:0b", webIP, dbIP, 80),
			crd.Observation{Component: crd.ComponentForwarding, Table: "Output", Action: crd.ActionDelivered, OutputPort: "11"}},
		{"Reject", tcp(portWeb, "0a:00:00:00:01:0a", "0a:00:00:00:01:01", webIP, peerPod, 80),
			crd.Observation{Component: crd.ComponentNetworkPolicy, ComponentInfo: "EgressTier", Table: "EgressTier", Action: crd.ActionRejected,
				NetworkPolicy: "clusternetworkpolicies.crd.seine.io/app", Rule: "reject-peer"}},
		{"baseline Drop", tcp(portDB, "0a:00:00:00:01:0b", "0a:00:00:00:01:0a", dbIP, webIP, 8080),
			crd.Observation{Component: crd.ComponentNetworkPolicy, ComponentInfo: "IngressBaseline", Table: "IngressBaseline", Action: crd.ActionDropped,
				NetworkPolicy: "clusternetworkpolicies.crd.seine.io/base", Rule: "baseline-db"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			plain := traceWith(t, base, tc.p)
			if withCopies := traceWith(t, append(slices.Clone(base), copies...), tc.p); !reflect.DeepEqual(summary(plain), summary(withCopies)) {
				t.Errorf("untagged packet changed by the copies:\n%v\n%v", summary(plain), summary(withCopies))
			}
			tp := tc.p
			tp.DSCP = testTag
			tr := traceWith(t, append(slices.Clone(base), copies...), tp)
			var own []pipeline.PacketIn
			for _, pi := range tr.PacketIns {
				if len(pi.Userdata) > 0 && pi.Userdata[0] == PacketInTraceflow {
					own = append(own, pi)
				}
			}
			if len(own) != 1 {
				t.Fatalf("%d trace packet-ins, want 1:\n%s", len(own), tr)
			}
			obs, _ := Observe(injectedOf(tc.p), reportOf(own[0]), node)
			if got := obs[len(obs)-1]; got != tc.want {
				t.Errorf("observation\n got %+v\nwant %+v\n%s", got, tc.want, tr)
			}
		})
	}
}
