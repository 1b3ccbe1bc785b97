package netpol

import (
	"os/exec"
	"strings"
	"testing"
	"time"
)

// labCase is a case that needs the lab itself, beyond policies and
// matrices: the probes' own checks, iptables in a pod, a steady prober.
type labCase struct {
	name, upstream string
	run            func(t *testing.T, s *suite)
}

// labFirst run before the policy cases, labLast after them.
var (
	labFirst = []labCase{noPolicyCase, machineryCase}
	labLast  = []labCase{steadyCase, statusCase, restartCase, newPodCase, loadCase}
)

// noPolicyCase runs first: every pod reaches every pod, and a closed port
// reads as refused.
var noPolicyCase = labCase{
	name: "no-policy", upstream: "(the suite's initial check that every pod reaches every pod)",
	run: func(t *testing.T, s *suite) {
		// SCTP too: probed where the kernel has it, traced where it has not
		// (all answered here; the sctp-* cases then see the drops).
		checks := []check{on(tcp80, s.allow()), on(tcp81, s.allow()), on(udp80, s.allow()), on(udp81, s.allow()),
			on(sctp80, s.allow()), on(sctp81, s.allow())}
		// The first packets to a new node may be lost while the tunnel's
		// next hop resolves: give the very first matrix more time.
		if err := s.await("no policy", time.Minute, t.Logf, checks...); err != nil {
			t.Fatal(err)
		}
		// The other side of the machinery: a port nobody listens on is
		// refused, and the suite reads that as a refusal, not a drop.
		closed := target{tcp, 82}
		got := s.probeAll([]target{closed})[0]
		for i, from := range s.pods {
			for j, to := range s.pods {
				if i != j && got.cells[i][j].v != refused {
					t.Errorf("%s -> %s %s (no listener): got %q %s, want refused", from, to, closed, got.cells[i][j].v, got.cells[i][j].detail)
				}
			}
		}
	},
}

// machineryCase checks the suite itself, independently of Seine: a drop and
// a reset made by iptables inside a pod read as what they are.
var machineryCase = labCase{
	name: "machinery-drop-vs-reset", upstream: "(none: checks the suite's probes)",
	run: func(t *testing.T, s *suite) {
		xa := s.netns[parsePodRef("x/a")]
		iptables := func(args ...string) {
			t.Helper()
			argv := append([]string{"--net=" + xa, "--", "iptables", "-w"}, args...)
			if out, err := exec.CommandContext(s.ctx, "nsenter", argv...).CombinedOutput(); err != nil {
				t.Fatalf("iptables %s in x/a: %v\n%s", strings.Join(args, " "), err, out)
			}
		}
		drop := []string{"INPUT", "-p", "tcp", "--dport", "80", "-j", "DROP"}
		reject := []string{"INPUT", "-p", "tcp", "--dport", "80", "-j", "REJECT", "--reject-with", "tcp-reset"}
		iptables(append([]string{"-A"}, drop...)...)
		t.Cleanup(func() {
			for _, rule := range [][]string{drop, reject} {
				argv := append([]string{"--net=" + xa, "--", "iptables", "-w", "-D"}, rule...)
				_ = exec.Command("nsenter", argv...).Run() // absent when the case got no further
			}
		})
		denied := s.allow().set("*", "x/a", false)
		if err := s.await("iptables DROP in x/a reads as timed out", enforceTimeout, t.Logf, on(tcp80, denied)); err != nil {
			t.Fatal(err)
		}
		// A timeout is not yet the policy's drop: with no policy there is
		// no isolation drop flow, and the counted round says so.
		got, flows, delta, err := s.countedRound([]target{tcp80})
		if err != nil {
			t.Fatal(err)
		}
		if bad := denied.diff(got[0]); len(bad) > 0 {
			t.Fatalf("the iptables DROP matrix changed: %v", bad)
		}
		_, problems := accountDrops(s.deniedProbes([]check{on(tcp80, denied)}, got, flows), delta)
		if len(problems) != 8 || !strings.Contains(problems[0], "something else dropped it") {
			t.Fatalf("an iptables DROP passed for the policy's drop: %q", problems)
		}
		t.Logf("an iptables drop is not counted as the policy's: %s (and 7 more)", problems[0])

		iptables(append([]string{"-D"}, drop...)...)
		iptables(append([]string{"-A"}, reject...)...)
		err = s.await("iptables REJECT in x/a", 2*time.Second, t.Logf, on(tcp80, denied))
		if err == nil {
			t.Fatal("with a TCP reset instead of a drop the deny matrix still matched: a reset would pass for a drop")
		}
		if !strings.Contains(err.Error(), "got refused/reset") || !strings.Contains(err.Error(), "R*") {
			t.Fatalf("the failure does not show the resets:\n%v", err)
		}
		t.Logf("a reset on a denied pair fails the matrix, as it must:\n%v", err)
	},
}
