package pipeline

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/seine-cni/seine/ovs/appctl"
	"github.com/seine-cni/seine/ovs/openflow"
	"github.com/seine-cni/seine/test/ovsdaemon"
)

// These tests install the flows into a real ovs-vswitchd (userspace netdev
// datapath, in a private network namespace) through ovs/openflow bundles,
// and check that OVS holds exactly the golden text and forwards packets
// the way the tracer says.

const testBridge = "br-int"

// ovsNode is a private OVS with one bridge set up for a scenario.
type ovsNode struct {
	d    *ovsdaemon.Daemon
	conn *openflow.Conn
	ac   *appctl.Client
	ctx  context.Context
}

// startOVS starts the private OVS shared by a test's subtests.
func startOVS(t *testing.T) (*ovsdaemon.Daemon, *appctl.Client, context.Context) {
	t.Helper()
	d := ovsdaemon.StartForTest(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	ac, err := appctl.DialTarget(ctx, d.RunDir(), "ovs-vswitchd")
	if err != nil {
		t.Fatalf("appctl: %v", err)
	}
	t.Cleanup(func() { ac.Close() })
	return d, ac, ctx
}

// newBridge creates br-int with the ports of st (internal ports for the
// gateway, pods and uplink; a flow-based tunnel port), deleted in Cleanup,
// and connects to it.
func newBridge(t *testing.T, d *ovsdaemon.Daemon, ac *appctl.Client, ctx context.Context, st State) *ovsNode {
	t.Helper()
	n := st.Node
	args := []string{"add-br", testBridge, "--", "set", "bridge", testBridge, "datapath_type=netdev",
		"protocols=OpenFlow15", "fail_mode=secure"}
	if n.NodeMAC != nil {
		args = append(args, "other_config:hwaddr="+n.NodeMAC.String())
	}
	port := func(name string, ofport uint32, opts ...string) {
		args = append(args, "--", "add-port", testBridge, name, "--", "set", "interface", name,
			"ofport_request="+strconv.Itoa(int(ofport)))
		args = append(args, opts...)
	}
	port("gw0", n.Ports.Gateway, "type=internal")
	if n.Ports.Uplink != 0 {
		port("uplink", n.Ports.Uplink, "type=internal")
	}
	if n.Ports.Tunnel != 0 {
		port("tun0", n.Ports.Tunnel, "type="+n.Tunnel.String(), "options:remote_ip=flow", "options:key=flow")
	}
	for _, p := range st.Pods {
		port("pod"+strconv.Itoa(int(p.Port)), p.Port, "type=internal")
	}
	if out, err := d.Vsctl(ctx, args...); err != nil {
		t.Fatalf("create bridge: %v\n%s", err, out)
	}
	t.Cleanup(func() {
		if out, err := d.Vsctl(context.Background(), "del-br", testBridge); err != nil {
			t.Errorf("del-br: %v\n%s", err, out)
		}
	})
	c, err := openflow.Dial(ctx, "unix:"+d.MgmtSocketPath(testBridge), openflow.Config{})
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return &ovsNode{d: d, conn: c, ac: ac, ctx: ctx}
}

// dump returns the bridge's flows as ovs-ofctl prints them, sorted like Sort.
func (o *ovsNode) dump(t *testing.T) []string {
	t.Helper()
	out, err := o.d.Ofctl(o.ctx, "-O", "OpenFlow15", "dump-flows", "--no-stats", testBridge)
	if err != nil {
		t.Fatalf("dump-flows: %v", err)
	}
	var lines []string
	for _, l := range strings.Split(out, "\n") {
		if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "OFPST_") && !strings.HasPrefix(l, "NXST_") {
			lines = append(lines, l)
		}
	}
	return sortedLines(lines)
}

var tableRE, prioRE = regexp.MustCompile(`table=(\d+),`), regexp.MustCompile(`priority=(\d+)`)

// sortedLines orders flow lines by table, priority (highest first) and text.
func sortedLines(lines []string) []string {
	num := func(re *regexp.Regexp, l string) int {
		if m := re.FindStringSubmatch(l); m != nil {
			n, _ := strconv.Atoi(m[1])
			return n
		}
		return 0
	}
	out := slices.Clone(lines)
	slices.SortStableFunc(out, func(a, b string) int {
		if c := num(tableRE, a) - num(tableRE, b); c != 0 {
			return c
		}
		if c := num(prioRE, b) - num(prioRE, a); c != 0 {
			return c
		}
		return strings.Compare(a, b)
	})
	return out
}

