package e2e

import (
	"errors"
	"fmt"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/util/retry"

	crdv1 "github.com/seine-cni/seine/core/apis/crd/v1beta1"
	"github.com/seine-cni/seine/core/controller"
	"github.com/seine-cni/seine/test/lab/probe"
)

// checkTieredPolicy shows Seine's ClusterNetworkPolicy and tiers with real
// packets (core/tiers/README.md): a server pod S and clients A and B on
// other nodes. Each step changes the policies and waits until every probe
// gives the verdict the evaluation order says; a drop must time out, a
// reject must be refused (TCP RST, ICMP port unreachable), never the
// other way round.
func (e *env) checkTieredPolicy(pods []corev1.Pod) {
	e.t.Helper()
	start := time.Now()
	var s, a, b *corev1.Pod
	for i := range pods {
		p := &pods[i]
		switch {
		case s == nil:
			s = p
		case a == nil && p.Spec.NodeName != s.Spec.NodeName:
			a = p
		case b == nil && p.Spec.NodeName != s.Spec.NodeName && (a == nil || p.Spec.NodeName != a.Spec.NodeName):
			b = p
		}
	}
	if s == nil || a == nil || b == nil {
		e.t.Fatalf("want pods on three nodes, have %d pods", len(pods))
	}
	for p, role := range map[*corev1.Pod]string{s: "server", a: "a", b: "b"} {
		patch := fmt.Sprintf(`{"metadata":{"labels":{"tier-role":%q}}}`, role)
		if _, err := e.cs.CoreV1().Pods("default").Patch(e.ctx, p.Name, types.MergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
			e.t.Fatal(err)
		}
	}
	dc := e.dynamic()
	cnps := dc.Resource(crdv1.ClusterNetworkPoliciesResource)
	e.t.Cleanup(func() {
		_ = cnps.DeleteCollection(e.ctx, metav1.DeleteOptions{}, metav1.ListOptions{})
		_ = e.cs.NetworkingV1().NetworkPolicies("default").Delete(e.ctx, "tier-k8s", metav1.DeleteOptions{})
	})
	aNS, bNS := e.podNS(a), e.podNS(b)
	sIP := s.Status.PodIP

	// verdicts: "." answered, "X" dropped (timeout), "R" refused.
	type probeCase struct {
		from  string // "a" or "b"
		proto string
		want  string
	}
	expect := func(step string, cases ...probeCase) {
		e.t.Helper()
		e.waitTiers(step, func() (bad []string) {
			for _, c := range cases {
				ns := map[string]string{"a": aNS, "b": bNS}[c.from]
				port := map[string]string{"tcp": "8080", "udp": "8081"}[c.proto]
				reply, err := probe.Probe(e.ctx, ns, c.proto, sIP+":"+port, time.Second)
				if got := probeVerdict(reply, err, s.Name); got != c.want {
					bad = append(bad, fmt.Sprintf("%s -> server %s: got %s (%v, reply %q), want %s", c.from, c.proto, got, err, reply, c.want))
				}
			}
			return bad
		})
	}
	role := func(r string) map[string]any {
		return map[string]any{"podSelector": map[string]any{"matchLabels": map[string]any{"tier-role": r}}}
	}
	port := func(proto string, p int64) []any {
		return []any{map[string]any{"protocol": proto, "port": p}}
	}
	rule := func(action string, peer map[string]any, ports []any) map[string]any {
		r := map[string]any{"action": action}
		if peer != nil {
			r["from"] = []any{peer}
		}
		if ports != nil {
			r["ports"] = ports
		}
		return r
	}
	apply := func(name, tier string, prio float64, appliedTo string, ingress, egress []any) {
		e.t.Helper()
		spec := map[string]any{"tier": tier, "priority": prio, "appliedTo": []any{role(appliedTo)}}
		if ingress != nil {
			spec["ingress"] = ingress
		}
		if egress != nil {
			spec["egress"] = egress
		}
		e.applyCNP(cnps, name, spec)
	}
	del := func(name string) {
		e.t.Helper()
		e.deleteCNP(cnps, name)
	}
	tcp, udp := corev1.ProtocolTCP, corev1.ProtocolUDP
	p8080, p8081 := intstr.FromInt32(8080), intstr.FromInt32(8081)
	k8s := func(proto *corev1.Protocol, p *intstr.IntOrString) {
		e.t.Helper()
		np := &networkingv1.NetworkPolicy{
			ObjectMeta: metav1.ObjectMeta{Name: "tier-k8s"},
			Spec: networkingv1.NetworkPolicySpec{
				PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"tier-role": "server"}},
				PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress},
				Ingress: []networkingv1.NetworkPolicyIngressRule{{
					From:  []networkingv1.NetworkPolicyPeer{{PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"tier-role": "a"}}}},
					Ports: []networkingv1.NetworkPolicyPort{{Protocol: proto, Port: p}},
				}},
			},
		}
		if _, err := e.cs.NetworkingV1().NetworkPolicies("default").Create(e.ctx, np, metav1.CreateOptions{}); err != nil {
			e.t.Fatal(err)
		}
	}

	// A Kubernetes NetworkPolicy isolates S: only A on TCP.
	k8s(&tcp, &p8080)
	expect("Kubernetes NetworkPolicy alone", probeCase{"a", "tcp", "."}, probeCase{"b", "tcp", "X"}, probeCase{"a", "udp", "X"})

	// A securityops Drop beats the Kubernetes allow.
	apply("tier-sec", "securityops", 10, "server", []any{rule("Drop", role("a"), port("TCP", 8080))}, nil)
	expect("securityops Drop over a Kubernetes allow", probeCase{"a", "tcp", "X"}, probeCase{"b", "tcp", "X"})
	e.waitTieredRealized(dc, "tier-sec")

	// Pass hands the decision back to the Kubernetes policy.
	apply("tier-sec", "securityops", 10, "server", []any{rule("Pass", role("a"), port("TCP", 8080))}, nil)
	expect("securityops Pass", probeCase{"a", "tcp", "."}, probeCase{"b", "tcp", "X"})

	// Priority inside a tier: an Allow at 5 beats a Drop at 10, whatever
	// the Kubernetes policy says; moved to 20, the Drop wins.
	apply("tier-sec", "securityops", 10, "server", []any{rule("Drop", nil, port("TCP", 8080))}, nil)
	apply("tier-first", "securityops", 5, "server", []any{rule("Allow", role("b"), port("TCP", 8080))}, nil)
	expect("priority 5 Allow before priority 10 Drop", probeCase{"a", "tcp", "X"}, probeCase{"b", "tcp", "."})
	apply("tier-first", "securityops", 20, "server", []any{rule("Allow", role("b"), port("TCP", 8080))}, nil)
	expect("priority 20 Allow after priority 10 Drop", probeCase{"a", "tcp", "X"}, probeCase{"b", "tcp", "X"})
	del("tier-first")

	// Reject, ingress (S's node answers B through the tunnel) and egress
	// (A's node answers A): a reset for TCP, a port unreachable for UDP.
	apply("tier-sec", "securityops", 10, "server", []any{rule("Reject", role("b"), nil)}, nil)
	apply("tier-egress", "application", 10, "a", nil, []any{map[string]any{"action": "Reject", "to": []any{role("server")}}})
	expect("Reject in both directions", probeCase{"b", "tcp", "R"}, probeCase{"b", "udp", "R"}, probeCase{"a", "tcp", "R"}, probeCase{"a", "udp", "R"})
	del("tier-egress")
	del("tier-sec")

	// The baseline applies only where no Kubernetes policy isolates: with
	// S isolated (A allowed on UDP) a baseline Drop of UDP changes nothing;
	// without the Kubernetes policy it drops.
	if err := e.cs.NetworkingV1().NetworkPolicies("default").Delete(e.ctx, "tier-k8s", metav1.DeleteOptions{}); err != nil {
		e.t.Fatal(err)
	}
	k8s(&udp, &p8081)
	apply("tier-base", "baseline", 10, "server", []any{rule("Drop", nil, port("UDP", 8081))}, nil)
	expect("baseline Drop under a Kubernetes isolation", probeCase{"a", "udp", "."}, probeCase{"b", "udp", "X"}, probeCase{"a", "tcp", "X"})
	if err := e.cs.NetworkingV1().NetworkPolicies("default").Delete(e.ctx, "tier-k8s", metav1.DeleteOptions{}); err != nil {
		e.t.Fatal(err)
	}
	expect("baseline Drop without a Kubernetes policy", probeCase{"a", "udp", "X"}, probeCase{"b", "udp", "X"}, probeCase{"a", "tcp", "."})
	del("tier-base")
	expect("no policy", probeCase{"a", "udp", "."}, probeCase{"b", "tcp", "."})

	// Per-rule appliedTo (the policy has none): each rule acts on its own
	// pods only. S's node gets the group of B's rule too, where no pod of it
	// runs (the agent waits for every group a policy names).
	e.checkPerRuleAppliedTo(cnps, a, s, b, func(step string, want map[string]string) {
		e.t.Helper()
		var cases []probeCase
		for _, k := range []string{"a tcp", "a udp", "b tcp", "b udp"} {
			from, proto, _ := strings.Cut(k, " ")
			cases = append(cases, probeCase{from, proto, want[k]})
		}
		expect(step, cases...)
	}, role, port)
	e.waitTieredRealized(dc, "tier-per-rule")
	del("tier-per-rule")

	// A nodeSelector peer: the selected Nodes' addresses, as labels move.
	e.checkNodeSelectorPeer(cnps, a, s, b, role)

	// A ClusterGroup as a rule's peer: its members follow pod labels and
	// its own spec, with real packets (checkClusterGroup).
	e.checkClusterGroup(dc, a, b, func(step string, aWant, bWant string) {
		e.t.Helper()
		expect(step, probeCase{"a", "tcp", aWant}, probeCase{"b", "tcp", bWant})
	}, func(group string) {
		e.t.Helper()
		apply("tier-group", "securityops", 10, "server", []any{rule("Drop", map[string]any{"group": group}, port("TCP", 8080))}, nil)
	})
	del("tier-group")

	// A namespaced Seine NetworkPolicy in the pods' namespace, on the same
	// path (checkNamespacedTiered).
	e.checkNamespacedTiered(dc, func(step string, aWant, bWant string) {
		e.t.Helper()
		expect(step, probeCase{"a", "tcp", aWant}, probeCase{"b", "tcp", bWant})
	})

	// The upstream ClusterNetworkPolicy (policy.networking.k8s.io) in the
	// same order: Admin (240) before Kubernetes policy, Baseline (254)
	// after it, only where nothing isolates.
	ups := dc.Resource(controller.UpstreamClusterNetworkPoliciesResource)
	e.t.Cleanup(func() { _ = ups.DeleteCollection(e.ctx, metav1.DeleteOptions{}, metav1.ListOptions{}) })
	upPods := func(r string) map[string]any {
		return map[string]any{"pods": map[string]any{"namespaceSelector": map[string]any{}, "podSelector": map[string]any{"matchLabels": map[string]any{"tier-role": r}}}}
	}
	applyUp := func(name, tier, action string) {
		e.t.Helper()
		u := &unstructured.Unstructured{Object: map[string]any{
			"apiVersion": "policy.networking.k8s.io/v1beta1", "kind": "ClusterNetworkPolicy",
			"metadata": map[string]any{"name": name},
			"spec": map[string]any{"tier": tier, "priority": int64(10), "subject": upPods("server"),
				"ingress": []any{map[string]any{"action": action, "from": []any{upPods("a")},
					"protocols": []any{map[string]any{"tcp": map[string]any{"destinationPort": map[string]any{"number": int64(8080)}}}}}}},
		}}
		if err := e.createOrUpdate(ups, u); err != nil {
			e.t.Fatalf("apply upstream cluster network policy %s: %v", name, err)
		}
	}
	k8s(&tcp, &p8080)
	applyUp("up-admin", "Admin", "Deny")
	expect("upstream Admin Deny over a Kubernetes allow", probeCase{"a", "tcp", "X"}, probeCase{"b", "tcp", "X"})
	e.waitUpstreamRealized(ups, "up-admin")
	applyUp("up-admin", "Admin", "Pass")
	expect("upstream Admin Pass", probeCase{"a", "tcp", "."}, probeCase{"b", "tcp", "X"})
	if err := ups.Delete(e.ctx, "up-admin", metav1.DeleteOptions{}); err != nil {
		e.t.Fatal(err)
	}
	applyUp("up-base", "Baseline", "Deny")
	expect("upstream Baseline Deny under a Kubernetes isolation", probeCase{"a", "tcp", "."}, probeCase{"b", "tcp", "X"})
	if err := e.cs.NetworkingV1().NetworkPolicies("default").Delete(e.ctx, "tier-k8s", metav1.DeleteOptions{}); err != nil {
		e.t.Fatal(err)
	}
	expect("upstream Baseline Deny without a Kubernetes policy", probeCase{"a", "tcp", "X"}, probeCase{"b", "tcp", "."})
	if err := ups.Delete(e.ctx, "up-base", metav1.DeleteOptions{}); err != nil {
		e.t.Fatal(err)
	}
	expect("no policy again", probeCase{"a", "tcp", "."}, probeCase{"b", "tcp", "."})
	e.t.Logf("tiered policy checks took %s", time.Since(start).Round(time.Millisecond))
}

