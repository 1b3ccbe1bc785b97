package flowexport

import (
	"cmp"
	"encoding/binary"
	"net/netip"
	"slices"
	"testing"
	"time"
)

type staticResolver struct {
	pods  map[netip.Addr]Pod
	svcs  map[netip.AddrPort]Service
	rules map[uint32]Policy
}

func (r staticResolver) Rule(id uint32) (Policy, bool) { p, ok := r.rules[id]; return p, ok }

func (r staticResolver) Pod(ip netip.Addr) (Pod, bool) { p, ok := r.pods[ip]; return p, ok }
func (r staticResolver) Service(proto uint8, ip netip.Addr, port uint16) (Service, bool) {
	s, ok := r.svcs[netip.AddrPortFrom(ip, port)]
	return s, ok
}

var (
	podA    = netip.MustParseAddr("10.244.1.5")
	podB    = netip.MustParseAddr("10.244.2.7")
	podC    = netip.MustParseAddr("10.244.1.9")
	svcIP   = netip.MustParseAddr("10.96.0.10")
	outside = netip.MustParseAddr("192.0.2.1")
	testRes = staticResolver{
		pods: map[netip.Addr]Pod{
			podA: {"default", "client", "node-1"},
			podB: {"web", "server-0", "node-2"},
			podC: {"web", "server-1", "node-1"},
		},
		svcs: map[netip.AddrPort]Service{netip.AddrPortFrom(svcIP, 80): {"web", "frontend", "http"}},
		rules: map[uint32]Policy{
			egressRule:  {Type: PolicyNamespaced, Namespace: "default", Name: "client-out", Rule: "to-web", Action: ActionAllow},
			ingressRule: {Type: PolicyK8s, Namespace: "web", Name: "allow-client", Rule: "ingress/0", Action: ActionAllow},
		},
	}
)

const (
	egressRule  uint32 = 0x29dabaf2
	ingressRule uint32 = 0x5d4f5710
)

// withRules leaves the allow rules' IDs in c's ct_label, where the
// pipeline's ConntrackCommit puts them: egress in bits 64..95, ingress in
// 96..127 (the label is printed most significant byte first).
func withRules(c Conn, egress, ingress uint32) Conn {
	binary.BigEndian.PutUint32(c.Labels[0:], ingress)
	binary.BigEndian.PutUint32(c.Labels[4:], egress)
	return c
}

func tcpConn(src netip.Addr, sport uint16, dst netip.Addr, dport uint16, endpoint netip.Addr, state string, timeout uint32) Conn {
	return Conn{
		Proto: ProtoTCP, Zone: 65520, Timeout: timeout, TCPState: state, closed: state == "TIME_WAIT",
		Orig:  Tuple{Src: src, Dst: dst, SrcPort: sport, DstPort: dport},
		Reply: Tuple{Src: endpoint, Dst: src, SrcPort: dport, DstPort: sport},
	}
}

func counted(c Conn, p, b, rp, rb uint64) Conn {
	c.Counted, c.OrigCnt, c.ReplyCnt = true, Counters{p, b}, Counters{rp, rb}
	return c
}

