package tiers

import (
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"testing"
)

func rule(key string, tier int32, prio float64, idx int32) Rule {
	return Rule{Key: key, Order: Order{Tier: tier, Priority: prio, Policy: key, Rule: idx}}
}

// checkOrder fails unless every rule evaluated earlier has a higher
// priority, all within the allocator's range.
func checkOrder(t *testing.T, a *Allocator, rules []Rule, got map[string]uint16) {
	t.Helper()
	sorted := slices.Clone(rules)
	slices.SortFunc(sorted, func(x, y Rule) int { return x.Order.Compare(y.Order) })
	for i, r := range sorted {
		p, ok := got[r.Key]
		if !ok {
			t.Fatalf("rule %s has no priority", r.Key)
		}
		if p < a.Lo || p > a.Hi {
			t.Fatalf("rule %s priority %d outside %d-%d", r.Key, p, a.Lo, a.Hi)
		}
		if i > 0 && got[sorted[i-1].Key] <= p {
			t.Fatalf("rule %s (prio %d) is evaluated after %s but not below its priority %d", r.Key, p, sorted[i-1].Key, got[sorted[i-1].Key])
		}
	}
	if len(got) != len(rules) {
		t.Fatalf("%d priorities for %d rules", len(got), len(rules))
	}
}

func TestAllocatorFirstAssignmentSpreads(t *testing.T) {
	a := NewAllocator(1000, 64000)
	rules := []Rule{rule("c", 100, 3, 0), rule("a", 50, 1, 0), rule("b", 100, 1.5, 0)}
	got, moved, err := a.Assign(rules)
	if err != nil {
		t.Fatal(err)
	}
	checkOrder(t, a, rules, got)
	want := map[string]uint16{"a": 48251, "b": 32500, "c": 16750}
	if fmt.Sprint(got) != fmt.Sprint(want) || moved != 0 {
		t.Fatalf("got %v moved %d, want %v moved 0", got, moved, want)
	}
}

func TestAllocatorInsertTakesTheGap(t *testing.T) {
	a := NewAllocator(1000, 64000)
	rules := []Rule{rule("a", 50, 1, 0), rule("c", 100, 3, 0)}
	first, _, err := a.Assign(rules)
	if err != nil {
		t.Fatal(err)
	}
	rules = append(rules, rule("b", 100, 2, 0))
	got, moved, err := a.Assign(rules)
	if err != nil {
		t.Fatal(err)
	}
	checkOrder(t, a, rules, got)
	if moved != 0 || got["a"] != first["a"] || got["c"] != first["c"] {
		t.Fatalf("inserting b moved %d rules: %v -> %v", moved, first, got)
	}
	if got["b"] != (first["a"]+first["c"])/2+1 && got["b"] != (first["a"]+first["c"])/2 {
		t.Fatalf("b at %d, want the middle of %d and %d", got["b"], first["a"], first["c"])
	}
}

// Inserting again and again at the same place halves the gap each time;
// once it is gone only a window of neighbours moves, never the table.
func TestAllocatorFullGapMovesABoundedWindow(t *testing.T) {
	a := NewAllocator(1000, 64000)
	var rules []Rule
	for i := range 1000 {
		rules = append(rules, rule(fmt.Sprintf("r%04d", i), 100, float64(i), 0))
	}
	if _, _, err := a.Assign(rules); err != nil {
		t.Fatal(err)
	}
	// 1000 rules over 63,001 priorities: gaps of 62. Insert 200 rules
	// between r0499 and r0500, each just after the previous insert.
	maxMoved, total := 0, 0
	for i := range 200 {
		rules = append(rules, rule(fmt.Sprintf("r0499-%03d", i), 100, 499+float64(i+1)/1000, 0))
		got, moved, err := a.Assign(rules)
		if err != nil {
			t.Fatal(err)
		}
		checkOrder(t, a, rules, got)
		maxMoved, total = max(maxMoved, moved), total+moved
	}
	t.Logf("200 inserts into one gap: at most %d rules moved by one insert, %d in all", maxMoved, total)
	if maxMoved > 64 {
		t.Fatalf("one insert moved %d rules: want a bounded window, not the table", maxMoved)
	}
}

func TestAllocatorDeleteMovesNothing(t *testing.T) {
	a := NewAllocator(1, 100)
	rules := []Rule{rule("a", 1, 1, 0), rule("b", 1, 2, 0), rule("c", 1, 3, 0)}
	first, _, _ := a.Assign(rules)
	got, moved, err := a.Assign([]Rule{rules[0], rules[2]})
	if err != nil || moved != 0 || got["a"] != first["a"] || got["c"] != first["c"] || len(got) != 2 {
		t.Fatalf("delete of b: %v moved %d err %v (before %v)", got, moved, err, first)
	}
}

// A policy whose priority changes moves its rules; the others stay.
func TestAllocatorReorderMovesOnlyTheMovedRule(t *testing.T) {
	a := NewAllocator(1, 1000)
	rules := []Rule{rule("a", 1, 1, 0), rule("b", 1, 2, 0), rule("c", 1, 3, 0), rule("d", 1, 4, 0)}
	first, _, _ := a.Assign(rules)
	rules[0].Order.Priority = 5 // a goes last
	got, moved, err := a.Assign(rules)
	if err != nil {
		t.Fatal(err)
	}
	checkOrder(t, a, rules, got)
	if moved != 1 || got["b"] != first["b"] || got["d"] != first["d"] {
		t.Fatalf("moving a: %v -> %v, %d moved", first, got, moved)
	}
}