// applyCNP creates or updates the crd.seine.io ClusterNetworkPolicy name
// with spec.
func (e *env) applyCNP(cnps dynamic.ResourceInterface, name string, spec map[string]any) {
	e.t.Helper()
	u := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "crd.seine.io/v1beta1", "kind": "ClusterNetworkPolicy",
		"metadata": map[string]any{"name": name}, "spec": spec,
	}}
	if err := e.createOrUpdate(cnps, u); err != nil {
		e.t.Fatalf("apply cluster network policy %s: %v", name, err)
	}
}

// deleteCNP deletes the crd.seine.io ClusterNetworkPolicy name.
func (e *env) deleteCNP(cnps dynamic.ResourceInterface, name string) {
	e.t.Helper()
	if err := cnps.Delete(e.ctx, name, metav1.DeleteOptions{}); err != nil {
		e.t.Fatal(err)
	}
}

// probeVerdict is a probe's outcome as the matrices print it: "." answered
// by want, "X" dropped (a timeout), "R" refused (a reset or an ICMP
// unreachable), "?" anything else.
func probeVerdict(reply string, err error, want string) string {
	switch {
	case err == nil && reply == want:
		return "."
	case errors.Is(err, probe.ErrTimeout):
		return "X"
	case errors.Is(err, probe.ErrRefused):
		return "R"
	}
	return "?"
}

