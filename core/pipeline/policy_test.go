package pipeline

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/seine-cni/seine/ovs/openflow"
)

// The policies of the policy tests, on the routed-encap-geneve node:
//
//   - "db" isolates db-0 for ingress. Rule 0 allows TCP 5432 and SCTP
//     7000-7001 from web-0 and node-b's pod; rule 1 allows UDP 53-60 from node-c's pod CIDR
//     except its upper half.
//   - "web" isolates web-0 for egress. Rule 0 allows TCP 5432 to db-0;
//     rule 1 allows everything to 0.0.0.0/0 and ::/0 except 10.0.0.0/8.
func policyScenario() PolicySet {
	host := func(a netip.Addr) PolicyPeer { return PolicyPeer{CIDR: netip.PrefixFrom(a, 32)} }
	return PolicySet{
		IngressIsolated: []uint32{portDB},
		EgressIsolated:  []uint32{portWeb},
		NodeSources:     []netip.Addr{gatewayIP},
		Rules: []PolicyRule{
			{Policy: "db", Key: "0", Direction: PolicyIngress, Targets: []uint32{portDB},
				Peers:    []PolicyPeer{host(webIP), host(peerBPod)},
				Services: []PolicyService{{Protocol: ProtoTCP, Port: 5432}, {Protocol: ProtoSCTP, Port: 7000, EndPort: 7001}}},
			{Policy: "db", Key: "1", Direction: PolicyIngress, Targets: []uint32{portDB},
				Peers:    []PolicyPeer{{CIDR: pfx("10.244.3.0/24"), Except: []netip.Prefix{pfx("10.244.3.128/25")}}},
				Services: []PolicyService{{Protocol: ProtoUDP, Port: 53, EndPort: 60}}},
			{Policy: "web", Key: "0", Direction: PolicyEgress, Targets: []uint32{portWeb},
				Peers:    []PolicyPeer{host(dbIP)},
				Services: []PolicyService{{Protocol: ProtoTCP, Port: 5432}}},
			{Policy: "web", Key: "1", Direction: PolicyEgress, Targets: []uint32{portWeb},
				Peers: []PolicyPeer{{CIDR: pfx("0.0.0.0/0"), Except: []netip.Prefix{pfx("10.0.0.0/8")}}, {CIDR: pfx("::/0")}}},
		},
	}
}

func policyFlowsOrFail(t *testing.T, s PolicySet, r Round) []*openflow.Flow {
	t.Helper()
	flows, err := PolicyFlows(s, r)
	if err != nil {
		t.Fatalf("policy flows: %v", err)
	}
	return flows
}

// TestPolicyGolden compares the policy flows with testdata/policy-basic.flows
// (regenerate with go test ./core/pipeline -run TestPolicyGolden -update).
func TestPolicyGolden(t *testing.T) {
	checkGolden(t, "policy-basic", Text(policyFlowsOrFail(t, policyScenario(), goldenRound)))
}

// A rule costs |targets| + |peers| + |services| clause flows and one
// conj_id flow, not their product, and shared clauses are one flow.
func TestPolicyFlowCountIsASum(t *testing.T) {
	var targets []uint32
	var peers []PolicyPeer
	var svcs []PolicyService
	for i := range 20 {
		targets = append(targets, uint32(100+i))
		peers = append(peers, PolicyPeer{CIDR: netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 9, 0, byte(i)}), 32)})
		svcs = append(svcs, PolicyService{Protocol: ProtoTCP, Port: uint16(8000 + i)})
	}
	rule := PolicyRule{Policy: "p", Key: "0", Direction: PolicyIngress, Targets: targets, Peers: peers, Services: svcs}
	flows := policyFlowsOrFail(t, PolicySet{Rules: []PolicyRule{rule}}, 1)
	// 2 bypass flows + 60 clauses + 1 conj_id flow + 1 metric flow.
	if len(flows) != 2+60+1+1 {
		t.Fatalf("%d flows, want 64:\n%s", len(flows), Text(flows))
	}
	// A second rule with the same targets and peers shares their flows.
	rule2 := rule
	rule2.Key, rule2.Services = "1", []PolicyService{{Protocol: ProtoUDP}}
	flows = policyFlowsOrFail(t, PolicySet{Rules: []PolicyRule{rule, rule2}}, 1)
	if len(flows) != 2+60+1+1+1+1+1 {
		t.Fatalf("%d flows, want 67", len(flows))
	}
	id0, id1 := PolicyConjID("p", "0"), PolicyConjID("p", "1")
	wantText := fmt.Sprintf("actions=conjunction(%d,1/3),conjunction(%d,1/3)", min(id0, id1), max(id0, id1))
	if !strings.Contains(Text(flows), wantText) {
		t.Errorf("no merged target clause %q:\n%s", wantText, Text(flows))
	}
}

