package netpol

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"
)

// steadyCase: a policy change under steady traffic never opens a denied path.
var steadyCase = labCase{
	name: "no-leak-during-updates", upstream: "(none: issue #5, policy changes under steady traffic)",
	run: runSteady,
}

const (
	// steadyProbeTimeout is short so the prober opens many connections (each
	// a fresh SYN or datagram that could slip through a gap).
	steadyProbeTimeout = 250 * time.Millisecond
	// steadyProbeEvery bounds each prober's rate (15 of them share 2 cores
	// with the agents that must apply the updates).
	steadyProbeEvery = 20 * time.Millisecond
	// steadyUpdateEvery paces the policy and label changes.
	steadyUpdateEvery = 250 * time.Millisecond
	steadyCycles      = 3
)

const (
	// controlProbeEvery paces each positive control (fourteen of them).
	controlProbeEvery = 100 * time.Millisecond
	// controlGapBound is the longest a positive control may go without an
	// answer. See the README (no-leak-during-updates) for the measurements
	// behind it.
	controlGapBound = 2 * time.Second
)

// controlTarget is the positive control of a denied source: a pod on x/a's
// node that no policy of the steady and restart cases isolates, so the
// control's packets take the source's path to that node while its denied
// probes are dropped there.
func (s *suite) controlTarget(from podRef) podRef {
	xa := parsePodRef("x/a")
	for _, p := range s.pods {
		if p.ns != "x" && p != from && s.node[p] == s.node[xa] {
			return p
		}
	}
	panic("no control target on the node of x/a")
}

// startProbers probes x/a without pause from the seven pods it denies
// (TCP and UDP 80) and from x/b (TCP 80, allowed); and from each of the
// seven, as positive controls, its controlTarget on TCP and UDP 80. It
// tallies what came back until halt is called.
func startProbers(s *suite) (*steadyTally, func()) {
	xa := parsePodRef("x/a")
	var denied []podRef
	for _, p := range s.pods {
		if p.String() != "x/a" && p.String() != "x/b" {
			denied = append(denied, p)
		}
	}
	tally := newTally(time.Now())
	ctx, stop := context.WithCancel(s.ctx)
	var wg sync.WaitGroup
	prober := func(every time.Duration, from, to podRef, tg target, record func(cell, time.Time)) {
		defer wg.Done()
		pace := time.NewTicker(every)
		defer pace.Stop()
		for ctx.Err() == nil {
			c := s.probeWith(from, to, tg, steadyProbeTimeout)
			if ctx.Err() != nil && c.v != answered {
				return // cut short by stop, not by the network
			}
			record(c, time.Now())
			select { // answered probes return at once: bound the rate
			case <-pace.C:
			case <-ctx.Done():
			}
		}
	}
	for _, from := range denied {
		for _, tg := range []target{tcp80, udp80} {
			wg.Add(2)
			go prober(steadyProbeEvery, from, xa, tg, func(c cell, at time.Time) { tally.add(from, tg, false, c, at) })
			to := s.controlTarget(from)
			go prober(controlProbeEvery, from, to, tg, func(c cell, at time.Time) { tally.addControl(from, to, tg, c, at) })
		}
	}
	xb := parsePodRef("x/b")
	wg.Add(1)
	go prober(steadyProbeEvery, xb, xa, tcp80, func(c cell, at time.Time) { tally.add(xb, tcp80, true, c, at) })
	var once sync.Once
	return tally, func() {
		once.Do(func() {
			stopped := time.Now() // the last gaps end here, not when the probes in flight are done
			stop()
			wg.Wait()
			tally.finish(stopped)
		})
	}
}

// checkControls logs the positive controls' answers and longest gaps and
// fails t if one went longer than controlGapBound without an answer: then
// the denied probes of that source proved nothing for that long.
func checkControls(t *testing.T, tally *steadyTally) {
	t.Helper()
	report, tooLong := tally.controlReport(tally.stopped, controlGapBound)
	t.Logf("positive controls (pods no policy isolates, on the node of x/a, from the sources of the denied probes):\n%s", report)
	for _, l := range tooLong {
		t.Errorf("positive control %s (bound %s): the denied probes of that source showed nothing meanwhile", l, controlGapBound)
	}
}

// runSteady: x/a admits only x/b on TCP and UDP 80. While a prober sends
// from the seven other pods to x/a without pause, the policies and labels
// are changed steadyCycles times through a cycle of updates, each of which
// leaves those seven pods denied. Not one probe may be answered (or refused).
func runSteady(t *testing.T, s *suite) {
	s.create(t, "x", steadyPolicy(fromPods(podLabel("b"))))
	closed := s.allow().set("*", "x/a", false).set("x/b", "x/a", true)
	s.expect(t, "x/a admits x/b only", on(tcp80, closed), on(udp80, closed))

	s.forgetAllowedFlows(t)
	tally, halt := startProbers(s)
	defer halt()

	updates := steadyUpdates(t, s)
	start := time.Now()
	tick := time.NewTicker(steadyUpdateEvery)
	defer tick.Stop()
	n := 0
	var applied []string
	for cycle := 0; cycle < steadyCycles; cycle++ {
		for _, u := range updates {
			<-tick.C
			u.do()
			applied = append(applied, fmt.Sprintf("  %s %s", time.Now().Format("15:04:05.000"), u.name))
			n++
		}
	}
	elapsed := time.Since(start).Round(time.Millisecond)
	// The probers keep running until the last update has visibly landed and
	// is realized; the drops are counted and held with the probers stopped
	// (their own packets would be counted too).
	s.awaitRealized(t, "after the updates x/a still admits x/b only", on(tcp80, closed), on(udp80, closed))
	halt()
	s.expect(t, "after the updates, probers stopped", on(tcp80, closed), on(udp80, closed))

	t.Logf("%d updates in %s (%d kinds: %s); probes to x/a:\n%s", n, elapsed, len(updates), updateNames(updates), tally.summary())
	if tally.leaks > 0 {
		t.Errorf("denied pairs got through during the updates: %s\nthe updates, as sent to the apiserver:\n%s", tally.leakReport(), strings.Join(applied, "\n"))
	}
	if tally.denied < 100 {
		t.Errorf("only %d probes on denied pairs: the prober did not run enough to show anything", tally.denied)
	}
	if tally.controlAnswered == 0 {
		t.Errorf("x/b -> x/a (allowed throughout but for the recreate) was never answered: the probes show nothing")
	}
	checkControls(t, tally)
}