func TestAllocatorFull(t *testing.T) {
	a := NewAllocator(10, 12)
	rules := []Rule{rule("a", 1, 1, 0), rule("b", 1, 2, 0), rule("c", 1, 3, 0)}
	if got, _, err := a.Assign(rules); err != nil {
		t.Fatal(err)
	} else {
		checkOrder(t, a, rules, got)
	}
	before := fmt.Sprint(a.assigned)
	_, _, err := a.Assign(append(rules, rule("d", 1, 4, 0)))
	if !errors.Is(err, ErrFull) {
		t.Fatalf("4 rules in 3 priorities: %v, want ErrFull", err)
	}
	if fmt.Sprint(a.assigned) != before {
		t.Fatalf("a refused assignment changed the allocator: %v -> %v", before, a.assigned)
	}
	if _, _, err := a.Assign([]Rule{rules[0], rules[0]}); err == nil {
		t.Fatal("a key placed twice was accepted")
	}
}

// Random inserts, deletes and reorders always keep the order, and the
// priorities of rules that kept their relative place mostly stay.
func TestAllocatorRandom(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	a := NewAllocator(1000, 64000)
	var rules []Rule
	next := 0
	for step := range 2000 {
		switch op := r.IntN(10); {
		case op < 6 || len(rules) == 0:
			rules = append(rules, rule(fmt.Sprintf("k%d", next), int32(r.IntN(6)*50), float64(r.IntN(100)), int32(r.IntN(3))))
			next++
		case op < 9:
			i := r.IntN(len(rules))
			rules = slices.Delete(rules, i, i+1)
		default:
			rules[r.IntN(len(rules))].Order.Priority = float64(r.IntN(100))
		}
		got, _, err := a.Assign(rules)
		if err != nil {
			t.Fatalf("step %d: %v", step, err)
		}
		checkOrder(t, a, rules, got)
	}
}

func TestOrderCompare(t *testing.T) {
	sorted := []Order{
		{Tier: EmergencyPriority, Priority: 100, Policy: "z"},
		{Tier: SecurityOpsPriority, Priority: 0.5, Policy: "z"},
		{Tier: SecurityOpsPriority, Priority: 1, Policy: "a", Rule: 0},
		{Tier: SecurityOpsPriority, Priority: 1, Policy: "a", Rule: 1},
		{Tier: SecurityOpsPriority, Priority: 1, Policy: "b", Rule: 0},
		{Tier: BaselinePriority, Priority: 0, Policy: "a"},
	}
	shuffled := slices.Clone(sorted)
	rand.New(rand.NewPCG(3, 4)).Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
	slices.SortFunc(shuffled, Order.Compare)
	if fmt.Sprint(shuffled) != fmt.Sprint(sorted) {
		t.Fatalf("sorted %v, want %v", shuffled, sorted)
	}
}

func TestValidateCustomPriority(t *testing.T) {
	for p, ok := range map[int32]bool{0: false, 1: true, 49: true, 50: false, 239: true, 240: false, 252: true, 253: false, 254: false} {
		if err := ValidateCustomPriority(p); (err == nil) != ok {
			t.Errorf("priority %d: %v", p, err)
		}
	}
	if !IsBaseline(BaselinePriority) || IsBaseline(ApplicationPriority) || !IsBuiltIn("securityops") || IsBuiltIn("mine") {
		t.Fatal("IsBaseline/IsBuiltIn")
	}
}

// TestAllocatorApplyMatchesAssign applies random sequences of inserts,
// removals and moves with Apply and, to a twin allocator, the whole rule
// list with Assign: after every step both assign every rule the same
// priority, Apply's result names exactly the rules whose priority is new
// or changed, and the moved counts agree. The range is small, so gaps run
// out and windows move. Seeded.
func TestAllocatorApplyMatchesAssign(t *testing.T) {
	for seed := uint64(1); seed <= 20; seed++ {
		rng := rand.New(rand.NewPCG(seed, 7))
		inc, full := NewAllocator(1, 300), NewAllocator(1, 300)
		rules := map[string]Rule{}
		have := map[string]uint16{}
		for step := range 300 {
			var remove []string
			var add []Rule
			for range 1 + rng.IntN(4) {
				key := fmt.Sprintf("r%d", rng.IntN(120))
				switch {
				case rng.IntN(4) == 0:
					delete(rules, key)
					remove = append(remove, key)
					add = slices.DeleteFunc(add, func(r Rule) bool { return r.Key == key })
				default:
					r := Rule{Key: key, Order: Order{Tier: ApplicationPriority, Priority: float64(rng.IntN(40)) / 4, Policy: key}}
					if old, ok := rules[key]; ok && rng.IntN(2) == 0 {
						r.Order = old.Order // an update that keeps its place
					}
					rules[key] = r
					add = slices.DeleteFunc(add, func(o Rule) bool { return o.Key == key })
					add = append(add, r)
				}
			}
			remove = slices.DeleteFunc(remove, func(k string) bool { _, ok := rules[k]; return ok })
			changed, movedInc, err := inc.Apply(remove, add)
			if err != nil {
				t.Fatalf("seed %d step %d: apply: %v", seed, step, err)
			}
			want, movedFull, err := full.Assign(slices.Collect(maps.Values(rules)))
			if err != nil {
				t.Fatalf("seed %d step %d: assign: %v", seed, step, err)
			}
			for _, k := range remove {
				delete(have, k)
			}
			for k, v := range changed {
				if have[k] == v {
					t.Errorf("seed %d step %d: %s reported changed but kept %d", seed, step, k, v)
				}
				have[k] = v
			}
			if !maps.Equal(have, want) || movedInc != movedFull {
				t.Fatalf("seed %d step %d: Apply gives %v (moved %d), Assign %v (moved %d)", seed, step, have, movedInc, want, movedFull)
			}
		}
	}
}
