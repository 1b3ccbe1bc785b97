package e2e

import (
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/dynamic"
)

// checkPerRuleAppliedTo shows a ClusterNetworkPolicy whose rules each have
// an appliedTo of their own (core/tiers/README.md), with real packets from
// clients a and b to the server: an ingress Drop applied to the server
// (from a, TCP), an egress Reject applied to b (to the server, UDP). Each
// acts on its own pods only: a's UDP and b's TCP pass. The server's node
// enforces its rule although it runs no pod of b's rule (it gets that
// rule's group too). The kube-apiserver refuses appliedTo on the policy
// and on a rule, and a rule without one when the policy has none.
// expect(step, want) waits for the verdicts of "a tcp", "a udp", "b tcp",
// "b udp" ("." answered, "X" dropped, "R" refused).
func (e *env) checkPerRuleAppliedTo(cnps dynamic.ResourceInterface, expect func(step string, want map[string]string),
	role func(string) map[string]any, port func(string, int64) []any) {
	e.t.Helper()
	policy := func(spec map[string]any) *unstructured.Unstructured {
		return &unstructured.Unstructured{Object: map[string]any{
			"apiVersion": "crd.seine.io/v1beta1", "kind": "ClusterNetworkPolicy",
			"metadata": map[string]any{"name": "tier-per-rule"}, "spec": spec,
		}}
	}
	dropA := map[string]any{"action": "Drop", "name": "drop-a", "appliedTo": []any{role("server")},
		"from": []any{role("a")}, "ports": port("TCP", 8080)}
	rejectB := map[string]any{"action": "Reject", "name": "reject-b", "appliedTo": []any{role("b")},
		"to": []any{role("server")}, "ports": port("UDP", 8081)}

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
}
