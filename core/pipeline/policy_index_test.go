package pipeline

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"testing"

	"github.com/seine-cni/seine/ovs/openflow"
)

// collidingPolicies returns pairs of policy names whose rule "0" has the
// same conjunction ID, so the index meets collisions and probe chains:
// found among the first names of the form "c<n>".
func collidingPolicies(t testing.TB, pairs int) []string {
	t.Helper()
	seen := map[uint32]string{}
	var out []string
	for i := 0; len(out) < 2*pairs && i < 1<<20; i++ {
		name := fmt.Sprintf("c%d", i)
		id := PolicyConjID(name, "0")
		if other, ok := seen[id]; ok {
			out = append(out, other, name)
		}
		seen[id] = name
	}
	if len(out) < 2*pairs {
		t.Fatalf("found %d colliding pairs, want %d", len(out)/2, pairs)
	}
	return out
}

// randomRule is a random rule of policy p, key k: Kubernetes or tiered,
// either direction, over a few ports, peers and services drawn from small
// pools, so rules share clauses.
func randomRule(rng *rand.Rand, p, k string) PolicyRule {
	ru := PolicyRule{Policy: p, Key: k, Direction: PolicyIngress}
	if rng.IntN(2) == 0 {
		ru.Direction = PolicyEgress
	}
	for range 1 + rng.IntN(3) {
		ru.Targets = append(ru.Targets, uint32(10+rng.IntN(6)))
	}
	for range rng.IntN(4) {
		a := netip.AddrFrom4([4]byte{10, 244, byte(rng.IntN(3)), byte(rng.IntN(8))})
		peer := PolicyPeer{CIDR: netip.PrefixFrom(a, 32)}
		if rng.IntN(5) == 0 {
			peer = PolicyPeer{CIDR: netip.MustParsePrefix("10.244.0.0/16"), Except: []netip.Prefix{netip.PrefixFrom(a, 24).Masked()}}
		}
		ru.Peers = append(ru.Peers, peer)
	}
	if rng.IntN(6) == 0 {
		ru.Peers = append(ru.Peers, PolicyPeer{CIDR: netip.MustParsePrefix("::/0")})
	}
	for range rng.IntN(3) {
		s := PolicyService{Protocol: []uint8{ProtoTCP, ProtoUDP, ProtoSCTP}[rng.IntN(3)], Port: uint16(80 + rng.IntN(3))}
		if rng.IntN(4) == 0 {
			s.EndPort = s.Port + uint16(rng.IntN(40))
		}
		ru.Services = append(ru.Services, s)
	}
	if rng.IntN(2) == 0 {
		ru.Tier = []PolicyTier{TierMain, TierBaseline}[rng.IntN(2)]
		ru.Action = PolicyAction(rng.IntN(int(ActionPass) + 1))
		ru.Priority = TierPrioMin + uint16(2*rng.IntN(8)) // few priorities: tiered clauses are shared too
		ru.Log = rng.IntN(4) == 0
	}
	return ru
}

// TestPolicyIndexMatchesPolicyFlows applies long random sequences of rule
// adds, changes and removals, isolation and node-source changes to a
// PolicyIndex and compares its flows after every step with PolicyFlows of
// the same set computed from scratch. Policy names include colliding and
// adjacent conjunction IDs; even seeds with ExportDenied. Seeded: a
// failure names its seed and step.
func TestPolicyIndexMatchesPolicyFlows(t *testing.T) {
	colliding := collidingPolicies(t, 6)
	rebuilds := 0
	for seed := uint64(1); seed <= 6; seed++ {
		rng := rand.New(rand.NewPCG(seed, 16))
		rules := map[policyRuleRef]PolicyRule{}
		set := func() PolicySet {
			// Even seeds export denied connections (flow export on).
			s := PolicySet{NodeSources: []netip.Addr{netip.MustParseAddr("10.244.1.1")}, ExportDenied: seed%2 == 0}
			for _, r := range rules {
				s.Rules = append(s.Rules, r)
			}
			return s
		}
		x, err := NewPolicyIndex(set())
		if err != nil {
			t.Fatal(err)
		}
		var ing, eg []uint32
		sources := []netip.Addr{netip.MustParseAddr("10.244.1.1")}
		for step := range 250 {
			var upd []PolicyRule
			var del [][2]string
			for range 1 + rng.IntN(3) {
				var p string
				if rng.IntN(3) == 0 {
					p = colliding[rng.IntN(len(colliding))]
				} else {
					p = fmt.Sprintf("p%d", rng.IntN(40))
				}
				k := fmt.Sprint(rng.IntN(2))
				if rng.IntN(3) == 0 {
					delete(rules, policyRuleRef{p, k})
					upd = slices.DeleteFunc(upd, func(o PolicyRule) bool { return o.Policy == p && o.Key == k })
					del = append(del, [2]string{p, k})
					continue
				}
				ru := randomRule(rng, p, k)
				rules[policyRuleRef{p, k}] = ru
				upd = slices.DeleteFunc(upd, func(o PolicyRule) bool { return o.Policy == p && o.Key == k })
				upd = append(upd, ru)
			}
			// An update of a rule also named in del wins (it came later).
			del = slices.DeleteFunc(del, func(d [2]string) bool { _, ok := rules[policyRuleRef{d[0], d[1]}]; return ok })
			if rng.IntN(10) == 0 {
				ing, eg = randomPorts(rng), randomPorts(rng)
				x.SetIsolated(ing, eg)
			}
			if rng.IntN(40) == 0 {
				sources = []netip.Addr{netip.AddrFrom4([4]byte{10, 244, 1, byte(1 + rng.IntN(2))})}
				if err := x.SetNodeSources(sources); err != nil {
					t.Fatal(err)
				}
			}
			if err := x.Update(upd, del); err != nil {
				t.Fatalf("seed %d step %d: update: %v", seed, step, err)
			}
			s := set()
			s.IngressIsolated, s.EgressIsolated, s.NodeSources = ing, eg, sources
			want, err := PolicyFlows(s, 0)
			if err != nil {
				t.Fatalf("seed %d step %d: %v", seed, step, err)
			}
			if got, want := Text(x.Flows()), Text(want); got != want {
				t.Fatalf("seed %d step %d (%d rules): incremental flows differ from a full recompute:\n%s",
					seed, step, len(s.Rules), lineDiff(want, got))
			}
			checkChanged(t, x, want)
		}
		rebuilds += x.rebuilds
	}
	if rebuilds == 0 {
		t.Error("no step met a conjunction ID collision: the test does not cover them")
	}
	t.Logf("%d rebuilds after a collision", rebuilds)
}

