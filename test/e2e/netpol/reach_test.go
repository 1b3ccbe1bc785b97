package netpol

import (
	"strings"
	"testing"
)

// The matrix model is pure; these tests pin down what the lab cases rely on.

func TestReachSetPatterns(t *testing.T) {
	pods := suitePods()
	r := newReach(pods, true).
		set("*", "x/a", false).
		set("x/b", "x/a", true).
		set("y/*", "*/c", false)
	idx := map[string]int{}
	for i, p := range pods {
		idx[p.String()] = i
	}
	for _, tc := range []struct {
		from, to string
		want     bool
	}{
		{"y/a", "x/a", false}, {"z/c", "x/a", false}, {"x/c", "x/a", false},
		{"x/b", "x/a", true}, // the later, narrower call wins
		{"y/b", "x/c", false}, {"y/b", "z/c", false}, {"x/b", "z/c", true},
		{"x/a", "y/a", true},
	} {
		if got := r.allow[idx[tc.from]][idx[tc.to]]; got != tc.want {
			t.Errorf("%s -> %s allowed = %v, want %v", tc.from, tc.to, got, tc.want)
		}
	}
}

func TestReachAllAllowed(t *testing.T) {
	r := newReach(suitePods(), true)
	if !r.allAllowed() {
		t.Error("a fresh allowed matrix is not all-allowed")
	}
	r.allow[0][0] = false // the diagonal does not count
	if !r.allAllowed() {
		t.Error("the diagonal counted")
	}
	if r.set("y/b", "x/c", false).allAllowed() {
		t.Error("a denied pair went unnoticed")
	}
}

func TestReachSetMatchingNothingPanics(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Error("set with a pattern matching no pod did not panic: a typo in a case would go unnoticed")
		}
	}()
	newReach(suitePods(), true).set("w/*", "*", false)
}

func TestDiffDropVersusRefuse(t *testing.T) {
	pods := suitePods()
	want := newReach(pods, true).set("*", "x/a", false)
	got := newObserved(pods)
	for i := range pods {
		for j := range pods {
			if i == j {
				continue
			}
			got.cells[i][j] = cell{v: answered}
			if !want.allow[i][j] {
				got.cells[i][j] = cell{v: dropped, detail: "probe timed out"}
			}
		}
	}
	if bad := want.diff(got); len(bad) != 0 {
		t.Fatalf("a matching matrix differs in %v", bad)
	}
	// x/a probing itself is not compared, whatever it saw.
	got.cells[0][0] = cell{v: wrong}
	if bad := want.diff(got); len(bad) != 0 {
		t.Fatalf("the diagonal was compared: %v", bad)
	}
	// A reset on a denied pair is a failure of the drop rule; a timeout on an
	// allowed pair and a wrong answer are failures too.
	got.cells[3][0] = cell{v: refused, detail: "connection refused"}
	got.cells[1][2] = cell{v: dropped}
	got.cells[4][5] = cell{v: wrong, detail: `answered "b"`}
	// Silence that is not a drop (the packets never left) fails a denied pair.
	got.cells[6][0] = cell{v: unreachable, detail: "next hop 10.244.2.1 never answered ARP"}
	bad := want.diff(got)
	if len(bad) != 4 {
		t.Fatalf("got %d mismatches, want 4: %v", len(bad), bad)
	}
	if s := bad[3].String(); s != "z/a -> x/a: want dropped (timeout), got unreachable: next hop 10.244.2.1 never answered ARP" {
		t.Errorf("fourth mismatch %q", s)
	}
	want0 := "x/b -> x/c: want answered, got timed out"
	if bad[0].String() != want0 {
		t.Errorf("first mismatch %q, want %q", bad[0], want0)
	}
	if s := bad[1].String(); s != "y/a -> x/a: want dropped (timeout), got refused/reset: connection refused" {
		t.Errorf("second mismatch %q", s)
	}
}

func TestRenderMarksWrongCells(t *testing.T) {
	pods := suitePods()
	want := newReach(pods, true).set("*", "x/a", false)
	got := newObserved(pods)
	for i := range pods {
		for j := range pods {
			if i != j {
				got.cells[i][j] = cell{v: answered}
			}
		}
	}
	got.cells[3][0] = cell{v: answered} // y/a reaches x/a although denied
	out := render(tcp80, want, got)
	for _, line := range []string{
		"TCP/80: 8 of 72 cells differ",
		"expected:",
		"     x/a  x/b  x/c  y/a  y/b  y/c  z/a  z/b  z/c ",
		"x/a    -    .    .    .    .    .    .    .    . ",
		"y/a    X    .    .    -    .    .    .    .    . ",
		"observed:",
		"y/a    .*   .    .    -    .    .    .    .    . ",
		"  y/a -> x/a: want dropped (timeout), got answered",
	} {
		if !strings.Contains(out, line+"\n") {
			t.Errorf("render output lacks line %q:\n%s", line, out)
		}
	}
}
