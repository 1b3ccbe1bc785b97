package e2e

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"

	"github.com/seine-cni/seine/test/lab/probe"
)

// checkPerRuleAppliedTo shows a ClusterNetworkPolicy whose rules each have
// an appliedTo of their own (core/tiers/README.md), with real packets from
// clients a and b to the server: an ingress Drop applied to the server
// (from a, TCP), an egress Reject applied to b (to the server, UDP). Each
// acts on its own pods only: a's UDP and b's TCP pass. The server's node
// enforces its rule although it runs no pod of b's rule (it gets that
// rule's group too). The kube-apiserver refuses appliedTo on the policy
// and on a rule, and a rule without one when the policy has none. Both
// rules have enableLogging: the server's node logs a's dropped
// connection, b's node b's rejected one, in their policy audit logs, one
// line per connection attempt.
// expect(step, want) waits for the verdicts of "a tcp", "a udp", "b tcp",
// "b udp" ("." answered, "X" dropped, "R" refused).
func (e *env) checkPerRuleAppliedTo(cnps dynamic.ResourceInterface, a, s, b *corev1.Pod, expect func(step string, want map[string]string),
	role func(string) map[string]any, port func(string, int64) []any) {
	e.t.Helper()
	policy := func(spec map[string]any) *unstructured.Unstructured {
		return &unstructured.Unstructured{Object: map[string]any{
			"apiVersion": "crd.seine.io/v1beta1", "kind": "ClusterNetworkPolicy",
			"metadata": map[string]any{"name": "tier-per-rule"}, "spec": spec,
		}}
	}
	dropA := map[string]any{"action": "Drop", "name": "drop-a", "appliedTo": []any{role("server")},
		"from": []any{role("a")}, "ports": port("TCP", 8080), "enableLogging": true}
	rejectB := map[string]any{"action": "Reject", "name": "reject-b", "appliedTo": []any{role("b")},
		"to": []any{role("server")}, "ports": port("UDP", 8081), "enableLogging": true}

	// The kube-apiserver refuses the mixes (the CRD's validation rules).
	for _, bad := range []struct {
		spec map[string]any
		want string
	}{
		{map[string]any{"tier": "securityops", "priority": 10.0, "appliedTo": []any{role("server")}, "ingress": []any{dropA}},
			"appliedTo is set either on the policy or on every rule"},
		{map[string]any{"tier": "securityops", "priority": 10.0, "ingress": []any{dropA, map[string]any{"action": "Drop"}}},
			"appliedTo is set either on the policy or on every rule"},
	} {
		_, err := cnps.Create(e.ctx, policy(bad.spec), metav1.CreateOptions{})
		if err == nil || !strings.Contains(err.Error(), bad.want) {
			e.t.Fatalf("tiers: the kube-apiserver took %v: %v, want a refusal saying %q", bad.spec, err, bad.want)
		}
		e.t.Logf("tiers: refused as expected: %v", err)
	}

	if err := e.createOrUpdate(cnps, policy(map[string]any{"tier": "securityops", "priority": 10.0,
		"ingress": []any{dropA}, "egress": []any{rejectB}})); err != nil {
		e.t.Fatalf("apply cluster network policy tier-per-rule: %v", err)
	}
	expect("per-rule appliedTo: a Drop on the server, a Reject on b",
		map[string]string{"a tcp": "X", "a udp": ".", "b tcp": ".", "b udp": "R"})

	// The audit logs: each line names the policy, rule, direction,
	// action, 5-tuple and both pods (core/auditlog).
	e.waitAuditLine(s.Spec.NodeName, fmt.Sprintf(" SeineClusterNetworkPolicy/tier-per-rule drop-a Ingress Drop TCP %s:", a.Status.PodIP),
		fmt.Sprintf(" %s:8080 %s/%s %s/%s", s.Status.PodIP, a.Namespace, a.Name, s.Namespace, s.Name))
	e.waitAuditLine(b.Spec.NodeName, fmt.Sprintf(" SeineClusterNetworkPolicy/tier-per-rule reject-b Egress Reject UDP %s:", b.Status.PodIP),
		fmt.Sprintf(" %s:8081 %s/%s %s/%s", s.Status.PodIP, b.Namespace, b.Name, s.Namespace, s.Name))

	// One line per connection attempt: three more denied connections from
	// a (each a SYN and its retransmission), three more lines.
	drops := func() int {
		log, _ := os.ReadFile(e.c.NodePolicyAuditLog(s.Spec.NodeName))
		return strings.Count(string(log), fmt.Sprintf(" drop-a Ingress Drop TCP %s:", a.Status.PodIP))
	}
	before := drops()
	for range 3 {
		if _, err := probe.Probe(e.ctx, e.podNS(a), "tcp", s.Status.PodIP+":8080", 1500*time.Millisecond); !errors.Is(err, probe.ErrTimeout) {
			e.t.Fatalf("tiers: a -> server tcp/8080: %v, want a timeout (the Drop)", err)
		}
	}
	time.Sleep(time.Second)
	if got := drops() - before; got != 3 {
		e.t.Errorf("tiers: 3 denied connection attempts wrote %d lines to %s's audit log, want 3", got, s.Spec.NodeName)
	} else {
		e.t.Logf("tiers: 3 denied connection attempts, 3 lines in the audit log")
	}
}

