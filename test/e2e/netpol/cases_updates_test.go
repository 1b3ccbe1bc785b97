package netpol

import "testing"

// updateCases: policies updated and deleted, pod and namespace labels added
// and removed while policies select on them.
var updateCases = []netpolCase{
	{
		name: "updated-policy", upstream: "should enforce updated policy",
		run: func(t *testing.T, s env) {
			s.create(t, "x", ingressPolicy("allow-all-mutate-to-deny-all", all(), in(nil)))
			s.expect(t, "allow-all", on(tcp81, s.allow()))
			s.update(t, "x", ingressPolicy("allow-all-mutate-to-deny-all", all()))
			s.expect(t, "updated to deny-all", on(tcp81, s.allow().set("*", "x/*", false)))
		},
	},
	{
		name: "updated-namespace-label", upstream: "should allow ingress access from updated namespace",
		run: func(t *testing.T, s env) {
			s.create(t, "x", ingressPolicy("allow-client-a-via-ns-selector", podLabel("a"), in(peers(fromNS(labels("ns2", "updated"))))))
			closed := s.allow().set("*", "x/a", false)
			s.expect(t, "no namespace is labelled ns2=updated", on(tcp80, closed))
			s.labelNS(t, "y", "ns2", "updated")
			s.expect(t, "y labelled: y enters x/a", on(tcp80, s.allow().set("*", "x/a", false).set("y/*", "x/a", true)))
			s.labelNS(t, "y", "ns2", "")
			s.expect(t, "label removed: x/a closed again", on(tcp80, closed))
		},
	},
	{
		name: "updated-pod-label", upstream: "should allow ingress access from updated pod",
		run: func(t *testing.T, s env) {
			s.create(t, "x", ingressPolicy("allow-client-a-via-pod-selector", podLabel("a"), in(peers(fromPods(labels("pod", "b", "pod2", "updated"))))))
			closed := s.allow().set("*", "x/a", false)
			s.expect(t, "no pod has pod2=updated", on(tcp80, closed))
			s.labelPod(t, "x/b", "pod2", "updated")
			s.expect(t, "x/b labelled: x/b enters x/a", on(tcp80, s.allow().set("*", "x/a", false).set("x/b", "x/a", true)))
			s.labelPod(t, "x/b", "pod2", "")
			s.expect(t, "label removed: x/a closed again", on(tcp80, closed))
		},
	},
	{
		name: "deny-updated-pod", upstream: "should deny ingress access to updated pod",
		run: func(t *testing.T, s env) {
			s.create(t, "x", ingressPolicy("deny-ingress-via-label-selector", labels("target", "isolated")))
			s.expect(t, "no pod is labelled target=isolated", on(tcp80, s.allow()))
			s.labelPod(t, "x/a", "target", "isolated")
			s.expect(t, "x/a labelled: isolated", on(tcp80, s.allow().set("*", "x/a", false)))
			s.labelPod(t, "x/a", "target", "")
			s.expect(t, "label removed: x/a open again", on(tcp80, s.allow()))
		},
	},
	{
		name: "delete-policies", upstream: "should stop enforcing policies after they are deleted",
		run: func(t *testing.T, s env) {
			s.create(t, "x", policy("deny-all", all(), bothTypes, nil, nil))
			s.expect(t, "x isolated both ways", on(tcp80, s.allow().set("x/*", "*", false).set("*", "x/*", false)))
			s.deletePolicy(t, "x", "deny-all")
			s.expect(t, "policy deleted", on(tcp80, s.allow()))
		},
	},
	{
		name: "delete-one-of-two", upstream: "(none: deleting one of two policies selecting the same pod)",
		run: func(t *testing.T, s env) {
			s.create(t, "x", ingressPolicy("from-x-b", podLabel("a"), in(peers(fromPods(podLabel("b"))))))
			s.create(t, "x", ingressPolicy("from-y", podLabel("a"), in(peers(fromNS(nsLabel("y"))))))
			s.expect(t, "x/b and y enter x/a", on(tcp80, s.allow().set("x/c", "x/a", false).set("z/*", "x/a", false)))
			s.deletePolicy(t, "x", "from-y")
			s.expect(t, "from-y deleted: only x/b enters x/a", on(tcp80, s.allow().set("*", "x/a", false).set("x/b", "x/a", true)))
		},
	},
}
