package netpol

import (
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// selectorCases: isolation and the peer selectors (pod, namespace, their
// AND and OR forms, matchLabels and matchExpressions). Expectations are over
// all nine pods, so they say more than upstream's, which use fewer pods.
var selectorCases = []netpolCase{
	{
		name: "default-deny-ingress", upstream: "should support a 'default-deny-ingress' policy",
		run: func(t *testing.T, s env) {
			s.create(t, "x", ingressPolicy("deny-ingress", all()))
			want := s.allow().set("*", "x/*", false)
			s.expect(t, "nothing enters x", on(tcp80, want))
		},
	},
	{
		name: "default-deny-all", upstream: "should support a 'default-deny-all' policy",
		run: func(t *testing.T, s env) {
			s.create(t, "x", policy("deny-all", all(), bothTypes, nil, nil))
			want := s.allow().set("*", "x/*", false).set("x/*", "*", false)
			s.expect(t, "nothing enters or leaves x", on(tcp80, want))
		},
	},
	{
		name: "pod-selector", upstream: "should enforce policy to allow traffic from pods within server namespace based on PodSelector",
		run: func(t *testing.T, s env) {
			s.create(t, "x", ingressPolicy("x-a-allows-x-b", podLabel("a"), in(peers(fromPods(podLabel("b"))))))
			want := s.allow().set("*", "x/a", false).set("x/b", "x/a", true)
			s.expect(t, "only x/b enters x/a", on(tcp80, want))
		},
	},
	{
		name: "allow-ingress-for-target", upstream: "should enforce policy to allow ingress traffic for a target",
		run: func(t *testing.T, s env) {
			s.create(t, "x", ingressPolicy("deny-all", all()))
			s.create(t, "x", ingressPolicy("allow-all-to-a", podLabel("a"), in(peers(fromBoth(all(), all())))))
			want := s.allow().set("*", "x/*", false).set("*", "x/a", true)
			s.expect(t, "x isolated but x/a open to all", on(tcp80, want))
		},
	},
	{
		name: "allow-from-all-namespaces", upstream: "should enforce policy to allow ingress traffic from pods in all namespaces",
		run: func(t *testing.T, s env) {
			s.create(t, "x", ingressPolicy("allow-from-another-ns", podLabel("a"), in(peers(fromNS(all())))))
			s.expect(t, "every pod enters x/a", on(tcp80, s.allow()))
		},
	},
	{
		name:     "namespace-selector",
		upstream: "should enforce policy to allow traffic only from a different namespace, based on NamespaceSelector; also ...NamespaceSelector with MatchLabels using default ns label",
		run: func(t *testing.T, s env) {
			s.create(t, "x", ingressPolicy("allow-client-a-via-ns-selector", podLabel("a"), in(peers(fromNS(nsLabel("y"))))))
			want := s.allow().set("x/*", "x/a", false).set("z/*", "x/a", false)
			s.expect(t, "only y enters x/a", on(tcp80, want))
		},
	},
	{
		name: "pod-selector-match-expressions", upstream: "should enforce policy based on PodSelector with MatchExpressions",
		run: func(t *testing.T, s env) {
			s.create(t, "x", ingressPolicy("x-a-allows-x-b", podLabel("a"), in(peers(fromPods(expr("pod", metav1.LabelSelectorOpIn, "b"))))))
			want := s.allow().set("*", "x/a", false).set("x/b", "x/a", true)
			s.expect(t, "only x/b enters x/a", on(tcp80, want))
		},
	},
	{
		name: "namespace-selector-match-expressions", upstream: "should enforce policy based on NamespaceSelector with MatchExpressions",
		run: func(t *testing.T, s env) {
			s.create(t, "x", ingressPolicy("allow-ns-y-match-selector", podLabel("a"), in(peers(fromNS(expr(nsNameLabel, metav1.LabelSelectorOpIn, "y"))))))
			want := s.allow().set("x/*", "x/a", false).set("z/*", "x/a", false)
			s.expect(t, "only y enters x/a", on(tcp80, want))
		},
	},
	{
		name: "pod-or-namespace-selector", upstream: "should enforce policy based on PodSelector or NamespaceSelector",
		run: func(t *testing.T, s env) {
			s.create(t, "x", ingressPolicy("allow-ns-y-match-selector", podLabel("a"), in(peers(
				fromNS(expr(nsNameLabel, metav1.LabelSelectorOpNotIn, "x")),
				fromPods(podLabel("b")),
			))))
			want := s.allow().set("x/c", "x/a", false)
			s.expect(t, "x/b and other namespaces enter x/a, x/c does not", on(tcp80, want))
		},
	},
	{
		name: "pod-and-namespace-selector", upstream: "should enforce policy based on PodSelector and NamespaceSelector",
		run: func(t *testing.T, s env) {
			s.create(t, "x", ingressPolicy("allow-ns-y-podselector-and-nsselector", podLabel("a"), in(peers(
				fromBoth(expr(nsNameLabel, metav1.LabelSelectorOpNotIn, "x"), podLabel("b")),
			))))
			want := s.allow().set("*", "x/a", false).set("y/b", "x/a", true).set("z/b", "x/a", true)
			s.expect(t, "only b pods outside x enter x/a", on(tcp80, want))
		},
	},
	{
		name: "multiple-pod-and-namespace-selectors", upstream: "should enforce policy based on Multiple PodSelectors and NamespaceSelectors",
		run: func(t *testing.T, s env) {
			s.create(t, "x", ingressPolicy("allow-ns-y-z-pod-b-c", podLabel("a"), in(peers(
				fromBoth(expr(nsNameLabel, metav1.LabelSelectorOpNotIn, "x"), expr("pod", metav1.LabelSelectorOpIn, "b", "c")),
			))))
			want := s.allow().set("*", "x/a", false).
				set("y/b", "x/a", true).set("y/c", "x/a", true).set("z/b", "x/a", true).set("z/c", "x/a", true)
			s.expect(t, "only b and c pods outside x enter x/a", on(tcp80, want))
		},
	},
	{
		name: "any-pod-selectors", upstream: "should enforce policy based on any PodSelectors",
		run: func(t *testing.T, s env) {
			s.create(t, "x", ingressPolicy("allow-ns-x-pod-b-c", podLabel("a"), in(peers(fromPods(podLabel("b")), fromPods(podLabel("c"))))))
			want := s.allow().set("*", "x/a", false).set("x/b", "x/a", true).set("x/c", "x/a", true)
			s.expect(t, "x/b and x/c enter x/a", on(tcp80, want))
		},
	},
	{
		name:     "pod-in-other-namespace",
		upstream: "should enforce policy to allow traffic only from a pod in a different namespace based on PodSelector and NamespaceSelector",
		run: func(t *testing.T, s env) {
			s.create(t, "x", ingressPolicy("allow-ns-y-pod-a-via-namespace-pod-selector", podLabel("a"), in(peers(fromBoth(nsLabel("y"), podLabel("a"))))))
			want := s.allow().set("*", "x/a", false).set("y/a", "x/a", true)
			s.expect(t, "only y/a enters x/a", on(tcp80, want))
		},
	},
	{
		name: "deny-from-other-namespaces", upstream: "should deny ingress from pods on other namespaces",
		run: func(t *testing.T, s env) {
			s.create(t, "x", ingressPolicy("deny-empty-policy", all(), in(peers(fromPods(all())))))
			want := s.allow().set("y/*", "x/*", false).set("z/*", "x/*", false)
			s.expect(t, "x talks within x only", on(tcp80, want))
		},
	},
	{
		name: "allow-all", upstream: "should support allow-all policy",
		run: func(t *testing.T, s env) {
			s.create(t, "x", ingressPolicy("allow-all", all(), in(nil)))
			s.expect(t, "an allow-all policy", on(tcp80, s.allow()), on(tcp81, s.allow()))
		},
	},
}
