package e2e

import (
	"fmt"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"

	crdv1 "github.com/seine-cni/seine/core/apis/crd/v1beta1"
)

// checkClusterGroup shows a ClusterGroup (crd.seine.io) as the peer of a
// securityops Drop to the server, with real packets: clients a and b are
// dropped exactly while the group holds them, as pod labels and the
// group's own selector change; the group's status lists its pods; and the
// kube-apiserver refuses a group of two kinds and a group that is its own
// child (the CRD's validation rules). expect(step, a, b) waits for the
// verdicts of a and b on TCP ("." answered, "X" dropped); drop(group)
// applies the Drop naming group.
func (e *env) checkClusterGroup(dc dynamic.Interface, a, b *corev1.Pod, expect func(step, a, b string), drop func(group string)) {
	e.t.Helper()
	start := time.Now()
	cgs := dc.Resource(crdv1.ClusterGroupsResource)
	label := func(p *corev1.Pod, v any) {
		e.t.Helper()
		patch := fmt.Sprintf(`{"metadata":{"labels":{"tier-client":%s}}}`, map[bool]string{true: `"yes"`, false: "null"}[v != nil])
		if _, err := e.cs.CoreV1().Pods(p.Namespace).Patch(e.ctx, p.Name, types.MergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
			e.t.Fatal(err)
		}
	}
	e.t.Cleanup(func() {
		_ = cgs.Delete(e.ctx, "tier-clients", metav1.DeleteOptions{})
		for _, p := range []*corev1.Pod{a, b} {
			_, _ = e.cs.CoreV1().Pods(p.Namespace).Patch(e.ctx, p.Name, types.MergePatchType, []byte(`{"metadata":{"labels":{"tier-client":null}}}`), metav1.PatchOptions{})
		}
	})
	group := func(spec map[string]any) *unstructured.Unstructured {
		return &unstructured.Unstructured{Object: map[string]any{
			"apiVersion": "crd.seine.io/v1beta1", "kind": "ClusterGroup",
			"metadata": map[string]any{"name": "tier-clients"}, "spec": spec,
		}}
	}
	podSel := func(k, v string) map[string]any {
		return map[string]any{"podSelector": map[string]any{"matchLabels": map[string]any{k: v}}}
	}

	// The kube-apiserver refuses what cannot be a group.
	for _, bad := range []struct {
		spec map[string]any
		want string
	}{
		{map[string]any{"podSelector": map[string]any{}, "ipBlocks": []any{map[string]any{"cidr": "10.0.0.0/8"}}}, "one kind of member"},
		{map[string]any{"childGroups": []any{"tier-clients"}}, "its own child group"},
	} {
		_, err := cgs.Create(e.ctx, group(bad.spec), metav1.CreateOptions{})
		if err == nil || !strings.Contains(err.Error(), bad.want) {
			_ = cgs.Delete(e.ctx, "tier-clients", metav1.DeleteOptions{})
			e.t.Fatalf("create ClusterGroup %v: %v, want refused: %s", bad.spec, err, bad.want)
		}
		e.t.Logf("tiers: the kube-apiserver refused a bad ClusterGroup: %v", err)
	}

	if err := e.createOrUpdate(cgs, group(podSel("tier-client", "yes"))); err != nil {
		e.t.Fatalf("create ClusterGroup: %v", err)
	}
	drop("tier-clients")
	expect("Drop from an empty ClusterGroup", ".", ".")
	label(a, "yes")
	expect("Drop from a ClusterGroup holding a", "X", ".")
	e.waitGroupMembers(cgs, "tier-clients", a.Name)
	label(b, "yes")
	label(a, nil)
	expect("b joined the ClusterGroup, a left it", ".", "X")
	e.waitGroupMembers(cgs, "tier-clients", b.Name)
	// The group's own selector changes: the policy follows.
	if err := e.createOrUpdate(cgs, group(podSel("tier-role", "a"))); err != nil {
		e.t.Fatalf("update ClusterGroup: %v", err)
	}
	expect("the ClusterGroup now selects a", "X", ".")
	e.waitGroupMembers(cgs, "tier-clients", a.Name)
	label(b, nil)
	e.t.Logf("ClusterGroup checks took %s", time.Since(start).Round(time.Millisecond))
}

