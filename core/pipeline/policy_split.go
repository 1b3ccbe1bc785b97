package pipeline

import (
	"cmp"
	"fmt"
	"slices"

	"github.com/seine-cni/seine/ovs/openflow"
)

// A clause shared by many rules (one destination port that thousands of
// policies allow, one pod that many select) carries one conjunction action
// per rule, 16 bytes each. One flow-mod holds at most ~4,090 of them
// (openflow.MaxFlowModLen), so past a bound the clause is split into
// copies: flows with the same match plus one bit of the OpenFlow metadata
// field matched as 0 (metadata=0/0x1, 0/0x2, ...). Seine never writes
// metadata, so every copy matches every packet the clause matches, and at
// the rule priority OVS gathers the conjunction actions of every matching
// flow (flows of a conjunctive match may overlap, ovs-fields(7)); each
// copy's different mask puts it in a classifier subtable of its own.
// Copy 0 is the plain match, so a clause under the bound is exactly the
// flow it always was.
//
// A conjunction goes to copy ID mod k, with k the smallest power of two
// that keeps copies at most ClauseConjunctions long on average: adding or
// removing one rule changes one copy, not all of them, as long as k stays.
const (
	// ClauseConjunctions is the average number of conjunction actions a
	// clause copy carries at most (16 KiB of actions).
	ClauseConjunctions = 1000
	// maxClauseCopyConjs is what one copy may carry at most: well under
	// the ~4,090 that fit, so an unlucky spread of IDs still fits.
	maxClauseCopyConjs = 3000
	// maxClauseCopies is how many copies a clause can have: the plain
	// match and one per metadata bit 0..62.
	maxClauseCopies = 64
)

// clauseCopyBit is the metadata bit copy j (j >= 1) matches as 0.
func clauseCopyBit(j int) uint64 { return 1 << (j - 1) }

// splitClause sorts conjs and spreads them over the copies of their clause
// (see ClauseConjunctions); copies may be empty.
func splitClause(conjs []openflow.Conjunction) ([][]openflow.Conjunction, error) {
	slices.SortFunc(conjs, func(a, b openflow.Conjunction) int {
		return cmp.Or(cmp.Compare(a.ID, b.ID), cmp.Compare(a.Clause, b.Clause))
	})
	k := 1
	for k*ClauseConjunctions < len(conjs) {
		k *= 2
	}
	for ; k <= maxClauseCopies; k *= 2 {
		copies := make([][]openflow.Conjunction, k)
		ok := true
		for _, c := range conjs {
			j := int(c.ID % uint32(k))
			copies[j] = append(copies[j], c)
			ok = ok && len(copies[j]) <= maxClauseCopyConjs
		}
		if ok {
			return copies, nil
		}
	}
	return nil, fmt.Errorf("%w: %d rules share one clause, at most %d can", ErrBadPolicy, len(conjs), maxClauseCopies*ClauseConjunctions)
}

// ownersOf returns the policies (UIDs, sorted, once each) whose
// conjunctions are among conjs.
func ownersOf(conjs []openflow.Conjunction, owner map[uint32]string) []string {
	var out []string
	for _, c := range conjs {
		out = append(out, owner[c.ID])
	}
	slices.Sort(out)
	return slices.Compact(out)
}