func textLines(s string) []string { return strings.Split(strings.TrimSuffix(s, "\n"), "\n") }

// TestOVSHoldsGoldenFlows installs each golden node's flows in one bundle
// and checks that ovs-ofctl dumps exactly the golden file, then traces
// packets through ovs-vswitchd and through the tracer and compares the
// path, the output ports and the packet that comes out.
func TestOVSHoldsGoldenFlows(t *testing.T) {
	d, ac, ctx := startOVS(t)
	for _, sc := range scenarios() {
		t.Run(sc.name, func(t *testing.T) {
			o := newBridge(t, d, ac, ctx, sc.state)
			flows := buildOrFail(t, sc.state, goldenRound)
			if err := o.conn.AddFlows(ctx, flows...); err != nil {
				t.Fatalf("install: %v", err)
			}
			golden, err := os.ReadFile(goldenPath(sc.name))
			if err != nil {
				t.Fatal(err)
			}
			want := sortedLines(textLines(string(golden)))
			if got := o.dump(t); !slices.Equal(got, want) {
				t.Errorf("OVS holds other flows than %s:\n%s", goldenPath(sc.name),
					lineDiff(strings.Join(want, "\n"), strings.Join(got, "\n")))
			}
			for _, p := range tracePackets(sc.state) {
				o.compareTrace(t, flows, p)
			}
		})
	}
}

// tracePackets are the packets traced through OVS and the tracer for a node.
func tracePackets(st State) []Packet {
	n := st.Node
	ps := []Packet{
		TCPPacket(portWeb, webMAC, dbMAC, webIP, dbIP, 40000, 5432),
		TCPPacket(portWeb, webMAC, gatewayMAC, webIP, dbIP, 40001, 5432),
		TCPPacket(portWeb, webMAC, gatewayMAC, webIP, peerBPod, 40002, 80),
		TCPPacket(portWeb, webMAC, gatewayMAC, webIP, peerCPod, 40003, 80),
		UDPPacket(portWeb, webMAC, gatewayMAC, webIP, externIP, 40004, 53),
		TCPPacket(portWeb, webMAC, gatewayMAC, webIP, nodeIP, 40005, 10250),
		TCPPacket(portWeb, webMAC, gatewayMAC, dbIP, externIP, 40006, 443), // spoofed
		TCPPacket(portGateway, gatewayMAC, webMAC, gatewayIP, webIP, 40007, 80),
		ARPRequest(portWeb, webMAC, webIP, gatewayIP),
		ARPRequest(portWeb, webMAC, webIP, dbIP),
		ARPRequest(portWeb, webMAC, dbIP, gatewayIP), // spoofed
		ARPRequest(portGateway, gatewayMAC, gatewayIP, peerCGw),
	}
	ttl1 := TCPPacket(portWeb, webMAC, gatewayMAC, webIP, dbIP, 40008, 80)
	ttl1.TTL = 1
	ps = append(ps, ttl1)
	if n.usesTunnel() {
		in := TCPPacket(portTunnel, gatewayMAC, GlobalVirtualMAC, peerCPod, webIP, 50000, 80)
		in.TunSrc, in.TunDst = peerCIP, nodeIP
		ps = append(ps, in)
	}
	if n.Topology == BridgedUplink {
		ps = append(ps,
			ARPRequest(portUplink, routerMAC, netip.MustParseAddr("192.168.10.1"), nodeIP),
			TCPPacket(portUplink, routerMAC, nodeMAC, netip.MustParseAddr("192.168.10.1"), nodeIP, 50001, 22),
			ARPRequest(openflow.PortLocal, nodeMAC, nodeIP, peerBIP),
			TCPPacket(portUplink, peerBMAC, nodeMAC, peerBPod, webIP, 50002, 80))
		if n.usesTunnel() {
			ps = append(ps, UDPPacket(portUplink, routerMAC, nodeMAC, peerCIP, nodeIP, 50003, n.Tunnel.UDPPort()))
		}
	}
	return ps
}

// ovsTrace is what ofproto/trace reports.
type ovsTrace struct {
	tables  []Table
	outputs []uint32
	final   map[string]string // fields of the last "Final flow:"
	dp      string            // the last "Datapath actions:"
	text    string
}