// The flows depend only on the set, not on the order of rules, targets or
// peers, and a re-sync gives identical flows.
func TestPolicyFlowsAreDeterministic(t *testing.T) {
	s := policyScenario()
	want := Text(policyFlowsOrFail(t, s, 3))
	for i := range 20 {
		r := rand.New(rand.NewPCG(uint64(i), 7))
		c := s
		c.Rules = slices.Clone(s.Rules)
		r.Shuffle(len(c.Rules), func(i, j int) { c.Rules[i], c.Rules[j] = c.Rules[j], c.Rules[i] })
		for k := range c.Rules {
			c.Rules[k].Peers = slices.Clone(c.Rules[k].Peers)
			r.Shuffle(len(c.Rules[k].Peers), func(i, j int) {
				c.Rules[k].Peers[i], c.Rules[k].Peers[j] = c.Rules[k].Peers[j], c.Rules[k].Peers[i]
			})
		}
		if got := Text(policyFlowsOrFail(t, c, 3)); got != want {
			t.Fatalf("order changed the flows:\n%s", lineDiff(want, got))
		}
	}
}

func TestPolicyCookies(t *testing.T) {
	for _, f := range policyFlowsOrFail(t, policyScenario(), 9) {
		c := Cookie(f.CookieValue())
		if c.Round() != 9 || c.Category() != CategoryPolicy {
			t.Errorf("cookie %s on %s", c, f)
		}
		s := f.String()
		switch {
		case strings.Contains(s, "conj_id="+fmt.Sprint(PolicyConjID("db", "0"))):
			if c.ID() != PolicyID("db") {
				t.Errorf("conj_id flow of db has cookie %s", c)
			}
		case strings.Contains(s, "ct_label"):
			// An allow rule's metric flow is its policy's.
			if c.ID() == 0 {
				t.Errorf("metric flow with cookie %s: %s", c, s)
			}
		case strings.Contains(s, "ct_state"), strings.Contains(s, "actions=drop"):
			if c.ID() != 0 {
				t.Errorf("shared flow with cookie %s: %s", c, s)
			}
		}
	}
}

func TestPolicyBadRules(t *testing.T) {
	s := PolicySet{Rules: []PolicyRule{
		{Policy: "p", Key: "0", Direction: PolicyEgress, Targets: []uint32{1}, Peers: []PolicyPeer{{CIDR: pfx("10.0.0.0/8")}}},
		{Policy: "p", Key: "0", Direction: PolicyEgress, Targets: []uint32{2}, Peers: []PolicyPeer{{CIDR: pfx("10.0.0.0/8")}}},
	}}
	if _, err := PolicyFlows(s, 1); !errors.Is(err, ErrBadPolicy) {
		t.Errorf("duplicate rule key: %v", err)
	}
	s.Rules[1].Direction = 0
	s.Rules[1].Key = "1"
	if _, err := PolicyFlows(s, 1); !errors.Is(err, ErrBadPolicy) {
		t.Errorf("bad direction: %v", err)
	}
}

