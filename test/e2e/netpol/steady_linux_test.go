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

// startProbers probes x/a without pause from the seven pods it denies
// (TCP and UDP 80) and from x/b (TCP 80, allowed) until halt is called, and
// tallies what came back.
func startProbers(s *suite) (*steadyTally, func()) {
	xa := parsePodRef("x/a")
	var denied []podRef
	for _, p := range s.pods {
		if p.String() != "x/a" && p.String() != "x/b" {
			denied = append(denied, p)
		}
	}
	tally := newTally()
	ctx, stop := context.WithCancel(s.ctx)
	var wg sync.WaitGroup
	prober := func(from podRef, tg target, allowed bool) {
		defer wg.Done()
		pace := time.NewTicker(steadyProbeEvery)
		defer pace.Stop()
		for ctx.Err() == nil {
			c := s.probeWith(from, xa, tg, steadyProbeTimeout)
			if ctx.Err() != nil && c.v != answered {
				return // cut short by stop, not by the network
			}
			tally.add(from, tg, allowed, c, time.Now())
			select { // answered probes return at once: bound the rate
			case <-pace.C:
			case <-ctx.Done():
			}
		}
	}
	for _, from := range denied {
		for _, tg := range []target{tcp80, udp80} {
			wg.Add(1)
			go prober(from, tg, false)
		}
	}
	wg.Add(1)
	go prober(parsePodRef("x/b"), tcp80, true)
	var once sync.Once
	return tally, func() {
		once.Do(func() {
			stop()
			wg.Wait()
		})
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
	// The prober keeps running until the last update has visibly landed.
	s.expect(t, "after the updates x/a still admits x/b only", on(tcp80, closed), on(udp80, closed))
	halt()

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
}
