package openflow

import (
	"bytes"
	"context"
	"encoding/binary"
	"sync/atomic"
	"testing"
	"time"
)

// udpFrame builds an Ethernet/IPv4/UDP frame (checksums left zero: OVS does
// not verify them on this path).
func udpFrame(payload []byte) []byte {
	b := []byte{
		0x0a, 0, 0, 0, 0, 2, // dst
		0x0a, 0, 0, 0, 0, 1, // src
		0x08, 0x00,
		0x45, 0, 0, 0, 0, 0, 0, 0, 64, 17, 0, 0,
		10, 0, 0, 1,
		10, 0, 0, 2,
		0x30, 0x39, 0x00, 0x35, 0, 0, 0, 0,
	}
	b = append(b, payload...)
	binary.BigEndian.PutUint16(b[16:], uint16(len(b)-14))
	binary.BigEndian.PutUint16(b[38:], uint16(len(b)-34))
	return b
}

// TestPacketOutPacketInRoundTrip: a packet-out enters the pipeline, table 0
// loads registers, copies it to the local port through a group and goes
// to table 1, whose
// controller2 action (with userdata and pause) sends it back as an
// NXT_PACKET_IN2 carrying the registers and userdata. Then the flow, group
// and aggregate counters are read back.
func TestPacketOutPacketInRoundTrip(t *testing.T) {
	pins := make(chan *PacketIn, 4)
	_, c, ctx := testBridge(t, Config{PacketIn: func(p *PacketIn) { pins <- p }})
	if err := c.Bundle(ctx, AddGroup(&GroupEntry{ID: 1, Type: GroupTypeAll,
		Buckets: []Bucket{{ID: 0, Actions: NewActions().OutputLocal()}}})); err != nil {
		t.Fatal(err)
	}
	userdata := []byte{0xde, 0xad, 0xbe, 0xef, 0x01}
	if err := c.AddFlows(ctx,
		NewFlow(0, 100).Cookie(0xabc).Match(NewMatch().UDP().UDPDst(53)).
			Actions(NewActions().SetReg(0, 0x1234).Load(Reg(5).Range(8, 15), 0x7f).Group(1).GotoTable(1)),
		NewFlow(1, 100).Cookie(0xdef).Match(NewMatch().IP()).
			Actions(NewActions().Controller(Controller{Reason: ReasonAction, Userdata: userdata, Pause: true})),
	); err != nil {
		t.Fatal(err)
	}
	frame := udpFrame([]byte("seine traceflow"))
	if err := c.Apply(ctx, NewPacketOut(PortController, frame, NewActions().Output(PortTable))); err != nil {
		t.Fatalf("packet-out: %v", err)
	}
	var pin *PacketIn
	select {
	case pin = <-pins:
	case <-ctx.Done():
		t.Fatal("no packet-in")
	}
	t.Logf("packet-in: %s", pin)
	if !bytes.Equal(pin.Userdata, userdata) {
		t.Errorf("userdata = %x, want %x", pin.Userdata, userdata)
	}
	if !bytes.Equal(pin.Packet, frame) {
		t.Errorf("packet = %x, want %x", pin.Packet, frame)
	}
	if pin.Reg(0) != 0x1234 || pin.Reg(5) != 0x7f00 {
		t.Errorf("reg0=%#x reg5=%#x, want 0x1234 and 0x7f00", pin.Reg(0), pin.Reg(5))
	}
	// OVS reports no flow for packets injected by packet-out: table 0 and
	// no cookie property.
	if pin.TableID != 0 || pin.Cookie != NoCookie || pin.Reason != ReasonAction {
		t.Errorf("table=%d cookie=%#x reason=%d, want 0, none, action", pin.TableID, pin.Cookie, pin.Reason)
	}
	if pin.InPort() != PortController {
		t.Errorf("in_port = %s, want CONTROLLER", formatPort(pin.InPort()))
	}
	if len(pin.Continuation) == 0 {
		t.Error("paused controller action delivered no continuation")
	}

	fs, err := c.DumpFlows(ctx, 0, 0xabc, ^uint64(0))
	if err != nil {
		t.Fatal(err)
	}
	if len(fs) != 1 || fs[0].PacketCount != 1 || fs[0].ByteCount != uint64(len(frame)) {
		t.Errorf("table 0 flow stats = %+v, want one flow with 1 packet of %d bytes", fs, len(frame))
	}
	agg, err := c.Aggregate(ctx, TableAll, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	if agg.FlowCount != 2 || agg.PacketCount != 2 {
		t.Errorf("aggregate = %+v, want 2 flows, 2 packets", agg)
	}
	gs, err := c.GroupStats(ctx, GroupAll)
	if err != nil {
		t.Fatal(err)
	}
	if len(gs) != 1 || gs[0].GroupID != 1 || gs[0].PacketCount != 1 || len(gs[0].Buckets) != 1 || gs[0].Buckets[0].PacketCount != 1 {
		t.Errorf("group stats = %+v, want group 1 with one packet through its bucket", gs)
	}
	ts, err := c.TableStats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(ts) < 2 || ts[0].ActiveCount != 1 || ts[1].ActiveCount != 1 {
		t.Errorf("table stats = %+v, want one active flow in tables 0 and 1", ts[:min(2, len(ts))])
	}
	pd, err := c.PortDesc(ctx, PortAny)
	if err != nil {
		t.Fatal(err)
	}
	if len(pd) != 1 || pd[0].Name != "br0" || pd[0].PortNo != PortLocal {
		t.Errorf("port desc = %+v, want the br0 local port", pd)
	}
	ps, err := c.PortStats(ctx, PortAny)
	if err != nil {
		t.Fatal(err)
	}
	if len(ps) != 1 || ps[0].PortNo != PortLocal {
		t.Errorf("port stats = %+v, want the local port", ps)
	}
	// reset_counts on a strict modify zeroes the counters; delete by
	// out_group removes exactly the flow that uses the group.
	f0 := NewFlow(0, 100).Cookie(0xabc).Flags(FlagResetCounts).Match(NewMatch().UDP().UDPDst(53)).
		Actions(NewActions().SetReg(0, 0x1234).Load(Reg(5).Range(8, 15), 0x7f).Group(1).GotoTable(1))
	if err := c.Apply(ctx, ModifyFlowStrict(f0)); err != nil {
		t.Fatal(err)
	}
	if fs, err := c.DumpFlows(ctx, 0, 0, 0); err != nil || len(fs) != 1 || fs[0].PacketCount != 0 {
		t.Errorf("after modify with reset_counts: %+v, %v", fs, err)
	}
	del := DeleteFlows(TableAll, nil, 0, 0)
	del.OutGroup = 1
	if err := c.Apply(ctx, del); err != nil {
		t.Fatal(err)
	}
	if fs, err := c.DumpFlows(ctx, TableAll, 0, 0); err != nil || len(fs) != 1 || fs[0].Flow.CookieValue() != 0xdef {
		t.Errorf("after delete by out_group 1: %+v, %v", fs, err)
	}

	if err := c.Apply(ctx, AddMeter(&MeterEntry{ID: 9, Flags: MeterPktps | MeterCollectStats, Bands: []MeterBand{{Rate: 100}}})); err != nil {
		t.Fatal(err)
	}
	mst, err := c.MeterStats(ctx, MeterAll)
	if err != nil {
		t.Fatal(err)
	}
	if len(mst) != 1 || mst[0].MeterID != 9 || len(mst[0].Bands) != 1 {
		t.Errorf("meter stats = %+v, want meter 9 with one band", mst)
	}
}

// TestReconnectReplaysFlows: a Client survives an ovs-vswitchd restart and
// its OnConnect hook puts the flows back.
func TestReconnectReplaysFlows(t *testing.T) {
	d, c0, ctx := testBridge(t, Config{})
	c0.Close()
	flows := []*Flow{
		NewFlow(0, 10).Cookie(7).Match(NewMatch().InPort(1)).Actions(NewActions().Output(2)),
		NewFlow(1, 20).Cookie(7).Match(NewMatch().IP()).Actions(NewActions().CT(NewCT().Table(2).Zone(1))),
	}
	var connects atomic.Int32
	cl := NewClient("unix:"+d.MgmtSocketPath("br0"), Config{
		EchoInterval: 200 * time.Millisecond,
		BackoffMin:   20 * time.Millisecond,
		BackoffMax:   200 * time.Millisecond,
		OnConnect: func(ctx context.Context, c *Conn) error {
			connects.Add(1)
			return c.AddFlows(ctx, flows...)
		},
	})
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- cl.Run(runCtx) }()
	t.Cleanup(func() {
		stop()
		<-done
	})
	first, err := cl.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{flows[0].String(), flows[1].String()}
	equalLines(t, "flows before restart", dumpLines(ofctl(t, ctx, d, "dump-flows", "--no-stats", "br0")), sorted(want))

	if err := d.RestartVswitchd(ctx); err != nil {
		t.Fatalf("restart ovs-vswitchd: %v", err)
	}
	select {
	case <-first.Done():
	case <-ctx.Done():
		t.Fatal("old connection did not notice the restart")
	}
	var second *Conn
	for second == nil || second == first {
		if second, err = cl.Conn(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if n := connects.Load(); n != 2 {
		t.Errorf("OnConnect ran %d times, want 2", n)
	}
	equalLines(t, "flows after restart", dumpLines(ofctl(t, ctx, d, "dump-flows", "--no-stats", "br0")), sorted(want))
	// And the new connection works.
	if err := cl.Do(ctx, func(c *Conn) error { return c.Barrier(ctx) }); err != nil {
		t.Errorf("barrier on new connection: %v", err)
	}
}

// TestPacketInFromPort: a real packet (an ARP request from a veth in the
// daemon's netns) goes through two tables; the packet-in names the table and
// cookie of the flow that sent it.
func TestPacketInFromPort(t *testing.T) {
	pins := make(chan *PacketIn, 16)
	d, c, ctx := testBridge(t, Config{PacketIn: func(p *PacketIn) {
		select {
		case pins <- p:
		case <-time.After(100 * time.Millisecond):
		}
	}})
	run := func(prog string, args ...string) {
		t.Helper()
		if out, err := d.Command(ctx, prog, args...).CombinedOutput(); err != nil {
			t.Fatalf("%s %v: %v\n%s", prog, args, err, out)
		}
	}
	run("ip", "link", "add", "p0", "type", "veth", "peer", "name", "p1")
	run("ip", "link", "set", "p0", "up")
	run("ip", "addr", "add", "10.9.0.1/24", "dev", "p1")
	run("ip", "link", "set", "p1", "up")
	if _, err := d.Vsctl(ctx, "add-port", "br0", "p0", "--", "set", "interface", "p0", "ofport_request=1"); err != nil {
		t.Fatal(err)
	}
	if err := c.AddFlows(ctx,
		NewFlow(0, 10).Cookie(0x11).Match(NewMatch().InPort(1).ARP()).Actions(NewActions().SetReg(2, 0xbeef).GotoTable(3)),
		NewFlow(3, 10).Cookie(0x33).Match(NewMatch().ARP()).Actions(NewActions().Controller(Controller{Reason: ReasonAction, Userdata: []byte{9}})),
	); err != nil {
		t.Fatal(err)
	}
	// Writing a UDP datagram to 10.9.0.2 makes the kernel send ARP requests
	// out of p1 (nobody answers). Repeat until OVS polls the port and a
	// packet-in arrives.
	var pin *PacketIn
	for pin == nil {
		run("bash", "-c", "echo seine > /dev/udp/10.9.0.2/9")
		select {
		case pin = <-pins:
		case <-ctx.Done():
			t.Fatalf("no packet-in from the port:\n%s", ofctl(t, context.Background(), d, "dump-ports", "br0"))
		case <-time.After(100 * time.Millisecond):
		}
	}
	t.Logf("packet-in: %s", pin)
	if pin.TableID != 3 || pin.Cookie != 0x33 || pin.InPort() != 1 || pin.Reg(2) != 0xbeef || !bytes.Equal(pin.Userdata, []byte{9}) {
		t.Errorf("got table=%d cookie=%#x in_port=%d reg2=%#x userdata=%x; want 3, 0x33, 1, 0xbeef, 09",
			pin.TableID, pin.Cookie, pin.InPort(), pin.Reg(2), pin.Userdata)
	}
	if len(pin.Packet) < 42 || pin.Packet[12] != 0x08 || pin.Packet[13] != 0x06 {
		t.Errorf("packet is not an ARP frame: %x", pin.Packet)
	}
}

// TestReplacedFlowCounters pins what policy stats (core/policystats) rely
// on: an add that replaces a flow in place (same table, priority and match;
// a restarted agent's replay under a new cookie) keeps its packet and byte
// counters, though not its age (the duration starts again: it cannot tell
// a replaced flow from a new one), while a delete and an add start from
// zero.
func TestReplacedFlowCounters(t *testing.T) {
	_, c, ctx := testBridge(t, Config{})
	flow := func(cookie uint64) *Flow {
		return NewFlow(0, 100).Cookie(cookie).Match(NewMatch().UDP().UDPDst(53)).Actions(NewActions().OutputLocal())
	}
	if err := c.AddFlows(ctx, flow(1)); err != nil {
		t.Fatal(err)
	}
	frame := udpFrame([]byte("counted"))
	send := func(n int) {
		for range n {
			if err := c.Apply(ctx, NewPacketOut(PortController, frame, NewActions().Output(PortTable))); err != nil {
				t.Fatalf("packet-out: %v", err)
			}
		}
		if err := c.Barrier(ctx); err != nil {
			t.Fatal(err)
		}
	}
	dump := func() FlowStats {
		t.Helper()
		fs, err := c.DumpFlows(ctx, 0, 0, 0)
		if err != nil || len(fs) != 1 {
			t.Fatalf("dump: %d flows, %v", len(fs), err)
		}
		return fs[0]
	}
	send(3)
	time.Sleep(1100 * time.Millisecond)
	before := dump()
	if before.PacketCount != 3 || before.ByteCount != 3*uint64(len(frame)) || before.DurationSec < 1 {
		t.Fatalf("before: %+v", before.Stats)
	}
	if err := c.Bundle(ctx, AddFlow(flow(2))); err != nil {
		t.Fatal(err)
	}
	send(2)
	after := dump()
	t.Logf("before %+v, after the replacing add %+v", before.Stats, after.Stats)
	if after.Flow.CookieValue() != 2 || after.PacketCount != 5 || after.ByteCount != 5*uint64(len(frame)) || after.DurationSec >= before.DurationSec {
		t.Errorf("a replacing add: cookie %#x, %+v; want cookie 2, 5 packets, %d bytes, a new age", after.Flow.CookieValue(), after.Stats, 5*len(frame))
	}
	if err := c.Bundle(ctx, DeleteFlowStrict(flow(2)), AddFlow(flow(3))); err != nil {
		t.Fatal(err)
	}
	send(1)
	if fresh := dump(); fresh.PacketCount != 1 || fresh.ByteCount != uint64(len(frame)) {
		t.Errorf("delete and add: %+v, want 1 packet", fresh.Stats)
	}
}

// TestResumeContinuesPausedTables: a paused controller action's
// packet-in sent back as NXT_RESUME continues from the action after the
// pause with the registers and the conntrack state the packet had: table
// 1 pauses a tracked packet with reg0 loaded, and only the resumed packet
// reaches table 2's controller action, which matches both (a packet
// injected anew would be untracked, its registers zero).
func TestResumeContinuesPausedTables(t *testing.T) {
	pins := make(chan *PacketIn, 4)
	_, c, ctx := testBridge(t, Config{PacketIn: func(p *PacketIn) { pins <- p }})
	if err := c.AddFlows(ctx,
		NewFlow(0, 100).Match(NewMatch().UDP()).Actions(NewActions().CT(NewCT().Zone(7).Table(1))),
		NewFlow(1, 100).Match(NewMatch().UDP().CTState(CTTracked, CTTracked)).
			Actions(NewActions().SetReg(0, 0x1234).Controller(Controller{Reason: ReasonAction, Userdata: []byte("paused"), Pause: true}).GotoTable(2)),
		NewFlow(2, 100).Match(NewMatch().UDP().CTState(CTTracked, CTTracked).Reg(0, 0x1234, 0xffffffff)).
			Actions(NewActions().Controller(Controller{Reason: ReasonAction, Userdata: []byte("resumed")})),
	); err != nil {
		t.Fatal(err)
	}
	frame := udpFrame([]byte("dns answer"))
	if err := c.Apply(ctx, NewPacketOut(PortController, frame, NewActions().Output(PortTable))); err != nil {
		t.Fatalf("packet-out: %v", err)
	}
	next := func(what string) *PacketIn {
		t.Helper()
		select {
		case pin := <-pins:
			return pin
		case <-time.After(3 * time.Second):
			t.Fatalf("no packet-in %s", what)
		}
		return nil
	}
	pin := next("from the paused action")
	if string(pin.Userdata) != "paused" || len(pin.Continuation) == 0 {
		t.Fatalf("first packet-in: userdata %q, %d bytes of continuation", pin.Userdata, len(pin.Continuation))
	}
	select {
	case p := <-pins:
		t.Fatalf("a packet-in before the resume: %s", p)
	case <-time.After(200 * time.Millisecond):
	}
	if err := c.Apply(ctx, &Resume{PacketIn: pin}); err != nil {
		t.Fatalf("resume: %v", err)
	}
	pin = next("after the resume")
	if string(pin.Userdata) != "resumed" || pin.Reg(0) != 0x1234 || !bytes.Equal(pin.Packet, frame) {
		t.Errorf("after the resume: userdata %q reg0 %#x, packet equal %v", pin.Userdata, pin.Reg(0), bytes.Equal(pin.Packet, frame))
	}
}
