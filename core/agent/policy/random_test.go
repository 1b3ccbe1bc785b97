package policy

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"math/rand/v2"
	"net/netip"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"

	controlplane "github.com/seine-cni/seine/core/apis/controlplane/v1beta1"
	"github.com/seine-cni/seine/core/pipeline"
	"github.com/seine-cni/seine/core/tiers"
	"github.com/seine-cni/seine/ovs/openflow"
)

// randomStates makes a seeded, reproducible sequence of policy States as
// the controlplane watch delivers them: every step replaces, adds or
// deletes one to three objects (policies of every kind — Kubernetes
// NetworkPolicy, Seine ClusterNetworkPolicy and NetworkPolicy, upstream
// ClusterNetworkPolicy — across tiers and priorities, with Allow, Drop,
// Reject and Pass rules, per-rule appliedTo, logging, named ports, port
// ranges and ipBlocks; AppliedToGroups and AddressGroups whose members
// change, that go missing and come back). A changed object is a new
// object, as the watch decodes it; the State's maps are new ones.
type randomStates struct {
	rng  *rand.Rand
	pods []Pod // local pods
	s    State
	gen  int64
}

func newRandomStates(seed uint64, pods []Pod) *randomStates {
	g := &randomStates{rng: rand.New(rand.NewPCG(seed, 1116)), pods: pods,
		s: State{NetworkPolicies: map[string]*controlplane.NetworkPolicy{}, AppliedToGroups: map[string]*controlplane.AppliedToGroup{},
			AddressGroups: map[string]*controlplane.AddressGroup{}}}
	for i := range 4 {
		g.s.AppliedToGroups[fmt.Sprintf("atg%d", i)] = g.atg(fmt.Sprintf("atg%d", i))
	}
	for i := range 5 {
		g.s.AddressGroups[fmt.Sprintf("ag%d", i)] = g.ag(fmt.Sprintf("ag%d", i))
	}
	return g
}

// Step returns the next State and what changed.
func (g *randomStates) Step() (State, string) {
	s := State{NetworkPolicies: maps.Clone(g.s.NetworkPolicies), AppliedToGroups: maps.Clone(g.s.AppliedToGroups),
		AddressGroups: maps.Clone(g.s.AddressGroups)}
	var what []string
	for range 1 + g.rng.IntN(3) {
		switch n := g.rng.IntN(20); {
		case n < 11:
			name := fmt.Sprintf("p%02d", g.rng.IntN(24))
			s.NetworkPolicies[name] = g.policy(name)
			what = append(what, "set "+name)
		case n < 14:
			name := fmt.Sprintf("p%02d", g.rng.IntN(24))
			delete(s.NetworkPolicies, name)
			what = append(what, "delete "+name)
		case n < 16:
			// atg4 and ag5 only come and go.
			what = append(what, changeGroup(g, s.AppliedToGroups, fmt.Sprintf("atg%d", g.rng.IntN(5)), g.atg))
		default:
			what = append(what, changeGroup(g, s.AddressGroups, fmt.Sprintf("ag%d", g.rng.IntN(6)), g.ag))
		}
	}
	g.s = s
	return s, strings.Join(what, ", ")
}

// changeGroup deletes group name from m (one time in six) or sets a new one.
func changeGroup[G any](g *randomStates, m map[string]*G, name string, group func(string) *G) string {
	if g.rng.IntN(6) == 0 {
		delete(m, name)
		return "delete " + name
	}
	m[name] = group(name)
	return "set " + name
}

