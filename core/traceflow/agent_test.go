package traceflow

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"testing"

	crd "github.com/seine-cni/seine/core/apis/crd/v1beta1"
	"github.com/seine-cni/seine/core/pipeline"
	"github.com/seine-cni/seine/ovs/openflow"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	dynfake "k8s.io/client-go/dynamic/fake"
)

// fakeSwitch is a switch holding the test node's flows: it answers dumps
// from them, applies bundled flow-mods (add or replace, strict delete,
// delete by cookie), deletes by cookie and records packet-outs.
type fakeSwitch struct {
	flows   []*openflow.Flow
	outs    []*openflow.PacketOut
	state   pipeline.State
	bundles int
	// log is what the switch was told, in order: "bundle", "flush" (of
	// the datapath's cached flows), "packet-out"; flushErr fails flushes.
	log      []string
	flushErr error
}

func (s *fakeSwitch) Bundle(_ context.Context, msgs ...openflow.Message) error {
	s.bundles++
	s.log = append(s.log, "bundle")
	for _, m := range msgs {
		fm := m.(*openflow.FlowMod)
		k := flowKey(fm.Flow)
		switch fm.Command {
		case openflow.FlowAdd:
			if i := slices.IndexFunc(s.flows, func(f *openflow.Flow) bool { return flowKey(f) == k }); i >= 0 {
				s.flows[i] = fm.Flow
			} else {
				s.flows = append(s.flows, fm.Flow)
			}
		case openflow.FlowDeleteStrict:
			s.flows = slices.DeleteFunc(s.flows, func(f *openflow.Flow) bool { return flowKey(f) == k })
		case openflow.FlowDelete:
			s.flows = slices.DeleteFunc(s.flows, func(f *openflow.Flow) bool {
				return f.CookieValue()&fm.CookieMask == fm.Flow.CookieValue()&fm.CookieMask
			})
		}
	}
	return nil
}

func (s *fakeSwitch) Apply(_ context.Context, msgs ...openflow.Message) error {
	for _, m := range msgs {
		s.outs = append(s.outs, m.(*openflow.PacketOut))
		s.log = append(s.log, "packet-out")
	}
	return nil
}

func (s *fakeSwitch) DumpFlows(_ context.Context, table uint8, _, _ uint64) ([]openflow.FlowStats, error) {
	var out []openflow.FlowStats
	for _, f := range s.flows {
		if table == allTables || f.TableID() == table {
			out = append(out, openflow.FlowStats{Flow: f})
		}
	}
	return out, nil
}

func (s *fakeSwitch) DeleteFlowsByCookie(_ context.Context, cookie, mask uint64) error {
	s.flows = slices.DeleteFunc(s.flows, func(f *openflow.Flow) bool { return f.CookieValue()&mask == cookie&mask })
	return nil
}

type fakeAgentNode struct{ sw *fakeSwitch }

func (n fakeAgentNode) Install(_ context.Context, fn func(Writer, *pipeline.NodeConfig, pipeline.Round) error) error {
	node := n.sw.state.Node
	return fn(n.sw, &node, 1)
}

func (n fakeAgentNode) LocalPod(ns, name string, ip netip.Addr) (LocalPod, bool) {
	for _, p := range n.sw.state.Pods {
		if (name != "" && p.Namespace == ns && p.Name == name) || (name == "" && p.IPs[0] == ip) {
			return LocalPod{Port: p.Port, MAC: p.MAC, IP: p.IPs[0]}, true
		}
	}
	return LocalPod{}, false
}

func (n fakeAgentNode) FlushDatapath(context.Context) error {
	if n.sw.flushErr != nil {
		return n.sw.flushErr
	}
	n.sw.log = append(n.sw.log, "flush")
	return nil
}

func (n fakeAgentNode) IsolatedBy(ingress bool, port uint32) []string { return policies(ingress, port) }
func (n fakeAgentNode) TieredRule(table uint8, prio uint16) (string, string, bool) {
	return tieredRules(table, prio)
}

