package policy_test

import (
	"context"
	"fmt"
	"math"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/seine-cni/seine/core/agent/policy"
	controlplane "github.com/seine-cni/seine/core/apis/controlplane/v1beta1"
	"github.com/seine-cni/seine/core/pipeline"
	"github.com/seine-cni/seine/core/tiers"
	"github.com/seine-cni/seine/ovs/openflow"
	"github.com/seine-cni/seine/test/agenttest"
)

// BenchmarkTieredInsert (issue 16's agent benchmark) installs N tiered
// rules on one real node (default 10,000: N application-tier policies of
// one ingress Drop rule each, over one local pod, each from its own /32),
// then inserts policies between two existing priorities and reports, per
// insert, the flows of the tier table that changed on the switch (dumped
// before and after: a moved rule counts its flows twice, removed and
// added) and the time from Sync to realized; then as many updates (a
// policy's peer replaced), deletes and Syncs of the same State (what any
// change pays), and the floor the switch sets: one bundle of four
// flow-mods on a connection of the benchmark's own. The baseline, measured in
// the same run, is the cold install of the N rules: its flows and time.
// Inserts go into one gap again and again, so the gaps run out and the
// allocator must move neighbours (a bounded window, never the table).
//
// SEINE_BENCH_TIERED_RULES changes N.
func BenchmarkTieredInsert(b *testing.B) {
	n := 10000
	if v, err := strconv.Atoi(os.Getenv("SEINE_BENCH_TIERED_RULES")); err == nil && v > 0 {
		n = v
	}
	node := agenttest.Start(b)
	ctx := context.Background()
	pc := node.Agent.Policy()
	db := addPod(b, node, "db-0")
	st := policy.State{
		AppliedToGroups: map[string]*controlplane.AppliedToGroup{"db": {ObjectMeta: metav1.ObjectMeta{Name: "db"}, Members: []controlplane.GroupMember{member(db)}}},
		AddressGroups:   map[string]*controlplane.AddressGroup{},
		NetworkPolicies: map[string]*controlplane.NetworkPolicy{},
	}
	for i := range n {
		st.NetworkPolicies[fmt.Sprintf("p%05d", i)] = dropFrom(fmt.Sprintf("p%05d", i), float64(i+1), i)
	}
	dump := func() []string {
		out, err := node.OVS.Ofctl(ctx, "-O", "OpenFlow15", "--no-stats", "dump-flows", "br-int", fmt.Sprintf("table=%d", pipeline.IngressTier))
		if err != nil {
			b.Fatalf("dump-flows: %v\n%s", err, out)
		}
		lines := strings.Split(strings.TrimSpace(out), "\n")
		slices.Sort(lines)
		return lines
	}
	before := dump()
	start := time.Now()
	if err := pc.Sync(ctx, st); err != nil {
		b.Fatal(err)
	}
	cold := time.Since(start)
	installed := dump()
	coldFlows := changed(before, installed)
	b.Logf("cold install of %d tiered rules: %d flows in table %d, %s", n, coldFlows, pipeline.IngressTier, cold.Round(time.Millisecond))

	// Insert between rules mid-way through the order, always just after
	// the rule at priority lo: each new policy takes the gap the previous
	// one left, until there is none.
	lo := float64(n / 2)
	var times []time.Duration
	var flows []int
	gen := int64(2)
	for i := 0; b.Loop(); i++ {
		lo += math.Ldexp(1, -min(i+1, 50))
		name := fmt.Sprintf("insert-%03d", i)
		st.NetworkPolicies[name] = dropFrom(name, lo, n+i)
		st.NetworkPolicies[name].Generation = gen
		gen++
		prev := dump()
		start := time.Now()
		if err := pc.Sync(ctx, st); err != nil {
			b.Fatal(err)
		}
		times = append(times, time.Since(start))
		flows = append(flows, changed(prev, dump()))
	}
	if len(times) == 0 {
		return
	}
	// Updates: an existing policy replaced by one with another peer (its
	// peer clause changes, its place does not); deletes: a policy goes.
	// Then the floor: the same switch's round trip for one bundle of four
	// flow-mods (a rule's flows) on a connection of our own.
	var updates, deletes, noops, floor []time.Duration
	for i := range len(times) {
		name := fmt.Sprintf("p%05d", (i*997)%n)
		np := dropFrom(name, *st.NetworkPolicies[name].Priority, n+1000+i)
		np.Generation = gen
		gen++
		st.NetworkPolicies[name] = np
		start := time.Now()
		if err := pc.Sync(ctx, st); err != nil {
			b.Fatal(err)
		}
		updates = append(updates, time.Since(start))
	}
	for i := range len(times) {
		delete(st.NetworkPolicies, fmt.Sprintf("p%05d", (i*991+7)%n))
		start := time.Now()
		if err := pc.Sync(ctx, st); err != nil {
			b.Fatal(err)
		}
		deletes = append(deletes, time.Since(start))
	}
	// A Sync of the same State: what every change pays whatever it
	// changes (the State written, the policies compared by pointer, the
	// installed set assembled), with no bundle.
	for range len(times) {
		start := time.Now()
		if err := pc.Sync(ctx, st); err != nil {
			b.Fatal(err)
		}
		noops = append(noops, time.Since(start))
	}
	conn, err := openflow.Dial(ctx, "unix:"+node.OVS.MgmtSocketPath("br-int"), openflow.Config{})
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close()
	for i := range len(times) {
		var add, del []openflow.Message
		for j := range 4 {
			f := openflow.NewFlow(uint8(pipeline.IngressTier), 3).Cookie(0xbe7c4).
				Match(openflow.NewMatch().IP().IPSrc(netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 202, byte(i), byte(j)}), 32)))
			add, del = append(add, openflow.AddFlow(f)), append(del, openflow.DeleteFlowStrict(f))
		}
		start := time.Now()
		if err := conn.Bundle(ctx, add...); err != nil {
			b.Fatal(err)
		}
		floor = append(floor, time.Since(start))
		if err := conn.Bundle(ctx, del...); err != nil {
			b.Fatal(err)
		}
	}
	maxFlows := slices.Max(flows)
	p50, p99 := percentile(times, 50), percentile(times, 99)
	ratio := func(d time.Duration) string { return fmt.Sprintf("%.4f", float64(d)/float64(cold)) }
	b.Logf("%d inserts: flows changed per insert %v (max %d of the table's %d); time p50 %s p99 %s",
		len(times), flows, maxFlows, coldFlows, p50.Round(time.Microsecond), p99.Round(time.Microsecond))
	b.Logf("p50 / cold install (%s): insert %s (%s), update %s (%s), delete %s (%s); same State again %s (%s); OVS floor (one 4-flow bundle, own connection) %s (%s)",
		cold.Round(time.Millisecond), p50.Round(time.Microsecond), ratio(p50),
		percentile(updates, 50).Round(time.Microsecond), ratio(percentile(updates, 50)),
		percentile(deletes, 50).Round(time.Microsecond), ratio(percentile(deletes, 50)),
		percentile(noops, 50).Round(time.Microsecond), ratio(percentile(noops, 50)),
		percentile(floor, 50).Round(time.Microsecond), ratio(percentile(floor, 50)))
	b.ReportMetric(float64(cold.Milliseconds()), "cold-install-ms")
	b.ReportMetric(float64(coldFlows), "cold-flows")
	b.ReportMetric(float64(maxFlows), "max-flows-changed/insert")
	b.ReportMetric(float64(p50.Microseconds())/1000, "insert-p50-ms")
	b.ReportMetric(float64(p99.Microseconds())/1000, "insert-p99-ms")
	b.ReportMetric(float64(percentile(updates, 50).Microseconds())/1000, "update-p50-ms")
	b.ReportMetric(float64(percentile(deletes, 50).Microseconds())/1000, "delete-p50-ms")
	b.ReportMetric(float64(percentile(noops, 50).Microseconds())/1000, "same-state-p50-ms")
	b.ReportMetric(float64(percentile(floor, 50).Microseconds())/1000, "ovs-bundle-p50-ms")
	b.ReportMetric(float64(maxFlows)/float64(coldFlows), "flows-changed/cold-flows")
	b.ReportMetric(float64(p50)/float64(cold), "insert-p50/cold-install")
}