var (
	traceTableRE = regexp.MustCompile(`^\s*(\d+)\. `)
	tracePortRE  = regexp.MustCompile(`-> output port is (\d+)`)
)

func (o *ovsNode) ofprotoTrace(t *testing.T, p Packet) ovsTrace {
	t.Helper()
	text, err := o.ac.OfprotoTrace(o.ctx, testBridge, p.OVSFlow())
	if err != nil {
		t.Fatalf("ofproto/trace %s: %v", p.OVSFlow(), err)
	}
	tr := ovsTrace{final: map[string]string{}, text: text}
	for _, l := range strings.Split(text, "\n") {
		if m := traceTableRE.FindStringSubmatch(l); m != nil {
			n, _ := strconv.Atoi(m[1])
			tr.tables = append(tr.tables, Table(n))
		}
		// Outputs: "output:N", "LOCAL" and "IN_PORT" actions, and the port
		// an output:<register> action resolved to.
		switch a := strings.TrimSpace(l); {
		case a == "IN_PORT":
			tr.outputs = append(tr.outputs, p.InPort)
		case a == "LOCAL":
			tr.outputs = append(tr.outputs, openflow.PortLocal)
		case strings.HasPrefix(a, "output:") && !strings.Contains(a, "["):
			n, _ := strconv.ParseUint(strings.TrimPrefix(a, "output:"), 10, 32)
			tr.outputs = append(tr.outputs, uint32(n))
		}
		if m := tracePortRE.FindStringSubmatch(l); m != nil {
			n, _ := strconv.ParseUint(m[1], 10, 32)
			tr.outputs = append(tr.outputs, portFromReg(uint32(n)))
		}
		// Each section starts with "Flow:" and ends with "Final flow:",
		// which may say "unchanged".
		rest, initial := strings.CutPrefix(l, "Flow: ")
		if !initial {
			rest, _ = strings.CutPrefix(l, "Final flow: ")
		}
		if strings.HasPrefix(l, "Flow: ") || (strings.HasPrefix(l, "Final flow: ") && rest != "unchanged") {
			clear(tr.final)
			for _, kv := range strings.Split(rest, ",") {
				if k, v, ok := strings.Cut(kv, "="); ok {
					tr.final[k] = v
				}
			}
		}
		if rest, ok := strings.CutPrefix(l, "Datapath actions: "); ok {
			tr.dp = rest
		}
	}
	return tr
}

// compareTrace traces p through OVS and through a fresh tracer (whose
// conntrack is empty, like ofproto/trace's default ct_state=new).
func (o *ovsNode) compareTrace(t *testing.T, flows []*openflow.Flow, p Packet) {
	t.Helper()
	tracer, err := NewTracer(flows)
	if err != nil {
		t.Fatal(err)
	}
	ours, err := tracer.Trace(p)
	if err != nil {
		t.Fatalf("tracer: %v", err)
	}
	theirs := o.ofprotoTrace(t, p)
	var ourPorts []uint32
	for _, e := range ours.Outputs {
		ourPorts = append(ourPorts, e.Port)
	}
	var problems []string
	if !slices.Equal(ours.Tables(), theirs.tables) {
		problems = append(problems, fmt.Sprintf("tables: tracer %v, OVS %v", ours.Tables(), theirs.tables))
	}
	if !slices.Equal(ourPorts, theirs.outputs) {
		problems = append(problems, fmt.Sprintf("outputs: tracer %v, OVS %v", ourPorts, theirs.outputs))
	}
	if out, ok := ours.Output(); ok && len(problems) == 0 {
		for k, want := range expectedFinal(out.Packet) {
			if got := theirs.final[k]; got != want {
				problems = append(problems, fmt.Sprintf("final %s: tracer %s, OVS %s", k, want, got))
			}
		}
	}
	// An expiring dec_ttl is a packet-in nobody asked for (dont_send=1).
	if len(ours.Outputs) == 0 && theirs.dp != "drop" && !strings.Contains(theirs.dp, "controller(reason=2,dont_send=1") {
		problems = append(problems, fmt.Sprintf("tracer drops (%s), OVS does %q", ours.Dropped, theirs.dp))
	}
	if len(problems) > 0 {
		t.Errorf("%s:\n  %s\n--- tracer:\n%s--- ofproto/trace:\n%s", p.OVSFlow(), strings.Join(problems, "\n  "), ours, theirs.text)
	}
}