func TestTableTimeoutsAndDeltas(t *testing.T) {
	tb := Table{Resolver: testRes, ActiveTimeout: 30 * time.Second, IdleTimeout: 15 * time.Second}
	t0 := time.Unix(1_800_000_000, 0)
	at := func(s int) time.Time { return t0.Add(time.Duration(s) * time.Second) }
	c := tcpConn(podA, 40000, podB, 8080, podB, "ESTABLISHED", 86400)

	if r := tb.Update([]Conn{counted(c, 10, 1000, 8, 4000)}, at(0)); len(r) != 0 {
		t.Fatalf("a new connection is exported at its active timeout, not at once: %+v", r)
	}
	if r := tb.Update([]Conn{counted(c, 20, 2000, 16, 8000)}, at(25)); len(r) != 0 {
		t.Fatalf("before the active timeout: %+v", r)
	}
	r := tb.Update([]Conn{counted(c, 30, 3000, 24, 12000)}, at(30))
	if len(r) != 1 || r[0].EndReason != EndActive || r[0].Packets != 30 || r[0].PacketsDelta != 30 ||
		r[0].BytesDelta != 3000 || r[0].RevBytesDelta != 12000 || !r[0].Start.Equal(at(0)) || !r[0].End.Equal(at(30)) {
		t.Fatalf("active export: %+v", r)
	}
	r = tb.Update([]Conn{counted(c, 35, 3500, 26, 13000)}, at(60))
	if len(r) != 1 || r[0].EndReason != EndActive || r[0].PacketsDelta != 5 || r[0].BytesDelta != 500 || r[0].RevPacketsDelta != 2 || r[0].RevBytes != 13000 {
		t.Fatalf("second active export carries the delta since the first: %+v", r)
	}
	// No packet from 60 on: idle once at 75, then nothing while it stays idle.
	if r = tb.Update([]Conn{counted(c, 35, 3500, 26, 13000)}, at(70)); len(r) != 0 {
		t.Fatalf("idle for 10 s < 15 s: %+v", r)
	}
	r = tb.Update([]Conn{counted(c, 35, 3500, 26, 13000)}, at(75))
	if len(r) != 1 || r[0].EndReason != EndIdle || r[0].PacketsDelta != 0 {
		t.Fatalf("idle export: %+v", r)
	}
	if r = tb.Update([]Conn{counted(c, 35, 3500, 26, 13000)}, at(200)); len(r) != 0 {
		t.Fatalf("an idle connection is exported once: %+v", r)
	}
	// It moves again, then closes: end of flow with the last delta, once.
	r = tb.Update([]Conn{counted(c, 40, 4000, 30, 14000)}, at(205))
	if len(r) != 1 || r[0].EndReason != EndActive || r[0].PacketsDelta != 5 {
		t.Fatalf("moving again past the active timeout: %+v", r)
	}
	closed := counted(c, 42, 4100, 31, 14100)
	closed.TCPState, closed.closed = "TIME_WAIT", true
	r = tb.Update([]Conn{closed}, at(210))
	if len(r) != 1 || r[0].EndReason != EndOfFlow || r[0].PacketsDelta != 2 || r[0].TCPState != "TIME_WAIT" {
		t.Fatalf("end of flow: %+v", r)
	}
	if r = tb.Update([]Conn{closed}, at(215)); len(r) != 0 {
		t.Fatalf("a connection in TIME_WAIT is exported once: %+v", r)
	}
	if r = tb.Update(nil, at(240)); len(r) != 0 || tb.Len() != 0 {
		t.Fatalf("gone after its end was sent: %d records, %d left", len(r), tb.Len())
	}
}

func TestTableWithoutCounters(t *testing.T) {
	// OVS's userspace conntrack has no counters: activity is a re-armed
	// timeout, and a connection that vanishes is exported as ended.
	tb := Table{ActiveTimeout: 30 * time.Second, IdleTimeout: 15 * time.Second}
	t0 := time.Unix(1_800_000_000, 0)
	c := tcpConn(podA, 40000, podB, 8080, podB, "ESTABLISHED", 300)
	tb.Update([]Conn{c}, t0)
	c.Timeout = 290 // fell: no packet
	tb.Update([]Conn{c}, t0.Add(10*time.Second))
	c.Timeout = 300 // re-armed at 14 s: active
	if r := tb.Update([]Conn{c}, t0.Add(14*time.Second)); len(r) != 0 {
		t.Fatalf("%+v", r)
	}
	c.Timeout = 290
	if r := tb.Update([]Conn{c}, t0.Add(24*time.Second)); len(r) != 0 {
		t.Fatalf("idle only 10 s since the re-arm: %+v", r)
	}
	r := tb.Update(nil, t0.Add(26*time.Second))
	if len(r) != 1 || r[0].EndReason != EndOfFlow || r[0].Counted || r[0].Packets != 0 {
		t.Fatalf("vanished connection: %+v", r)
	}
}

