package controller

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// An egress rule without peers on a named port must carry an AddressGroup
// of every pod (with their named ports), since agents resolve an egress
// named port against the peer members and never against an ipBlock.
// Numbered ports and ingress rules keep the plain match-all peer.
func TestEgressNamedPortWithoutPeersSelectsAllPods(t *testing.T) {
	a := pod("x", "a", "n1", "10.0.0.1", map[string]string{"pod": "a"})
	a.Spec.Containers[0].Ports = []corev1.ContainerPort{{Name: "serve-80-tcp", ContainerPort: 80}}
	b := pod("y", "b", "n2", "10.0.0.2", map[string]string{"pod": "b"})
	b.Spec.Containers[0].Ports = []corev1.ContainerPort{{Name: "serve-80-tcp", ContainerPort: 80}, {Name: "dns", ContainerPort: 53, Protocol: corev1.ProtocolUDP}}
	egress := []networkingv1.PolicyType{networkingv1.PolicyTypeIngress, networkingv1.PolicyTypeEgress}
	np := policy("x", "allow-egress", sel(), egress)
	np.Spec.Egress = []networkingv1.NetworkPolicyEgressRule{
		{Ports: []networkingv1.NetworkPolicyPort{port(intstr.FromString("serve-80-tcp"), corev1.ProtocolTCP)}},
		{Ports: []networkingv1.NetworkPolicyPort{port(intstr.FromInt32(53), corev1.ProtocolUDP)}},
	}
	np.Spec.Ingress = []networkingv1.NetworkPolicyIngressRule{
		{Ports: []networkingv1.NetworkPolicyPort{port(intstr.FromString("serve-80-tcp"), corev1.ProtocolTCP)}},
	}
	e := start(t, ns("x", nil), ns("y", nil), a, b, np)
	e.waitFor(`
ag {namespaceSelector= podSelector=} members=[x/a@n1,10.0.0.1,serve-80-tcp=TCP/80 y/b@n2,10.0.0.2,serve-80-tcp=TCP/80,dns=UDP/53] span=[n1]
atg {namespace=x podSelector=} members=[x/a@n1,10.0.0.1,serve-80-tcp=TCP/80] span=[n1]
np x/allow-egress types=[Ingress Egress] atg=[{namespace=x podSelector=}] span=[n1]
  In peers=[0.0.0.0/0 ::/0] services=[TCP/serve-80-tcp] priority=-1
  Out peers=[{namespaceSelector= podSelector=} 0.0.0.0/0 ::/0] services=[TCP/serve-80-tcp] priority=-1
  Out peers=[0.0.0.0/0 ::/0] services=[UDP/53] priority=-1
`)
}
