package proxy

import (
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// svc builds a ClusterIP Service ns/name with cluster IP ip and the given
// ports ("name:port/PROTO", name and protocol optional: ":80", "dns:53/UDP").
func svc(ns, name, ip string, ports ...string) *corev1.Service {
	s := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec:       corev1.ServiceSpec{Type: corev1.ServiceTypeClusterIP, ClusterIP: ip, ClusterIPs: []string{ip}},
	}
	for _, p := range ports {
		name, rest, _ := strings.Cut(p, ":")
		num, proto, _ := strings.Cut(rest, "/")
		if proto == "" {
			proto = "TCP"
		}
		s.Spec.Ports = append(s.Spec.Ports, corev1.ServicePort{Name: name, Port: atoi(num), Protocol: corev1.Protocol(proto)})
	}
	return s
}

func atoi(s string) int32 {
	n := int32(0)
	for _, c := range s {
		n = n*10 + int32(c-'0')
	}
	return n
}

// ep is an endpoint of a slice: "ip@node" plus conditions: "" ready,
// "unready", "terminating" (serving, terminating), "gone" (terminating,
// not serving); hints as zone/node.
type ep struct {
	addr, node, state string
	zones, nodes      []string
}

// slice builds an EndpointSlice of Service ns/svcName with ports
// ("name:port/PROTO") and endpoints.
func slice(ns, svcName, name string, ports []string, eps ...ep) *discoveryv1.EndpointSlice {
	s := &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{
			Namespace: ns, Name: name,
			Labels: map[string]string{discoveryv1.LabelServiceName: svcName},
		},
		AddressType: discoveryv1.AddressTypeIPv4,
	}
	for _, p := range ports {
		pname, rest, _ := strings.Cut(p, ":")
		num, proto, _ := strings.Cut(rest, "/")
		if proto == "" {
			proto = "TCP"
		}
		n, pr := atoi(num), corev1.Protocol(proto)
		s.Ports = append(s.Ports, discoveryv1.EndpointPort{Name: &pname, Port: &n, Protocol: &pr})
	}
	for _, e := range eps {
		t, f := true, false
		d := discoveryv1.Endpoint{Addresses: []string{e.addr}}
		if e.node != "" {
			n := e.node
			d.NodeName = &n
		}
		switch e.state {
		case "unready":
			d.Conditions = discoveryv1.EndpointConditions{Ready: &f, Serving: &f, Terminating: &f}
		case "terminating":
			d.Conditions = discoveryv1.EndpointConditions{Ready: &f, Serving: &t, Terminating: &t}
		case "gone":
			d.Conditions = discoveryv1.EndpointConditions{Ready: &f, Serving: &f, Terminating: &t}
		}
		if len(e.zones)+len(e.nodes) > 0 {
			d.Hints = &discoveryv1.EndpointHints{}
			for _, z := range e.zones {
				d.Hints.ForZones = append(d.Hints.ForZones, discoveryv1.ForZone{Name: z})
			}
			for _, n := range e.nodes {
				d.Hints.ForNodes = append(d.Hints.ForNodes, discoveryv1.ForNode{Name: n})
			}
		}
		s.Endpoints = append(s.Endpoints, d)
	}
	return s
}

func newTracker(t *testing.T, node string) *Tracker {
	t.Helper()
	tr, err := New(Config{NodeName: node})
	if err != nil {
		t.Fatal(err)
	}
	return tr
}

func ptr[T any](v T) *T { return &v }