func (g *randomStates) members(locals int) []controlplane.GroupMember {
	var out []controlplane.GroupMember
	for _, p := range g.pods {
		if g.rng.IntN(3) < locals {
			m := controlplane.GroupMember{Pod: controlplane.PodReference{Namespace: p.Namespace, Name: p.Name}}
			for _, ip := range p.IPs {
				m.IPs = append(m.IPs, ip.AsSlice())
			}
			m.NamedPorts = []controlplane.NamedPort{{Name: "http", Port: int32(8080 + g.rng.IntN(2)), Protocol: controlplane.ProtocolTCP}}
			out = append(out, m)
		}
	}
	for range g.rng.IntN(4) {
		i := g.rng.IntN(12)
		out = append(out, controlplane.GroupMember{Pod: controlplane.PodReference{Namespace: "far", Name: fmt.Sprintf("r%d", i)},
			IPs:        []controlplane.IPAddress{{10, 244, 2, byte(10 + i)}},
			NamedPorts: []controlplane.NamedPort{{Name: "http", Port: int32(8080 + i%3), Protocol: controlplane.ProtocolTCP}}})
	}
	return out
}

func (g *randomStates) atg(name string) *controlplane.AppliedToGroup {
	return &controlplane.AppliedToGroup{ObjectMeta: metav1.ObjectMeta{Name: name}, Members: g.members(2)}
}

func (g *randomStates) ag(name string) *controlplane.AddressGroup {
	return &controlplane.AddressGroup{ObjectMeta: metav1.ObjectMeta{Name: name}, Members: g.members(1)}
}

func (g *randomStates) policy(name string) *controlplane.NetworkPolicy {
	r := g.rng
	g.gen++
	np := &controlplane.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Name: name, UID: types.UID("uid-" + name), Generation: g.gen}}
	for range 1 + r.IntN(2) {
		np.AppliedToGroups = append(np.AppliedToGroups, fmt.Sprintf("atg%d", r.IntN(5)))
	}
	kind := []controlplane.NetworkPolicyType{controlplane.K8sNetworkPolicy, controlplane.SeineClusterNetworkPolicy,
		controlplane.SeineNetworkPolicy, controlplane.UpstreamClusterNetworkPolicy}[r.IntN(4)]
	np.SourceRef = &controlplane.NetworkPolicyReference{Type: kind, Name: name, UID: "src-" + name}
	if kind == controlplane.K8sNetworkPolicy {
		np.PolicyTypes = [][]controlplane.PolicyType{{controlplane.PolicyTypeIngress}, {controlplane.PolicyTypeEgress},
			{controlplane.PolicyTypeIngress, controlplane.PolicyTypeEgress}}[r.IntN(3)]
	} else {
		tier := []int32{tiers.EmergencyPriority, tiers.SecurityOpsPriority, tiers.ApplicationPriority, tiers.BaselinePriority}[r.IntN(4)]
		if kind == controlplane.UpstreamClusterNetworkPolicy {
			tier = []int32{tiers.UpstreamAdminPriority, tiers.UpstreamBaselinePriority}[r.IntN(2)]
		}
		prio := []float64{1, 1.5, 2, 5, 10, 10.25}[r.IntN(6)]
		np.TierPriority, np.Priority = &tier, &prio
	}
	for i := range 1 + r.IntN(3) {
		rule := controlplane.NetworkPolicyRule{Direction: controlplane.DirectionIn, Priority: int32(i)}
		if r.IntN(2) == 0 {
			rule.Direction = controlplane.DirectionOut
		}
		var peer controlplane.NetworkPolicyPeer
		for range r.IntN(3) {
			peer.AddressGroups = append(peer.AddressGroups, fmt.Sprintf("ag%d", r.IntN(6)))
		}
		if r.IntN(3) == 0 {
			b := controlplane.IPBlock{CIDR: controlplane.IPNet{IP: controlplane.IPAddress{10, 96, byte(r.IntN(4)), 0}, PrefixLength: 22}}
			if r.IntN(2) == 0 {
				b.Except = []controlplane.IPNet{{IP: controlplane.IPAddress{10, 96, byte(r.IntN(4)), 0}, PrefixLength: 24}}
			}
			if r.IntN(25) == 0 {
				b.CIDR.PrefixLength = 40 // invalid: fails the rule (closed when tiered)
			}
			peer.IPBlocks = append(peer.IPBlocks, b)
		}
		if rule.Direction == controlplane.DirectionIn {
			rule.From = peer
		} else {
			rule.To = peer
		}
		for range r.IntN(3) {
			switch r.IntN(4) {
			case 0:
				p := intstr.FromString("http")
				rule.Services = append(rule.Services, controlplane.Service{Protocol: controlplane.ProtocolTCP, Port: &p})
			case 1:
				p, end := intstr.FromInt32(int32(1000+r.IntN(3))), int32(1010+r.IntN(40))
				rule.Services = append(rule.Services, controlplane.Service{Protocol: controlplane.ProtocolUDP, Port: &p, EndPort: &end})
			default:
				p := intstr.FromInt32(int32([]int{53, 80, 443, 5432}[r.IntN(4)]))
				proto := []controlplane.Protocol{controlplane.ProtocolTCP, controlplane.ProtocolUDP, controlplane.ProtocolSCTP}[r.IntN(3)]
				rule.Services = append(rule.Services, controlplane.Service{Protocol: proto, Port: &p})
			}
		}
		if np.TierPriority != nil {
			a := []controlplane.RuleAction{controlplane.RuleActionAllow, controlplane.RuleActionDrop,
				controlplane.RuleActionReject, controlplane.RuleActionPass}[r.IntN(4)]
			rule.Action = &a
			rule.EnableLogging = r.IntN(5) == 0
			if r.IntN(4) == 0 {
				rule.AppliedToGroups = []string{fmt.Sprintf("atg%d", r.IntN(5))}
			}
		}
		np.Rules = append(np.Rules, rule)
	}
	return np
}

