package e2e

import (
	"errors"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/seine-cni/seine/test/lab/probe"
)

// checkDNSPolicy: a client pod isolated for egress except to the DNS pods
// (their DNS port, 8081 here), as the usual "allow DNS to kube-dns" policy
// does, reaches the DNS Service by its cluster IP and is denied the web
// Service.
func (e *env) checkDNSPolicy() {
	e.t.Helper()
	dnsPods := e.deploy("dns", 2)
	clients := e.deploy("client", 1)
	dns := e.service(&corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "kube-dns-lab"},
		Spec: corev1.ServiceSpec{Selector: map[string]string{"app": "dns"}, Ports: []corev1.ServicePort{
			{Name: "dns", Port: 53, TargetPort: intstr.FromString("udp"), Protocol: corev1.ProtocolUDP},
			{Name: "dns-tcp", Port: 53, TargetPort: intstr.FromString("tcp"), Protocol: corev1.ProtocolTCP},
		}}}, len(dnsPods))
	web, err := e.cs.CoreV1().Services("default").Get(e.ctx, "svc-cluster", metav1.GetOptions{})
	if err != nil {
		e.t.Fatal(err)
	}
	udp, tcp := corev1.ProtocolUDP, corev1.ProtocolTCP
	p8081, p8080 := intstr.FromInt32(8081), intstr.FromInt32(8080)
	np := &networkingv1.NetworkPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: "client-dns-only"},
		Spec: networkingv1.NetworkPolicySpec{
			PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"app": "client"}},
			PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeEgress},
			Egress: []networkingv1.NetworkPolicyEgressRule{{
				To:    []networkingv1.NetworkPolicyPeer{{PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "dns"}}}},
				Ports: []networkingv1.NetworkPolicyPort{{Protocol: &udp, Port: &p8081}, {Protocol: &tcp, Port: &p8080}},
			}},
		},
	}
	if _, err := e.cs.NetworkingV1().NetworkPolicies("default").Create(e.ctx, np, metav1.CreateOptions{}); err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() {
		_ = e.cs.NetworkingV1().NetworkPolicies("default").Delete(e.ctx, np.Name, metav1.DeleteOptions{})
	})
	ns := e.podNS(&clients[0])
	// Until the web Service is denied the policy is not enforced yet.
	deadline := time.Now().Add(60 * time.Second)
	for {
		_, err := probe.Probe(e.ctx, ns, "tcp", web.Spec.ClusterIP+":80", time.Second)
		if errors.Is(err, probe.ErrTimeout) {
			break
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("the egress policy never denied the web Service: %v", err)
		}
		time.Sleep(500 * time.Millisecond)
	}
	for _, pp := range []struct{ proto, port string }{{"udp", "53"}, {"tcp", "53"}} {
		reply, err := probe.Probe(e.ctx, ns, pp.proto, dns.Spec.ClusterIP+":"+pp.port, 3*time.Second)
		if err != nil {
			e.t.Errorf("client -> DNS Service %s: %v (an egress rule to the DNS pods must allow it)", pp.proto, err)
			continue
		}
		if reply != dnsPods[0].Name && reply != dnsPods[1].Name {
			e.t.Errorf("client -> DNS Service %s answered by %q", pp.proto, reply)
		}
	}
	for _, pp := range []struct{ proto, port string }{{"udp", "81"}, {"tcp", "80"}} {
		if _, err := probe.Probe(e.ctx, ns, pp.proto, web.Spec.ClusterIP+":"+pp.port, 2*time.Second); !errors.Is(err, probe.ErrTimeout) {
			e.t.Errorf("client -> web Service %s: %v, want dropped by the egress policy", pp.proto, err)
		}
	}
}
