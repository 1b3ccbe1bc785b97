package tiers

import (
	"cmp"
	"errors"
	"fmt"
	"slices"
	"strings"
)

// Rule is a rule to place: its key (unique in the table) and its order.
type Rule struct {
	Key   string
	Order Order
}

// ErrFull is returned when a table has more rules than priorities.
var ErrFull = errors.New("no OpenFlow priority left for tiered rules")

// Allocator assigns OpenFlow priorities in [Lo, Hi] to the rules of one
// table so that a rule evaluated earlier has a higher priority, keeping the
// priorities it assigned before wherever the order allows: a rule inserted
// between two others takes the middle of their gap, and only when no gap is
// left are the nearest neighbours spread again. It is not safe for
// concurrent use.
type Allocator struct {
	Lo, Hi   uint16
	assigned map[string]uint16
}

// NewAllocator returns an Allocator of the priorities lo..hi.
func NewAllocator(lo, hi uint16) *Allocator {
	return &Allocator{Lo: lo, Hi: hi, assigned: map[string]uint16{}}
}

// Assign returns the priority of every rule (keys must be unique) and how
// many rules that had a priority got another one. Rules it assigned before
// and that are not in rules are forgotten. On error nothing changes.
func (a *Allocator) Assign(rules []Rule) (map[string]uint16, int, error) {
	sorted := slices.Clone(rules)
	// Rules of equal order (the numbers of one named port) are ordered by
	// key, so the assignment does not depend on the input's order.
	slices.SortFunc(sorted, func(x, y Rule) int { return cmp.Or(x.Order.Compare(y.Order), strings.Compare(x.Key, y.Key)) })
	seen := make(map[string]bool, len(sorted))
	for _, r := range sorted {
		if seen[r.Key] {
			return nil, 0, fmt.Errorf("rule %q placed twice", r.Key)
		}
		seen[r.Key] = true
	}
	n := len(sorted)
	if n > int(a.Hi)-int(a.Lo)+1 {
		return nil, 0, fmt.Errorf("%d rules for %d priorities: %w", n, int(a.Hi)-int(a.Lo)+1, ErrFull)
	}
	// vals[i] is the priority of sorted[i]; -1 while unassigned. Keep the
	// longest run of previous priorities that is still strictly
	// decreasing in the new order.
	vals := make([]int, n)
	prev := make([]int, n)
	for i, r := range sorted {
		prev[i] = -1
		if v, ok := a.assigned[r.Key]; ok && v >= a.Lo && v <= a.Hi {
			prev[i] = int(v)
		}
		vals[i] = -1
	}
	for _, i := range longestDecreasing(prev) {
		vals[i] = prev[i]
	}
	// Fill each run of unassigned rules between kept neighbours, widening
	// the run over its neighbours while it does not fit.
	for i := 0; i < n; {
		if vals[i] >= 0 {
			i++
			continue
		}
		lo, hi := i, i // the run is sorted[lo..hi]
		for hi+1 < n && vals[hi+1] < 0 {
			hi++
		}
		for {
			upper := int(a.Hi) + 1 // exclusive bound above the run
			if lo > 0 {
				upper = vals[lo-1]
			}
			lower := int(a.Lo) - 1
			if hi+1 < n {
				lower = vals[hi+1]
			}
			k := hi - lo + 1
			if upper-lower-1 >= k {
				for j := 0; j < k; j++ {
					vals[lo+j] = upper - (j+1)*(upper-lower)/(k+1)
				}
				break
			}
			// No room: take in a neighbour on each side (they are
			// reassigned with the run).
			if lo > 0 {
				lo--
				vals[lo] = -1
			}
			if hi+1 < n {
				hi++
				vals[hi] = -1
			}
			for lo > 0 && vals[lo-1] < 0 {
				lo--
			}
			for hi+1 < n && vals[hi+1] < 0 {
				hi++
			}
		}
		i = hi + 1
	}
	out := make(map[string]uint16, n)
	moved := 0
	for i, r := range sorted {
		out[r.Key] = uint16(vals[i])
		if prev[i] >= 0 && prev[i] != vals[i] {
			moved++
		}
	}
	a.assigned = out
	return out, moved, nil
}

// longestDecreasing returns the indexes of a longest strictly decreasing
// subsequence of the non-negative values of v.
func longestDecreasing(v []int) []int {
	// Patience sorting on negated values: tails[l] is the index ending the
	// best subsequence of length l+1.
	var tails []int
	parent := make([]int, len(v))
	for i, x := range v {
		if x < 0 {
			continue
		}
		l, r := 0, len(tails)
		for l < r {
			m := (l + r) / 2
			if v[tails[m]] > x {
				l = m + 1
			} else {
				r = m
			}
		}
		parent[i] = -1
		if l > 0 {
			parent[i] = tails[l-1]
		}
		if l == len(tails) {
			tails = append(tails, i)
		} else {
			tails[l] = i
		}
	}
	if len(tails) == 0 {
		return nil
	}
	out := make([]int, len(tails))
	for i, j := len(tails)-1, tails[len(tails)-1]; i >= 0; i, j = i-1, parent[j] {
		out[i] = j
	}
	return out
}