// reference computes a node's policy flows from scratch for every State:
// the whole resolution, and the priority allocation given the whole rule
// list (with its own history, as the allocator keeps priorities that
// still fit), as the controller computed them before it was incremental.
type reference struct{ prios priorities }

func (ref *reference) resolve(s State, pods []Pod, sources []netip.Addr) resolved {
	r := resolve(s, pods, sources)
	if _, err := ref.prios.assign(&r.set, r.orders); err != nil {
		r.problems = append(r.problems, err.Error())
	}
	return r
}

// flows are the flows of r under round, as the switch holds them.
func (ref *reference) flows(r resolved, round pipeline.Round) ([]*openflow.Flow, error) {
	if emptySet(r.set) {
		return nil, nil
	}
	return pipeline.PolicyFlows(r.set, round)
}

// TestIncrementalMatchesFullRecompute drives the controller (fake node
// and switch) through random State sequences and, after every step,
// compares the switch's table — built only from the bundles the
// controller sent — with the flows of a full recompute from scratch
// (reference), and the controller's realizations with the recompute's.
// Now and then the local pods change (a full resolution), a bundle is
// refused (the table must stay as it was; the next step recovers), or the
// switch reconnects under a new round (a full diff against what it
// holds). Seeded; a failure names the seed, the step and what changed.
func TestIncrementalMatchesFullRecompute(t *testing.T) {
	other := Pod{Namespace: "default", Name: "api-0", OFPort: 12, IPs: []netip.Addr{netip.MustParseAddr("10.244.1.12")}}
	steps, seeds := 300, uint64(6)
	if testing.Short() {
		steps, seeds = 100, 2
	}
	ctx := context.Background()
	for seed := uint64(1); seed <= seeds; seed++ {
		sn := &settlingNode{fakeNode: newFakeNode(webPod, dbPod, other)}
		n := sn.fakeNode
		c, err := New(Config{Node: sn, Logger: slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelError})),
			StateFile: filepath.Join(t.TempDir(), "state.json")})
		if err != nil {
			t.Fatal(err)
		}
		g := newRandomStates(seed, []Pod{webPod, dbPod, other})
		var ref reference
		var want string
		var installed pipeline.PolicySet // the reference's, as last installed
		incremental, compared := 0, 0
		for step := range steps {
			s, what := g.Step()
			if step > 0 && g.rng.IntN(25) == 0 {
				n.mu.Lock()
				if len(n.pods) == 3 {
					n.pods = n.pods[:2]
				} else {
					n.pods = append(n.pods, other)
				}
				n.mu.Unlock()
				what += ", pods " + fmt.Sprint(len(n.pods))
			}
			if g.rng.IntN(40) == 0 {
				// The switch reconnects: the agent replays every flow
				// under a new round, the policies' from Flows.
				n.mu.Lock()
				n.round++
				fs, err := c.Flows(n.round)
				if err != nil {
					t.Fatal(err)
				}
				n.flows = map[string]*openflow.Flow{}
				for _, f := range fs {
					n.flows[f.Key()] = f
				}
				n.mu.Unlock()
				what += ", reconnected"
			}
			fail := step > 0 && g.rng.IntN(20) == 0
			if fail {
				n.mu.Lock()
				n.fail, n.failOnce = fmt.Errorf("bundle refused"), true
				n.mu.Unlock()
			}
			before, settles, deltas := n.table(), len(sn.narrowed), c.deltas
			err := c.Sync(ctx, s)
			r := ref.resolve(s, n.LocalPods(), n.NodeSources())
			n.mu.Lock()
			n.fail = nil // when nothing was sent, nothing failed
			n.mu.Unlock()
			if fail && err != nil {
				if got := n.table(); got != before {
					t.Fatalf("seed %d step %d (%s): a refused bundle changed the table", seed, step, what)
				}
				continue
			}
			if err != nil {
				t.Fatalf("seed %d step %d (%s): sync: %v", seed, step, what, err)
			}
			if c.deltas > deltas {
				incremental++
			}
			fs, err := ref.flows(r, n.round)
			if err != nil {
				t.Fatalf("seed %d step %d: reference: %v", seed, step, err)
			}
			pipeline.Sort(fs)
			want = pipeline.Text(fs)
			if got := n.table(); got != want {
				t.Fatalf("seed %d step %d (%s): the switch holds other flows than a full recompute:\n%s", seed, step, what, lineDiff(want, got))
			}
			// What the datapath was told to settle: what a full
			// comparison of the sets finds (as sets of traffic).
			ips := map[uint32][]netip.Addr{}
			for _, p := range n.LocalPods() {
				ips[p.OFPort] = p.IPs
			}
			if len(sn.narrowed) > settles {
				got, want := narrowedSet(sn.narrowed[len(sn.narrowed)-1]), narrowedSet(narrowedTraffic(installed, r.set, ips))
				compared++
				if got != want && got != "everything" {
					t.Fatalf("seed %d step %d (%s): narrowed\n%s\nwant\n%s", seed, step, what, got, want)
				}
			}
			installed = r.set
			wantReal := Realizations(r)
			if got := c.Realizations(); !maps.Equal(got, wantReal) {
				t.Fatalf("seed %d step %d (%s): realizations %v, want %v", seed, step, what, got, wantReal)
			}
		}
		t.Logf("seed %d: %d of %d steps incremental, %d datapath settlings compared; %d flows at the end",
			seed, incremental, steps, compared, strings.Count(want, "\n"))
		if incremental < steps/2 {
			t.Errorf("seed %d: only %d of %d steps were incremental", seed, incremental, steps)
		}
	}
}

// narrowedSet renders narrowed traffic as a set: sorted, once each.
func narrowedSet(ns []Narrowed) string {
	var out []string
	for _, n := range ns {
		out = append(out, n.String())
	}
	slices.Sort(out)
	return strings.Join(slices.Compact(out), "\n")
}

// Realizations is what the controller reports for r when its flows are
// installed and nothing waits for the datapath.
func Realizations(r resolved) map[string]Realization {
	out := map[string]Realization{}
	for name, gen := range r.gens {
		out[name] = Realization{Generation: gen}
	}
	maps.Copy(out, r.failed)
	return out
}

// lineDiff lists the lines only in want (-) and only in got (+).
func lineDiff(want, got string) string {
	w, g := strings.Split(want, "\n"), strings.Split(got, "\n")
	var out []string
	for _, l := range w {
		if !slices.Contains(g, l) {
			out = append(out, "- "+l)
		}
	}
	for _, l := range g {
		if !slices.Contains(w, l) {
			out = append(out, "+ "+l)
		}
	}
	return strings.Join(out, "\n")
}
