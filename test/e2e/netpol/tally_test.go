package netpol

import (
	"fmt"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"
)

// steadyTally counts what the prober saw per pair and target, and when
// denied pairs got through.
type steadyTally struct {
	mu              sync.Mutex
	counts          map[string]map[verdict]int
	leaks           int
	firstLeaks      []string                // the first maxLeakLines, verbatim
	leakSpan        map[string][2]time.Time // per pair: first and last leak
	denied          int
	controlAnswered int
}

const maxLeakLines = 10

func newTally() *steadyTally {
	return &steadyTally{counts: map[string]map[verdict]int{}, leakSpan: map[string][2]time.Time{}}
}

// add records one probe from -> x/a seen at time at; allowed says whether
// the pair is the allowed control.
func (s *steadyTally) add(from podRef, tg target, allowed bool, c cell, at time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	key := fmt.Sprintf("%s -> x/a %s", from, tg)
	if s.counts[key] == nil {
		s.counts[key] = map[verdict]int{}
	}
	s.counts[key][c.v]++
	if allowed {
		if c.v == answered {
			s.controlAnswered++
		}
		return
	}
	s.denied++
	if c.v == dropped {
		return
	}
	s.leaks++
	if len(s.firstLeaks) < maxLeakLines {
		s.firstLeaks = append(s.firstLeaks, fmt.Sprintf("%s %s %s", at.Format("15:04:05.000"), tg, mismatch{from: from, to: parsePodRef("x/a"), got: c}))
	}
	span, ok := s.leakSpan[key]
	if !ok {
		span[0] = at
	}
	span[1] = at
	s.leakSpan[key] = span
}

// summary is one line of counts per pair and target.
func (s *steadyTally) summary() string {
	var b strings.Builder
	for _, k := range sortedKeys(s.counts) {
		c := s.counts[k]
		fmt.Fprintf(&b, "  %-22s answered %4d  timed out %4d  refused %3d  other %3d\n", k, c[answered], c[dropped], c[refused], c[wrong])
	}
	return b.String()
}

// leakReport says which denied pairs got through, when, and the first probes that did.
func (s *steadyTally) leakReport() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%d probes on denied pairs were not dropped; per pair, first and last:\n", s.leaks)
	for _, k := range sortedKeys(s.leakSpan) {
		span := s.leakSpan[k]
		fmt.Fprintf(&b, "  %-22s %s .. %s\n", k, span[0].Format("15:04:05.000"), span[1].Format("15:04:05.000"))
	}
	b.WriteString("the first ones:\n")
	for _, l := range s.firstLeaks {
		fmt.Fprintf(&b, "  %s\n", l)
	}
	return b.String()
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func TestTallyCountsLeaks(t *testing.T) {
	tl := newTally()
	t0 := time.Date(2026, 1, 1, 9, 0, 0, 0, time.UTC)
	ya, xb := parsePodRef("y/a"), parsePodRef("x/b")
	for range 5 {
		tl.add(ya, tcp80, false, cell{v: dropped}, t0)
	}
	tl.add(xb, tcp80, true, cell{v: answered}, t0)
	tl.add(xb, tcp80, true, cell{v: dropped}, t0) // the control may miss during a recreate
	if tl.leaks != 0 || tl.denied != 5 || tl.controlAnswered != 1 {
		t.Fatalf("leaks %d, denied %d, control answered %d; want 0, 5, 1", tl.leaks, tl.denied, tl.controlAnswered)
	}
	tl.add(ya, udp80, false, cell{v: answered}, t0.Add(time.Second))
	tl.add(ya, tcp80, false, cell{v: refused, detail: "connection reset"}, t0.Add(2*time.Second))
	tl.add(ya, tcp80, false, cell{v: answered}, t0.Add(3*time.Second))
	if tl.leaks != 3 {
		t.Fatalf("an answer and a reset on a denied pair gave %d leaks, want 3", tl.leaks)
	}
	report := tl.leakReport()
	for _, want := range []string{
		"3 probes on denied pairs were not dropped",
		"y/a -> x/a TCP/80      09:00:02.000 .. 09:00:03.000",
		"y/a -> x/a UDP/80      09:00:01.000 .. 09:00:01.000",
		"09:00:02.000 TCP/80 y/a -> x/a: want dropped (timeout), got refused/reset: connection reset",
	} {
		if !strings.Contains(report, want) {
			t.Errorf("leak report lacks %q:\n%s", want, report)
		}
	}
	if sum := tl.summary(); !strings.Contains(sum, "y/a -> x/a TCP/80") || !strings.Contains(sum, "timed out    5") {
		t.Errorf("summary lacks the per-pair counts:\n%s", sum)
	}
}
