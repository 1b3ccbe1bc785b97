package apiserver

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	dynamicfake "k8s.io/client-go/dynamic/fake"

	cp "github.com/seine-cni/seine/core/apis/controlplane/v1beta1"
	crdv1 "github.com/seine-cni/seine/core/apis/crd/v1beta1"
	"github.com/seine-cni/seine/core/controller"
)

// The realization of a ClusterNetworkPolicy's internal policy reaches the
// ClusterNetworkPolicy's status, and a namespaced Seine NetworkPolicy's
// its own (in its namespace), a change of it too, and an unchanged status
// is not written again; Kubernetes policies are left alone.
func TestWriteTieredStatus(t *testing.T) {
	cnp := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "crd.seine.io/v1beta1", "kind": "ClusterNetworkPolicy",
		"metadata": map[string]any{"name": "block"}, "spec": map[string]any{"priority": int64(1)},
	}}
	snp := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "crd.seine.io/v1beta1", "kind": "NetworkPolicy",
		"metadata": map[string]any{"name": "block", "namespace": "x"}, "spec": map[string]any{"priority": int64(1)},
	}}
	dc := dynamicfake.NewSimpleDynamicClientWithCustomListKinds(runtime.NewScheme(), map[schema.GroupVersionResource]string{
		crdv1.ClusterNetworkPoliciesResource: "ClusterNetworkPolicyList",
		crdv1.NetworkPoliciesResource:        "NetworkPolicyList",
	}, cnp, snp)
	var mu sync.Mutex
	status := &cp.NetworkPolicyStatus{Generation: 1, DesiredNodes: 2, RealizedNodes: 1, Phase: cp.PolicyRealizing}
	list := func() (*cp.NetworkPolicyList, bool) {
		mu.Lock()
		defer mu.Unlock()
		st := *status
		return &cp.NetworkPolicyList{Items: []cp.NetworkPolicy{
			{SourceRef: &cp.NetworkPolicyReference{Type: cp.SeineClusterNetworkPolicy, Name: "block"}, Status: &st},
			{SourceRef: &cp.NetworkPolicyReference{Type: cp.SeineNetworkPolicy, Namespace: "x", Name: "block"}, Status: &st},
			{SourceRef: &cp.NetworkPolicyReference{Type: cp.K8sNetworkPolicy, Namespace: "x", Name: "block"}, Status: &st},
		}}, true
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		writeTieredStatus(ctx, list, dc, 10*time.Millisecond, slog.New(slog.NewTextHandler(testWriter{t}, nil)))
	}()
	defer func() { cancel(); <-done }()
	readFrom := func(r dynamic.ResourceInterface) (string, int64, int64) {
		u, err := r.Get(ctx, "block", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		phase, _, _ := unstructured.NestedString(u.Object, "status", "phase")
		desired, _, _ := unstructured.NestedInt64(u.Object, "status", "desiredNodesRealized")
		cur, _, _ := unstructured.NestedInt64(u.Object, "status", "currentNodesRealized")
		return phase, desired, cur
	}
	read := func() (string, int64, int64) { return readFrom(dc.Resource(crdv1.ClusterNetworkPoliciesResource)) }
	readNS := func() (string, int64, int64) {
		return readFrom(dc.Resource(crdv1.NetworkPoliciesResource).Namespace("x"))
	}
	poll(t, "status Realizing 1/2", func() bool { p, d, c := read(); return p == "Realizing" && d == 2 && c == 1 })
	poll(t, "namespaced status Realizing 1/2", func() bool { p, d, c := readNS(); return p == "Realizing" && d == 2 && c == 1 })
	mu.Lock()
	status = &cp.NetworkPolicyStatus{Generation: 1, DesiredNodes: 2, RealizedNodes: 2, Phase: cp.PolicyRealized}
	mu.Unlock()
	poll(t, "status Realized 2/2", func() bool { p, d, c := read(); return p == "Realized" && d == 2 && c == 2 })
	poll(t, "namespaced status Realized 2/2", func() bool { p, d, c := readNS(); return p == "Realized" && d == 2 && c == 2 })
	patches := func() int {
		n := 0
		for _, a := range dc.Actions() {
			if a.GetVerb() == "patch" {
				if a.GetSubresource() != "status" {
					t.Errorf("patched %q, want the status subresource", a.GetSubresource())
				}
				n++
			}
		}
		return n
	}
	before := patches()
	time.Sleep(100 * time.Millisecond) // ~10 rounds with nothing new
	if after := patches(); after != before || before != 4 {
		t.Errorf("%d patches, then %d after unchanged rounds; want 4 and no more", before, after)
	}
}

// An upstream ClusterNetworkPolicy's realization becomes its condition
// Realized: False with the phase and node counts while realizing, True
// once realized.
func TestWriteUpstreamStatus(t *testing.T) {
	ucnp := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "policy.networking.k8s.io/v1beta1", "kind": "ClusterNetworkPolicy",
		"metadata": map[string]any{"name": "deny"}, "spec": map[string]any{"tier": "Admin", "priority": int64(1)},
	}}
	gvr := controller.UpstreamClusterNetworkPoliciesResource
	dc := dynamicfake.NewSimpleDynamicClientWithCustomListKinds(runtime.NewScheme(), map[schema.GroupVersionResource]string{
		gvr: "ClusterNetworkPolicyList",
	}, ucnp)
	var mu sync.Mutex
	status := &cp.NetworkPolicyStatus{Generation: 1, DesiredNodes: 2, RealizedNodes: 1, Phase: cp.PolicyRealizing}
	list := func() (*cp.NetworkPolicyList, bool) {
		mu.Lock()
		defer mu.Unlock()
		st := *status
		return &cp.NetworkPolicyList{Items: []cp.NetworkPolicy{
			{SourceRef: &cp.NetworkPolicyReference{Type: cp.UpstreamClusterNetworkPolicy, Name: "deny"}, Status: &st},
		}}, true
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		writeTieredStatus(ctx, list, dc, 10*time.Millisecond, slog.New(slog.NewTextHandler(testWriter{t}, nil)))
	}()
	defer func() { cancel(); <-done }()
	condition := func() string {
		u, err := dc.Resource(gvr).Get(ctx, "deny", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		conds, _, _ := unstructured.NestedSlice(u.Object, "status", "conditions")
		if len(conds) != 1 {
			return fmt.Sprint(conds)
		}
		c := conds[0].(map[string]any)
		return fmt.Sprintf("%v %v %v: %v", c["type"], c["status"], c["reason"], c["message"])
	}
	poll(t, "Realized False", func() bool { return condition() == "Realized False Realizing: 1 of 2 nodes realized generation 1" })
	mu.Lock()
	status = &cp.NetworkPolicyStatus{Generation: 1, DesiredNodes: 2, RealizedNodes: 2, Phase: cp.PolicyRealized}
	mu.Unlock()
	poll(t, "Realized True", func() bool { return condition() == "Realized True Realized: 2 of 2 nodes realized generation 1" })
}