func TestTableNamesEnds(t *testing.T) {
	tb := Table{Resolver: testRes, ActiveTimeout: time.Second, IdleTimeout: time.Hour}
	t0 := time.Unix(1_800_000_000, 0)
	conns := []Conn{
		tcpConn(podA, 1, svcIP, 80, podB, "ESTABLISHED", 9),                                    // Service, DNATed to another node's pod
		withRules(tcpConn(podA, 2, podC, 80, podC, "ESTABLISHED", 9), egressRule, ingressRule), // same node, both sides isolated
		tcpConn(podA, 3, outside, 443, outside, "ESTABLISHED", 9),
		tcpConn(outside, 4, podB, 80, podB, "ESTABLISHED", 9),
	}
	tb.Update(conns, t0)
	r := tb.Update(conns, t0.Add(time.Second))
	if len(r) != 4 {
		t.Fatalf("got %d records", len(r))
	}
	byPort := map[uint16]Record{}
	for _, x := range r {
		byPort[x.SrcPort] = x
	}
	s := byPort[1]
	if s.SrcPod != (Pod{"default", "client", "node-1"}) || s.DstPod != (Pod{"web", "server-0", "node-2"}) ||
		s.Service != (Service{"web", "frontend", "http"}) || s.ServiceIP != svcIP || s.Dst != svcIP || s.FlowType != FlowInterNode {
		t.Errorf("service connection: %+v", s)
	}
	if x := byPort[2]; x.FlowType != FlowIntraNode || x.DstPod.Name != "server-1" || x.Service.Name != "" ||
		x.Egress != testRes.rules[egressRule] || x.Ingress != testRes.rules[ingressRule] {
		t.Errorf("same-node connection: %+v", x)
	}
	if x := byPort[1]; x.Egress != (Policy{}) || x.Ingress != (Policy{}) {
		t.Errorf("no rule in ct_label, yet policies named: %+v", x)
	}
	if x := byPort[3]; x.FlowType != FlowToExternal || x.DstPod.Name != "" {
		t.Errorf("to external: %+v", x)
	}
	if x := byPort[4]; x.FlowType != FlowFromExternal || x.SrcPod.Name != "" || x.DstPod.Name != "server-0" {
		t.Errorf("from external: %+v", x)
	}
}

func TestTableBound(t *testing.T) {
	tb := Table{ActiveTimeout: time.Minute, IdleTimeout: time.Minute, MaxConnections: 3}
	var conns []Conn
	for p := uint16(1); p <= 5; p++ {
		conns = append(conns, tcpConn(podA, p, podB, 80, podB, "ESTABLISHED", 9))
	}
	tb.Update(conns, time.Unix(0, 0))
	if tb.Len() != 3 || tb.Dropped != 2 {
		t.Fatalf("len %d dropped %d, want 3 and 2", tb.Len(), tb.Dropped)
	}
	// Once room is made, the next poll takes the others.
	r := tb.Update(conns[3:], time.Unix(5, 0))
	if len(r) != 3 || tb.Len() != 2 || tb.Dropped != 2 {
		t.Fatalf("%d records (want the 3 vanished ones ended), %d followed", len(r), tb.Len())
	}
}

// TestTableEmitsInChunks: with Emit set, Update hands the records due to it
// in chunks of emitChunk and returns the rest; together they are every
// record Update without Emit returns, each once.
func TestTableEmitsInChunks(t *testing.T) {
	n := 2*emitChunk + 100
	conns := make([]Conn, n)
	for i := range conns {
		conns[i] = tcpConn(podA, uint16(10000+i), podB, 80, podB, "ESTABLISHED", 86400)
	}
	t0 := time.Unix(1_800_000_000, 0)
	plain := Table{Resolver: testRes, ActiveTimeout: time.Second, IdleTimeout: time.Hour}
	var chunks [][]Record
	chunked := plain
	chunked.Emit = func(recs []Record) {
		if len(recs) != emitChunk {
			t.Errorf("a chunk of %d records, want %d", len(recs), emitChunk)
		}
		chunks = append(chunks, append([]Record(nil), recs...))
	}
	// The first poll sees every connection new: none is due yet. The
	// second ends 100 of them (gone from the dump) and finds the rest
	// past their active timeout.
	for _, tb := range []*Table{&plain, &chunked} {
		if recs := tb.Update(conns, t0); len(recs) != 0 {
			t.Fatalf("first poll: %d records", len(recs))
		}
	}
	want := plain.Update(conns[100:], t0.Add(2*time.Second))
	got := chunked.Update(conns[100:], t0.Add(2*time.Second))
	if len(chunks) != 2 {
		t.Fatalf("%d chunks emitted, want 2", len(chunks))
	}
	all := append(append(chunks[0], chunks[1]...), got...)
	if len(all) != len(want) || len(want) != n {
		t.Fatalf("%d records emitted and returned, want %d (%d without Emit)", len(all), n, len(want))
	}
	// Connections gone from the dump end in the table's map order.
	for _, l := range [][]Record{want, all} {
		slices.SortFunc(l, func(a, b Record) int { return cmp.Compare(a.SrcPort, b.SrcPort) })
	}
	for i := range want {
		if all[i].SrcPort != want[i].SrcPort || all[i].EndReason != want[i].EndReason {
			t.Fatalf("record %d: port %d reason %d, want port %d reason %d", i, all[i].SrcPort, all[i].EndReason, want[i].SrcPort, want[i].EndReason)
		}
	}
}