// createOrUpdate creates u or updates it to u, again if the update meets
// a conflict: seine-controller writes the status of these objects every
// second, and each write moves their resourceVersion.
func (e *env) createOrUpdate(r dynamic.ResourceInterface, u *unstructured.Unstructured) error {
	return retry.RetryOnConflict(retry.DefaultRetry, func() error {
		old, err := r.Get(e.ctx, u.GetName(), metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			_, err = r.Create(e.ctx, u, metav1.CreateOptions{})
			return err
		}
		if err != nil {
			return err
		}
		u.SetResourceVersion(old.GetResourceVersion())
		_, err = r.Update(e.ctx, u, metav1.UpdateOptions{})
		return err
	})
}

// waitTieredRealized waits until the internal policy of the
// ClusterNetworkPolicy name is Realized on every node of its span, as
// `kubectl get networkpolicies.controlplane.seine.io` shows it.
func (e *env) waitTieredRealized(dc dynamic.Interface, name string) {
	e.t.Helper()
	gvr := schema.GroupVersionResource{Group: "controlplane.seine.io", Version: "v1beta1", Resource: "networkpolicies"}
	deadline := time.Now().Add(30 * time.Second)
	var last string
	for time.Now().Before(deadline) {
		l, err := dc.Resource(gvr).List(e.ctx, metav1.ListOptions{})
		if err == nil {
			for _, it := range l.Items {
				if n, _, _ := unstructured.NestedString(it.Object, "sourceRef", "name"); n != name {
					continue
				}
				phase, _, _ := unstructured.NestedString(it.Object, "status", "phase")
				desired, _, _ := unstructured.NestedInt64(it.Object, "status", "desiredNodes")
				realized, _, _ := unstructured.NestedInt64(it.Object, "status", "realizedNodes")
				tier, _, _ := unstructured.NestedString(it.Object, "tier")
				last = fmt.Sprintf("phase %s, %d/%d nodes, tier %s", phase, realized, desired, tier)
				if phase == "Realized" && desired > 0 && realized == desired && tier == "securityops" {
					// The ClusterNetworkPolicy's own status says the same.
					cnp, err := dc.Resource(crdv1.ClusterNetworkPoliciesResource).Get(e.ctx, name, metav1.GetOptions{})
					if err != nil {
						last = err.Error()
						break
					}
					cphase, _, _ := unstructured.NestedString(cnp.Object, "status", "phase")
					cur, _, _ := unstructured.NestedInt64(cnp.Object, "status", "currentNodesRealized")
					last += fmt.Sprintf("; the ClusterNetworkPolicy's status: %s, %d nodes", cphase, cur)
					if cphase == "Realized" && cur == realized {
						e.t.Logf("tiers: %s realized: %s", name, last)
						return
					}
				}
			}
		} else {
			last = err.Error()
		}
		time.Sleep(300 * time.Millisecond)
	}
	e.t.Errorf("tiers: %s not realized after 30 s: %s", name, last)
}

// waitUpstreamRealized waits until the upstream ClusterNetworkPolicy name
// has the condition Realized True, written by seine-controller.
func (e *env) waitUpstreamRealized(ups dynamic.NamespaceableResourceInterface, name string) {
	e.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	var last string
	for time.Now().Before(deadline) {
		u, err := ups.Get(e.ctx, name, metav1.GetOptions{})
		if err != nil {
			last = err.Error()
		} else {
			conds, _, _ := unstructured.NestedSlice(u.Object, "status", "conditions")
			last = fmt.Sprint(conds)
			for _, c := range conds {
				if m, _ := c.(map[string]any); m["type"] == "Realized" && m["status"] == "True" {
					e.t.Logf("tiers: upstream %s realized: %v", name, m["message"])
					return
				}
			}
		}
		time.Sleep(300 * time.Millisecond)
	}
	e.t.Fatalf("upstream cluster network policy %s not Realized after 30 s: %s", name, last)
}
