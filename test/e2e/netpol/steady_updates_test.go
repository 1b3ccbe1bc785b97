package netpol

import (
	"strings"
	"testing"

	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// steadyPolicy is the policy the case revolves around: x/a admits peers on
// TCP and UDP 80.
func steadyPolicy(from ...networkingv1.NetworkPolicyPeer) *networkingv1.NetworkPolicy {
	return ingressPolicy("steady", podLabel("a"), in(from, port(tcp, 80), port(udp, 80)))
}

// steadyUpdate is one change that must keep every pod but x/b out of x/a.
type steadyUpdate struct {
	name string
	do   func() // fails the test it was made for on error
}

func updateNames(us []steadyUpdate) string {
	names := make([]string, len(us))
	for i, u := range us {
		names[i] = u.name
	}
	return strings.Join(names, ", ")
}

// steadyUpdates is a cycle of changes that ends where it started; each
// keeps every pod but x/b out of x/a (TestSteadyUpdatesKeepDenied checks
// that on the model).
func steadyUpdates(t *testing.T, e env) []steadyUpdate {
	base := steadyPolicy(fromPods(podLabel("b")))
	return []steadyUpdate{
		{"selector as matchExpressions", func() { e.update(t, "x", steadyPolicy(fromPods(expr("pod", metav1.LabelSelectorOpIn, "b")))) }},
		{"selector as namespace AND pod", func() { e.update(t, "x", steadyPolicy(fromBoth(nsLabel("x"), podLabel("b")))) }},
		{"port 81 added", func() {
			e.update(t, "x", ingressPolicy("steady", podLabel("a"), in(peers(fromPods(podLabel("b"))), port(tcp, 80), port(udp, 80), port(tcp, 81))))
		}},
		{"back to the base policy", func() { e.update(t, "x", base) }},
		{"a second policy admitting x/b", func() {
			e.create(t, "x", ingressPolicy("steady-extra", podLabel("a"), in(peers(fromPods(podLabel("b"))), port(tcp, 80))))
		}},
		{"the second policy deleted", func() { e.deletePolicy(t, "x", "steady-extra") }},
		{"a deny-all policy on x/a", func() { e.create(t, "x", ingressPolicy("steady-deny", podLabel("a"))) }},
		{"the base policy deleted", func() { e.deletePolicy(t, "x", "steady") }},
		{"the base policy recreated", func() { e.create(t, "x", base) }},
		{"the deny-all policy deleted", func() { e.deletePolicy(t, "x", "steady-deny") }},
		{"x/c labelled", func() { e.labelPod(t, "x/c", "steady", "yes") }},
		{"x/c unlabelled", func() { e.labelPod(t, "x/c", "steady", "") }},
		{"namespace y labelled", func() { e.labelNS(t, "y", "steady", "yes") }},
		{"namespace y unlabelled", func() { e.labelNS(t, "y", "steady", "") }},
		{"x/a relabelled (still pod=a)", func() { e.labelPod(t, "x/a", "steady", "yes") }},
		{"x/a label removed", func() { e.labelPod(t, "x/a", "steady", "") }},
	}
}
