package netpol

import "testing"

// protocolCases: protocol-only rules, rules of one protocol not leaking to
// another, and the UDP and SCTP versions of the basic cases. Where the
// kernel has no SCTP, the SCTP matrices are traced through the nodes' flows
// with ofproto/trace instead of probed (sctptrace_linux_test.go); the cases
// that only create SCTP rules probe TCP, as upstream's do on any plugin.
var protocolCases = []netpolCase{
	{
		name: "ingress-any-port-of-protocol", upstream: "should enforce ingress policy allowing any port traffic to a server on a specific protocol",
		run: func(t *testing.T, s env) {
			s.create(t, "x", ingressPolicy("allow-ingress-by-proto", podLabel("a"), in(nil, anyPort(tcp))))
			s.expect(t, "x/a open on TCP, closed on UDP",
				on(tcp80, s.allow()), on(tcp81, s.allow()), on(udp80, s.allow().set("*", "x/a", false)))
		},
	},
	{
		name: "sctp-rule-is-not-tcp", upstream: "should not mistakenly treat 'protocol: SCTP' as 'protocol: TCP', even if the plugin doesn't support SCTP",
		run: func(t *testing.T, s env) {
			s.create(t, "x", ingressPolicy("deny-ingress", all()))
			s.create(t, "x", ingressPolicy("allow-only-sctp-ingress-on-port-81", podLabel("a"), in(nil, port(sctp, 81))))
			s.expect(t, "TCP 81 stays closed", on(tcp81, s.allow().set("*", "x/*", false)))
		},
	},
	{
		name: "sctp-rule-isolates", upstream: "should properly isolate pods that are selected by a policy allowing SCTP, even if the plugin doesn't support SCTP",
		run: func(t *testing.T, s env) {
			s.create(t, "x", ingressPolicy("allow-only-sctp-ingress-on-port-80", podLabel("a"), in(nil, port(sctp, 80))))
			s.expect(t, "x/a isolated for TCP", on(tcp81, s.allow().set("*", "x/a", false)))
		},
	},
	{
		name: "udp-rule-is-not-tcp", upstream: "should not allow access by TCP when a policy specifies only UDP",
		run: func(t *testing.T, s env) {
			s.create(t, "x", ingressPolicy("allow-only-udp-ingress-on-port-81", podLabel("a"), in(nil, port(udp, 81))))
			s.expect(t, "UDP 81 open, TCP 81 closed",
				on(tcp81, s.allow().set("*", "x/a", false)), on(udp81, s.allow()))
		},
	},
	{
		name: "udp-default-deny-ingress", upstream: "UDP: should support a 'default-deny-ingress' policy",
		run: func(t *testing.T, s env) {
			s.create(t, "x", ingressPolicy("deny-all", all()))
			s.expect(t, "nothing enters x over UDP", on(udp80, s.allow().set("*", "x/*", false)))
		},
	},
	{
		name: "udp-ports", upstream: "UDP: should enforce policy based on Ports",
		run: func(t *testing.T, s env) {
			s.create(t, "x", ingressPolicy("allow-ingress-on-port-81-ns-x", podLabel("a"), in(peers(fromNS(nsLabel("y"))), port(udp, 81))))
			s.expect(t, "only y enters x/a, on UDP 81 only",
				on(udp81, s.allow().set("x/*", "x/a", false).set("z/*", "x/a", false)),
				on(udp80, s.allow().set("*", "x/a", false)))
		},
	},
	{
		name:     "udp-pod-in-other-namespace",
		upstream: "UDP: should enforce policy to allow traffic only from a pod in a different namespace based on PodSelector and NamespaceSelector",
		run: func(t *testing.T, s env) {
			s.create(t, "x", ingressPolicy("allow-ns-y-pod-a-via-namespace-pod-selector", podLabel("a"), in(peers(fromBoth(nsLabel("y"), podLabel("a"))))))
			s.expect(t, "only y/a enters x/a over UDP", on(udp80, s.allow().set("*", "x/a", false).set("y/a", "x/a", true)))
		},
	},
	{
		name: "sctp-default-deny-ingress", upstream: "SCTP: should support a 'default-deny-ingress' policy",
		run: func(t *testing.T, s env) {
			s.create(t, "x", ingressPolicy("deny-all", all()))
			s.expect(t, "nothing enters x over SCTP", on(sctp80, s.allow().set("*", "x/*", false)))
		},
	},
	{
		name: "sctp-ports", upstream: "SCTP: should enforce policy based on Ports",
		run: func(t *testing.T, s env) {
			s.create(t, "x", ingressPolicy("allow-ingress-on-port-81-ns-x", podLabel("a"), in(peers(fromNS(nsLabel("y"))), port(sctp, 81))))
			s.expect(t, "only y enters x/a, on SCTP 81 only",
				on(sctp81, s.allow().set("x/*", "x/a", false).set("z/*", "x/a", false)),
				on(sctp80, s.allow().set("*", "x/a", false)))
		},
	},
	{
		name:     "sctp-pod-in-other-namespace",
		upstream: "SCTP: should enforce policy to allow traffic only from a pod in a different namespace based on PodSelector and NamespaceSelector",
		run: func(t *testing.T, s env) {
			s.create(t, "x", ingressPolicy("allow-ns-y-pod-a-via-namespace-pod-selector", podLabel("a"), in(peers(fromBoth(nsLabel("y"), podLabel("a"))))))
			s.expect(t, "only y/a enters x/a over SCTP", on(sctp80, s.allow().set("*", "x/a", false).set("y/a", "x/a", true)))
		},
	},
}
