package e2e

import (
	"fmt"
	"net/netip"
	"regexp"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
)

// checkNoEncapDirect: in noEncap on the lab's bridged uplinks, traffic to a
// peer's pods leaves straight out of the uplink to the peer's MAC (the agent
// learns it from the host's neighbour table), not through the host's
// routing. Every node's peer flows in L3Forwarding carry the to-uplink mark,
// and cross-node pings add nothing to any node's forwarding counters (pod
// traffic the host routes passes its FORWARD chain from seine-gw0).
func (e *env) checkNoEncapDirect(pods []corev1.Pod) {
	e.t.Helper()
	nodes := []string{"node-1", "node-2", "node-3"}
	for _, n := range nodes {
		e.waitFor(n+"'s peer flows to the uplink", 30*time.Second, func() error {
			out, err := e.ovs(n).Ofctl(e.ctx, "-O", "OpenFlow15", "dump-flows", "br-int", "table=60")
			if err != nil {
				return err
			}
			peers := 0
			for _, l := range strings.Split(out, "\n") {
				if !strings.Contains(l, "priority=180,") {
					continue
				}
				peers++
				if !strings.Contains(l, "0x40/0xf0->reg0") {
					return fmt.Errorf("a peer flow does not go to the uplink: %s", strings.TrimSpace(l))
				}
			}
			if peers != 2 {
				return fmt.Errorf("%d peer flows, want 2:\n%s", peers, out)
			}
			return nil
		})
	}
	before := map[string]int{}
	for _, n := range nodes {
		before[n] = e.forwardedFromPods(n)
	}
	pairs := 0
	for _, from := range pods {
		for _, to := range pods {
			if from.Spec.NodeName == to.Spec.NodeName {
				continue
			}
			pairs++
			if err := pingOnce(e.ctx, e.podNS(&from), netip.MustParseAddr(to.Status.PodIP)); err != nil {
				e.t.Errorf("%s -> %s: %v", from.Name, to.Name, err)
			}
		}
	}
	for _, n := range nodes {
		if d := e.forwardedFromPods(n) - before[n]; d != 0 {
			e.t.Errorf("%s: the host routed %d pod packets during %d cross-node pings; want 0 (direct path)", n, d, pairs)
		}
	}
	e.t.Logf("noEncap: %d cross-node pod pairs answered without the hosts routing them", pairs)
}

var fromPodsRE = regexp.MustCompile(`(?m)^\s*(\d+)\s+\d+\s+ACCEPT.*seine-gw0\s+\*`)

// forwardedFromPods is the packet count of the node's rule that forwards
// traffic arriving from the gateway port (pods' traffic the host routes).
func (e *env) forwardedFromPods(node string) int {
	e.t.Helper()
	out, err := inNS(e.ctx, e.c.NetNSPath(node), "iptables", "-w", "-t", "filter", "-L", "SEINE-FORWARD", "-n", "-v", "-x")
	if err != nil {
		e.t.Fatalf("%s: iptables: %v\n%s", node, err, out)
	}
	m := fromPodsRE.FindStringSubmatch(out)
	if m == nil {
		e.t.Fatalf("%s: no rule forwarding from seine-gw0 in:\n%s", node, out)
	}
	v, _ := strconv.Atoi(m[1])
	return v
}