// percentile is the p-th percentile of ds.
func percentile(ds []time.Duration, p int) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[min(len(s)-1, len(s)*p/100)]
}

// dropFrom is an application-tier policy over db with one ingress Drop
// rule from the i-th /32 of 10.200.0.0/16 on TCP port 5432.
func dropFrom(name string, prio float64, i int) *controlplane.NetworkPolicy {
	tier := tiers.ApplicationPriority
	drop := controlplane.RuleActionDrop
	return &controlplane.NetworkPolicy{
		ObjectMeta:      metav1.ObjectMeta{Name: name, UID: types.UID("uid-" + name), Generation: 1},
		AppliedToGroups: []string{"db"},
		TierPriority:    &tier,
		Priority:        &prio,
		Rules: []controlplane.NetworkPolicyRule{{
			Direction: controlplane.DirectionIn, Action: &drop, Priority: 0,
			From:     controlplane.NetworkPolicyPeer{IPBlocks: []controlplane.IPBlock{{CIDR: controlplane.IPNet{IP: controlplane.IPAddress{10, 200, byte(i >> 8), byte(i)}, PrefixLength: 32}}}},
			Services: []controlplane.Service{svc(controlplane.ProtocolTCP, 5432)},
		}},
	}
}

// changed is the number of flows in one sorted dump and not the other.
func changed(a, b []string) int {
	n := 0
	for _, l := range a {
		if _, ok := slices.BinarySearch(b, l); !ok {
			n++
		}
	}
	for _, l := range b {
		if _, ok := slices.BinarySearch(a, l); !ok {
			n++
		}
	}
	return n
}
