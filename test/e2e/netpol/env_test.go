package netpol

import (
	"fmt"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
)

// env is what a case acts on: the lab (suite, Linux only) or the reference
// model (model), which checks every case's expected matrices against the
// NetworkPolicy semantics without a lab.
type env interface {
	create(t *testing.T, ns string, p *networkingv1.NetworkPolicy)
	update(t *testing.T, ns string, p *networkingv1.NetworkPolicy) // replaces the spec of the policy of that name
	deletePolicy(t *testing.T, ns, name string)
	labelPod(t *testing.T, pod, key, value string) // value "" removes the label
	labelNS(t *testing.T, ns, key, value string)
	// expect waits until the checks' matrices match, failing t if they do not.
	expect(t *testing.T, step string, checks ...check)
	ipOf(pod string) string
	allow() *reach // every pair allowed
}

// netpolCase is one case of the suite; upstream is the title of the case in
// kubernetes' test/e2e/network/netpol it mirrors, or why there is none.
type netpolCase struct {
	name, upstream string
	run            func(t *testing.T, e env)
}

// policyCases are the cases that only change policies and labels and
// compare matrices, in the order they run.
func policyCases() []netpolCase {
	var cs []netpolCase
	for _, group := range [][]netpolCase{selectorCases, portCases, egressCases, updateCases, protocolCases} {
		cs = append(cs, group...)
	}
	return cs
}

// check is one matrix to compare: a target and its expected reachability.
type check struct {
	t    target
	want *reach
}

func on(t target, want *reach) check { return check{t, want} }

// serverPorts are the container ports of every pod: serve-<port>-<proto>,
// as upstream's agnhost pods name them.
func serverPorts(sctp bool) []corev1.ContainerPort {
	protos := []corev1.Protocol{corev1.ProtocolTCP, corev1.ProtocolUDP}
	if sctp {
		protos = append(protos, corev1.ProtocolSCTP)
	}
	var ports []corev1.ContainerPort
	for _, proto := range protos {
		for _, n := range []int32{80, 81} {
			ports = append(ports, corev1.ContainerPort{
				Name:          fmt.Sprintf("serve-%d-%s", n, strings.ToLower(string(proto))),
				ContainerPort: n, Protocol: proto,
			})
		}
	}
	return ports
}
