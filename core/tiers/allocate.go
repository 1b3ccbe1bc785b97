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
	sorted   []Rule // the rules of assigned in order (Apply's input)
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
	slices.SortFunc(sorted, compareRules)
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
	a.fill(vals)
	out := make(map[string]uint16, n)
	moved := 0
	for i, r := range sorted {
		out[r.Key] = uint16(vals[i])
		if prev[i] >= 0 && prev[i] != vals[i] {
			moved++
		}
	}
	a.assigned, a.sorted = out, sorted
	return out, moved, nil
}

// fill gives a priority to each run of unassigned (-1) values between kept
// neighbours, widening the run over its neighbours while it does not fit.
func (a *Allocator) fill(vals []int) {
	n := len(vals)
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
}

// Apply is Assign of the rules assigned before without remove and with add,
// computed from the change: it returns only the rules whose priority is
// new or changed, and how many rules that had a priority got another one.
// Adding rules and removing rules keeps every other rule in its order, so
// all of them keep their priorities unless a new rule finds no room
// (Assign's result, without its sort of every rule); a rule of add that is
// already assigned with another order moves, which Assign computes whole.
// On error nothing changes.
func (a *Allocator) Apply(remove []string, add []Rule) (map[string]uint16, int, error) {
	gone := make(map[string]bool, len(remove))
	for _, k := range remove {
		gone[k] = true
	}
	var adds []Rule
	whole := false
	for _, r := range add {
		if _, ok := a.assigned[r.Key]; ok && !gone[r.Key] {
			if i, found := a.find(r.Key); !found || a.sorted[i].Order != r.Order {
				whole = true
			}
			continue
		}
		adds = append(adds, r)
	}
	if whole {
		all := make([]Rule, 0, len(a.sorted)+len(add))
		moved := map[string]Rule{}
		for _, r := range add {
			moved[r.Key] = r
		}
		for _, r := range a.sorted {
			if !gone[r.Key] && moved[r.Key].Key == "" {
				all = append(all, r)
			}
		}
		for _, r := range moved {
			all = append(all, r)
		}
		before := a.assigned
		got, n, err := a.Assign(all)
		if err != nil {
			return nil, 0, err
		}
		changed := map[string]uint16{}
		for k, v := range got {
			if old, ok := before[k]; !ok || old != v {
				changed[k] = v
			}
		}
		return changed, n, nil
	}
	slices.SortFunc(adds, compareRules)
	for i := 1; i < len(adds); i++ {
		if adds[i].Key == adds[i-1].Key {
			return nil, 0, fmt.Errorf("rule %q placed twice", adds[i].Key)
		}
	}
	kept := len(a.sorted)
	for _, r := range a.sorted {
		if gone[r.Key] {
			kept--
		}
	}
	n := kept + len(adds)
	if n > int(a.Hi)-int(a.Lo)+1 {
		return nil, 0, fmt.Errorf("%d rules for %d priorities: %w", n, int(a.Hi)-int(a.Lo)+1, ErrFull)
	}
	// Merge the kept rules (in order, their priorities strictly
	// decreasing: Assign keeps them all) with the new ones.
	sorted := make([]Rule, 0, n)
	vals := make([]int, 0, n)
	j := 0
	for _, r := range a.sorted {
		if gone[r.Key] {
			continue
		}
		for j < len(adds) && compareRules(adds[j], r) < 0 {
			sorted, vals = append(sorted, adds[j]), append(vals, -1)
			j++
		}
		sorted, vals = append(sorted, r), append(vals, int(a.assigned[r.Key]))
	}
	for ; j < len(adds); j++ {
		sorted, vals = append(sorted, adds[j]), append(vals, -1)
	}
	prev := slices.Clone(vals)
	a.fill(vals)
	changed := map[string]uint16{}
	moved := 0
	for i, r := range sorted {
		if prev[i] != vals[i] {
			changed[r.Key] = uint16(vals[i])
			if prev[i] >= 0 {
				moved++
			}
		}
	}
	for k := range gone {
		delete(a.assigned, k)
	}
	for k, v := range changed {
		a.assigned[k] = v
	}
	a.sorted = sorted
	return changed, moved, nil
}

// Priority returns the priority assigned to key.
func (a *Allocator) Priority(key string) (uint16, bool) {
	v, ok := a.assigned[key]
	return v, ok
}

// find returns the index of key in a.sorted.
func (a *Allocator) find(key string) (int, bool) {
	for i, r := range a.sorted {
		if r.Key == key {
			return i, true
		}
	}
	return 0, false
}

func compareRules(x, y Rule) int {
	return cmp.Or(x.Order.Compare(y.Order), strings.Compare(x.Key, y.Key))
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
