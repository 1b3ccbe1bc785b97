package traceflow

import (
	"bytes"
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	crd "github.com/seine-cni/seine/core/apis/crd/v1beta1"
	"github.com/seine-cni/seine/core/pipeline"
	"github.com/seine-cni/seine/ovs/openflow"
)

// liveFlows is the node's flows plus a live trace's copies (mode) and its
// tagging flow for TCP from web-0's port to dst (any port).
func liveFlows(t *testing.T, s pipeline.State, mode Mode, lm LiveMatch) []*openflow.Flow {
	t.Helper()
	base := baseFlows(t, s)
	copies, skipped, err := Copies(base, testTag, Cookie(1, testTag), mode)
	if err != nil || len(skipped) > 0 {
		t.Fatalf("%v, %d skipped", err, len(skipped))
	}
	tf, err := TagFlow(lm, testTag, mode.DroppedOnly, TagCookie(1, testTag), 20*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	return append(append(base, copies...), tf)
}

// TestLiveTrace traces real (untagged) packets of web-0 through a node
// holding a live trace's tagging flow and copies: the first packet of a
// new matching connection is tagged and reported once, with the
// observations an injected packet gets; it leaves with its tag only
// towards another node (the tunnel), and with DSCP 0 where it is
// delivered or leaves the cluster; a later packet of the connection, a
// packet the application marked with a DSCP and a packet that does not
// match are neither tagged nor changed.
func TestLiveTrace(t *testing.T) {
	s := nodeState(pipeline.RoutedHost, pipeline.Encap, pipeline.Geneve)
	node := Node{ClusterCIDRs: []netip.Prefix{clusterNet}, Policies: policies}
	mode := Mode{Live: true, ClusterCIDRs: []netip.Prefix{clusterNet}}
	for _, tc := range encapCases() {
		if tc.p.InPort != portWeb || tc.name == "spoofed source" {
			continue
		}
		t.Run(tc.name, func(t *testing.T) {
			lm := LiveMatch{InPort: portWeb, Src: webIP, Dst: tc.p.IPDst, Proto: ProtoTCP}
			tracer, err := pipeline.NewTracer(liveFlows(t, s, mode, lm))
			if err != nil {
				t.Fatal(err)
			}
			plain := traceWith(t, baseFlows(t, s), tc.p)
			tr, err := tracer.Trace(tc.p)
			if err != nil {
				t.Fatal(err)
			}
			if len(tr.PacketIns) != 1 {
				t.Fatalf("%d packet-ins, want 1:\n%s", len(tr.PacketIns), tr)
			}
			r := reportOf(tr.PacketIns[0])
			if r.Packet.Tag != testTag {
				t.Errorf("reported packet's DSCP %d, want the tag", r.Packet.Tag)
			}
			in := Injected{Tag: testTag, Live: true, Proto: ProtoTCP, SrcIP: webIP, DstIP: tc.p.IPDst}
			if !in.Matches(r) {
				t.Errorf("live trace does not take its report %+v", r.Packet)
			}
			if obs, _ := Observe(in, r, node); !reflect.DeepEqual(obs, tc.want) {
				t.Errorf("observations\n got %+v\nwant %+v", obs, tc.want)
			}
			got := summary(tr)
			for i, o := range got.outputs {
				want := uint8(0)
				if o.Port == portTunnel {
					want = testTag // the next node needs it
				}
				if o.Packet.DSCP != want {
					t.Errorf("output to port %d with DSCP %d, want %d", o.Port, o.Packet.DSCP, want)
				}
				got.outputs[i].Packet.DSCP = 0
			}
			if !reflect.DeepEqual(got.outputs, summary(plain).outputs) || (got.dropped == "") != (plain.Dropped == "") {
				t.Errorf("the live packet took another path:\n%v\n%v", got, summary(plain))
			}
			if tr.Dropped != "" {
				return // nothing was committed: the next packet is new again
			}
			// The connection's next packet is established: not tagged.
			next := tc.p
			next.TCPFlags = 0x10
			tr2, err := tracer.Trace(next)
			if err != nil {
				t.Fatal(err)
			}
			if len(tr2.PacketIns) != 0 || slices.ContainsFunc(tr2.Outputs, func(e pipeline.Emitted) bool { return e.Packet.DSCP != 0 }) {
				t.Errorf("an established packet was tagged:\n%s", tr2)
			}
		})
	}
	// Neither an application's DSCP nor other traffic is touched.
	lm := LiveMatch{InPort: portWeb, Src: webIP, Dst: dbIP, Proto: ProtoTCP, DstPort: 5432}
	flows := liveFlows(t, s, mode, lm)
	for name, p := range map[string]pipeline.Packet{
		"marked EF by the application": func() pipeline.Packet {
			p := tcp(portWeb, "0a:00:00:00:01:0a", "0a:00:00:00:01:0b", webIP, dbIP, 5432)
			p.DSCP = 46
			return p
		}(),
		"another port":   tcp(portWeb, "0a:00:00:00:01:0a", "0a:00:00:00:01:0b", webIP, dbIP, 5433),
		"another source": tcp(portTunnel, "52:54:00:00:10:0c", "02:53:45:49:4e:45", peerPod, dbIP, 5432),
	} {
		tr := traceWith(t, flows, p)
		plain := traceWith(t, baseFlows(t, s), p)
		if len(tr.PacketIns) != 0 || !reflect.DeepEqual(summary(tr), summary(plain)) {
			t.Errorf("%s: changed by the live trace:\n%s\nwithout it:\n%s", name, tr, plain)
		}
	}
}

// TestLiveTraceNoEncap: towards a peer's pod the packet leaves by the
// uplink with its tag (the peer reports the rest); to the internet
// without it.
func TestLiveTraceNoEncap(t *testing.T) {
	s := nodeState(pipeline.BridgedUplink, pipeline.NoEncap, 0)
	mode := Mode{Live: true, ClusterCIDRs: []netip.Prefix{clusterNet}}
	for dst, want := range map[netip.Addr]uint8{peerPod: testTag, externIP: 0} {
		flows := liveFlows(t, s, mode, LiveMatch{InPort: portWeb, Dst: dst})
		tr := traceWith(t, flows, tcp(portWeb, "0a:00:00:00:01:0a", "0a:00:00:00:01:01", webIP, dst, 80))
		if len(tr.PacketIns) != 1 || len(tr.Outputs) != 1 || tr.Outputs[0].Packet.DSCP != want {
			t.Errorf("%s: want one packet-in and one output with DSCP %d:\n%s", dst, want, tr)
		}
	}
}

// TestLiveDroppedOnly: a droppedOnly trace reports the packet a policy
// drops, and nothing of a packet it delivers (whose tag it clears).
func TestLiveDroppedOnly(t *testing.T) {
	s := nodeState(pipeline.RoutedHost, pipeline.Encap, pipeline.Geneve)
	mode := Mode{Live: true, DroppedOnly: true, ClusterCIDRs: []netip.Prefix{clusterNet}}
	tracer, err := pipeline.NewTracer(liveFlows(t, s, mode, LiveMatch{Dst: dbIP, Proto: ProtoTCP}))
	if err != nil {
		t.Fatal(err)
	}
	ok, err := tracer.Trace(tcp(portWeb, "0a:00:00:00:01:0a", "0a:00:00:00:01:0b", webIP, dbIP, 5432))
	if err != nil {
		t.Fatal(err)
	}
	if len(ok.PacketIns) != 0 || len(ok.Outputs) != 1 || ok.Outputs[0].Packet.DSCP != 0 {
		t.Errorf("delivered packet: want no packet-in and DSCP 0:\n%s", ok)
	}
	for i := range 2 { // dropped packets stay new: each is tagged again
		bad, err := tracer.Trace(tcp(portWeb, "0a:00:00:00:01:0a", "0a:00:00:00:01:0b", webIP, dbIP, 80))
		if err != nil {
			t.Fatal(err)
		}
		if len(bad.PacketIns) != 1 || bad.Dropped == "" {
			t.Fatalf("dropped packet %d: want one packet-in:\n%s", i, bad)
		}
		obs, done := Observe(Injected{Tag: testTag, Live: true, Proto: ProtoTCP, DstIP: dbIP}, reportOf(bad.PacketIns[0]), Node{Policies: policies})
		if last := obs[len(obs)-1]; !done || last.Action != crd.ActionDropped || last.NetworkPolicy != "prod/db-allow-web" {
			t.Errorf("observations %+v", obs)
		}
	}
}

func TestTagFlow(t *testing.T) {
	f, err := TagFlow(LiveMatch{InPort: portWeb, Src: webIP, Dst: dbIP, Proto: ProtoUDP, SrcPort: 53, DstPort: 5353}, 9, false, TagCookie(3, 9), 1500*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"table=31", "priority=1073", "hard_timeout=2", "ct_state=+new-inv+trk", "in_port=10", "nw_src=10.244.1.10",
		"nw_dst=10.244.1.11", "tp_src=53", "tp_dst=5353", "nw_tos=0", "set_field:9->ip_dscp", "resubmit(,31)"} {
		if !strings.Contains(f.String(), want) {
			t.Errorf("tagging flow %s lacks %q", f, want)
		}
	}
	if c, m := Selector(9); f.CookieValue()&m != c {
		t.Errorf("Selector(9) misses the tagging flow %s", pipeline.Cookie(f.CookieValue()))
	}
	if c, m := TagSelector(9); Cookie(3, 9)&m == c {
		t.Errorf("TagSelector(9) takes the copies too")
	}
	for _, bad := range []LiveMatch{{Proto: ProtoICMP, DstPort: 1}, {DstPort: 80}} {
		if _, err := TagFlow(bad, 9, false, 0, time.Second); err == nil {
			t.Errorf("%+v accepted", bad)
		}
	}
	if _, err := TagFlow(LiveMatch{}, 0, false, 0, time.Second); err == nil {
		t.Error("tag 0 accepted")
	}
}

func TestMergeMatch(t *testing.T) {
	m := openflow.NewMatch().Reg(0, 0x200, 0x200).IP()
	got, ok := mergeMatch(m.Bytes(), openflow.NewMatch().Reg(0, 0x10, 0xf0).Bytes())
	if !ok || !strings.Contains(openflow.MatchFromBytes(got).String(), "reg0=0x210/0x2f0") {
		t.Errorf("merged %v %s", ok, openflow.MatchFromBytes(got))
	}
	if _, ok := mergeMatch(openflow.NewMatch().Reg(0, 0x30, 0xf0).Bytes(), openflow.NewMatch().Reg(0, 0x10, 0xf0).Bytes()); ok {
		t.Error("conflicting values merged")
	}
	// OVS's flow stats give reg0 and reg1 as xreg0 (OXM_OF_PKT_REG0): the
	// register is merged into its half, never added twice.
	x := openflow.NewMatch().IP().FieldMasked(openflow.XReg(0), []byte{0, 0, 2, 0, 0, 0, 0, 2}, []byte{0, 0, 2, 0, 0xff, 0xff, 0xff, 0xff})
	got, ok = mergeMatch(x.Bytes(), openflow.NewMatch().Reg(0, 0x10, 0xf0).Bytes())
	if s := openflow.MatchFromBytes(got).String(); !ok || !strings.Contains(s, "reg0=0x210/0x2f0") || !strings.Contains(s, "reg1=0x2") || strings.Count(s, "reg0") != 1 {
		t.Errorf("merged into xreg0: %v %s", ok, s)
	}
	if _, ok := mergeMatch(x.Bytes(), openflow.NewMatch().Reg(1, 0x3, 0xffffffff).Bytes()); ok {
		t.Error("reg1=0x3 merged with xreg0's reg1=0x2")
	}
}

// TestOverlappingLiveTraces: two live traces on one node whose matches
// overlap both complete. A packet both match is tagged for exactly one of
// them (a DSCP holds one tag); once that trace took its packet and its
// tagging flow is gone, the next connection is tagged for the other. A
// trace that takes one packet goes before a droppedOnly one (which keeps
// tagging until a packet is dropped, and would keep every packet from the
// other), whatever their tags.
func TestOverlappingLiveTraces(t *testing.T) {
	s := nodeState(pipeline.RoutedHost, pipeline.Encap, pipeline.Geneve)
	mode := Mode{Live: true, ClusterCIDRs: []netip.Prefix{clusterNet}}
	type trace struct {
		tag         uint8
		droppedOnly bool
		lm          LiveMatch
	}
	wide := LiveMatch{InPort: portWeb, Src: webIP, Proto: ProtoTCP}                              // web-0's TCP to anywhere
	narrow := LiveMatch{InPort: portWeb, Src: webIP, Dst: peerPod, Proto: ProtoTCP, DstPort: 80} // to the peer's pod on 80
	for _, tc := range []struct {
		name  string
		a, b  trace
		first uint8 // the tag the first packet must get; 0: either
	}{
		{"two one-packet traces", trace{5, false, wide}, trace{9, false, narrow}, 0},
		{"the same match", trace{5, false, narrow}, trace{9, false, narrow}, 0},
		{"one-packet before droppedOnly", trace{5, false, narrow}, trace{9, true, wide}, 5},
		{"one-packet before droppedOnly, lower tag", trace{9, true, narrow}, trace{5, false, wide}, 5},
	} {
		t.Run(tc.name, func(t *testing.T) {
			base := baseFlows(t, s)
			flows := slices.Clone(base)
			for _, tr := range []trace{tc.a, tc.b} {
				m := mode
				m.DroppedOnly = tr.droppedOnly
				copies, skipped, err := Copies(base, tr.tag, Cookie(1, tr.tag), m)
				if err != nil || len(skipped) > 0 {
					t.Fatalf("%v, %d skipped", err, len(skipped))
				}
				f, err := TagFlow(tr.lm, tr.tag, tr.droppedOnly, TagCookie(1, tr.tag), 20*time.Second)
				if err != nil {
					t.Fatal(err)
				}
				flows = append(append(flows, copies...), f)
			}
			p := tcp(portWeb, "0a:00:00:00:01:0a", "0a:00:00:00:01:01", webIP, peerPod, 80)
			tagOf := func(flows []*openflow.Flow) uint8 {
				t.Helper()
				tr := traceWith(t, flows, p)
				var tags []uint8
				for _, o := range tr.Outputs {
					if o.Packet.DSCP != 0 {
						tags = append(tags, o.Packet.DSCP)
					}
				}
				if len(tags) != 1 {
					t.Fatalf("the packet left with tags %v, want one (it goes to the tunnel):\n%s", tags, tr)
				}
				return tags[0]
			}
			first := tagOf(flows)
			if first != tc.a.tag && first != tc.b.tag || tc.first != 0 && first != tc.first {
				t.Fatalf("first packet tagged %d, want %d", first, tc.first)
			}
			// The agent removes the trace's tagging flow once it took its
			// packet (a droppedOnly one stays until a packet was dropped:
			// not here, these packets are delivered).
			if (first == tc.a.tag && tc.a.droppedOnly) || (first == tc.b.tag && tc.b.droppedOnly) {
				t.Fatalf("the droppedOnly trace took the packet")
			}
			rest := slices.DeleteFunc(onSwitch(flows), func(f *openflow.Flow) bool {
				return f.CookieValue() == TagCookie(1, first)
			})
			other := tc.a.tag + tc.b.tag - first
			if got := tagOf(rest); got != other {
				t.Errorf("next connection tagged %d, want %d (the other trace)", got, other)
			}
		})
	}
}

// onSwitch is what a switch holds after flows were added in order: a flow
// with the table, priority and match of an earlier one replaces it.
func onSwitch(flows []*openflow.Flow) []*openflow.Flow {
	var out []*openflow.Flow
	for _, f := range flows {
		i := slices.IndexFunc(out, func(o *openflow.Flow) bool {
			return o.TableID() == f.TableID() && o.Priority() == f.Priority() && bytes.Equal(o.MatchBytes(), f.MatchBytes())
		})
		if i >= 0 {
			out[i] = f
			continue
		}
		out = append(out, f)
	}
	return out
}
