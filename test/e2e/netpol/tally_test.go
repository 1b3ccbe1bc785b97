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
// denied pairs got through; and, per positive control, how often it was
// answered and the longest time it went unanswered.
type steadyTally struct {
	mu              sync.Mutex
	start, stopped  time.Time
	counts          map[string]map[verdict]int
	leaks           int
	firstLeaks      []string                // the first maxLeakLines, verbatim
	leakSpan        map[string][2]time.Time // per pair: first and last leak
	denied          int
	controlAnswered int // x/b -> x/a, the allowed pair of the policy
	controls        map[string]*controlTally
}

// controlTally is one positive control: a pair no policy touches, probed
// from a source of the denied probes, that must answer throughout.
type controlTally struct {
	probes, answered int
	last             time.Time     // of the last answer (start before the first)
	maxGap           time.Duration // longest time without an answer
	maxGapEnd        time.Time
}

const maxLeakLines = 10

func newTally(start time.Time) *steadyTally {
	return &steadyTally{start: start, counts: map[string]map[verdict]int{}, leakSpan: map[string][2]time.Time{},
		controls: map[string]*controlTally{}}
}

// addControl records one probe of a positive control, completed at at.
func (s *steadyTally) addControl(from, to podRef, tg target, c cell, at time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	key := fmt.Sprintf("%s -> %s %s", from, to, tg)
	ct := s.controls[key]
	if ct == nil {
		ct = &controlTally{last: s.start}
		s.controls[key] = ct
	}
	ct.probes++
	if c.v == answered {
		ct.answered++
		ct.gap(at)
		ct.last = at
	}
}

func (ct *controlTally) gap(at time.Time) {
	if d := at.Sub(ct.last); d > ct.maxGap {
		ct.maxGap, ct.maxGapEnd = d, at
	}
}

// finish closes every control's last gap at stop.
func (s *steadyTally) finish(stop time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stopped = stop
	for _, ct := range s.controls {
		ct.gap(stop)
	}
}

// controlReport is one line per control: answers, rate, longest gap; and
// the controls whose longest gap exceeds bound.
func (s *steadyTally) controlReport(stop time.Time, bound time.Duration) (report string, tooLong []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var b strings.Builder
	secs := stop.Sub(s.start).Seconds()
	for _, k := range sortedKeys(s.controls) {
		ct := s.controls[k]
		fmt.Fprintf(&b, "  %-22s answered %4d of %4d (%.1f/s)  longest gap %s (ending %s)\n", k, ct.answered, ct.probes,
			float64(ct.answered)/secs, ct.maxGap.Round(time.Millisecond), ct.maxGapEnd.Format("15:04:05.000"))
		if ct.maxGap > bound {
			tooLong = append(tooLong, fmt.Sprintf("%s went %s without an answer (until %s)", k, ct.maxGap.Round(time.Millisecond), ct.maxGapEnd.Format("15:04:05.000")))
		}
	}
	return b.String(), tooLong
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
	t0 := time.Date(2026, 1, 1, 9, 0, 0, 0, time.UTC)
	tl := newTally(t0)
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

func TestTallyControlGaps(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 9, 0, 0, 0, time.UTC)
	tl := newTally(t0)
	ya, yc := parsePodRef("y/a"), parsePodRef("y/c")
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	for _, ms := range []int{100, 200, 300} {
		tl.addControl(ya, yc, tcp80, cell{v: answered}, at(ms))
	}
	tl.addControl(ya, yc, tcp80, cell{v: dropped}, at(550))   // unanswered: the gap goes on
	tl.addControl(ya, yc, tcp80, cell{v: refused}, at(800))   // so does a refusal
	tl.addControl(ya, yc, tcp80, cell{v: answered}, at(1500)) // 1.2 s after the last answer
	tl.addControl(yc, parsePodRef("z/b"), udp80, cell{v: answered}, at(100))
	stop := at(2000)
	tl.finish(stop) // y/c -> z/b: 1.9 s since its only answer
	report, tooLong := tl.controlReport(stop, time.Second)
	for _, want := range []string{
		"y/a -> y/c TCP/80      answered    4 of    6 (2.0/s)  longest gap 1.2s (ending 09:00:01.500)",
		"y/c -> z/b UDP/80      answered    1 of    1 (0.5/s)  longest gap 1.9s (ending 09:00:02.000)",
	} {
		if !strings.Contains(report, want) {
			t.Errorf("report lacks %q:\n%s", want, report)
		}
	}
	if len(tooLong) != 2 {
		t.Errorf("gaps over 1s: %q, want both controls", tooLong)
	}
	if _, tooLong := tl.controlReport(stop, 2*time.Second); len(tooLong) != 0 {
		t.Errorf("gaps over 2s: %q, want none", tooLong)
	}
}
