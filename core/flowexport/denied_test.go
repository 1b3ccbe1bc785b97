package flowexport

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"
)

// A denied connection's attempts within a poll interval make one record
// (packets and bytes summed, first and last attempt), with the rule that
// denied it on its side and its ends named; go-ipfix's collector decodes
// it. The next interval starts again; beyond MaxDenied 5-tuples a poll
// keeps no more and counts them.
func TestDeniedOncePerInterval(t *testing.T) {
	x, err := New(Config{NodeName: "node-1", Collector: "127.0.0.1:1", Transport: "tcp"}, &scriptSource{}, testRes, nil)
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Unix(1_800_000_000, 0)
	drop := Policy{Type: PolicyCluster, Name: "deny-db", Rule: "no-ssh", Action: ActionDrop}
	syn := Denial{Proto: ProtoTCP, Src: netip.AddrPortFrom(podA, 40000), Dst: netip.AddrPortFrom(podB, 22), Bytes: 60, Ingress: true, Policy: drop}
	for i := range 3 { // a SYN and two retransmissions
		syn.Time = t0.Add(time.Duration(i) * time.Second)
		if !x.Denied(syn) {
			t.Fatal("denial not kept")
		}
	}
	iso := Denial{Time: t0, Proto: ProtoUDP, Src: netip.AddrPortFrom(podA, 5353), Dst: netip.AddrPortFrom(outside, 53), Bytes: 40,
		Policy: Policy{Type: PolicyK8s, Action: ActionDrop}}
	x.Denied(iso)
	recs := x.takeDenied()
	slices.SortFunc(recs, func(a, b Record) int { return int(a.Proto) - int(b.Proto) })
	if len(recs) != 2 {
		t.Fatalf("%d records, want one per 5-tuple: %+v", len(recs), recs)
	}
	r := recs[0]
	if r.EndReason != EndOfFlow || r.Packets != 3 || r.Bytes != 180 || r.PacketsDelta != 3 || !r.Start.Equal(t0) || !r.End.Equal(t0.Add(2*time.Second)) ||
		r.Ingress != drop || r.Egress != (Policy{}) || r.SrcPod.Name != "client" || r.DstPod.Name != "server-0" || r.FlowType != FlowInterNode {
		t.Errorf("denied TCP: %+v", r)
	}
	if r := recs[1]; r.Egress != iso.Policy || r.Ingress != (Policy{}) || r.Packets != 1 || r.FlowType != FlowToExternal {
		t.Errorf("denied UDP (isolation, egress): %+v", r)
	}
	if again := x.takeDenied(); len(again) != 0 {
		t.Errorf("the next interval starts empty: %+v", again)
	}
	for i := range MaxDenied + 10 {
		x.Denied(Denial{Proto: ProtoTCP, Src: netip.AddrPortFrom(podA, uint16(i)), Dst: netip.AddrPortFrom(podB, 22)})
	}
	if s := x.Stats(); s.ConnectionsDropped != 10 {
		t.Errorf("beyond MaxDenied: %d counted, want 10", s.ConnectionsDropped)
	}
	if n := len(x.takeDenied()); n != MaxDenied {
		t.Errorf("%d denied records, want MaxDenied", n)
	}
}

func TestDeniedDecodedByGoIPFIXCollector(t *testing.T) {
	addr, recs := startCollector(t, "tcp", "127.0.0.1:0")
	x := runExporter(t, Config{NodeName: "node-1", Collector: addr, Transport: "tcp",
		PollInterval: 20 * time.Millisecond, ActiveTimeout: time.Hour, IdleTimeout: time.Hour}, &scriptSource{})
	x.Denied(Denial{Time: time.Now(), Proto: ProtoTCP, Src: netip.AddrPortFrom(podA, 40000), Dst: netip.AddrPortFrom(podB, 22), Bytes: 60,
		Ingress: true, Policy: Policy{Type: PolicyNamespaced, Namespace: "web", Name: "guard", Rule: "no-ssh", Action: ActionReject}})
	got := collect(t, recs, 1, 20*time.Second)
	f := got[0].fields
	line := fmt.Sprintf("%v:%v->%v:%v reason=%v pkts=%v bytes=%v src=%v/%v dst=%v/%v in=%v:%v/%v/%v:%v out=%v:%v/%v/%v:%v",
		f["sourceIPv4Address"], f["sourceTransportPort"], f["destinationIPv4Address"], f["destinationTransportPort"],
		f["flowEndReason"], f["packetTotalCount"], f["octetTotalCount"],
		f["sourcePodNamespace"], f["sourcePodName"], f["destinationPodNamespace"], f["destinationPodName"],
		f["ingressNetworkPolicyType"], f["ingressNetworkPolicyNamespace"], f["ingressNetworkPolicyName"], f["ingressNetworkPolicyRuleName"], f["ingressNetworkPolicyRuleAction"],
		f["egressNetworkPolicyType"], f["egressNetworkPolicyNamespace"], f["egressNetworkPolicyName"], f["egressNetworkPolicyRuleName"], f["egressNetworkPolicyRuleAction"])
	want := "10.244.1.5:40000->10.244.2.7:22 reason=3 pkts=1 bytes=60 src=default/client dst=web/server-0 in=2:web/guard/no-ssh:3 out=0://:0"
	if !strings.EqualFold(line, want) {
		t.Errorf("decoded:\n%s\nwant:\n%s", line, want)
	}
}