// checkChanged checks that every flow the index holds is one it named as
// changed at some point, by clearing and comparing with its flows.
func checkChanged(t *testing.T, x *PolicyIndex, want []*openflow.Flow) {
	t.Helper()
	for _, k := range x.Changed() {
		if f := x.Flow(k); f != nil && !slices.ContainsFunc(want, func(w *openflow.Flow) bool { return w.Key() == k }) {
			t.Fatalf("changed flow %s is not wanted", f)
		}
	}
	x.ClearChanged()
}

func randomPorts(rng *rand.Rand) []uint32 {
	var out []uint32
	for p := uint32(10); p < 16; p++ {
		if rng.IntN(3) == 0 {
			out = append(out, p)
		}
	}
	return out
}

// TestPolicyIndexChangesOnlyTouchedFlows: one rule inserted among many
// changes its own flows only (its conj_id flow and its clauses), and the
// changed set, applied to the flows before, gives the flows after.
func TestPolicyIndexChangesOnlyTouchedFlows(t *testing.T) {
	var s PolicySet
	for i := range 2000 {
		s.Rules = append(s.Rules, PolicyRule{Policy: fmt.Sprintf("p%d", i), Key: "0", Direction: PolicyIngress,
			Targets: []uint32{10}, Peers: []PolicyPeer{{CIDR: netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 200, byte(i >> 8), byte(i)}), 32)}},
			Services: []PolicyService{{Protocol: ProtoTCP, Port: 5432}}, Tier: TierMain, Action: ActionDrop, Priority: TierPrioMin + uint16(2*i)})
	}
	x, err := NewPolicyIndex(s)
	if err != nil {
		t.Fatal(err)
	}
	before := map[string]*openflow.Flow{}
	for _, f := range x.Flows() {
		before[f.Key()] = f
	}
	x.ClearChanged()
	ru := PolicyRule{Policy: "new", Key: "0", Direction: PolicyIngress, Targets: []uint32{10},
		Peers:    []PolicyPeer{{CIDR: netip.MustParsePrefix("10.201.0.1/32")}},
		Services: []PolicyService{{Protocol: ProtoTCP, Port: 5432}}, Tier: TierMain, Action: ActionDrop, Priority: TierPrioMin + 1}
	if err := x.Update([]PolicyRule{ru}, nil); err != nil {
		t.Fatal(err)
	}
	if n := len(x.Changed()); n != 4 {
		t.Errorf("%d flows changed; want 4 (the rule's conj_id flow and its three clauses)", n)
	}
	for _, k := range x.Changed() {
		if f := x.Flow(k); f != nil {
			before[k] = f
		} else {
			delete(before, k)
		}
	}
	s.Rules = append(s.Rules, ru)
	want, err := PolicyFlows(s, 0)
	if err != nil {
		t.Fatal(err)
	}
	got := make([]*openflow.Flow, 0, len(before))
	for _, f := range before {
		got = append(got, f)
	}
	sortPolicyFlows(got)
	if Text(got) != Text(want) {
		t.Errorf("the flows before with the changes applied differ from a full recompute:\n%s", lineDiff(Text(want), Text(got)))
	}
}