// Two rules whose IDs collide get distinct conjunctions: the later one in
// (policy, key) order takes the next free ID, whatever the input order.
func TestPolicyConjIDCollision(t *testing.T) {
	// Found by a birthday search over the keys "0", "1", ...
	a, b := "14008", "239980"
	if PolicyConjID("p", a) != PolicyConjID("p", b) {
		t.Fatalf("keys %q and %q no longer collide", a, b)
	}
	rule := func(key string, port uint32) PolicyRule {
		return PolicyRule{Policy: "p", Key: key, Direction: PolicyEgress, Targets: []uint32{port}, Peers: []PolicyPeer{{CIDR: pfx("10.0.0.0/8")}}}
	}
	s := PolicySet{Rules: []PolicyRule{rule(b, 2), rule(a, 1)}}
	text := Text(policyFlowsOrFail(t, s, 1))
	id := PolicyConjID("p", a)
	for _, want := range []string{
		fmt.Sprintf("in_port=1 actions=conjunction(%d,1/2)", id),
		fmt.Sprintf("in_port=2 actions=conjunction(%d,1/2)", id%0x7fffffff+1),
		fmt.Sprintf("conj_id=%d,", id), fmt.Sprintf("conj_id=%d,", id%0x7fffffff+1),
	} {
		if !strings.Contains(text, want) {
			t.Errorf("keys %q and %q collide on %d; flows lack %q:\n%s", a, b, id, want, text)
		}
	}
	s.Rules[0], s.Rules[1] = s.Rules[1], s.Rules[0]
	if got := Text(policyFlowsOrFail(t, s, 1)); got != text {
		t.Errorf("input order changed the IDs:\n%s", lineDiff(text, got))
	}
}

func TestPolicyRulesThatCannotMatchHaveNoFlows(t *testing.T) {
	for name, ru := range map[string]PolicyRule{
		"no targets":   {Policy: "p", Key: "0", Direction: PolicyIngress, Peers: []PolicyPeer{{CIDR: pfx("10.0.0.0/8")}}},
		"no peers":     {Policy: "p", Key: "0", Direction: PolicyIngress, Targets: []uint32{1}},
		"IPv6 only":    {Policy: "p", Key: "0", Direction: PolicyIngress, Targets: []uint32{1}, Peers: []PolicyPeer{{CIDR: pfx("::/0")}}},
		"all excepted": {Policy: "p", Key: "0", Direction: PolicyIngress, Targets: []uint32{1}, Peers: []PolicyPeer{{CIDR: pfx("10.1.0.0/16"), Except: []netip.Prefix{pfx("10.0.0.0/8")}}}},
	} {
		flows := policyFlowsOrFail(t, PolicySet{Rules: []PolicyRule{ru}}, 1)
		if len(flows) != 2 {
			t.Errorf("%s: want only the 2 bypass flows, got:\n%s", name, Text(flows))
		}
	}
	bad := PolicyRule{Policy: "p", Key: "0", Direction: PolicyIngress, Targets: []uint32{1},
		Peers: []PolicyPeer{{CIDR: pfx("10.0.0.0/8")}}, Services: []PolicyService{{Protocol: ProtoTCP, Port: 90, EndPort: 80}}}
	if _, err := PolicyFlows(PolicySet{Rules: []PolicyRule{bad}}, 1); !errors.Is(err, ErrBadPolicy) {
		t.Errorf("reversed range: %v", err)
	}
}

func TestPortRangeMasks(t *testing.T) {
	for _, tc := range []struct {
		lo, hi uint16
		want   string
	}{
		{80, 80, "0x50/0xffff"},
		{0, 65535, "0x0/0x0"},
		{1, 65535, "0x1/0xffff 0x2/0xfffe 0x4/0xfffc 0x8/0xfff8 0x10/0xfff0 0x20/0xffe0 0x40/0xffc0 0x80/0xff80 0x100/0xff00 0x200/0xfe00 0x400/0xfc00 0x800/0xf800 0x1000/0xf000 0x2000/0xe000 0x4000/0xc000 0x8000/0x8000"},
		{53, 60, "0x35/0xffff 0x36/0xfffe 0x38/0xfffc 0x3c/0xffff"},
		{1024, 2047, "0x400/0xfc00"},
		{65534, 65535, "0xfffe/0xfffe"},
		{65535, 65535, "0xffff/0xffff"},
		{10, 9, ""},
	} {
		var parts []string
		for _, m := range PortRangeMasks(tc.lo, tc.hi) {
			parts = append(parts, fmt.Sprintf("%#x/%#x", m.Value, m.Mask))
		}
		if got := strings.Join(parts, " "); got != tc.want {
			t.Errorf("%d-%d: %s, want %s", tc.lo, tc.hi, got, tc.want)
		}
	}
}