// expectedFinal is how OVS's "Final flow:" prints the fields the pipeline
// rewrites.
func expectedFinal(p Packet) map[string]string {
	m := map[string]string{"dl_src": p.EthSrc.String(), "dl_dst": p.EthDst.String()}
	switch p.EthType {
	case EthARP:
		m["arp_op"] = strconv.Itoa(int(p.ARPOp))
		m["arp_spa"], m["arp_tpa"] = p.ARPSPA.String(), p.ARPTPA.String()
		m["arp_sha"], m["arp_tha"] = p.ARPSHA.String(), p.ARPTHA.String()
	case EthIPv4:
		m["nw_ttl"] = strconv.Itoa(int(p.TTL))
		m["nw_src"], m["nw_dst"] = p.IPSrc.String(), p.IPDst.String()
	}
	m["tun_dst"] = "" // OVS prints tunnel fields only when they are set
	if p.TunDst.IsValid() {
		m["tun_dst"] = p.TunDst.String()
	}
	return m
}

// poll retries cond every 20ms until it holds or ctx ends.
func poll(ctx context.Context, cond func() bool) bool {
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case <-ctx.Done():
			return false
		case <-tick.C:
		}
	}
	return true
}

// TestBridgedUplinkTunnelPath gives the bridge's LOCAL port the node IP,
// as the bridged uplink topology does, and checks OVS's userspace
// tunnelling end to end: a VXLAN packet from the uplink for the node IP is
// terminated (tnl_pop) by the Classifier's tunnel flow, and a pod's packet
// for a peer is encapsulated (tnl_push) and the outer packet, re-entering
// the bridge from LOCAL, leaves by the uplink.
func TestBridgedUplinkTunnelPath(t *testing.T) {
	d, ac, ctx := startOVS(t)
	st := scenarioByName(t, "bridged-encap-vxlan")
	o := newBridge(t, d, ac, ctx, st)
	if err := o.conn.AddFlows(ctx, buildOrFail(t, st, 1)...); err != nil {
		t.Fatalf("install: %v", err)
	}
	for _, args := range [][]string{
		{"addr", "add", nodeIP.String() + "/24", "dev", testBridge},
		{"link", "set", testBridge, "up"},
	} {
		if out, err := d.Command(ctx, "ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %v: %v\n%s", args, err, out)
		}
	}

	vxlan := UDPPacket(portUplink, routerMAC, nodeMAC, peerBIP, nodeIP, 50000, VXLAN.UDPPort())
	var in ovsTrace
	if !poll(ctx, func() bool {
		in = o.ofprotoTrace(t, vxlan)
		return strings.Contains(in.dp, "tnl_pop(")
	}) {
		t.Fatalf("VXLAN packet for the node IP was not terminated:\n%s", in.text)
	}
	if len(in.tables) != 1 || in.tables[0] != Classifier || !slices.Equal(in.outputs, []uint32{openflow.PortLocal}) {
		t.Errorf("want the Classifier tunnel flow to output to LOCAL, got tables %v outputs %v:\n%s", in.tables, in.outputs, in.text)
	}

	if _, err := ac.Call(ctx, "tnl/neigh/set", testBridge, peerBIP.String(), peerBMAC.String()); err != nil {
		t.Fatalf("tnl/neigh/set: %v", err)
	}
	toPeer := TCPPacket(portWeb, webMAC, gatewayMAC, webIP, peerBPod, 40000, 80)
	var out ovsTrace
	if !poll(ctx, func() bool {
		out = o.ofprotoTrace(t, toPeer)
		return strings.Contains(out.dp, "tnl_push(")
	}) {
		t.Fatalf("packet to a peer pod was not encapsulated:\n%s", out.text)
	}
	for _, want := range []string{"dst=" + peerBIP.String(), "src=" + nodeIP.String(), "dst=" + peerBMAC.String()} {
		if !strings.Contains(out.dp, want) {
			t.Errorf("outer header lacks %s: %s", want, out.dp)
		}
	}
	// The inner packet goes to the tunnel port (1); the outer one, back in
	// the bridge from LOCAL, to the uplink (3).
	if !slices.Equal(out.outputs, []uint32{portTunnel, portUplink}) {
		t.Errorf("outputs %v, want [tunnel uplink]:\n%s", out.outputs, out.text)
	}
}