// TestAgentInstallsInjectsObserves runs one trace through the agent side:
// copies installed and acknowledged, the packet held back until the other
// node acknowledged too, injected from the source pod's port, traced
// through the node's flows (the tracer stands for ovs-vswitchd), its
// packet-in reported as the node's observations, and the copies removed
// when the trace ends.
func TestAgentInstallsInjectsObserves(t *testing.T) {
	st := nodeState(pipeline.RoutedHost, pipeline.Encap, pipeline.Geneve)
	base := baseFlows(t, st)
	sw := &fakeSwitch{flows: slices.Clone(base), state: st}
	dyn := dynfake.NewSimpleDynamicClientWithCustomListKinds(runtime.NewScheme(), map[schema.GroupVersionResource]string{crd.TraceflowsResource: "TraceflowList"})
	a := NewAgent("node-a", dyn, fakeAgentNode{sw}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	var applied []crd.NodeResult
	a.apply = func(_ context.Context, _ string, s *crd.TraceflowStatus) error {
		applied = append(applied, s.Results...)
		return nil
	}
	tf := &crd.Traceflow{ObjectMeta: metav1.ObjectMeta{Name: "t", UID: "u-1"},
		Spec: crd.TraceflowSpec{Source: crd.Source{Namespace: "default", Pod: "web-0"}, Destination: crd.Destination{Namespace: "prod", Pod: "db-0"}},
		Status: crd.TraceflowStatus{Phase: crd.Running, DataplaneTag: testTag, SourceNode: "node-a", Nodes: []string{"node-a", "node-b"},
			SrcIP: webIP.String(), DstIP: dbIP.String(), DstPort: 80}}
	store := func() {
		u, err := runtime.DefaultUnstructuredConverter.ToUnstructured(tf)
		if err != nil {
			t.Fatal(err)
		}
		if err := a.inf.GetStore().Update(&unstructured.Unstructured{Object: u}); err != nil {
			t.Fatal(err)
		}
	}
	sync := func() {
		t.Helper()
		if err := a.sync(context.Background(), "t"); err != nil {
			t.Fatal(err)
		}
	}
	store()
	sync()
	copies := tagged(t, base)
	if len(sw.flows) != len(base)+len(copies) || len(applied) != 1 || !applied[0].FlowsInstalled || len(sw.outs) != 0 {
		t.Fatalf("after the first sync: %d flows (want %d), applied %+v, %d packet-outs before node-b is ready",
			len(sw.flows), len(base)+len(copies), applied, len(sw.outs))
	}
	tf.Status.Results = []crd.NodeResult{{Node: "node-a", FlowsInstalled: true}, {Node: "node-b", FlowsInstalled: true}}
	store()
	sync()
	if len(sw.outs) != 1 {
		t.Fatalf("%d packet-outs once every node is ready, want 1", len(sw.outs))
	}
	out := sw.outs[0]
	if out.InPort != portWeb {
		t.Errorf("injected from port %d, want web-0's %d", out.InPort, portWeb)
	}
	p, err := ParseFrame(out.Data)
	if err != nil {
		t.Fatal(err)
	}
	if p.Tag != testTag || p.SrcIP != webIP || p.DstIP != dbIP || p.DstPort != 80 || p.TCPFlags != 0x02 || p.DstMAC.String() != dbMAC.String() {
		t.Errorf("injected %s", p)
	}
	sync()
	if len(sw.outs) != 1 {
		t.Errorf("injected again on a later sync")
	}
	// The tracer plays ovs-vswitchd: db-0 is isolated for ingress.
	tp := pipeline.TCPPacket(portWeb, p.SrcMAC, p.DstMAC, p.SrcIP, p.DstIP, p.SrcPort, p.DstPort)
	tp.DSCP = p.Tag
	tr := traceWith(t, sw.flows, tp)
	if len(tr.PacketIns) != 1 {
		t.Fatalf("%d packet-ins", len(tr.PacketIns))
	}
	r := reportOf(tr.PacketIns[0])
	r.Packet.ID = p.ID
	other := r
	other.Packet.ID++ // real traffic with the same DSCP
	if name := a.observe(other); name != "" {
		t.Errorf("a packet with another IP ID was taken for trace %s", name)
	}
	if name := a.observe(r); name != "t" {
		t.Fatalf("the injected packet's packet-in went to %q", name)
	}
	sync()
	last := applied[len(applied)-1]
	if n := len(last.Observations); n != 2 || last.Observations[1].Action != crd.ActionDropped || last.Observations[1].NetworkPolicy != "prod/db-allow-web" {
		t.Errorf("reported %+v", last)
	}
	tf.Status.Phase = crd.Succeeded
	store()
	sync()
	if len(sw.flows) != len(base) {
		t.Errorf("%d flows after the trace ended, want the %d untagged ones", len(sw.flows), len(base))
	}
}

// agentFixture is an agent of node-a over a fake switch with the node's
// flows, whose status writes are recorded, and one Traceflow it syncs.
type agentFixture struct {
	t       *testing.T
	sw      *fakeSwitch
	base    []*openflow.Flow
	a       *Agent
	tf      *crd.Traceflow
	applied []crd.NodeResult
}

func newAgentFixture(t *testing.T, tf *crd.Traceflow) *agentFixture {
	st := nodeState(pipeline.RoutedHost, pipeline.Encap, pipeline.Geneve)
	f := &agentFixture{t: t, base: baseFlows(t, st), tf: tf}
	f.sw = &fakeSwitch{flows: slices.Clone(f.base), state: st}
	dyn := dynfake.NewSimpleDynamicClientWithCustomListKinds(runtime.NewScheme(), map[schema.GroupVersionResource]string{crd.TraceflowsResource: "TraceflowList"})
	f.a = NewAgent("node-a", dyn, fakeAgentNode{f.sw}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	f.a.apply = func(_ context.Context, _ string, s *crd.TraceflowStatus) error {
		f.applied = append(f.applied, s.Results...)
		f.sw.log = append(f.sw.log, "write")
		return nil
	}
	return f
}

// sync stores the Traceflow and syncs it.
func (f *agentFixture) sync() {
	f.t.Helper()
	u, err := runtime.DefaultUnstructuredConverter.ToUnstructured(f.tf)
	if err != nil {
		f.t.Fatal(err)
	}
	if err := f.a.inf.GetStore().Update(&unstructured.Unstructured{Object: u}); err != nil {
		f.t.Fatal(err)
	}
	if err := f.a.sync(context.Background(), f.tf.Name); err != nil {
		f.t.Fatal(err)
	}
}

func (f *agentFixture) tagFlows() []*openflow.Flow {
	c, m := TagSelector(testTag)
	return slices.DeleteFunc(slices.Clone(f.sw.flows), func(fl *openflow.Flow) bool { return fl.CookieValue()&m != c })
}

func (f *agentFixture) last() crd.NodeResult { return f.applied[len(f.applied)-1] }

// sameNodeTrace is a running trace from web-0 to db-0, both on node-a.
func sameNodeTrace(uid types.UID) *crd.Traceflow {
	start := metav1.Now()
	return &crd.Traceflow{ObjectMeta: metav1.ObjectMeta{Name: "t", UID: uid},
		Spec: crd.TraceflowSpec{Source: crd.Source{Namespace: "default", Pod: "web-0"}, Destination: crd.Destination{Namespace: "prod", Pod: "db-0"}},
		Status: crd.TraceflowStatus{Phase: crd.Running, StartTime: &start, DataplaneTag: testTag, SourceNode: "node-a", Nodes: []string{"node-a"},
			SrcIP: webIP.String(), DstIP: dbIP.String(), DstPort: 80}}
}

// TestAgentLiveTagging: on the tagging node the tagging flow goes in only
// once every node of the path installed its copies, tags web-0's next new
// connection, whose packet-in becomes the node's observations and captured
// packet, and comes out at once; packets tagged meanwhile are ignored;
// the trace's end removes every flow.
func TestAgentLiveTagging(t *testing.T) {
	start := metav1.Now()
	f := newAgentFixture(t, &crd.Traceflow{ObjectMeta: metav1.ObjectMeta{Name: "live", UID: "u-2"},
		Spec: crd.TraceflowSpec{LiveTraffic: true, Source: crd.Source{Namespace: "default", Pod: "web-0"},
			Destination: crd.Destination{Namespace: "default", Pod: "remote"}, Packet: crd.Packet{Protocol: "TCP"}},
		Status: crd.TraceflowStatus{Phase: crd.Running, StartTime: &start, DataplaneTag: testTag, SourceNode: "node-a",
			Nodes: []string{"node-a", "node-b"}, SrcIP: webIP.String(), DstIP: peerPod.String()}})
	f.sync()
	if len(f.tagFlows()) != 0 || len(f.applied) != 1 || !f.applied[0].FlowsInstalled {
		t.Fatalf("before node-b is ready: tagging flows %v, applied %+v", f.tagFlows(), f.applied)
	}
	f.tf.Status.Results = []crd.NodeResult{{Node: "node-a", FlowsInstalled: true}, {Node: "node-b", FlowsInstalled: true}}
	f.sync()
	tags := f.tagFlows()
	if len(tags) != 1 || !strings.Contains(tags[0].String(), "in_port=10") || !strings.Contains(tags[0].String(), "nw_dst=10.244.2.20") {
		t.Fatalf("tagging flows once every node is ready: %v", tags)
	}
	syn := tcp(portWeb, "0a:00:00:00:01:0a", "0a:00:00:00:01:01", webIP, peerPod, 80)
	tr := traceWith(t, f.sw.flows, syn)
	if len(tr.PacketIns) != 1 || len(tr.Outputs) != 1 || tr.Outputs[0].Packet.DSCP != testTag {
		t.Fatalf("web-0's SYN: want one packet-in and the tunnel output tagged:\n%s", tr)
	}
	r := reportOf(tr.PacketIns[0])
	r.Packet.ID = 0x1234
	if name := f.a.observe(r); name != "live" {
		t.Fatalf("the live packet-in went to %q", name)
	}
	later := r
	later.Packet.SrcPort, later.Packet.ID = 40001, 0x1240 // tagged before the flow went
	f.a.observe(later)
	f.sync()
	if len(f.tagFlows()) != 0 {
		t.Errorf("tagging flow still installed after it fired: %v", f.tagFlows())
	}
	got := f.last()
	want := &crd.CapturedPacket{SrcIP: webIP.String(), DstIP: peerPod.String(), Protocol: "TCP", SrcPort: 40000, DstPort: 80, IPID: 0x1234, TTL: 63, TCPFlags: 2} // routed: TTL-1
	if len(got.Observations) != 2 || got.Observations[1].TunnelDstIP != peerIP.String() || !reflect.DeepEqual(got.CapturedPacket, want) {
		t.Errorf("reported %+v captured %+v, want %+v", got.Observations, got.CapturedPacket, want)
	}
	again := syn
	again.SrcPort = 40002
	if tr := traceWith(t, f.sw.flows, again); len(tr.PacketIns) != 0 || tr.Outputs[0].Packet.DSCP != 0 {
		t.Errorf("a new connection after the traced one was tagged:\n%s", tr)
	}
	f.tf.Status.Phase = crd.Succeeded
	f.sync()
	if len(f.sw.flows) != len(f.base) {
		t.Errorf("%d flows after the trace ended, want the %d untagged ones", len(f.sw.flows), len(f.base))
	}
}

// TestAgentLiveCorrelates: a node the live packet reaches keeps the tagged
// packets it sees until the tagging node's captured packet says which one
// was traced, and reports that one only.
func TestAgentLiveCorrelates(t *testing.T) {
	start := metav1.Now()
	f := newAgentFixture(t, &crd.Traceflow{ObjectMeta: metav1.ObjectMeta{Name: "live", UID: "u-3"},
		Spec: crd.TraceflowSpec{LiveTraffic: true, Source: crd.Source{Namespace: "default", Pod: "remote"},
			Destination: crd.Destination{Namespace: "default", Pod: "web-0"}},
		Status: crd.TraceflowStatus{Phase: crd.Running, StartTime: &start, DataplaneTag: testTag, SourceNode: "node-b",
			Nodes: []string{"node-b", "node-a"}, SrcIP: peerPod.String(), DstIP: webIP.String()}})
	f.sync()
	var reports []Report
	for i, sport := range []uint16{40000, 40001} {
		p := tcp(portTunnel, "52:54:00:00:10:0c", "02:53:45:49:4e:45", peerPod, webIP, 80)
		p.SrcPort, p.DSCP = sport, testTag
		tr := traceWith(t, f.sw.flows, p)
		if len(tr.PacketIns) != 1 || tr.Outputs[0].Packet.DSCP != 0 {
			t.Fatalf("tagged packet %d from the tunnel: want one packet-in and delivery without the tag:\n%s", i, tr)
		}
		r := reportOf(tr.PacketIns[0])
		r.Packet.ID = uint16(0x100 + i)
		reports = append(reports, r)
		f.a.observe(r)
	}
	f.sync()
	if obs := f.last().Observations; len(obs) != 0 {
		t.Fatalf("reported %+v before the tagging node captured its packet", obs)
	}
	f.tf.Status.Results = []crd.NodeResult{{Node: "node-b", FlowsInstalled: true, CapturedPacket: capture(reports[1].Packet)}}
	f.sync()
	got := f.last()
	if len(got.Observations) != 2 || got.Observations[1].Action != crd.ActionDelivered || got.CapturedPacket == nil || got.CapturedPacket.SrcPort != 40001 {
		t.Errorf("reported %+v captured %+v, want the second packet delivered", got.Observations, got.CapturedPacket)
	}
}

// TestAgentFlushesTheDatapathBeforeAnythingDependsOnTheCopies: the
// datapath's cached flows made before the copies would take the tagged
// packet past them unseen (TestInjectRightAfterCopiesOnRealOVS shows it on
// a real ovs-vswitchd), so a node flushes them after every install of its
// copies and before it acknowledges them or injects; a failed flush is
// retried, with nothing acknowledged meanwhile; copies installed again
// (after a replay) are flushed again.
func TestAgentFlushesTheDatapathBeforeAnythingDependsOnTheCopies(t *testing.T) {
	f := newAgentFixture(t, sameNodeTrace("u-6"))
	f.sw.flushErr = errors.New("ovs-vswitchd: connection refused")
	u, err := runtime.DefaultUnstructuredConverter.ToUnstructured(f.tf)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.a.inf.GetStore().Add(&unstructured.Unstructured{Object: u}); err != nil {
		t.Fatal(err)
	}
	if err := f.a.sync(context.Background(), "t"); err == nil {
		t.Fatal("a failed flush did not fail the sync")
	}
	if got := strings.Join(f.sw.log, " "); got != "bundle" {
		t.Fatalf("with the flush failing: %q, want the copies' bundle only (no acknowledgement)", got)
	}
	f.sw.flushErr = nil
	for i := 0; i < 2 && len(f.sw.outs) == 0; i++ {
		f.sync()
		f.tf.Status.Results = []crd.NodeResult{{Node: "node-a", FlowsInstalled: true}}
	}
	if got := f.sw.log; len(got) != 4 || got[0] != "bundle" || got[1] != "flush" || !slices.Contains(got, "write") || !slices.Contains(got, "packet-out") {
		t.Fatalf("the switch was told %q, want the copies' bundle, the flush, then the acknowledgement and the packet-out", got)
	}
	f.sw.log = nil
	f.a.Resync()
	f.sync()
	if got := strings.Join(f.sw.log, " "); got != "bundle flush" {
		t.Errorf("copies installed again: %q, want them flushed again", got)
	}
}

// TestAgentOffPathWritesObservationsOnly: a node the injection does not
// wait for (not in status.nodes) installs the copies but writes no bare
// acknowledgement (one write per node of the cluster and trace, which
// nobody reads); a packet it does see is reported, flowsInstalled with it.
func TestAgentOffPathWritesObservationsOnly(t *testing.T) {
	start := metav1.Now()
	f := newAgentFixture(t, &crd.Traceflow{ObjectMeta: metav1.ObjectMeta{Name: "t", UID: "u-4"},
		Spec: crd.TraceflowSpec{Source: crd.Source{Namespace: "default", Pod: "remote"}, Destination: crd.Destination{IP: "10.244.1.10"},
			Packet: crd.Packet{Protocol: "TCP", DstPort: 80}},
		Status: crd.TraceflowStatus{Phase: crd.Running, StartTime: &start, DataplaneTag: testTag, SourceNode: "node-b",
			Nodes: []string{"node-b"}, SrcIP: peerPod.String(), DstIP: webIP.String(), DstPort: 80}})
	f.sync()
	if len(f.applied) != 0 || len(f.sw.flows) <= len(f.base) {
		t.Fatalf("off the path: applied %+v, %d flows (%d without copies)", f.applied, len(f.sw.flows), len(f.base))
	}
	in, err := injected(f.tf)
	if err != nil {
		t.Fatal(err)
	}
	p := tcp(portTunnel, "52:54:00:00:10:0c", "02:53:45:49:4e:45", peerPod, webIP, 80)
	p.SrcPort, p.DSCP = in.SrcPort, testTag
	tr := traceWith(t, f.sw.flows, p)
	if len(tr.PacketIns) != 1 {
		t.Fatalf("the tagged packet from the tunnel: %d packet-ins\n%s", len(tr.PacketIns), tr)
	}
	r := reportOf(tr.PacketIns[0])
	r.Packet.ID = in.ID
	if name := f.a.observe(r); name != "t" {
		t.Fatalf("the packet-in went to %q", name)
	}
	f.sync()
	if len(f.applied) != 1 || !f.last().FlowsInstalled || len(f.last().Observations) == 0 || f.last().Observations[len(f.last().Observations)-1].Action != crd.ActionDelivered {
		t.Errorf("after a packet: applied %+v", f.applied)
	}
}

// TestAgentInjectsWithoutItsOwnEcho: the source node of a trace within
// one node injects in the sync that installs its copies: it does not wait
// for its own acknowledgement to come back through its watch.
func TestAgentInjectsWithoutItsOwnEcho(t *testing.T) {
	f := newAgentFixture(t, sameNodeTrace("u-5"))
	f.sync()
	if len(f.sw.outs) != 1 || len(f.applied) != 1 || !f.applied[0].FlowsInstalled {
		t.Fatalf("first sync: %d packet-outs (want 1), applied %+v", len(f.sw.outs), f.applied)
	}
	f.tf.Status.Results = []crd.NodeResult{{Node: "node-a", FlowsInstalled: true}}
	f.sync()
	if len(f.sw.outs) != 1 {
		t.Errorf("injected again when the acknowledgement came back: %d packet-outs", len(f.sw.outs))
	}
}