// Every port is covered by exactly the masks of the ranges containing it.
func TestPortRangeMasksExact(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for range 300 {
		lo := uint16(r.IntN(65536))
		hi := lo + uint16(r.IntN(65536-int(lo)))
		masks := PortRangeMasks(lo, hi)
		if len(masks) > 30 {
			t.Errorf("%d-%d: %d masks", lo, hi, len(masks))
		}
		for _, p := range []uint16{0, lo - 1, lo, lo + 1, (lo + hi) / 2, hi - 1, hi, hi + 1, 65535, uint16(r.IntN(65536))} {
			n := 0
			for _, m := range masks {
				if m.Contains(p) {
					n++
				}
			}
			want := 0
			if p >= lo && p <= hi {
				want = 1
			}
			if n != want {
				t.Fatalf("%d-%d: port %d covered %d times, want %d (%v)", lo, hi, p, n, want, masks)
			}
		}
	}
}

func TestSubtractPrefixes(t *testing.T) {
	for _, tc := range []struct {
		p      string
		except []string
		want   string
	}{
		{"10.0.0.0/8", nil, "10.0.0.0/8"},
		{"10.0.0.0/8", []string{"192.168.0.0/16"}, "10.0.0.0/8"},
		{"10.0.0.0/8", []string{"0.0.0.0/0"}, ""},
		{"10.0.0.0/8", []string{"10.0.0.0/8"}, ""},
		{"10.244.3.0/24", []string{"10.244.3.128/25"}, "10.244.3.0/25"},
		{"10.0.0.0/8", []string{"10.1.0.0/16"}, "10.0.0.0/16 10.2.0.0/15 10.4.0.0/14 10.8.0.0/13 10.16.0.0/12 10.32.0.0/11 10.64.0.0/10 10.128.0.0/9"},
		{"10.0.0.0/30", []string{"10.0.0.1/32", "10.0.0.2/32"}, "10.0.0.0/32 10.0.0.3/32"},
		{"0.0.0.0/0", []string{"::/0"}, "0.0.0.0/0"},
	} {
		var ex []netip.Prefix
		for _, e := range tc.except {
			ex = append(ex, pfx(e))
		}
		var parts []string
		for _, p := range SubtractPrefixes(pfx(tc.p), ex) {
			parts = append(parts, p.String())
		}
		if got := strings.Join(parts, " "); got != tc.want {
			t.Errorf("%s - %v = %s, want %s", tc.p, tc.except, got, tc.want)
		}
	}
}

// Random addresses are in the result exactly when they are in p and in no
// except.
func TestSubtractPrefixesExact(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	addr := func() netip.Addr {
		return netip.AddrFrom4([4]byte{10, byte(r.IntN(4)), byte(r.IntN(256)), byte(r.IntN(256))})
	}
	for range 200 {
		p := netip.PrefixFrom(addr(), 8+r.IntN(12)).Masked()
		var ex []netip.Prefix
		for range r.IntN(4) {
			ex = append(ex, netip.PrefixFrom(addr(), 8+r.IntN(25)).Masked())
		}
		got := SubtractPrefixes(p, ex)
		for range 200 {
			a := addr()
			want := p.Contains(a) && !slices.ContainsFunc(ex, func(e netip.Prefix) bool { return e.Contains(a) })
			n := 0
			for _, g := range got {
				if g.Contains(a) {
					n++
				}
			}
			if (n == 1) != want || n > 1 {
				t.Fatalf("%s - %v: %s in %d result prefixes, want in=%v (%v)", p, ex, a, n, want, got)
			}
		}
	}
}