// waitGroupMembers waits until the ClusterGroup's status, written by
// seine-controller, lists exactly the pods names.
func (e *env) waitGroupMembers(cgs dynamic.ResourceInterface, name string, names ...string) {
	e.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	want := strings.Join(names, ",")
	var last string
	for time.Now().Before(deadline) {
		u, err := cgs.Get(e.ctx, name, metav1.GetOptions{})
		if err != nil {
			last = err.Error()
		} else {
			var g crdv1.ClusterGroup
			if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, &g); err != nil {
				e.t.Fatal(err)
			}
			var got []string
			for _, p := range g.Status.Pods {
				got = append(got, p.Name)
			}
			last = fmt.Sprintf("phase %s, podCount %d, pods %v", g.Status.Phase, g.Status.PodCount, got)
			if g.Status.Phase == crdv1.ClusterGroupComputed && strings.Join(got, ",") == want && int(g.Status.PodCount) == len(names) && g.Status.ObservedGeneration == u.GetGeneration() {
				e.t.Logf("tiers: ClusterGroup %s status: %s", name, last)
				return
			}
		}
		time.Sleep(300 * time.Millisecond)
	}
	e.t.Fatalf("ClusterGroup %s status: %s, want pods %s", name, last, want)
}

// checkNamespacedTiered shows Seine's namespaced NetworkPolicy
// (crd.seine.io) with real packets: a securityops Drop in the pods'
// namespace from a (a podSelector alone: a's namespace), then its status
// Realized, then a Drop of b from emergency over an Allow of b in
// securityops; deleted, everything answers again.
func (e *env) checkNamespacedTiered(dc dynamic.Interface, expect func(step, a, b string)) {
	e.t.Helper()
	start := time.Now()
	snps := dc.Resource(crdv1.NetworkPoliciesResource).Namespace("default")
	e.t.Cleanup(func() { _ = snps.DeleteCollection(e.ctx, metav1.DeleteOptions{}, metav1.ListOptions{}) })
	// Two policies of one tier at one priority applied to the same pods
	// are refused by the admission webhook (core/admission): ns-allow-b
	// takes another priority than ns-drop-a, and neither takes one of the
	// cluster-wide policies' of checkTieredPolicy (securityops 10: the
	// webhook's view of a policy deleted a moment ago may lag).
	apply := func(name, tier string, prio int64, action, from string) {
		e.t.Helper()
		u := &unstructured.Unstructured{Object: map[string]any{
			"apiVersion": "crd.seine.io/v1beta1", "kind": "NetworkPolicy",
			"metadata": map[string]any{"name": name, "namespace": "default"},
			"spec": map[string]any{"tier": tier, "priority": prio,
				"appliedTo": []any{map[string]any{"podSelector": map[string]any{"matchLabels": map[string]any{"tier-role": "server"}}}},
				"ingress": []any{map[string]any{"action": action,
					"from":  []any{map[string]any{"podSelector": map[string]any{"matchLabels": map[string]any{"tier-role": from}}}},
					"ports": []any{map[string]any{"protocol": "TCP", "port": int64(8080)}}}}},
		}}
		if err := e.createOrUpdate(snps, u); err != nil {
			e.t.Fatalf("apply seine network policy %s: %v", name, err)
		}
	}
	apply("ns-drop-a", "securityops", 11, "Drop", "a")
	expect("namespaced securityops Drop from a", "X", ".")
	// Its own status, written by seine-controller.
	deadline := time.Now().Add(30 * time.Second)
	for {
		u, err := snps.Get(e.ctx, "ns-drop-a", metav1.GetOptions{})
		var phase string
		var cur, desired int64
		if err == nil {
			phase, _, _ = unstructured.NestedString(u.Object, "status", "phase")
			cur, _, _ = unstructured.NestedInt64(u.Object, "status", "currentNodesRealized")
			desired, _, _ = unstructured.NestedInt64(u.Object, "status", "desiredNodesRealized")
		}
		if phase == "Realized" && desired > 0 && cur == desired {
			e.t.Logf("tiers: namespaced ns-drop-a realized: %d of %d nodes", cur, desired)
			break
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("namespaced policy ns-drop-a not Realized after 30 s: phase %q, %d of %d nodes, err %v", phase, cur, desired, err)
		}
		time.Sleep(300 * time.Millisecond)
	}
	apply("ns-allow-b", "securityops", 21, "Allow", "b")
	apply("ns-drop-b", "emergency", 11, "Drop", "b")
	expect("namespaced emergency Drop of b over a securityops Allow", "X", "X")
	for _, n := range []string{"ns-drop-a", "ns-allow-b", "ns-drop-b"} {
		if err := snps.Delete(e.ctx, n, metav1.DeleteOptions{}); err != nil {
			e.t.Fatal(err)
		}
	}
	expect("namespaced policies deleted", ".", ".")
	e.t.Logf("namespaced tiered checks took %s", time.Since(start).Round(time.Millisecond))
}
