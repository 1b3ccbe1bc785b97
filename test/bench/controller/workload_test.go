package controller

import (
	"fmt"
	"math/rand/v2"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
)

// workload describes one cold-start scenario and what it must compute.
type workload struct {
	name        string
	targetSec   float64
	targetGiB   float64
	wantNPs     int
	wantATGs    int
	wantAGs     int
	wantMembers int // over every AppliedToGroup and AddressGroup
	// generate calls add for every object, one at a time, so the objects
	// are not all held twice while they are loaded.
	generate func(add func(runtime.Object))
}

const nodes = 1000

// shortScale divides every workload's object counts under go test -short,
// where the benchmark runs to prove its code works, not to measure.
const shortScale = 100

// workloadsAt returns the workloads with their object counts divided by
// scale (1: the sizes the targets are for).
func workloadsAt(scale int) []workload {
	ns1, ns2, n3 := 25000/scale, 100/scale, 10000/scale
	return []workload{
		{
			name: "1-namespaces25k-pods100k-policies75k", targetSec: 3.5, targetGiB: 1.1,
			wantNPs: 3 * ns1, wantATGs: 3 * ns1, wantAGs: 2 * ns1,
			wantMembers: ns1 * (4 + 2 + 2 + 2 + 2),
			generate: func(add func(runtime.Object)) {
				g := newGen()
				for n := range ns1 {
					ns := fmt.Sprintf("ns-%d", n)
					add(g.namespace(ns))
					for i := range 4 {
						k := i/2 + 1
						add(g.pod(ns, fmt.Sprintf("pod-%d", i), fmt.Sprintf("app-%d", k), fmt.Sprintf("scale-%d", k)))
					}
					add(g.denyAll(ns))
					for k := 1; k <= 2; k++ {
						add(g.allowSame(ns, fmt.Sprintf("policy-%d", k), fmt.Sprintf("app-%d", k), fmt.Sprintf("scale-%d", k)))
					}
				}
			},
		},
		{
			name: "2-namespaces100-pods100k-policies10k", targetSec: 1.25, targetGiB: 0.6,
			wantNPs: 101 * ns2, wantATGs: 101 * ns2, wantAGs: 100 * ns2,
			wantMembers: ns2 * (1000 + 100*10 + 100*10),
			generate: func(add func(runtime.Object)) {
				g := newGen()
				for n := range ns2 {
					ns := fmt.Sprintf("ns-%d", n)
					add(g.namespace(ns))
					for i := range 1000 {
						k := i / 10
						add(g.pod(ns, fmt.Sprintf("pod-%d", i), fmt.Sprintf("app-%d", k), fmt.Sprintf("scale-%d", k)))
					}
					add(g.denyAll(ns))
					for k := range 100 {
						add(g.allowSame(ns, fmt.Sprintf("policy-%d", k), fmt.Sprintf("app-%d", k), fmt.Sprintf("scale-%d", k)))
					}
				}
			},
		},
		{
			name: "3-namespace1-pods10k-policies10k", targetSec: 1.35, targetGiB: 0.5,
			wantNPs: n3, wantATGs: 1, wantAGs: 1,
			wantMembers: 2 * n3,
			generate: func(add func(runtime.Object)) {
				g := newGen()
				add(g.namespace("ns-0"))
				for i := range n3 {
					add(g.pod("ns-0", fmt.Sprintf("pod-%d", i), "app-1", "scale-1"))
				}
				for i := range n3 {
					add(g.allowSame("ns-0", fmt.Sprintf("policy-%d", i), "app-1", "scale-1"))
				}
			},
		},
	}
}

type gen struct {
	rnd *rand.Rand
	ip  uint32
	uid uint64
}

func newGen() *gen { return &gen{rnd: rand.New(rand.NewPCG(1, 2)), ip: 10 << 24} }

func (g *gen) nextUID() types.UID {
	g.uid++
	return types.UID(fmt.Sprintf("00000000-0000-0000-0000-%012d", g.uid))
}

func (g *gen) namespace(name string) *corev1.Namespace {
	return &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{
		Name: name, UID: g.nextUID(), Labels: map[string]string{"kubernetes.io/metadata.name": name},
	}}
}

func (g *gen) pod(ns, name, key, value string) *corev1.Pod {
	g.ip++
	ip := fmt.Sprintf("%d.%d.%d.%d", g.ip>>24, g.ip>>16&0xff, g.ip>>8&0xff, g.ip&0xff)
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, UID: g.nextUID(), Labels: map[string]string{key: value}},
		Spec: corev1.PodSpec{
			NodeName:   fmt.Sprintf("node-%d", g.rnd.IntN(nodes)),
			Containers: []corev1.Container{{Name: "c", Image: "registry.k8s.io/pause:3.10"}},
		},
		Status: corev1.PodStatus{Phase: corev1.PodRunning, PodIP: ip, PodIPs: []corev1.PodIP{{IP: ip}}},
	}
}

var bothTypes = []networkingv1.PolicyType{networkingv1.PolicyTypeIngress, networkingv1.PolicyTypeEgress}

func (g *gen) denyAll(ns string) *networkingv1.NetworkPolicy {
	return &networkingv1.NetworkPolicy{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "default-deny-all", UID: g.nextUID()},
		Spec:       networkingv1.NetworkPolicySpec{PolicyTypes: bothTypes},
	}
}

func (g *gen) allowSame(ns, name, key, value string) *networkingv1.NetworkPolicy {
	sel := metav1.LabelSelector{MatchLabels: map[string]string{key: value}}
	return &networkingv1.NetworkPolicy{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, UID: g.nextUID()},
		Spec: networkingv1.NetworkPolicySpec{
			PodSelector: sel,
			PolicyTypes: bothTypes,
			Ingress: []networkingv1.NetworkPolicyIngressRule{{
				From: []networkingv1.NetworkPolicyPeer{{PodSelector: sel.DeepCopy()}},
			}},
		},
	}
}
