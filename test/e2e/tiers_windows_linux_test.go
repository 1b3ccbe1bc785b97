package e2e

import (
	"fmt"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	crdv1 "github.com/seine-cni/seine/core/apis/crd/v1beta1"
	"github.com/seine-cni/seine/test/lab/probe"
)

// checkTieredWindows judges tiered policy on a node whose agent builds the
// Windows flow set, with real packets: every policy applies to pod w on
// that node, with an ingress rule from pod l (on a Linux-flow-set node)
// and an egress rule to it, so each verdict is taken by the Windows flows'
// tier tables alone (l's node has no policy). The matrix has four cells:
// l -> w (ingress on the Windows node) and w -> l (egress there), each on
// TCP 8080 and UDP 8081. Each step makes one change that changes a
// verdict (so none passes on the state before it): Reject answered by the
// Windows node's agent (a TCP RST, an ICMP port unreachable; never a
// timeout), an emergency Drop, Pass and Allow each above an application
// rule that would decide otherwise.
func (e *env) checkTieredWindows(w, l *corev1.Pod) {
	e.t.Helper()
	start := time.Now()
	for p, role := range map[*corev1.Pod]string{w: "win", l: "lin"} {
		patch := fmt.Sprintf(`{"metadata":{"labels":{"tier-role":%q}}}`, role)
		if _, err := e.cs.CoreV1().Pods("default").Patch(e.ctx, p.Name, types.MergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
			e.t.Fatal(err)
		}
	}
	cnps := e.dynamic().Resource(crdv1.ClusterNetworkPoliciesResource)
	e.t.Cleanup(func() { _ = cnps.DeleteCollection(e.ctx, metav1.DeleteOptions{}, metav1.ListOptions{}) })
	wNS, lNS := e.podNS(w), e.podNS(l)
	// cells in the matrix's order; want is "tcp udp" per direction.
	type cell struct{ from, to, ns, ip, name string }
	cells := []cell{{"l", "w", lNS, w.Status.PodIP, w.Name}, {"w", "l", wNS, l.Status.PodIP, l.Name}}
	expect := func(step, in, out string) {
		e.t.Helper()
		want := map[string]string{"l->w": in, "w->l": out}
		e.waitTiers("windows node: "+step, func() []string {
			bad, rows := 0, []string{"        tcp udp   (want)"}
			for _, c := range cells {
				dir := c.from + "->" + c.to
				got := []string{}
				for _, pp := range []struct{ proto, port string }{{"tcp", "8080"}, {"udp", "8081"}} {
					reply, err := probe.Probe(e.ctx, c.ns, pp.proto, c.ip+":"+pp.port, time.Second)
					got = append(got, probeVerdict(reply, err, c.name))
				}
				if g := strings.Join(got, " "); g != want[dir] {
					bad++
					rows = append(rows, fmt.Sprintf("%-7s %s     (%s)  <-", dir, strings.Join(got, "   "), want[dir]))
				} else {
					rows = append(rows, fmt.Sprintf("%-7s %s", dir, strings.Join(got, "   ")))
				}
			}
			if bad == 0 {
				return nil
			}
			return rows
		})
	}
	role := func(r string) map[string]any {
		return map[string]any{"podSelector": map[string]any{"matchLabels": map[string]any{"tier-role": r}}}
	}
	tcpOnly := []any{map[string]any{"protocol": "TCP", "port": int64(8080)}}
	// apply: a policy on w with one ingress rule from l and one egress
	// rule to l, both with action (ports nil: every port and protocol).
	apply := func(name, tier, action string, ports []any) {
		e.t.Helper()
		in := map[string]any{"action": action, "from": []any{role("lin")}}
		out := map[string]any{"action": action, "to": []any{role("lin")}}
		if ports != nil {
			in["ports"], out["ports"] = ports, ports
		}
		e.applyCNP(cnps, name, map[string]any{"tier": tier, "priority": float64(10), "appliedTo": []any{role("win")},
			"ingress": []any{in}, "egress": []any{out}})
	}
	del := func(name string) {
		e.t.Helper()
		e.deleteCNP(cnps, name)
	}

	expect("no policy", ". .", ". .")
	apply("win-second", "application", "Reject", nil)
	expect("application Reject", "R R", "R R")
	apply("win-first", "emergency", "Drop", tcpOnly)
	expect("emergency Drop (TCP) over application Reject", "X R", "X R")
	apply("win-first", "emergency", "Pass", tcpOnly)
	expect("emergency Pass (TCP) skips application Reject", ". R", ". R")
	apply("win-second", "application", "Drop", tcpOnly)
	expect("emergency Pass (TCP), application Drop (TCP)", ". .", ". .")
	del("win-first")
	expect("application Drop (TCP) alone", "X .", "X .")
	apply("win-first", "emergency", "Allow", tcpOnly)
	expect("emergency Allow (TCP) over application Drop", ". .", ". .")
	del("win-first")
	expect("application Drop (TCP) alone again", "X .", "X .")
	del("win-second")
	expect("no policy again", ". .", ". .")
	e.t.Logf("tiered checks on the Windows-flow-set node took %s", time.Since(start).Round(time.Millisecond))
}