// waitTiers calls check until it finds nothing wrong, for 45 s at the
// most (then the test fails with what check found); check returns what is
// not as expected.
func (e *env) waitTiers(step string, check func() []string) {
	e.t.Helper()
	deadline := time.Now().Add(45 * time.Second)
	for {
		bad := check()
		if len(bad) == 0 {
			e.t.Logf("tiers: %s: as expected", step)
			return
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("tiers: %s:\n  %s", step, strings.Join(bad, "\n  "))
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// waitAuditLine waits until node's policy audit log holds a line with
// both parts (the ports between them vary), and logs it.
func (e *env) waitAuditLine(node, part1, part2 string) {
	e.t.Helper()
	path := e.c.NodePolicyAuditLog(node)
	deadline := time.Now().Add(20 * time.Second)
	for {
		b, _ := os.ReadFile(path)
		for _, l := range strings.Split(string(b), "\n") {
			if i := strings.Index(l, part1); i >= 0 && strings.Contains(l[i:], part2) {
				e.t.Logf("tiers: %s's audit log: %s", node, l)
				return
			}
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("tiers: no line with %q ... %q in %s:\n%s", part1, part2, path, lastLines(string(b), 10))
		}
		time.Sleep(300 * time.Millisecond)
	}
}

// lastLines is the last n lines of s.
func lastLines(s string, n int) string {
	ls := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(ls[max(0, len(ls)-n):], "\n")
}

// checkNodeSelectorPeer shows a nodeSelector peer with real packets: an
// egress Drop from client a to the Nodes labelled tier-node=yes. A TCP
// connection from a to a closed port of a node's address is refused by
// that node's kernel ("R"); while the node is selected it is dropped
// ("X"). The peer follows the label from the server's node to b's node.
func (e *env) checkNodeSelectorPeer(cnps dynamic.ResourceInterface, a, s, b *corev1.Pod, role func(string) map[string]any) {
	e.t.Helper()
	label := func(node string, on bool) {
		e.t.Helper()
		patch := `{"metadata":{"labels":{"tier-node":null}}}`
		if on {
			patch = `{"metadata":{"labels":{"tier-node":"yes"}}}`
		}
		if _, err := e.cs.CoreV1().Nodes().Patch(e.ctx, node, types.MergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
			e.t.Fatal(err)
		}
	}
	e.t.Cleanup(func() {
		for _, n := range []string{s.Spec.NodeName, b.Spec.NodeName} {
			_, _ = e.cs.CoreV1().Nodes().Patch(e.ctx, n, types.MergePatchType, []byte(`{"metadata":{"labels":{"tier-node":null}}}`), metav1.PatchOptions{})
		}
	})
	aNS := e.podNS(a)
	sNode, bNode := e.nodeIP(s.Spec.NodeName), e.nodeIP(b.Spec.NodeName)
	expect := func(step, sWant, bWant string) {
		e.t.Helper()
		e.waitTiers(step, func() (bad []string) {
			for ip, want := range map[string]string{sNode: sWant, bNode: bWant} {
				_, err := probe.Probe(e.ctx, aNS, "tcp", ip+":1", time.Second)
				got := "?"
				switch {
				case errors.Is(err, probe.ErrTimeout):
					got = "X"
				case errors.Is(err, probe.ErrRefused):
					got = "R"
				}
				if got != want {
					bad = append(bad, fmt.Sprintf("a -> node %s tcp/1: got %s (%v), want %s", ip, got, err, want))
				}
			}
			return bad
		})
	}
	expect("no policy: the nodes refuse", "R", "R")
	label(s.Spec.NodeName, true)
	u := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "crd.seine.io/v1beta1", "kind": "ClusterNetworkPolicy",
		"metadata": map[string]any{"name": "tier-nodes"},
		"spec": map[string]any{"tier": "securityops", "priority": 10.0, "appliedTo": []any{role("a")},
			"egress": []any{map[string]any{"action": "Drop", "name": "no-infra",
				"to": []any{map[string]any{"nodeSelector": map[string]any{"matchLabels": map[string]any{"tier-node": "yes"}}}}}}},
	}}
	if err := e.createOrUpdate(cnps, u); err != nil {
		e.t.Fatalf("apply cluster network policy tier-nodes: %v", err)
	}
	expect("nodeSelector Drop: the server's node", "X", "R")
	label(s.Spec.NodeName, false)
	label(b.Spec.NodeName, true)
	expect("nodeSelector Drop: the label moved to b's node", "R", "X")
	if err := cnps.Delete(e.ctx, "tier-nodes", metav1.DeleteOptions{}); err != nil {
		e.t.Fatal(err)
	}
	expect("nodeSelector policy deleted", "R", "R")
}
