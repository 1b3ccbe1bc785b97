package controller

import (
	"context"
	"testing"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

var both = []networkingv1.PolicyType{networkingv1.PolicyTypeIngress, networkingv1.PolicyTypeEgress}

func scenario() []runtimeObject {
	web := pod("ns1", "web1", "n1", "10.0.0.1", map[string]string{"app": "web"})
	web.Spec.Containers[0].Ports = []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}, {ContainerPort: 9090}}
	pending := pod("ns1", "pending", "n1", "", map[string]string{"app": "web"})
	unscheduled := pod("ns1", "unscheduled", "", "10.0.0.9", map[string]string{"app": "web"})
	done := pod("ns1", "done", "n1", "10.0.0.8", map[string]string{"app": "web"})
	done.Status.Phase = corev1.PodSucceeded
	hostNet := pod("ns1", "hostnet", "n8", "192.168.0.8", map[string]string{"app": "web"})
	hostNet.Spec.HostNetwork = true

	deny := policy("ns1", "deny", &metav1.LabelSelector{}, both)
	allowWeb := policy("ns1", "web", sel("app", "web"), nil)
	endPort := int32(2000)
	udp1000 := port(intstr.FromInt32(1000), corev1.ProtocolUDP)
	udp1000.EndPort = &endPort
	allowWeb.Spec.Ingress = []networkingv1.NetworkPolicyIngressRule{
		{
			From: []networkingv1.NetworkPolicyPeer{
				{PodSelector: sel("app", "db")},
				{NamespaceSelector: sel("team", "b")},
				{NamespaceSelector: sel("team", "b"), PodSelector: sel("app", "web")},
				{IPBlock: &networkingv1.IPBlock{CIDR: "10.0.0.0/8", Except: []string{"10.1.0.0/16"}}},
			},
			Ports: []networkingv1.NetworkPolicyPort{
				port(intstr.FromInt32(80), corev1.ProtocolTCP),
				{Port: ptr(intstr.FromString("http"))},
				udp1000,
			},
		},
		{}, // from everyone, every port
	}
	allowWeb.Spec.Egress = []networkingv1.NetworkPolicyEgressRule{{Ports: []networkingv1.NetworkPolicyPort{port(intstr.FromInt32(53), corev1.ProtocolUDP)}}}
	// Same podSelector as "web", different order of a second label: one shared group.
	ingressOnly := policy("ns2", "db", &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{
		{Key: "app", Operator: metav1.LabelSelectorOpIn, Values: []string{"db", "cache"}},
		{Key: "tier", Operator: metav1.LabelSelectorOpDoesNotExist},
	}}, []networkingv1.PolicyType{networkingv1.PolicyTypeIngress})
	ingressOnly.Spec.Ingress = []networkingv1.NetworkPolicyIngressRule{{From: []networkingv1.NetworkPolicyPeer{{PodSelector: sel("app", "web")}}}}
	ingressOnly.Spec.Egress = []networkingv1.NetworkPolicyEgressRule{{}} // ignored: not in policyTypes

	return []runtimeObject{
		ns("ns1", map[string]string{"team": "a"}), ns("ns2", map[string]string{"team": "b"}),
		web, pending, unscheduled, done, hostNet,
		pod("ns1", "web2", "n2", "10.0.0.2", map[string]string{"app": "web"}),
		pod("ns1", "db1", "n3", "10.0.0.3", map[string]string{"app": "db"}),
		pod("ns2", "web3", "n4", "fd00::4", map[string]string{"app": "web"}),
		pod("ns2", "db2", "n5", "10.0.0.5", map[string]string{"app": "db"}),
		pod("ns2", "cache1", "n6", "10.0.0.6", map[string]string{"app": "cache"}),
		pod("ns2", "cache2", "n7", "10.0.0.7", map[string]string{"app": "cache", "tier": "hot"}),
		deny, allowWeb, ingressOnly,
	}
}

func ptr[T any](v T) *T { return &v }

const scenarioWant = `
ag {namespace=ns1 podSelector=app=db} members=[ns1/db1@n3,10.0.0.3] span=[n1 n2]
ag {namespace=ns2 podSelector=app=web} members=[ns2/web3@n4,fd00::4] span=[n5 n6]
ag {namespaceSelector=team=b podSelector=app=web} members=[ns2/web3@n4,fd00::4] span=[n1 n2]
ag {namespaceSelector=team=b podSelector=} members=[ns2/cache1@n6,10.0.0.6 ns2/cache2@n7,10.0.0.7 ns2/db2@n5,10.0.0.5 ns2/web3@n4,fd00::4] span=[n1 n2]
atg {namespace=ns1 podSelector=app=web} members=[ns1/pending@n1 ns1/web1@n1,10.0.0.1,http=TCP/8080 ns1/web2@n2,10.0.0.2] span=[n1 n2]
atg {namespace=ns1 podSelector=} members=[ns1/db1@n3,10.0.0.3 ns1/pending@n1 ns1/web1@n1,10.0.0.1,http=TCP/8080 ns1/web2@n2,10.0.0.2] span=[n1 n2 n3]
atg {namespace=ns2 podSelector=app in (cache,db),!tier} members=[ns2/cache1@n6,10.0.0.6 ns2/db2@n5,10.0.0.5] span=[n5 n6]
np ns1/deny types=[Ingress Egress] atg=[{namespace=ns1 podSelector=}] span=[n1 n2 n3]
np ns1/web types=[Ingress Egress] atg=[{namespace=ns1 podSelector=app=web}] span=[n1 n2]
  In peers=[{namespace=ns1 podSelector=app=db} {namespaceSelector=team=b podSelector=} {namespaceSelector=team=b podSelector=app=web} 10.0.0.0/8 except:10.1.0.0/16] services=[TCP/80 TCP/http UDP/1000-2000] priority=-1
  In peers=[0.0.0.0/0 ::/0] services=[] priority=-1
  Out peers=[0.0.0.0/0 ::/0] services=[UDP/53] priority=-1
np ns2/db types=[Ingress] atg=[{namespace=ns2 podSelector=app in (cache,db),!tier}] span=[n5 n6]
  In peers=[{namespace=ns2 podSelector=app=web}] services=[] priority=-1
`

func TestComputeFromColdStart(t *testing.T) {
	e := start(t, scenario()...)
	e.waitFor(scenarioWant)
}

func TestComputeWithPoliciesBeforePods(t *testing.T) {
	// The informers may deliver objects in any order after a start; here
	// the pods and namespaces come only after the policies are computed.
	var first, later []runtimeObject
	for _, o := range scenario() {
		if _, ok := o.(*networkingv1.NetworkPolicy); ok {
			first = append(first, o)
		} else {
			later = append(later, o)
		}
	}
	e := start(t, first...)
	ctx := context.Background()
	for _, o := range later {
		var err error
		switch o := o.(type) {
		case *corev1.Pod:
			_, err = e.client.CoreV1().Pods(o.Namespace).Create(ctx, o, metav1.CreateOptions{})
		case *corev1.Namespace:
			_, err = e.client.CoreV1().Namespaces().Create(ctx, o, metav1.CreateOptions{})
		}
		if err != nil {
			t.Fatalf("create: %v", err)
		}
	}
	e.waitFor(scenarioWant)
}
