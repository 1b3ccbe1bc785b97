package controller

import (
	"net/netip"
	"testing"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// The pods of the ordering scenarios: x/a x/b x/c on n1 n2 n3, z/c on n3.
var orderPods = []endpoint{
	{"x/a", "n1", netip.MustParseAddr("10.0.1.1")},
	{"x/b", "n2", netip.MustParseAddr("10.0.2.1")},
	{"x/c", "n3", netip.MustParseAddr("10.0.3.1")},
	{"z/c", "n3", netip.MustParseAddr("10.0.3.2")},
}

func orderPod(ep endpoint, labels map[string]string) *corev1.Pod {
	ns, name, _ := cutRef(ep.pod)
	return pod(ns, name, ep.node, ep.ip.String(), labels)
}

func cutRef(ref string) (ns, name string, ok bool) {
	for i := range ref {
		if ref[i] == '/' {
			return ref[:i], ref[i+1:], true
		}
	}
	return "", ref, false
}

// ingress80 is a policy isolating the pods selected by podSel for ingress,
// admitting from (nil: nobody) on TCP and UDP 80.
func ingress80(name string, podSel *metav1.LabelSelector, from ...networkingv1.NetworkPolicyPeer) *networkingv1.NetworkPolicy {
	np := policy("x", name, podSel, []networkingv1.PolicyType{networkingv1.PolicyTypeIngress})
	if len(from) > 0 {
		np.Spec.Ingress = []networkingv1.NetworkPolicyIngressRule{{
			From:  from,
			Ports: []networkingv1.NetworkPolicyPort{port(intstr.FromInt32(80), corev1.ProtocolTCP), port(intstr.FromInt32(80), corev1.ProtocolUDP)},
		}}
	}
	return np
}

func fromPods(s *metav1.LabelSelector) networkingv1.NetworkPolicyPeer {
	return networkingv1.NetworkPolicyPeer{PodSelector: s}
}

func podIn(key string, values ...string) *metav1.LabelSelector {
	return &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: key, Operator: metav1.LabelSelectorOpIn, Values: values}}}
}

