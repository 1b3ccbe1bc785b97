package openflow

import (
	"errors"
	"strings"
	"testing"
)

// TestOversizedFlowAgainstOVS: a flow-mod past 64 KiB used to go out with
// a wrapped length; ovs-vswitchd then read garbage, dropped the
// connection, and a replay sent the same flow again, forever. Now the
// bundle is refused (nothing changes on the switch, the connection stays
// up), while the largest flow that fits is installed whole.
func TestOversizedFlowAgainstOVS(t *testing.T) {
	d, c, ctx := testBridge(t, Config{})
	base := NewFlow(0, 1).Cookie(1).Match(NewMatch().InPort(1)).Actions(NewActions().Output(2))
	if err := c.AddFlows(ctx, base); err != nil {
		t.Fatal(err)
	}
	before := ofctl(t, ctx, d, "dump-flows", "--no-stats", "br0")
	// Enough small flows before the big one that part of the bundle has
	// been written when the encoder meets it (the buffer is flushed at
	// 96 KiB).
	var flows []*Flow
	for i := range 2000 {
		flows = append(flows, NewFlow(1, uint16(100+i)).Match(NewMatch().InPort(uint32(i+1))).Actions(NewActions().Output(3)))
	}
	big := conjFlow(5000)
	if err := c.AddFlows(ctx, append(flows, big)...); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("AddFlows with a 5,000-conjunction flow: %v, want ErrTooLarge", err)
	}
	msgs := []Message{}
	for _, f := range flows {
		msgs = append(msgs, AddFlow(f))
	}
	msgs = append(msgs, AddFlow(big), AddFlow(base))
	if err := c.Bundle(ctx, msgs...); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("Bundle with a 5,000-conjunction flow after 2,000 others: %v, want ErrTooLarge", err)
	}
	if err := c.Apply(ctx, AddFlow(flows[0]), AddFlow(big)); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("Apply with a 5,000-conjunction flow: %v, want ErrTooLarge", err)
	}
	if after := ofctl(t, ctx, d, "dump-flows", "--no-stats", "br0"); after != before {
		t.Errorf("refused messages changed the flow table:\n%s", after)
	}
	select {
	case <-c.Done():
		t.Fatalf("the connection died: %v", c.Err())
	default:
	}

	// The largest flow OVS can dump back goes in whole and comes back.
	fit, n := largestConjFlow(t, MaxFlowModLen)
	if err := c.AddFlows(ctx, fit); err != nil {
		t.Fatalf("a flow-mod of %d bytes (%d conjunctions): %v", fit.flowModLen(), n, err)
	}
	fs, err := c.DumpFlows(ctx, 40, 0, 0)
	if err != nil || len(fs) != 1 {
		t.Fatalf("table 40: %d flows, %v", len(fs), err)
	}
	if got := strings.Count(fs[0].Flow.ActionsString(), "conjunction("); got != n {
		t.Errorf("the switch holds %d conjunctions, want %d", got, n)
	}
}

// TestLargeGroupAgainstOVS: a select group of 3,000 buckets (three
// messages' worth) is installed by GroupMods in one bundle and replaced the
// same way; sent as one group-mod it is refused.
func TestLargeGroupAgainstOVS(t *testing.T) {
	_, c, ctx := testBridge(t, Config{})
	g := lbGroup(3000)
	if err := c.Bundle(ctx, AddGroup(g)); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("one group-mod of 3,000 buckets: %v, want ErrTooLarge", err)
	}
	msgs, err := GroupMods(GroupAdd, g)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Bundle(ctx, msgs...); err != nil {
		t.Fatalf("3,000 buckets in %d messages: %v", len(msgs), err)
	}
	// A group past one message cannot be described (see MaxGroupModLen);
	// its statistics count its buckets.
	buckets := func() int {
		t.Helper()
		gs, err := c.GroupStats(ctx, g.ID)
		if err != nil || len(gs) != 1 {
			t.Fatalf("group stats: %d groups, %v", len(gs), err)
		}
		return len(gs[0].Buckets)
	}
	if n := buckets(); n != 3000 {
		t.Errorf("the switch's group has %d buckets, want 3,000", n)
	}

	// A modify to another large set replaces every bucket atomically.
	g2 := lbGroup(1200)
	for i := range g2.Buckets {
		g2.Buckets[i].ID += 10000
		g2.Buckets[i].Weight = 50
	}
	if msgs, err = GroupMods(GroupModify, g2); err != nil {
		t.Fatal(err)
	}
	if err := c.Bundle(ctx, msgs...); err != nil {
		t.Fatalf("modify to 1,200 buckets in %d messages: %v", len(msgs), err)
	}
	if len(msgs) < 2 {
		t.Fatalf("1,200 buckets in %d message", len(msgs))
	}
	if n := buckets(); n != 1200 {
		t.Errorf("after the modify the group has %d buckets, want 1,200", n)
	}
	// Removing the first 300 buckets (in one bundle) leaves a group that
	// can be described: the last 900 buckets of the modify, some of which
	// came in an insert-buckets message, in order, under the selection
	// method of the first message.
	var rm []Message
	for range 300 {
		rm = append(rm, RemoveBuckets(g2.ID, g2.Type, BucketFirst))
	}
	if err := c.Bundle(ctx, rm...); err != nil {
		t.Fatal(err)
	}
	rest := *g2
	rest.Buckets = g2.Buckets[300:]
	describe := func(want *GroupEntry) {
		t.Helper()
		gs, err := c.GroupDesc(ctx, want.ID)
		if err != nil || len(gs) != 1 {
			t.Fatalf("group desc: %d groups, %v", len(gs), err)
		}
		if got := gs[0].String(); got != want.String() {
			t.Errorf("the switch's group differs from the one sent: %d buckets (first id %d), want %d (first id %d); selection %q fields %d",
				len(gs[0].Buckets), gs[0].Buckets[0].ID, len(want.Buckets), want.Buckets[0].ID, gs[0].SelectionMethod, len(gs[0].Fields))
		}
	}
	describe(&rest)

	// Single buckets in and out.
	extra := &GroupEntry{ID: g2.ID, Type: g2.Type, Buckets: []Bucket{{ID: 1, Weight: 5, Actions: NewActions().Output(1)}}}
	if err := c.Apply(ctx, InsertBuckets(extra, BucketFirst), RemoveBuckets(g2.ID, g2.Type, BucketLast)); err != nil {
		t.Fatal(err)
	}
	rest.Buckets = append(append([]Bucket{}, extra.Buckets...), rest.Buckets[:len(rest.Buckets)-1]...)
	describe(&rest)
	if err := c.Apply(ctx, RemoveBuckets(g2.ID, g2.Type, 1)); err != nil {
		t.Fatal(err)
	}
	rest.Buckets = rest.Buckets[1:]
	describe(&rest)
	// Removing a bucket that is not there names the error.
	if err := c.Apply(ctx, RemoveBuckets(g2.ID, g2.Type, 1)); err == nil {
		t.Errorf("removing an absent bucket succeeded")
	} else {
		t.Logf("absent bucket: %v", err)
	}
}
