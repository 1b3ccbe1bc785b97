package netpol

import (
	"fmt"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"
)

// steadyTally counts what the prober saw per pair and target.
type steadyTally struct {
	mu              sync.Mutex
	counts          map[string]map[verdict]int
	leaks           []string
	denied          int
	controlAnswered int
}

func (s *steadyTally) add(from podRef, tg target, allowed bool, c cell) {
	s.mu.Lock()
	defer s.mu.Unlock()
	key := fmt.Sprintf("%s -> x/a %s", from, tg)
	if s.counts[key] == nil {
		s.counts[key] = map[verdict]int{}
	}
	s.counts[key][c.v]++
	switch {
	case allowed:
		if c.v == answered {
			s.controlAnswered++
		}
	default:
		s.denied++
		if c.v != dropped {
			s.leaks = append(s.leaks, fmt.Sprintf("  %s at %s: %s", key, time.Now().Format("15:04:05.000"), mismatch{from: from, to: parsePodRef("x/a"), got: c}))
		}
	}
}

func (s *steadyTally) summary() string {
	keys := make([]string, 0, len(s.counts))
	for k := range s.counts {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for _, k := range keys {
		c := s.counts[k]
		fmt.Fprintf(&b, "  %-22s answered %4d  timed out %4d  refused %3d  other %3d\n", k, c[answered], c[dropped], c[refused], c[wrong])
	}
	return b.String()
}

func TestTallyCountsLeaks(t *testing.T) {
	tl := &steadyTally{counts: map[string]map[verdict]int{}}
	ya, xb := parsePodRef("y/a"), parsePodRef("x/b")
	for range 5 {
		tl.add(ya, tcp80, false, cell{v: dropped})
	}
	tl.add(xb, tcp80, true, cell{v: answered})
	tl.add(xb, tcp80, true, cell{v: dropped}) // the control may miss during a recreate
	if len(tl.leaks) != 0 || tl.denied != 5 || tl.controlAnswered != 1 {
		t.Fatalf("leaks %v, denied %d, control answered %d; want none, 5, 1", tl.leaks, tl.denied, tl.controlAnswered)
	}
	tl.add(ya, udp80, false, cell{v: answered})
	tl.add(ya, tcp80, false, cell{v: refused, detail: "connection reset"})
	if len(tl.leaks) != 2 {
		t.Fatalf("an answer and a reset on a denied pair gave %d leaks, want 2: %v", len(tl.leaks), tl.leaks)
	}
	if !strings.Contains(tl.leaks[1], "got refused/reset: connection reset") {
		t.Errorf("leak line %q does not say what came back", tl.leaks[1])
	}
	if sum := tl.summary(); !strings.Contains(sum, "y/a -> x/a TCP/80") || !strings.Contains(sum, "timed out    5") {
		t.Errorf("summary lacks the per-pair counts:\n%s", sum)
	}
}
