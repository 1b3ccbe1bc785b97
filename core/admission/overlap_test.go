package admission

import (
	"fmt"
	"testing"
)

// TestOverlap: two policies of one tier at one priority are refused when
// their appliedTo can select the same pod in a direction both have rules
// in; accepted when the labels contradict, the direction differs, the tier
// or the priority differs, or the namespaces differ.
func TestOverlap(t *testing.T) {
	f := newFake(t)
	f.policy(t, KindClusterNetworkPolicy, "", "web-in", `{tier: securityops, priority: 10, appliedTo: [{podSelector: {matchLabels: {app: web}}}], ingress: [{action: Drop}]}`)
	f.policy(t, KindClusterNetworkPolicy, "", "db-out", `{tier: securityops, priority: 10, egress: [{action: Drop, appliedTo: [{podSelector: {matchLabels: {app: db}}, namespaceSelector: {matchLabels: {env: prod}}}]}]}`)
	f.policy(t, KindNetworkPolicy, "x", "x-all", `{priority: 7, appliedTo: [{podSelector: {}}], ingress: [{action: Drop}]}`)
	f.policy(t, KindClusterNetworkPolicy, "", "default-tier", `{priority: 8, appliedTo: [{podSelector: {matchExpressions: [{key: role, operator: DoesNotExist}]}}], egress: [{action: Drop}]}`)
	const overlapWeb = `spec.priority: Invalid value: 10: ClusterNetworkPolicy web-in is in tier securityops at priority 10 too, and its ingress rules may apply to the same pods`
	for _, c := range []struct {
		name, ns, spec string
		want           []string
	}{
		{name: "the same selector", spec: `{tier: securityops, priority: 10, appliedTo: [{podSelector: {matchLabels: {app: web}}}], ingress: [{action: Allow}]}`,
			want: []string{overlapWeb + ` (this policy's spec.appliedTo[0] and its spec.appliedTo[0] can select the same pod): the order of the two would be arbitrary; give one of them another priority`}},
		{name: "labels a pod may carry together", spec: `{tier: securityops, priority: 10, appliedTo: [{podSelector: {matchLabels: {tier: front}}}], ingress: [{action: Allow}]}`,
			want: []string{overlapWeb}},
		{name: "a namespaceSelector alone covers every pod of its namespaces", spec: `{tier: securityops, priority: 10, appliedTo: [{namespaceSelector: {}}], ingress: [{action: Allow}]}`,
			want: []string{overlapWeb}},
		{name: "per-rule appliedTo, the second entry", spec: `{tier: securityops, priority: 10, ingress: [{action: Allow, appliedTo: [{podSelector: {matchLabels: {app: db}}}]}, {action: Allow, appliedTo: [{podSelector: {matchExpressions: [{key: app, operator: In, values: [web, api]}]}}]}]}`,
			want: []string{overlapWeb + ` (this policy's spec.ingress[1].appliedTo[0] and its spec.appliedTo[0]`}},
		{name: "a ClusterGroup through its child", spec: `{tier: securityops, priority: 10, appliedTo: [{group: parent}], ingress: [{action: Allow}]}`,
			want: []string{overlapWeb + ` (this policy's spec.appliedTo[0] and its spec.appliedTo[0]`}},
		{name: "egress against per-rule egress", spec: `{tier: securityops, priority: 10, appliedTo: [{podSelector: {matchLabels: {app: db}}}], egress: [{action: Allow}]}`,
			want: []string{`spec.priority: Invalid value: 10: ClusterNetworkPolicy db-out is in tier securityops at priority 10 too, and its egress rules may apply to the same pods (this policy's spec.appliedTo[0] and its spec.egress[0].appliedTo[0]`}},
		{name: "a cluster policy over a namespace, the default tier", spec: `{tier: application, priority: 7, appliedTo: [{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: x}}}], ingress: [{action: Allow}]}`,
			want: []string{`spec.priority: Invalid value: 7: NetworkPolicy x/x-all is in tier application at priority 7 too, and its ingress rules`}},
		{name: "a namespaced policy against a cluster one", ns: "y", spec: `{priority: 8, appliedTo: [{podSelector: {}}], egress: [{action: Drop}]}`,
			want: []string{`spec.priority: Invalid value: 8: ClusterNetworkPolicy default-tier is in tier application at priority 8 too`}},

		{name: "accepted: labels that contradict", spec: `{tier: securityops, priority: 10, appliedTo: [{podSelector: {matchLabels: {app: db}}}, {podSelector: {matchExpressions: [{key: app, operator: NotIn, values: [web]}]}}, {podSelector: {matchExpressions: [{key: app, operator: DoesNotExist}]}}], ingress: [{action: Allow}]}`},
		{name: "accepted: the other direction", spec: `{tier: securityops, priority: 10, appliedTo: [{podSelector: {matchLabels: {app: web}}}], egress: [{action: Allow}]}`},
		{name: "accepted: no rules", spec: `{tier: securityops, priority: 10, appliedTo: [{podSelector: {matchLabels: {app: web}}}]}`},
		{name: "accepted: another priority", spec: `{tier: securityops, priority: 10.5, appliedTo: [{podSelector: {matchLabels: {app: web}}}], ingress: [{action: Allow}]}`},
		{name: "accepted: another tier", spec: `{tier: networkops, priority: 10, appliedTo: [{podSelector: {matchLabels: {app: web}}}], ingress: [{action: Allow}]}`},
		{name: "accepted: namespaces that differ", ns: "z", spec: `{priority: 7, appliedTo: [{podSelector: {}}], ingress: [{action: Drop}]}`},
		{name: "accepted: a namespace selector that excludes it", spec: `{priority: 7, appliedTo: [{namespaceSelector: {matchExpressions: [{key: kubernetes.io/metadata.name, operator: NotIn, values: [x]}]}}], ingress: [{action: Drop}]}`},
		{name: "accepted: a group whose pods contradict", spec: `{tier: securityops, priority: 10, appliedTo: [{podSelector: {matchLabels: {app: other}}}, {group: web}], egress: [{action: Allow}]}`},
		{name: "accepted: the labels the other lacks", spec: `{priority: 8, appliedTo: [{podSelector: {matchLabels: {role: x}}}], egress: [{action: Drop}]}`},
	} {
		t.Run(c.name, func(t *testing.T) {
			kind := KindClusterNetworkPolicy
			if c.ns != "" {
				kind = KindNetworkPolicy
			}
			checkErrors(t, ValidatePolicy(Policy{Kind: kind, Namespace: c.ns, Name: "new", Spec: parseSpec(t, c.spec)}, f), c.want)
		})
	}
	// An update of a policy is not judged against itself.
	p := f.policies[0]
	checkErrors(t, ValidatePolicy(p, f), nil)

	// A policy the cache still holds after its deletion does not count.
	same := Policy{Kind: KindClusterNetworkPolicy, Name: "new", Spec: parseSpec(t, `{tier: securityops, priority: 10, appliedTo: [{podSelector: {matchLabels: {app: web}}}], ingress: [{action: Allow}]}`)}
	checkErrors(t, ValidatePolicy(same, f), []string{overlapWeb})
	f.gone = map[string]bool{"ClusterNetworkPolicy//web-in": true}
	checkErrors(t, ValidatePolicy(same, f), nil)
}

// BenchmarkOverlap: one policy checked against 10,000 others at its tier
// and priority (the worst case: every policy of the cluster in one place),
// none overlapping.
func BenchmarkOverlap(b *testing.B) {
	t := &testing.T{}
	f := newFake(t)
	for i := range 10000 {
		f.policy(t, KindClusterNetworkPolicy, "", fmt.Sprint("p", i), fmt.Sprintf(`{priority: 10, appliedTo: [{podSelector: {matchLabels: {app: a%d}}}, {namespaceSelector: {matchLabels: {team: t%d}}, podSelector: {matchLabels: {app: a%d}}}], ingress: [{action: Drop}], egress: [{action: Drop}]}`, i, i, i))
	}
	p := Policy{Kind: KindClusterNetworkPolicy, Name: "new", Spec: parseSpec(t, `{priority: 10, appliedTo: [{podSelector: {matchLabels: {app: new}}}], ingress: [{action: Drop}]}`)}
	for b.Loop() {
		if errs := ValidatePolicy(p, f); len(errs) != 0 {
			b.Fatal(errs)
		}
	}
}
