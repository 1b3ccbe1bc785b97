package netpol

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/seine-cni/seine/test/lab"
)

// restartCase: enforcement has no gap across restarts. x/a admits x/b only
// while probers run; then seine-controller stops (controller down), x/a's
// agent restarts with the controller still down (it must enforce the
// policies it kept on disk from its first flows on), the controller comes
// back, x/a's agent restarts again, and the controller restarts. Not one
// probe from a denied pod may be answered at any point.
var restartCase = labCase{
	name: "no-gap-across-restarts", upstream: "(none: issue #5, controller and agent restarts)",
	run: runRestarts,
}

func runRestarts(t *testing.T, s *suite) {
	s.create(t, "x", steadyPolicy(fromPods(podLabel("b"))))
	closed := s.allow().set("*", "x/a", false).set("x/b", "x/a", true)
	s.expect(t, "x/a admits x/b only", on(tcp80, closed), on(udp80, closed))
	node := s.node[parsePodRef("x/a")]

	s.forgetAllowedFlows(t)
	tally, halt := startProbers(s)
	defer halt()
	var steps []string
	step := func(name string, do func() error) {
		t.Helper()
		if err := do(); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		steps = append(steps, fmt.Sprintf("  %s %s", time.Now().Format("15:04:05.000"), name))
		time.Sleep(2 * time.Second) // traffic against the new state
	}
	agentRestart := func() error {
		if err := s.c.StopAgent(node); err != nil {
			return err
		}
		if err := s.c.StartAgent(node); err != nil {
			return err
		}
		return s.waitAgentReady(node, time.Minute)
	}
	step("seine-controller stopped", s.c.StopController)
	step("agent of "+node+" restarted while the controller is down", agentRestart)
	step("seine-controller started", func() error { return s.c.StartController(s.ctx) })
	step("agent of "+node+" restarted", agentRestart)
	step("seine-controller restarted", func() error {
		if err := s.c.StopController(); err != nil {
			return err
		}
		return s.c.StartController(s.ctx)
	})
	s.awaitRealized(t, "after the restarts x/a still admits x/b only", on(tcp80, closed), on(udp80, closed))
	halt()
	s.expect(t, "after the restarts, probers stopped", on(tcp80, closed), on(udp80, closed))

	t.Logf("probes to x/a across the restarts:\n%s", tally.summary())
	if tally.leaks > 0 {
		t.Errorf("denied pairs got through across the restarts: %s\nthe steps:\n%s", tally.leakReport(), strings.Join(steps, "\n"))
	}
	if tally.denied < 100 {
		t.Errorf("only %d probes on denied pairs: the probers did not run enough to show anything", tally.denied)
	}
	if tally.controlAnswered == 0 {
		t.Errorf("x/b -> x/a (allowed throughout) was never answered: the probes show nothing")
	}
	checkControls(t, tally)
}

// waitAgentReady polls the node's agent /readyz (inside the node's
// namespace) until it answers 200.
func (s *suite) waitAgentReady(node string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		code, _, err := lab.HTTPGetInNS(s.ctx, s.c.NetNSPath(node), "http://127.0.0.1:10350/readyz")
		if err == nil && code == http.StatusOK {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("agent of %s not ready after %s (code %d, err %v)", node, timeout, code, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
