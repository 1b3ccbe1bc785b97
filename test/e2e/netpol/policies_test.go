package netpol

import (
	"fmt"
	"net/netip"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// Small builders so that each case reads like the policy it creates.

const nsNameLabel = corev1.LabelMetadataName // kubernetes.io/metadata.name, set by the apiserver

// policy is a NetworkPolicy selecting target, of the given types, with rules.
// Passing ingress or egress rules adds nothing to PolicyTypes by itself: the
// types say what the policy isolates, as in the API.
func policy(name string, target metav1.LabelSelector, types []networkingv1.PolicyType, in []networkingv1.NetworkPolicyIngressRule, eg []networkingv1.NetworkPolicyEgressRule) *networkingv1.NetworkPolicy {
	return &networkingv1.NetworkPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: networkingv1.NetworkPolicySpec{
			PodSelector: target, PolicyTypes: types, Ingress: in, Egress: eg,
		},
	}
}

var (
	ingressOnly = []networkingv1.PolicyType{networkingv1.PolicyTypeIngress}
	egressOnly  = []networkingv1.PolicyType{networkingv1.PolicyTypeEgress}
	bothTypes   = []networkingv1.PolicyType{networkingv1.PolicyTypeIngress, networkingv1.PolicyTypeEgress}
)

// ingressPolicy isolates target for ingress and allows what rules allow (no
// rule: deny all ingress).
func ingressPolicy(name string, target metav1.LabelSelector, rules ...networkingv1.NetworkPolicyIngressRule) *networkingv1.NetworkPolicy {
	return policy(name, target, ingressOnly, rules, nil)
}

// egressPolicy isolates target for egress and allows what rules allow (no
// rule: deny all egress).
func egressPolicy(name string, target metav1.LabelSelector, rules ...networkingv1.NetworkPolicyEgressRule) *networkingv1.NetworkPolicy {
	return policy(name, target, egressOnly, nil, rules)
}

// all selects every pod (or every namespace).
func all() metav1.LabelSelector { return metav1.LabelSelector{} }

// labels selects by matchLabels from key, value pairs.
func labels(kv ...string) metav1.LabelSelector {
	if len(kv)%2 != 0 {
		panic("labels wants key, value pairs")
	}
	m := map[string]string{}
	for i := 0; i < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return metav1.LabelSelector{MatchLabels: m}
}

// podLabel selects the suite's pod by name ("pod": name).
func podLabel(name string) metav1.LabelSelector { return labels("pod", name) }

// nsLabel selects a namespace by its name label.
func nsLabel(ns string) metav1.LabelSelector { return labels(nsNameLabel, ns) }

// expr selects by one matchExpressions requirement.
func expr(key string, op metav1.LabelSelectorOperator, values ...string) metav1.LabelSelector {
	return metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: key, Operator: op, Values: values}}}
}

// peer is a NetworkPolicyPeer; nil selectors are left out, so
// peer(&ns, nil) is a namespace selector alone and peer(&ns, &pod) their AND.
func peer(ns, pod *metav1.LabelSelector) networkingv1.NetworkPolicyPeer {
	return networkingv1.NetworkPolicyPeer{NamespaceSelector: ns, PodSelector: pod}
}

func sel(s metav1.LabelSelector) *metav1.LabelSelector { return &s }

// fromPods, fromNS and fromBoth are the three peer forms.
func fromPods(s metav1.LabelSelector) networkingv1.NetworkPolicyPeer { return peer(nil, sel(s)) }
func fromNS(s metav1.LabelSelector) networkingv1.NetworkPolicyPeer   { return peer(sel(s), nil) }
func fromBoth(ns, pod metav1.LabelSelector) networkingv1.NetworkPolicyPeer {
	return peer(sel(ns), sel(pod))
}

// cidr is an ipBlock peer.
func cidr(block string, except ...string) networkingv1.NetworkPolicyPeer {
	return networkingv1.NetworkPolicyPeer{IPBlock: &networkingv1.IPBlock{CIDR: block, Except: except}}
}

// hostCIDR is the /32 (or /128) of ip.
func hostCIDR(ip string) string {
	a := netip.MustParseAddr(ip)
	return netip.PrefixFrom(a, a.BitLen()).String()
}

// wideCIDR is a large block around ip (its /4), as upstream's except cases use.
func wideCIDR(ip string) string {
	p, err := netip.MustParseAddr(ip).Prefix(4)
	if err != nil {
		panic(fmt.Sprintf("prefix of %s: %v", ip, err))
	}
	return p.String()
}

func protoPtr(p corev1.Protocol) *corev1.Protocol { return &p }

// port is a numeric port of a protocol; named is a named port (its protocol
// left unset, which the apiserver defaults to TCP); portRange uses endPort;
// anyPort matches a protocol only.
func port(p corev1.Protocol, n int32) networkingv1.NetworkPolicyPort {
	v := intstr.FromInt32(n)
	return networkingv1.NetworkPolicyPort{Protocol: protoPtr(p), Port: &v}
}

func named(name string) networkingv1.NetworkPolicyPort {
	v := intstr.FromString(name)
	return networkingv1.NetworkPolicyPort{Port: &v}
}

// namedOf is a named port of a protocol other than the default TCP: a
// container port matches by name and protocol.
func namedOf(p corev1.Protocol, name string) networkingv1.NetworkPolicyPort {
	np := named(name)
	np.Protocol = protoPtr(p)
	return np
}

func portRange(p corev1.Protocol, from, to int32) networkingv1.NetworkPolicyPort {
	np := port(p, from)
	np.EndPort = &to
	return np
}

func anyPort(p corev1.Protocol) networkingv1.NetworkPolicyPort {
	return networkingv1.NetworkPolicyPort{Protocol: protoPtr(p)}
}

// in and out are rules: allow from (to) the peers on the ports; no peer
// means any peer, no port any port.
func in(peers []networkingv1.NetworkPolicyPeer, ports ...networkingv1.NetworkPolicyPort) networkingv1.NetworkPolicyIngressRule {
	return networkingv1.NetworkPolicyIngressRule{From: peers, Ports: ports}
}

func out(peers []networkingv1.NetworkPolicyPeer, ports ...networkingv1.NetworkPolicyPort) networkingv1.NetworkPolicyEgressRule {
	return networkingv1.NetworkPolicyEgressRule{To: peers, Ports: ports}
}

// peers is shorthand for a peer list.
func peers(p ...networkingv1.NetworkPolicyPeer) []networkingv1.NetworkPolicyPeer { return p }

// ingressRules and egressRules are shorthand for rule lists.
func ingressRules(r ...networkingv1.NetworkPolicyIngressRule) []networkingv1.NetworkPolicyIngressRule {
	return r
}

func egressRules(r ...networkingv1.NetworkPolicyEgressRule) []networkingv1.NetworkPolicyEgressRule {
	return r
}
