package apiserver

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metainternalversion "k8s.io/apimachinery/pkg/apis/meta/internalversion"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/watch"
	dynamicfake "k8s.io/client-go/dynamic/fake"

	cp "github.com/seine-cni/seine/core/apis/controlplane/v1beta1"
	crdv1 "github.com/seine-cni/seine/core/apis/crd/v1beta1"
)

// dropFromClients is a securityops ClusterNetworkPolicy on the web pods
// (node-a) dropping what the client pods send them.
func dropFromClients(name string) *unstructured.Unstructured {
	web := map[string]any{"matchLabels": map[string]any{"app": "web"}}
	client := map[string]any{"matchLabels": map[string]any{"app": "client"}}
	return &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "crd.seine.io/v1beta1", "kind": "ClusterNetworkPolicy",
		"metadata": map[string]any{"name": name, "uid": "cnp-" + name},
		"spec": map[string]any{
			"tier": "securityops", "priority": int64(1),
			"appliedTo": []any{map[string]any{"podSelector": web}},
			"ingress":   []any{map[string]any{"action": "Drop", "from": []any{map[string]any{"podSelector": client}}}},
		},
	}}
}

// selector parses a field selector as the generic apiserver does: through
// the scheme's field label conversion, which refuses a label it does not
// know before the storage sees it.
func selector(t *testing.T, s string) *metainternalversion.ListOptions {
	t.Helper()
	sel, err := fields.ParseSelector(s)
	if err != nil {
		t.Fatal(err)
	}
	sel, err = sel.Transform(func(label, value string) (string, string, error) {
		return Scheme.ConvertFieldLabel(cp.SchemeGroupVersion.WithKind("NetworkPolicy"), label, value)
	})
	if err != nil {
		t.Fatalf("field selector %q: %v", s, err)
	}
	return &metainternalversion.ListOptions{FieldSelector: sel}
}

func policyNames(t *testing.T, o runtime.Object, err error) []string {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, np := range o.(*cp.NetworkPolicyList).Items {
		names = append(names, string(np.SourceRef.Type)+"/"+np.SourceRef.Name)
	}
	slices.Sort(names)
	return names
}

// An agent older than tiered policy would read a Drop rule as an allow, so
// a node's list and watch carry tiered policies only with tiered=true in
// the field selector (what this version's agent sends): an old-style
// nodeName=<node> list and watch see the Kubernetes policy alone, before
// and after a second ClusterNetworkPolicy appears; a new-style one sees
// both; an admin's list without a node sees everything.
func TestTieredPoliciesOnlyForAgentsThatAsk(t *testing.T) {
	dyn := dynamicfake.NewSimpleDynamicClientWithCustomListKinds(runtime.NewScheme(), map[schema.GroupVersionResource]string{
		crdv1.ClusterNetworkPoliciesResource: "ClusterNetworkPolicyList",
		crdv1.TiersResource:                  "TierList",
	}, dropFromClients("block-clients"))
	e := startHubsWith(t, dyn)
	s := newStorage(e.np)
	ctx := context.Background()
	k8s := "K8sNetworkPolicy/allow-client"
	poll(t, "the ClusterNetworkPolicy computed", func() bool {
		names, _ := s.List(ctx, selector(t, ""))
		return len(names.(*cp.NetworkPolicyList).Items) == 2
	})
	cnp := func(n string) string { return string(cp.SeineClusterNetworkPolicy) + "/" + n }

	for _, tc := range []struct {
		sel  string
		want []string
	}{
		{"nodeName=node-a", []string{k8s}},
		{"nodeName=node-a,tiered=false", []string{k8s}},
		{"nodeName=node-a,tiered=true", []string{k8s, cnp("block-clients")}},
		{"tiered=true,nodeName=node-a", []string{k8s, cnp("block-clients")}},
		{"nodeName=node-b,tiered=true", nil},
		{"", []string{k8s, cnp("block-clients")}},
	} {
		l, err := s.List(ctx, selector(t, tc.sel))
		if got := policyNames(t, l, err); !slices.Equal(got, tc.want) {
			t.Errorf("list %q: %v, want %v", tc.sel, got, tc.want)
		}
	}

	open := func(sel string) watch.Interface {
		w, err := s.Watch(ctx, selector(t, sel))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(w.Stop)
		return w
	}
	old, new := open("nodeName=node-a"), open("nodeName=node-a,tiered=true")
	read := func(w watch.Interface) []string {
		var got []string
		quiet := time.After(300 * time.Millisecond)
		for {
			select {
			case ev := <-w.ResultChan():
				np := ev.Object.(*cp.NetworkPolicy)
				got = append(got, string(ev.Type)+" "+string(np.SourceRef.Type)+"/"+np.SourceRef.Name)
				quiet = time.After(300 * time.Millisecond)
			case <-quiet:
				slices.Sort(got)
				return got
			}
		}
	}
	if got, want := read(old), []string{"ADDED " + k8s}; !slices.Equal(got, want) {
		t.Errorf("old-style watch: %v, want %v", got, want)
	}
	if got, want := read(new), []string{"ADDED " + k8s, "ADDED " + cnp("block-clients")}; !slices.Equal(got, want) {
		t.Errorf("new-style watch: %v, want %v", got, want)
	}
	if _, err := dyn.Resource(crdv1.ClusterNetworkPoliciesResource).Create(ctx, dropFromClients("block-more"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if got, want := read(new), []string{"ADDED " + cnp("block-more")}; !slices.Equal(got, want) {
		t.Errorf("new-style watch after a second ClusterNetworkPolicy: %v, want %v", got, want)
	}
	if got := read(old); len(got) != 0 {
		t.Errorf("old-style watch after a second ClusterNetworkPolicy: %v, want nothing", got)
	}

	// Anything but nodeName and tiered=true|false is refused, naming both.
	for _, bad := range []string{"nodeName=node-a,tiered=maybe", "nodeName=node-a,nodeName=node-b", "nodeName=node-a,tiered!=true"} {
		if _, err := s.List(ctx, selector(t, bad)); !apierrors.IsBadRequest(err) || !strings.Contains(err.Error(), cp.TieredField) {
			t.Errorf("list %q: %v, want 400 naming %s", bad, err, cp.TieredField)
		}
	}
	if _, _, err := Scheme.ConvertFieldLabel(cp.SchemeGroupVersion.WithKind("NetworkPolicy"), "spec.tier", "x"); err == nil {
		t.Error("field label spec.tier accepted")
	}
}
