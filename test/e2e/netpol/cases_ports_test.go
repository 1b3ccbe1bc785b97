package netpol

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
)

const tcp, udp, sctp = corev1.ProtocolTCP, corev1.ProtocolUDP, corev1.ProtocolSCTP

// portCases: numeric, named and ranged ports, and policies stacking on one pod.
var portCases = []netpolCase{
	{
		name: "ports", upstream: "should enforce policy based on Ports",
		run: func(t *testing.T, s env) {
			s.create(t, "x", ingressPolicy("allow-client-a-via-ns-selector", podLabel("a"), in(peers(fromNS(nsLabel("y"))), port(tcp, 81))))
			s.expect(t, "only y enters x/a, on 81 only",
				on(tcp81, s.allow().set("x/*", "x/a", false).set("z/*", "x/a", false)),
				on(tcp80, s.allow().set("*", "x/a", false)))
		},
	},
	{
		name: "stacked-policies", upstream: "should enforce multiple, stacked policies with overlapping podSelectors",
		run: func(t *testing.T, s env) {
			s.create(t, "x", ingressPolicy("allow-client-a-via-ns-selector", podLabel("a"), in(peers(fromNS(nsLabel("y"))), port(tcp, 81))))
			onlyY := s.allow().set("x/*", "x/a", false).set("z/*", "x/a", false)
			s.expect(t, "one policy: y enters x/a on 81 only",
				on(tcp81, onlyY), on(tcp80, s.allow().set("*", "x/a", false)))
			s.create(t, "x", ingressPolicy("allow-client-a-via-ns-selector-80", podLabel("a"), in(peers(fromNS(nsLabel("y"))), port(tcp, 80))))
			s.expect(t, "a second policy opens 80 to y", on(tcp81, onlyY), on(tcp80, onlyY))
		},
	},
	{
		name: "named-port-ingress", upstream: "should allow ingress access on one named port",
		run: func(t *testing.T, s env) {
			s.create(t, "x", ingressPolicy("allow-all", all(), in(nil, named("serve-81-tcp"))))
			s.expect(t, "x open on serve-81-tcp only",
				on(tcp81, s.allow()), on(tcp80, s.allow().set("*", "x/*", false)))
		},
	},
	{
		name: "named-port-ingress-from-namespace", upstream: "should allow ingress access from namespace on one named port",
		run: func(t *testing.T, s env) {
			s.create(t, "x", ingressPolicy("allow-client-a-via-ns-selector-80", podLabel("a"), in(peers(fromNS(nsLabel("y"))), named("serve-80-tcp"))))
			s.expect(t, "y enters x/a on serve-80-tcp, nobody on 81",
				on(tcp80, s.allow().set("x/*", "x/a", false).set("z/*", "x/a", false)),
				on(tcp81, s.allow().set("*", "x/a", false)))
		},
	},
	{
		name: "named-port-udp-not-tcp", upstream: "(none: a named port resolves to its own protocol)",
		run: func(t *testing.T, s env) {
			// serve-80-udp names UDP 80: TCP 80 on the same number stays closed.
			s.create(t, "x", ingressPolicy("allow-serve-80-udp", podLabel("a"), in(nil, namedOf(udp, "serve-80-udp"))))
			s.expect(t, "x/a open on UDP 80 only",
				on(udp80, s.allow()), on(tcp80, s.allow().set("*", "x/a", false)))
		},
	},
	{
		name: "endport-ingress", upstream: "(none in the current suite: endPort, GA in Kubernetes 1.25)",
		run: func(t *testing.T, s env) {
			s.create(t, "x", ingressPolicy("allow-y-80-81", podLabel("a"), in(peers(fromNS(nsLabel("y"))), portRange(tcp, 80, 81))))
			onlyY := s.allow().set("x/*", "x/a", false).set("z/*", "x/a", false)
			s.expect(t, "y enters x/a on 80..81", on(tcp80, onlyY), on(tcp81, onlyY))
			s.update(t, "x", ingressPolicy("allow-y-80-81", podLabel("a"), in(peers(fromNS(nsLabel("y"))), portRange(tcp, 79, 80))))
			s.expect(t, "the range shrinks to 79..80: 81 closes",
				on(tcp80, onlyY), on(tcp81, s.allow().set("*", "x/a", false)))
		},
	},
	{
		name: "ingress-allow-all-precedence", upstream: "should enforce multiple ingress policies with ingress allow-all policy taking precedence",
		run: func(t *testing.T, s env) {
			s.create(t, "x", ingressPolicy("allow-ingress-port-80", all(), in(nil, port(tcp, 80))))
			s.expect(t, "x open on 80 only", on(tcp81, s.allow().set("*", "x/*", false)))
			s.create(t, "x", ingressPolicy("allow-ingress", all(), in(nil)))
			s.expect(t, "an allow-all policy opens 81", on(tcp81, s.allow()))
		},
	},
}