// TestNoViewOpensWhatBothStatesDeny changes policies and labels in one
// worker batch, the way a loaded controller sees changes that were sent a
// few hundred milliseconds apart, and checks every view of every node an
// agent could act on (see checkViews). Each scenario runs several times:
// the controller walks maps, so its order within a store varies.
func TestNoViewOpensWhatBothStatesDeny(t *testing.T) {
	base := func() *networkingv1.NetworkPolicy {
		return ingress80("steady", sel("pod", "a"), fromPods(sel("pod", "b")))
	}
	labels := map[string]map[string]string{"x/a": {"pod": "a"}, "x/b": {"pod": "b"}, "x/c": {"pod": "c"}, "z/c": {"pod": "c"}}
	for _, sc := range []struct {
		name  string
		setup func(m *manual)
		batch func(m *manual)
	}{
		{
			// no-leak-during-updates in test/e2e/netpol, where z/c -> x/a
			// was answered once.
			name:  "a deny-all policy created and the allowing policy deleted",
			setup: func(m *manual) { m.putPolicy(base()) },
			batch: func(m *manual) {
				m.putPolicy(ingress80("steady-deny", sel("pod", "a")))
				m.deletePolicy("x", "steady")
			},
		},
		{
			name:  "a policy replaced by one with another podSelector that also selects the pod",
			setup: func(m *manual) { m.putPolicy(base()) },
			batch: func(m *manual) {
				m.putPolicy(ingress80("all-of-x", &metav1.LabelSelector{}, fromPods(sel("pod", "b"))))
				m.deletePolicy("x", "steady")
			},
		},
		{
			name:  "the podSelector rewritten as matchExpressions (a new AppliedToGroup)",
			setup: func(m *manual) { m.putPolicy(base()) },
			batch: func(m *manual) {
				m.putPolicy(ingress80("steady", podIn("pod", "a"), fromPods(sel("pod", "b"))))
			},
		},
		{
			name:  "the podSelector widened to the namespace (the span grows)",
			setup: func(m *manual) { m.putPolicy(base()) },
			batch: func(m *manual) {
				m.putPolicy(ingress80("steady", &metav1.LabelSelector{}, fromPods(sel("pod", "b"))))
			},
		},
		{
			name: "the podSelector narrowed (the span shrinks)",
			setup: func(m *manual) {
				m.putPolicy(ingress80("steady", &metav1.LabelSelector{}, fromPods(sel("pod", "b"))))
			},
			batch: func(m *manual) { m.putPolicy(base()) },
		},
		{
			name:  "the peer rewritten as matchExpressions (a new AddressGroup)",
			setup: func(m *manual) { m.putPolicy(base()) },
			batch: func(m *manual) {
				m.putPolicy(ingress80("steady", sel("pod", "a"), fromPods(podIn("pod", "b"))))
			},
		},
		{
			name: "a pod relabelled from one policy's group to another's",
			setup: func(m *manual) {
				m.putPolicy(ingress80("web", sel("role", "web")))
				m.putPolicy(ingress80("db", sel("role", "db"), fromPods(sel("pod", "b"))))
				m.pod(orderPod(orderPods[0], map[string]string{"pod": "a", "role": "web"}))
			},
			batch: func(m *manual) {
				m.pod(orderPod(orderPods[0], map[string]string{"pod": "a", "role": "db"}))
			},
		},
		{
			name: "two pods swap groups",
			setup: func(m *manual) {
				m.putPolicy(ingress80("web", sel("role", "web")))
				m.putPolicy(ingress80("db", sel("role", "db"), fromPods(sel("pod", "b"))))
				m.pod(orderPod(orderPods[0], map[string]string{"pod": "a", "role": "web"}))
				m.pod(orderPod(orderPods[2], map[string]string{"pod": "c", "role": "db"}))
			},
			batch: func(m *manual) {
				m.pod(orderPod(orderPods[0], map[string]string{"pod": "a", "role": "db"}))
				m.pod(orderPod(orderPods[2], map[string]string{"pod": "c", "role": "web"}))
			},
		},
		{
			name: "a pod moves between policies while another joins",
			setup: func(m *manual) {
				m.putPolicy(ingress80("web", sel("role", "web")))
				m.putPolicy(ingress80("db", sel("role", "db"), fromPods(sel("pod", "b"))))
				m.pod(orderPod(orderPods[0], map[string]string{"pod": "a", "role": "web"}))
			},
			batch: func(m *manual) {
				m.pod(orderPod(orderPods[0], map[string]string{"pod": "a", "role": "db"}))
				m.pod(orderPod(orderPods[2], map[string]string{"pod": "c", "role": "web"}))
			},
		},
	} {
		t.Run(sc.name, func(t *testing.T) {
			for range 30 {
				m := newManual(t)
				for _, n := range []string{"x", "z"} {
					m.namespace(ns(n, map[string]string{"kubernetes.io/metadata.name": n}))
				}
				for _, ep := range orderPods {
					m.pod(orderPod(ep, labels[ep.pod]))
				}
				sc.setup(m)
				m.batch()
				r := m.record(func() {
					sc.batch(m)
					m.batch()
				})
				checkViews(t, r, orderPods)
				if t.Failed() {
					return
				}
			}
		})
	}
}

// Idle must not report a policy change as published while the worker holds
// its key: taken off the queue, not synced yet (the apiserver serves its
// first lists once Idle, and an agent would install what they lack).
func TestIdleWhileTheWorkerHoldsAKey(t *testing.T) {
	m := newManual(t)
	np := ingress80("steady", sel("pod", "a"))
	if err := m.policies.Add(trimPolicy(np)); err != nil {
		t.Fatal(err)
	}
	if !m.c.Idle() {
		t.Fatal("nothing queued: want idle")
	}
	m.c.enqueuePolicy(np)
	key, _ := m.c.queue.Get() // the worker takes the key ...
	if m.c.Idle() {
		t.Error("idle with a policy key taken off the queue and not synced")
	}
	m.c.syncPolicy(key) // ... syncs it ...
	m.c.queue.Done(key)
	if m.c.Idle() {
		t.Error("idle with a synced policy not published")
	}
	m.c.flush() // ... and publishes.
	if !m.c.Idle() || m.c.NetworkPolicies.Len() != 1 {
		t.Errorf("after the flush: idle %v, %d policies stored", m.c.Idle(), m.c.NetworkPolicies.Len())
	}
}
