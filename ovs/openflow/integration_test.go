package openflow

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/seine-cni/seine/test/ovsdaemon"
)

// testBridge starts a private OVS with an OpenFlow15-only netdev bridge br0
// and returns the daemon and a connection to the bridge.
func testBridge(t *testing.T, cfg Config) (*ovsdaemon.Daemon, *Conn, context.Context) {
	t.Helper()
	d := ovsdaemon.StartForTest(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	if _, err := d.Vsctl(ctx, "add-br", "br0", "--", "set", "bridge", "br0", "datapath_type=netdev",
		"protocols=OpenFlow15", "fail_mode=secure"); err != nil {
		t.Fatalf("add-br: %v", err)
	}
	c, err := Dial(ctx, "unix:"+d.MgmtSocketPath("br0"), cfg)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return d, c, ctx
}

func ofctl(t *testing.T, ctx context.Context, d *ovsdaemon.Daemon, args ...string) string {
	t.Helper()
	out, err := d.Ofctl(ctx, append([]string{"-O", "OpenFlow15"}, args...)...)
	if err != nil {
		t.Fatalf("ovs-ofctl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

func equalLines(t *testing.T, what string, got, want []string) {
	t.Helper()
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("%s differ\n--- ovs-ofctl:\n%s\n--- renderer:\n%s", what, strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// TestCatalogAgainstOVS installs every supported match and action through
// the library (one bundle) and checks that ovs-ofctl prints each flow, group
// and meter exactly as the renderer does, and that our decoder of the
// switch's own flow-stats encoding renders the same text again.
func TestCatalogAgainstOVS(t *testing.T) {
	d, c, ctx := testBridge(t, Config{})
	ofctl(t, ctx, d, "add-tlv-map", "br0", "{class=0xffff,type=0,len=4}->tun_metadata0,{class=0xffff,type=1,len=4}->tun_metadata1")

	var groupMsgs []Message
	for _, g := range catalogGroups() {
		groupMsgs = append(groupMsgs, AddGroup(g))
	}
	if err := c.Bundle(ctx, groupMsgs...); err != nil {
		t.Fatalf("groups: %v", err)
	}
	// OVS does not allow meter mods inside bundles.
	var meterMsgs []Message
	for _, m := range catalogMeters() {
		meterMsgs = append(meterMsgs, AddMeter(m))
	}
	if err := c.Apply(ctx, meterMsgs...); err != nil {
		t.Fatalf("meters: %v", err)
	}
	var flows []*Flow
	var want []string
	for _, cf := range catalog() {
		flows = append(flows, cf.flow)
		want = append(want, cf.want)
		if got := cf.flow.String(); got != cf.want {
			t.Errorf("%s: renderer says\n  %s\nwant\n  %s", cf.name, got, cf.want)
		}
	}
	if err := c.AddFlows(ctx, flows...); err != nil {
		t.Fatalf("add flows: %v", err)
	}
	equalLines(t, "flows", dumpLines(ofctl(t, ctx, d, "dump-flows", "--no-stats", "br0")), sorted(want))
	equalLines(t, "groups", dumpLines(ofctl(t, ctx, d, "dump-groups", "br0")), sorted(catalogGroupText))
	var gotMeters []string
	for _, block := range strings.Split(ofctl(t, ctx, d, "dump-meters", "br0"), "\n\n") {
		block = strings.TrimSpace(block)
		if i := strings.Index(block, "\n"); strings.HasPrefix(block, "OFPST_") && i > 0 {
			block = block[i+1:]
		}
		if block != "" {
			gotMeters = append(gotMeters, block)
		}
	}
	equalLines(t, "meters", sorted(gotMeters), sorted(catalogMeterText))

	// The switch's own encoding, decoded by us, renders identically.
	fs, err := c.DumpFlows(ctx, TableAll, 0, 0)
	if err != nil {
		t.Fatalf("dump flows: %v", err)
	}
	var decoded []string
	for _, f := range fs {
		decoded = append(decoded, f.Flow.String())
	}
	equalLines(t, "decoded flow stats", sorted(decoded), sorted(want))
	gs, err := c.GroupDesc(ctx, GroupAll)
	if err != nil {
		t.Fatalf("group desc: %v", err)
	}
	var gtext []string
	for _, g := range gs {
		gtext = append(gtext, g.String())
	}
	equalLines(t, "decoded group desc", sorted(gtext), sorted(catalogGroupText))
	ms, err := c.MeterDesc(ctx, MeterAll)
	if err != nil {
		t.Fatalf("meter desc: %v", err)
	}
	var mtext []string
	for _, m := range ms {
		mtext = append(mtext, m.String())
	}
	equalLines(t, "decoded meter config", sorted(mtext), sorted(catalogMeterText))
}

// TestBundleWithBadFlowChangesNothing: one flow in a bundle refers to a
// group that does not exist; the bundle must leave the table untouched and
// the error must name that flow.
func TestBundleWithBadFlowChangesNothing(t *testing.T) {
	d, c, ctx := testBridge(t, Config{})
	base := NewFlow(0, 1).Cookie(1).Match(NewMatch().InPort(1)).Actions(NewActions().Output(2))
	if err := c.AddFlows(ctx, base); err != nil {
		t.Fatal(err)
	}
	before := ofctl(t, ctx, d, "dump-flows", "--no-stats", "br0")
	var flows []*Flow
	for i := 0; i < 50; i++ {
		flows = append(flows, NewFlow(1, uint16(100+i)).Match(NewMatch().InPort(uint32(i+1))).Actions(NewActions().Output(3)))
	}
	bad := NewFlow(2, 7).Match(NewMatch().IP()).Actions(NewActions().Group(99))
	flows = append(flows[:25], append([]*Flow{bad}, flows[25:]...)...)
	err := c.AddFlows(ctx, flows...)
	if err == nil {
		t.Fatal("bundle with a bad flow succeeded")
	}
	var oe *Error
	if !errors.As(err, &oe) || len(oe.Failed) != 1 {
		t.Fatalf("want *Error with one failed message, got %T %v", err, err)
	}
	if !errors.Is(err, ErrBundleFailed) {
		t.Errorf("error %v does not match ErrBundleFailed", err)
	}
	if f := oe.Failed[0]; !strings.Contains(f.Request, "table=2, priority=7,ip actions=group:99") || f.Msg.Name() != "OFPBAC_BAD_OUT_GROUP" {
		t.Errorf("failed message = %s (%s), want the group:99 flow with OFPBAC_BAD_OUT_GROUP", f.Request, f.Msg.Name())
	}
	t.Logf("bundle error: %v", err)
	if after := ofctl(t, ctx, d, "dump-flows", "--no-stats", "br0"); after != before {
		t.Errorf("bundle changed the flow table:\nbefore:\n%s\nafter:\n%s", before, after)
	}

	// A flow the switch cannot even decode (a prerequisite missing) is
	// rejected when added; the bundle is discarded, also changing nothing.
	broken := NewFlow(3, 1).Match(NewMatch().TCPDst(80)).Actions(NewActions().Output(1))
	err = c.AddFlows(ctx, flows[0], broken)
	if !errors.As(err, &oe) || len(oe.Failed) != 1 || !strings.Contains(oe.Failed[0].Request, "table=3, priority=1,tp_dst=80") {
		t.Fatalf("want error naming the tp_dst flow, got %v", err)
	}
	if after := ofctl(t, ctx, d, "dump-flows", "--no-stats", "br0"); after != before {
		t.Errorf("discarded bundle changed the flow table:\n%s", after)
	}
}

// TestFlowModCommandsAgainstOVS covers modify, modify-strict, delete by
// cookie, delete-strict and out_port filters.
func TestFlowModCommandsAgainstOVS(t *testing.T) {
	d, c, ctx := testBridge(t, Config{})
	m1 := NewMatch().IP().InPort(1)
	m2 := NewMatch().IP().InPort(2)
	if err := c.AddFlows(ctx,
		NewFlow(0, 10).Cookie(0x1_0001).Match(m1).Actions(NewActions().Output(3)),
		NewFlow(0, 10).Cookie(0x1_0002).Match(m2).Actions(NewActions().Output(4)),
		NewFlow(0, 20).Cookie(0x2_0001).Match(m2).Actions(NewActions().Output(5)),
	); err != nil {
		t.Fatal(err)
	}
	steps := []struct {
		name string
		msg  Message
		want []string
	}{
		{"modify strict", ModifyFlowStrict(NewFlow(0, 10).Cookie(0x1_0001).Match(m1).Actions(NewActions().Output(6))), []string{
			"cookie=0x10001, priority=10,ip,in_port=1 actions=output:6",
			"cookie=0x10002, priority=10,ip,in_port=2 actions=output:4",
			"cookie=0x20001, priority=20,ip,in_port=2 actions=output:5",
		}},
		{"modify by cookie", ModifyFlows(NewFlow(0, 0).Cookie(0x2_0000).Actions(NewActions().Output(7)), 0xffff_0000), []string{
			"cookie=0x10001, priority=10,ip,in_port=1 actions=output:6",
			"cookie=0x10002, priority=10,ip,in_port=2 actions=output:4",
			"cookie=0x20001, priority=20,ip,in_port=2 actions=output:7",
		}},
		{"delete strict", DeleteFlowStrict(NewFlow(0, 10).Match(m2)), []string{
			"cookie=0x10001, priority=10,ip,in_port=1 actions=output:6",
			"cookie=0x20001, priority=20,ip,in_port=2 actions=output:7",
		}},
		{"delete by out_port", func() Message {
			fm := DeleteFlows(TableAll, nil, 0, 0)
			fm.OutPort = 7
			return fm
		}(), []string{
			"cookie=0x10001, priority=10,ip,in_port=1 actions=output:6",
		}},
		{"delete by cookie", DeleteFlows(TableAll, nil, 0x1_0000, 0xffff_0000), nil},
	}
	for _, s := range steps {
		if err := c.Apply(ctx, s.msg); err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		equalLines(t, s.name, dumpLines(ofctl(t, ctx, d, "dump-flows", "--no-stats", "br0")), sorted(s.want))
	}
	// Apply reports the error of the one message that failed, by name.
	err := c.Apply(ctx, AddFlow(NewFlow(0, 1).Match(NewMatch().InPort(1)).Actions(NewActions().Output(1))),
		AddFlow(NewFlow(0, 2).Match(NewMatch().InPort(1)).Actions(NewActions().Group(42))))
	if !errors.Is(err, ErrorCode(ErrTypeBadAction, 9)) || !strings.Contains(err.Error(), "group:42") {
		t.Errorf("Apply error = %v, want OFPBAC_BAD_OUT_GROUP naming group:42", err)
	}
}

// TestGroupMeterCommandsAgainstOVS modifies and deletes groups and meters.
func TestGroupMeterCommandsAgainstOVS(t *testing.T) {
	d, c, ctx := testBridge(t, Config{})
	g := &GroupEntry{ID: 10, Type: GroupTypeSelect, SelectionMethod: "hash", Fields: []*Field{FieldIPDst},
		Buckets: []Bucket{{ID: 1, Weight: 10, Actions: NewActions().Output(1)}}}
	m := &MeterEntry{ID: 4, Flags: MeterPktps | MeterBurst, Bands: []MeterBand{{Rate: 50, BurstSize: 5}}}
	if err := c.Apply(ctx, AddGroup(g), AddMeter(m)); err != nil {
		t.Fatal(err)
	}
	g.Buckets = append(g.Buckets, Bucket{ID: 2, Weight: 30, Actions: NewActions().Output(2)})
	m.Bands[0].Rate = 70
	if err := c.Apply(ctx, ModifyGroup(g), ModifyMeter(m)); err != nil {
		t.Fatal(err)
	}
	equalLines(t, "modified group", dumpLines(ofctl(t, ctx, d, "dump-groups", "br0")), []string{g.String()})
	if got, want := strings.TrimSpace(strings.SplitN(ofctl(t, ctx, d, "dump-meters", "br0"), "\n", 2)[1]), m.String(); got != want {
		t.Errorf("modified meter: ovs-ofctl %q, renderer %q", got, want)
	}
	if err := c.Apply(ctx, DeleteGroup(10), DeleteMeter(4)); err != nil {
		t.Fatal(err)
	}
	if gs, err := c.GroupDesc(ctx, GroupAll); err != nil || len(gs) != 0 {
		t.Errorf("groups after delete: %v, %v", gs, err)
	}
	if ms, err := c.MeterDesc(ctx, MeterAll); err != nil || len(ms) != 0 {
		t.Errorf("meters after delete: %v, %v", ms, err)
	}
}
