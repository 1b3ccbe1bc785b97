package pipeline

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"testing"

	"github.com/seine-cni/seine/ovs/openflow"
)

// sharedPortRules are n ingress rules of n policies that all allow TCP 80
// to db-0, each from a peer of its own (10.50.x.y): one port clause and one
// target clause shared by all of them, the shape of the issue's ~4,000
// policies on one node.
func sharedPortRules(n int) PolicySet {
	s := PolicySet{IngressIsolated: []uint32{portDB}, NodeSources: []netip.Addr{gatewayIP}}
	for i := range n {
		s.Rules = append(s.Rules, PolicyRule{
			Policy: fmt.Sprintf("p%05d", i), Key: "0", Direction: PolicyIngress, Targets: []uint32{portDB},
			Peers:    []PolicyPeer{{CIDR: netip.PrefixFrom(sharedPortPeer(i), 32)}},
			Services: []PolicyService{{Protocol: ProtoTCP, Port: 80}},
		})
	}
	return s
}

func sharedPortPeer(i int) netip.Addr { return netip.AddrFrom4([4]byte{10, 50, byte(i >> 8), byte(i)}) }

// clauseCopies returns the flows of table t whose match, without a
// metadata bit, is base (copies of one clause).
func clauseCopies(flows []*openflow.Flow, t Table, base string) []*openflow.Flow {
	var out []*openflow.Flow
	for _, f := range flows {
		m := f.MatchString()
		if i := strings.Index(m, ",metadata=0/"); i >= 0 {
			m = m[:i] + m[strings.IndexAny(m[i+1:]+",", ",")+i+1:]
		}
		if f.TableID() == uint8(t) && m == base {
			out = append(out, f)
		}
	}
	return out
}

// TestPolicySharedClauseSplit: 5,000 rules sharing one port clause made a
// flow of 5,000 conjunction actions (80 KiB, more than an OpenFlow message
// holds). The clause is now split into copies that each fit, carrying
// every conjunction exactly once.
func TestPolicySharedClauseSplit(t *testing.T) {
	const n = 5000
	flows := policyFlowsOrFail(t, sharedPortRules(n), 1)
	for _, f := range flows {
		if _, err := openflow.Marshal(openflow.AddFlow(f), 1); err != nil {
			t.Fatalf("a policy flow does not fit in a message: %v", err)
		}
	}
	for _, base := range []string{
		"priority=200,tcp,tp_dst=80",
		fmt.Sprintf("priority=200,ip,reg1=0x%x", portDB),
	} {
		copies := clauseCopies(flows, IngressPolicy, base)
		if len(copies) != 8 { // 5,000 / ClauseConjunctions, rounded up to a power of two
			t.Fatalf("%s: %d copies, want 8:\n%s", base, len(copies), Text(copies))
		}
		seen := map[uint32]int{}
		masks := map[string]bool{}
		for _, f := range copies {
			acts, err := openflow.DecodeInstructions(f.InstructionBytes())
			if err != nil {
				t.Fatal(err)
			}
			if len(acts) > maxClauseCopyConjs {
				t.Errorf("%s: a copy has %d conjunctions", base, len(acts))
			}
			for _, a := range acts {
				seen[a.(openflow.Conjunction).ID]++
			}
			m := f.MatchString()
			if masks[m] {
				t.Errorf("two copies match %s", m)
			}
			masks[m] = true
		}
		if len(seen) != n {
			t.Errorf("%s: the copies carry %d conjunctions, want %d", base, len(seen), n)
		}
		for id, k := range seen {
			if k != 1 {
				t.Errorf("%s: conjunction %d in %d copies", base, id, k)
			}
		}
		if !masks[base] {
			t.Errorf("%s: no copy with the plain match", base)
		}
	}
	// Under the bound a clause is the one plain flow it always was.
	small := policyFlowsOrFail(t, sharedPortRules(ClauseConjunctions), 1)
	if got := clauseCopies(small, IngressPolicy, "priority=200,tcp,tp_dst=80"); len(got) != 1 || strings.Contains(got[0].String(), "metadata") {
		t.Errorf("%d rules: port clause is\n%s", ClauseConjunctions, Text(got))
	}
}

// One more rule changes one copy of each shared clause, not all of them.
func TestPolicySharedClauseSplitIsStable(t *testing.T) {
	before := policyFlowsOrFail(t, sharedPortRules(5000), 1)
	after := policyFlowsOrFail(t, sharedPortRules(5001), 1)
	have := map[string]string{}
	for _, f := range before {
		have[f.Key()] = string(f.InstructionBytes())
	}
	changed := 0
	for _, f := range after {
		if acts, ok := have[f.Key()]; !ok || acts != string(f.InstructionBytes()) {
			changed++
		}
	}
	// The new rule's conj_id flow, metric flow and peer clause, one copy
	// of the port clause and one of the target clause.
	if changed != 5 {
		t.Errorf("adding a rule changed %d flows, want 5", changed)
	}
}

// The tracer (OVS's conjunction semantics) allows exactly what the rules
// allow when their clauses are split.
func TestTracePolicySharedClauseSplit(t *testing.T) {
	flows := buildOrFail(t, scenarioByName(t, "routed-encap-geneve"), 1)
	flows = append(flows, policyFlowsOrFail(t, sharedPortRules(5000), 1)...)
	tr, err := NewTracer(flows)
	if err != nil {
		t.Fatal(err)
	}
	for _, i := range []int{0, 1, 2047, 2048, 4999} {
		p := sharedPortPeer(i)
		wantOutput(t, trace(t, tr, fromTunnel(TCPPacket(0, nil, nil, p, dbIP, 40000, 80))), portDB)
		wantDrop(t, trace(t, tr, fromTunnel(TCPPacket(0, nil, nil, p, dbIP, 40000, 81))), IngressPolicy, "drop in table")
	}
	wantDrop(t, trace(t, tr, fromTunnel(TCPPacket(0, nil, nil, sharedPortPeer(5000), dbIP, 40000, 80))), IngressPolicy, "drop in table")
}

func TestPolicyClauseTooShared(t *testing.T) {
	n := maxClauseCopies*ClauseConjunctions + 1
	conjs := make([]openflow.Conjunction, n)
	for i := range conjs {
		conjs[i] = openflow.Conjunction{ID: PolicyConjID(fmt.Sprint(i), "0"), Clause: 3, NClauses: 3}
	}
	if _, err := splitClause(conjs[:n-1]); err != nil {
		t.Errorf("%d rules sharing a clause: %v", n-1, err)
	}
	_, err := splitClause(conjs)
	if !errors.Is(err, ErrBadPolicy) || !strings.Contains(err.Error(), "share one clause") {
		t.Errorf("%d rules sharing a clause: %v", n, err)
	}
}
