package netpol

import (
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// egressCases: egress isolation, egress peers and ipBlocks (both directions),
// and ingress and egress together.
var egressCases = []netpolCase{
	{
		name: "deny-egress-pod-selector", upstream: "should deny egress from pods based on PodSelector",
		run: func(t *testing.T, s env) {
			s.create(t, "x", egressPolicy("deny-egress-pod-a", podLabel("a")))
			s.expect(t, "nothing leaves x/a", on(tcp80, s.allow().set("x/a", "*", false)))
		},
	},
	{
		name: "deny-egress-namespace", upstream: "should deny egress from all pods in a namespace",
		run: func(t *testing.T, s env) {
			s.create(t, "x", egressPolicy("deny-egress-ns-x", all()))
			s.expect(t, "nothing leaves x", on(tcp80, s.allow().set("x/*", "*", false)))
		},
	},
	{
		name: "named-port-egress", upstream: "should allow egress access on one named port",
		run: func(t *testing.T, s env) {
			s.create(t, "x", egressPolicy("allow-egress", all(), out(nil, named("serve-80-tcp"))))
			s.expect(t, "x leaves on serve-80-tcp only",
				on(tcp80, s.allow()), on(tcp81, s.allow().set("x/*", "*", false)))
		},
	},
	{
		name: "ingress-and-egress", upstream: "should work with Ingress, Egress specified together",
		run: func(t *testing.T, s env) {
			s.create(t, "x", policy("allow-client-a-via-pod-selector", podLabel("a"), bothTypes,
				ingressRules(in(peers(fromPods(podLabel("b"))))),
				egressRules(out(nil, port(tcp, 80)))))
			s.expect(t, "x/b enters x/a; x/a leaves on 80 only",
				on(tcp80, s.allow().set("*", "x/a", false).set("x/b", "x/a", true)),
				on(tcp81, s.allow().set("*", "x/a", false).set("x/a", "*", false).set("x/b", "x/a", true)))
		},
	},
	{
		name:     "egress-denied-on-client-side",
		upstream: "should support denying of egress traffic on the client side (even if the server explicitly allows this traffic)",
		run: func(t *testing.T, s env) {
			s.create(t, "x", egressPolicy("allow-to-ns-y-pod-a", podLabel("a"), out(peers(fromBoth(nsLabel("y"), podLabel("a"))))))
			fromXA := in(peers(fromBoth(nsLabel("x"), podLabel("a"))))
			s.create(t, "y", ingressPolicy("allow-from-xa-on-ya-match-selector", podLabel("a"), fromXA))
			s.create(t, "y", ingressPolicy("allow-from-xa-on-yb-match-selector", podLabel("b"), fromXA))
			want := s.allow().set("x/a", "*", false).set("*", "y/a", false).set("*", "y/b", false).set("x/a", "y/a", true)
			s.expect(t, "x/a reaches y/a only; y/b admits x/a but x/a may not send", on(tcp80, want))
		},
	},
	{
		name:     "egress-to-pod-in-other-namespace",
		upstream: "should enforce egress policy allowing traffic to a server in a different namespace based on PodSelector and NamespaceSelector",
		run: func(t *testing.T, s env) {
			s.create(t, "x", egressPolicy("allow-to-ns-y-pod-a", podLabel("a"), out(peers(fromBoth(nsLabel("y"), podLabel("a"))))))
			s.expect(t, "x/a reaches y/a only", on(tcp80, s.allow().set("x/a", "*", false).set("x/a", "y/a", true)))
		},
	},
	{
		name: "egress-namespace-match-expressions", upstream: "should enforce policy based on NamespaceSelector with MatchExpressions using default ns label",
		run: func(t *testing.T, s env) {
			s.create(t, "x", egressPolicy("allow-ns-y-match-selector-for-immutable-ns-label", podLabel("a"),
				out(peers(fromNS(expr(nsNameLabel, metav1.LabelSelectorOpNotIn, "y"))))))
			s.expect(t, "x/a reaches every namespace but y", on(tcp80, s.allow().set("x/a", "y/*", false)))
		},
	},
	{
		name: "egress-allow-all-precedence", upstream: "should enforce multiple egress policies with egress allow-all policy taking precedence",
		run: func(t *testing.T, s env) {
			s.create(t, "x", egressPolicy("allow-egress-port-80", all(), out(nil, port(tcp, 80))))
			s.expect(t, "x leaves on 80 only", on(tcp81, s.allow().set("x/*", "*", false)))
			s.create(t, "x", egressPolicy("allow-egress", all(), out(nil)))
			s.expect(t, "an allow-all egress policy opens 81", on(tcp81, s.allow()))
		},
	},
	{
		name: "ingress-egress-independent", upstream: "should enforce policies to check ingress and egress policies can be controlled independently based on PodSelector",
		run: func(t *testing.T, s env) {
			s.create(t, "x", egressPolicy("allow-egress-for-target", podLabel("a"), out(nil)))
			s.expect(t, "x/a may send anywhere", on(tcp80, s.allow()))
			s.create(t, "x", ingressPolicy("deny-ingress-via-label-selector", podLabel("a")))
			s.expect(t, "x/a still sends but receives nothing", on(tcp80, s.allow().set("*", "x/a", false)))
		},
	},
	{
		name: "ipblock-egress", upstream: "should allow egress access to server in CIDR block",
		run: func(t *testing.T, s env) {
			s.create(t, "x", egressPolicy("allow-client-a-via-cidr-egress-rule", podLabel("a"), out(peers(cidr(hostCIDR(s.ipOf("y/b")))))))
			s.expect(t, "x/a reaches y/b's /32 only", on(tcp80, s.allow().set("x/a", "*", false).set("x/a", "y/b", true)))
		},
	},
	{
		name: "ipblock-egress-except", upstream: "should enforce except clause while egress access to server in CIDR block",
		run: func(t *testing.T, s env) {
			xb := s.ipOf("x/b")
			s.create(t, "x", egressPolicy("allow-client-a-via-cidr-egress-rule", podLabel("a"), out(peers(cidr(wideCIDR(xb), hostCIDR(xb))))))
			s.expect(t, "x/a reaches "+wideCIDR(xb)+" except x/b", on(tcp80, s.allow().set("x/a", "x/b", false)))
		},
	},
	{
		name: "ipblock-overlap-cidr-and-except", upstream: "should ensure an IP overlapping both IPBlock.CIDR and IPBlock.Except is allowed",
		run: func(t *testing.T, s env) {
			xb := s.ipOf("x/b")
			s.create(t, "x", egressPolicy("allow-client-a-via-cidr-egress-rule", podLabel("a"), out(peers(cidr(wideCIDR(xb), hostCIDR(xb))))))
			s.expect(t, "x/a reaches all but x/b", on(tcp80, s.allow().set("x/a", "x/b", false)))
			// A second policy allowing x/b's /32: the union of the two admits
			// x/b (upstream replaces the first policy here instead).
			s.create(t, "x", egressPolicy("allow-client-a-to-x-b", podLabel("a"), out(peers(cidr(hostCIDR(xb))))))
			s.expect(t, "an IP in one policy's except and another's CIDR is allowed", on(tcp80, s.allow()))
			s.update(t, "x", egressPolicy("allow-client-a-via-cidr-egress-rule", podLabel("a"), out(peers(cidr(hostCIDR(xb))))))
			s.deletePolicy(t, "x", "allow-client-a-to-x-b")
			s.expect(t, "replaced by x/b's /32 alone (upstream's last step)", on(tcp80, s.allow().set("x/a", "*", false).set("x/a", "x/b", true)))
		},
	},
	{
		name: "ipblock-ingress-except", upstream: "(none: ipBlock in an ingress rule)",
		run: func(t *testing.T, s env) {
			ya := s.ipOf("y/a")
			s.create(t, "x", ingressPolicy("allow-from-cidr-but-y-a", podLabel("a"), in(peers(cidr(wideCIDR(ya), hostCIDR(ya))))))
			s.expect(t, "x/a admits "+wideCIDR(ya)+" except y/a", on(tcp80, s.allow().set("y/a", "x/a", false)))
			s.update(t, "x", ingressPolicy("allow-from-cidr-but-y-a", podLabel("a"), in(peers(cidr(hostCIDR(s.ipOf("z/c")))))))
			s.expect(t, "x/a admits z/c's /32 only", on(tcp80, s.allow().set("*", "x/a", false).set("z/c", "x/a", true)))
		},
	},
	{
		name: "endport-egress", upstream: "(none in the current suite: endPort in an egress rule)",
		run: func(t *testing.T, s env) {
			s.create(t, "x", egressPolicy("allow-81-82", podLabel("a"), out(nil, portRange(tcp, 81, 82))))
			s.expect(t, "x/a leaves on 81..82 only",
				on(tcp81, s.allow()), on(tcp80, s.allow().set("x/a", "*", false)))
		},
	},
}