// TestRoundsReplaceWithoutGap plays an agent restart: round 1 is
// installed; round 2, computed from a changed state (one pod gone, one
// new), is added on top; then round 1 is deleted by cookie. Every flow the
// two rounds share is replaced in place when round 2 is added (no
// duplicate, no moment without it), and what remains is exactly round 2.
// Deleting one pod by its cookie then removes exactly that pod's flows.
func TestRoundsReplaceWithoutGap(t *testing.T) {
	d, ac, ctx := startOVS(t)
	old := scenarioByName(t, "routed-encap-geneve")
	o := newBridge(t, d, ac, ctx, old)
	if err := o.conn.AddFlows(ctx, buildOrFail(t, old, 1)...); err != nil {
		t.Fatalf("round 1: %v", err)
	}

	cur := old
	cur.Pods = []Pod{old.Pods[0], {Namespace: "prod", Name: "cache-0", Port: 12,
		IPs: []netip.Addr{netip.MustParseAddr("10.244.1.12")}, MAC: mustMAC("0a:00:00:00:01:0c")}}
	if out, err := d.Vsctl(ctx, "add-port", testBridge, "pod12", "--", "set", "interface", "pod12",
		"type=internal", "ofport_request=12"); err != nil {
		t.Fatalf("add pod port: %v\n%s", err, out)
	}
	round2 := buildOrFail(t, cur, 2)
	if err := o.conn.AddFlows(ctx, round2...); err != nil {
		t.Fatalf("round 2: %v", err)
	}
	// Round-1 flows left over are exactly those of the pod that is gone.
	gone, err := PodFlows(old.Node, old.Pods[1], 1)
	if err != nil {
		t.Fatal(err)
	}
	want := sortedLines(append(textLines(Text(round2)), textLines(Text(gone))...))
	if got := o.dump(t); !slices.Equal(got, want) {
		t.Errorf("after adding round 2:\n%s", lineDiff(strings.Join(want, "\n"), strings.Join(got, "\n")))
	}

	cookie, mask := RoundSelector(1)
	if err := o.conn.DeleteFlowsByCookie(ctx, cookie, mask); err != nil {
		t.Fatalf("delete round 1: %v", err)
	}
	if got, want := o.dump(t), sortedLines(textLines(Text(round2))); !slices.Equal(got, want) {
		t.Errorf("after deleting round 1:\n%s", lineDiff(strings.Join(want, "\n"), strings.Join(got, "\n")))
	}

	web := cur.Pods[0]
	cookie, mask = ObjectSelector(2, CategoryPod, PodID(web.Namespace, web.Name))
	if err := o.conn.DeleteFlowsByCookie(ctx, cookie, mask); err != nil {
		t.Fatalf("delete pod: %v", err)
	}
	noWeb := cur
	noWeb.Pods = cur.Pods[1:]
	if got, want := o.dump(t), sortedLines(textLines(Text(buildOrFail(t, noWeb, 2)))); !slices.Equal(got, want) {
		t.Errorf("after deleting pod %s by cookie:\n%s", web.Key(), lineDiff(strings.Join(want, "\n"), strings.Join(got, "\n")))
	}
}

// BenchmarkInstallBundle installs a 250-pod, 500-peer node's flows into
// ovs-vswitchd in one bundle and then deletes them by round cookie.
func BenchmarkInstallBundle(b *testing.B) {
	d := ovsdaemon.StartForTest(b)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	b.Cleanup(cancel)
	if out, err := d.Vsctl(ctx, "add-br", testBridge, "--", "set", "bridge", testBridge, "datapath_type=netdev",
		"protocols=OpenFlow15", "fail_mode=secure"); err != nil {
		b.Fatalf("add-br: %v\n%s", err, out)
	}
	c, err := openflow.Dial(ctx, "unix:"+d.MgmtSocketPath(testBridge), openflow.Config{})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { c.Close() })
	flows, err := Build(bigState(), 1)
	if err != nil {
		b.Fatal(err)
	}
	cookie, mask := RoundSelector(1)
	for b.Loop() {
		if err := c.AddFlows(ctx, flows...); err != nil {
			b.Fatal(err)
		}
		if err := c.DeleteFlowsByCookie(ctx, cookie, mask); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(len(flows)), "flows")
}
