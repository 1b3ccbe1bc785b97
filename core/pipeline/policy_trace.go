package pipeline

import (
	"fmt"
	"slices"

	"github.com/seine-cni/seine/ovs/openflow"
)

// conjClauses records, per conjunction ID, the clauses a packet matched at
// one priority and how many the conjunction has.
type conjClauses map[uint32]*conjSeen

type conjSeen struct {
	n       uint8
	clauses map[uint8]bool
}

func (c conjClauses) add(cs []openflow.Conjunction) {
	for _, cj := range cs {
		s := c[cj.ID]
		if s == nil {
			s = &conjSeen{n: cj.NClauses, clauses: map[uint8]bool{}}
			c[cj.ID] = s
		}
		s.clauses[cj.Clause] = true
	}
}

// complete lists the conjunctions whose every clause matched, in ID order.
func (c conjClauses) complete() []uint32 {
	var ids []uint32
	for id, s := range c {
		if len(s.clauses) == int(s.n) {
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)
	return ids
}

// conjunctionsOf returns the conjunction actions of a conjunctive flow; ok
// is false for a flow with any other action (OVS allows no mix).
func conjunctionsOf(f *tracedFlow) (cs []openflow.Conjunction, ok bool) {
	if len(f.actions) == 0 {
		return nil, false
	}
	for _, a := range f.actions {
		c, isConj := a.(openflow.Conjunction)
		if !isConj {
			return nil, false
		}
		cs = append(cs, c)
	}
	return cs, true
}

// conjunctionFlow returns the conj_id flow of a conjunction the packet
// completed at priority prio, or nil when it completed none. Like OVS, it
// looks the conj_id flow up again with conj_id set, taking the highest
// priority flow at prio or above that matches (so a Traceflow copy of a
// conj_id flow, one priority up and matching the tag too, wins for tagged
// packets: core/traceflow's TestTieredCopiesOnRealOVS shows ovs-vswitchd
// does); conj_id is 0 again afterwards. Several complete conjunctions
// are fine when their conj_id flows do the same (two rules allowing the
// same connection); otherwise the trace refuses to choose.
func (x *run) conjunctionFlow(tbl uint8, prio uint16, conj conjClauses) (*tracedFlow, error) {
	ids := conj.complete()
	if len(ids) == 0 {
		return nil, nil
	}
	defer x.fs.setUint(openflow.FieldConjID, 0)
	var hit *tracedFlow
	for _, id := range ids {
		x.fs.setUint(openflow.FieldConjID, uint64(id))
		var f *tracedFlow
		for _, cand := range x.t.tables[tbl] { // highest priority first
			if cand.flow.Priority() < prio {
				break
			}
			if _, soft := conjunctionsOf(cand); !soft && x.fs.matches(cand.match) {
				f = cand
				break
			}
		}
		if f == nil {
			return nil, fmt.Errorf("table %d: conjunction %d is complete but has no conj_id flow at priority %d", tbl, id, prio)
		}
		switch {
		case hit == nil:
			hit = f
		case f.flow.ActionsString() != hit.flow.ActionsString():
			return nil, fmt.Errorf("table %d: conjunctions with different actions complete at priority %d:\n  %s\n  %s", tbl, prio, hit.flow, f.flow)
		}
	}
	return hit, nil
}
