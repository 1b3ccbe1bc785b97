package netpol

import (
	"fmt"
	"slices"
	"strings"
	"testing"
)

// Accounting for denied probes with the isolation drop flows' counters.
//
// A packet a policy denies from pod F to pod T is dropped by F's egress
// isolation flow on F's node (table 50) or, if F's egress lets it out, by
// T's ingress isolation flow on T's node (table 80); nothing else may drop
// it. A round of probes is counted: the counters are read before and after
// (once ovs-vswitchd has credited every cached datapath flow's packets), and
// each denied probe that timed out is charged to its candidate flows, the
// ones of those two that exist. A probe sent what probe.Sent says: a TCP
// probe one SYN (the kernel resends it only after 1 s, the probe's whole
// timeout, and then more packets only make the check easier), a UDP probe
// its three datagrams (fewer if its thread was starved past the deadline).
//
// The check is the set of necessary conditions: every flow counted at least
// what the probes that only it can have dropped sent, and every pair of a
// cell's two candidates at least what the probes whose candidates lie in
// the pair sent. A probe dropped by anything else (a dead pod, a broken
// tunnel, an iptables rule, a starved machine) leaves its flow short.

// dropFlow names one isolation drop flow.
type dropFlow struct {
	node  string
	table int    // tableEgress or tableIngress
	port  uint32 // the isolated pod's OpenFlow port
	pod   podRef
}

func (f dropFlow) String() string {
	dir := "ingress"
	if f.table == tableEgress {
		dir = "egress"
	}
	return fmt.Sprintf("%s %s (%s table %d)", f.pod, dir, f.node, f.table)
}

// deniedProbe is one probe on a denied pair that timed out.
type deniedProbe struct {
	cell       string     // "y/a -> x/a TCP/80"
	packets    int64      // what it sent at least
	candidates []dropFlow // the isolation flows that may have dropped it
}

// accountDrops checks the counters' deltas against the denied probes. lines say what each flow counted against
// what it had to; problems are the conditions that do not hold.
func accountDrops(probes []deniedProbe, delta map[dropFlow]int64) (lines, problems []string) {
	need := map[dropFlow]int64{}        // probes only this flow can have dropped
	pairNeed := map[[2]dropFlow]int64{} // probes either of two flows can have dropped
	for _, p := range probes {
		switch len(p.candidates) {
		case 0:
			problems = append(problems, fmt.Sprintf("%s timed out, but neither end is isolated that way (no isolation drop flow): something else dropped it", p.cell))
		case 1:
			need[p.candidates[0]] += p.packets
		default:
			k := [2]dropFlow{p.candidates[0], p.candidates[1]}
			pairNeed[k] += p.packets
		}
	}
	flows := map[dropFlow]bool{}
	for f := range need {
		flows[f] = true
	}
	for k := range pairNeed {
		flows[k[0]], flows[k[1]] = true, true
	}
	var sorted []dropFlow
	for f := range flows {
		sorted = append(sorted, f)
	}
	slices.SortFunc(sorted, func(a, b dropFlow) int { return strings.Compare(a.String(), b.String()) })
	for _, f := range sorted {
		lines = append(lines, fmt.Sprintf("%s counted %d, needed %d", f, delta[f], need[f]))
		if delta[f] < need[f] {
			problems = append(problems, fmt.Sprintf("%s counted %d packets, but the denied probes only it can have dropped sent at least %d: something else dropped some", f, delta[f], need[f]))
		}
	}
	for k, n := range pairNeed {
		if got, want := delta[k[0]]+delta[k[1]], n+need[k[0]]+need[k[1]]; got < want {
			problems = append(problems, fmt.Sprintf("%s and %s counted %d packets together, but the denied probes they can have dropped sent at least %d: something else dropped some", k[0], k[1], got, want))
		}
	}
	slices.Sort(problems)
	return lines, problems
}

func TestAccountDrops(t *testing.T) {
	xaIn := dropFlow{"node-1", tableIngress, 5, parsePodRef("x/a")}
	xbIn := dropFlow{"node-2", tableIngress, 6, parsePodRef("x/b")}
	xaEg := dropFlow{"node-1", tableEgress, 5, parsePodRef("x/a")}
	probes := []deniedProbe{
		{"y/a -> x/a TCP/80", 1, []dropFlow{xaIn}},
		{"z/a -> x/a TCP/80", 1, []dropFlow{xaIn}},
		{"y/a -> x/a UDP/80", 3, []dropFlow{xaIn}},
		{"x/a -> x/b TCP/80", 1, []dropFlow{xaEg, xbIn}},
	}
	// Every probe counted: x/a's ingress 1+1+3, the pair 1 (on either).
	lines, problems := accountDrops(probes, map[dropFlow]int64{xaIn: 5, xaEg: 1})
	if len(problems) != 0 {
		t.Errorf("all counted, yet %q", problems)
	}
	if want := "x/a ingress (node-1 table 80) counted 5, needed 5"; !slices.Contains(lines, want) {
		t.Errorf("lines %q lack %q", lines, want)
	}
	// One packet short on x/a's ingress: some probe was dropped elsewhere.
	if _, problems := accountDrops(probes, map[dropFlow]int64{xaIn: 4, xaEg: 1}); len(problems) != 1 ||
		!strings.Contains(problems[0], "x/a ingress (node-1 table 80) counted 4 packets, but the denied probes only it can have dropped sent at least 5") {
		t.Errorf("x/a's ingress short: %q", problems)
	}
	// The pair's probe counted by neither flow.
	if _, problems := accountDrops(probes, map[dropFlow]int64{xaIn: 5}); len(problems) != 1 ||
		!strings.Contains(problems[0], "counted 0 packets together") {
		t.Errorf("pair short: %q", problems)
	}
	// A pair's flow may count single-candidate probes only once.
	single := []deniedProbe{{"x/a -> y/a TCP/80", 1, []dropFlow{xaEg}}, {"x/a -> x/b TCP/80", 1, []dropFlow{xaEg, xbIn}}}
	if _, problems := accountDrops(single, map[dropFlow]int64{xaEg: 1}); len(problems) != 1 {
		t.Errorf("one egress packet for two probes: %q", problems)
	}
	// No isolation flow at all.
	if _, problems := accountDrops([]deniedProbe{{"y/a -> x/a TCP/80", 1, nil}}, nil); len(problems) != 1 ||
		!strings.Contains(problems[0], "something else dropped it") {
		t.Errorf("no candidates: %q", problems)
	}
}
