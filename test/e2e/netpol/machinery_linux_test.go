package netpol

import (
	"os/exec"
	"strings"
	"testing"
	"time"
)

// machineryCases check the suite itself, independently of Seine: a drop
// and a reset made by iptables inside a pod read as what they are.
var machineryCases = []netpolCase{
	{
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
			s.expect(t, "iptables DROP in x/a reads as timed out", on(tcp80, denied))

			iptables(append([]string{"-D"}, drop...)...)
			iptables(append([]string{"-A"}, reject...)...)
			err := s.await("iptables REJECT in x/a", 2*time.Second, t.Logf, on(tcp80, denied))
			if err == nil {
				t.Fatal("with a TCP reset instead of a drop the deny matrix still matched: a reset would pass for a drop")
			}
			if !strings.Contains(err.Error(), "got refused/reset") || !strings.Contains(err.Error(), "R*") {
				t.Fatalf("the failure does not show the resets:\n%v", err)
			}
			t.Logf("a reset on a denied pair fails the matrix, as it must:\n%v", err)
		},
	},
}
