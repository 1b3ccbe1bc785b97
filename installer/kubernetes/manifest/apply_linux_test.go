package manifest_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/restmapper"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/yaml"

	"github.com/seine-cni/seine/installer/kubernetes/manifest"
	"github.com/seine-cni/seine/test/lab"
	"github.com/seine-cni/seine/test/lab/labtest"
)

func TestMain(m *testing.M) {
	code := m.Run()
	labtest.RemoveBinaries()
	os.Exit(code)
}

// TestServerSideApply applies every document of the checked-in seine.yml
// with server-side apply (dryRun=All) to a real kube-apiserver: a one-node
// lab whose nodes use the reference ptp plugin, so the cluster holds no
// Seine object yet, as on a cluster being installed. The server validates
// each object against its schema, RBAC (binding roles the applier holds),
// admission (privileged pods) and the APIService's registration rules.
func TestServerSideApply(t *testing.T) {
	c := clusterWithoutSeine(t)
	rc, err := clientcmd.BuildConfigFromFlags("", c.AdminKubeconfig())
	if err != nil {
		t.Fatal(err)
	}
	dc, err := discovery.NewDiscoveryClientForConfig(rc)
	if err != nil {
		t.Fatal(err)
	}
	groups, err := restmapper.GetAPIGroupResources(dc)
	if err != nil {
		t.Fatal(err)
	}
	mapper := restmapper.NewDiscoveryRESTMapper(groups)
	dyn, err := dynamic.NewForConfig(rc)
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile("../seine.yml") // the checked-in manifest
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	applied := 0
	for _, doc := range bytes.Split(b, []byte("\n---\n"))[1:] {
		var obj unstructured.Unstructured
		if err := yaml.Unmarshal(doc, &obj.Object); err != nil {
			t.Fatal(err)
		}
		gvk := obj.GroupVersionKind()
		m, err := mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
		if err != nil {
			t.Errorf("%s: the server does not serve it: %v", gvk, err)
			continue
		}
		js, err := obj.MarshalJSON()
		if err != nil {
			t.Fatal(err)
		}
		opts := metav1.PatchOptions{FieldManager: "seine-installer-test", DryRun: []string{metav1.DryRunAll}, Force: ptr.To(true)}
		var ri dynamic.ResourceInterface = dyn.Resource(m.Resource)
		if ns := obj.GetNamespace(); ns != "" {
			ri = dyn.Resource(m.Resource).Namespace(ns)
		}
		out, err := ri.Patch(ctx, obj.GetName(), types.ApplyPatchType, js, opts)
		if err != nil {
			t.Errorf("apply %s %s: %v", gvk.Kind, obj.GetName(), err)
			continue
		}
		// Every field we set came back: the server dropped none as unknown.
		if diff := missingFields(obj.Object, out.Object, gvk.Kind); diff != "" {
			t.Errorf("%s %s: the server dropped %s", gvk.Kind, obj.GetName(), diff)
		}
		applied++
	}
	t.Logf("%d objects applied (dryRun=All)", applied)
	// dryRun=All persisted nothing.
	if _, err := dyn.Resource(mustMapping(t, mapper, "apps", "DaemonSet")).Namespace(manifest.Namespace).Get(ctx, "seine-agent", metav1.GetOptions{}); err == nil {
		t.Error("the dry run created the DaemonSet")
	}
	t.Run("tier admission", func(t *testing.T) { checkTierAdmission(ctx, t, dyn, b) })
}

// checkTierAdmission applies seine.yml's CustomResourceDefinitions and its
// ValidatingAdmissionPolicy for real and shows the kube-apiserver enforcing
// it: a built-in tier cannot be deleted, moved, or created with another
// priority; a tier of one's own cannot take a built-in's priority or one
// past the Kubernetes NetworkPolicy slot, nor another tier's priority; a
// tier a ClusterNetworkPolicy uses cannot be deleted until the policy is
// gone; good ones are created, updated and deleted.
func checkTierAdmission(ctx context.Context, t *testing.T, dyn dynamic.Interface, manifest []byte) {
	crdGVR := schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"}
	vapGVR := schema.GroupVersionResource{Group: "admissionregistration.k8s.io", Version: "v1", Resource: "validatingadmissionpolicies"}
	bindGVR := schema.GroupVersionResource{Group: "admissionregistration.k8s.io", Version: "v1", Resource: "validatingadmissionpolicybindings"}
	for _, doc := range bytes.Split(manifest, []byte("\n---\n"))[1:] {
		var obj unstructured.Unstructured
		if err := yaml.Unmarshal(doc, &obj.Object); err != nil {
			t.Fatal(err)
		}
		var gvr schema.GroupVersionResource
		switch obj.GetKind() {
		case "CustomResourceDefinition":
			gvr = crdGVR
		case "ValidatingAdmissionPolicy":
			gvr = vapGVR
		case "ValidatingAdmissionPolicyBinding":
			gvr = bindGVR
		default:
			continue
		}
		if _, err := dyn.Resource(gvr).Create(ctx, &obj, metav1.CreateOptions{}); err != nil {
			t.Fatalf("create %s %s: %v", obj.GetKind(), obj.GetName(), err)
		}
	}
	tiersGVR := schema.GroupVersionResource{Group: "crd.seine.io", Version: "v1beta1", Resource: "tiers"}
	tier := func(name string, prio int64) *unstructured.Unstructured {
		return &unstructured.Unstructured{Object: map[string]any{
			"apiVersion": "crd.seine.io/v1beta1", "kind": "Tier",
			"metadata": map[string]any{"name": name}, "spec": map[string]any{"priority": prio},
		}}
	}
	// The CRD is served, and the policy is in force, a moment after they
	// are created: wait until a dry-run delete of a built-in tier is denied.
	var err error
	deadline := time.Now().Add(45 * time.Second)
	for {
		if _, err = dyn.Resource(tiersGVR).Create(ctx, tier("baseline", 253), metav1.CreateOptions{}); err == nil || apierrors.IsAlreadyExists(err) {
			err = dyn.Resource(tiersGVR).Delete(ctx, "baseline", metav1.DeleteOptions{DryRun: []string{metav1.DryRunAll}})
			if apierrors.IsInvalid(err) || apierrors.IsForbidden(err) {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("the built-in tier policy is not in force after 45 s: last %v", err)
		}
		time.Sleep(500 * time.Millisecond)
	}
	t.Logf("delete tier baseline: %v", err)
	if !strings.Contains(err.Error(), "tier baseline is built in and cannot be deleted") {
		t.Errorf("delete of a built-in tier: %v", err)
	}
	refused := func(what string, err error, want string) {
		t.Helper()
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v, want a refusal saying %q", what, err, want)
		} else {
			t.Logf("%s: %v", what, err)
		}
	}
	moved, err := dyn.Resource(tiersGVR).Get(ctx, "baseline", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	moved.Object["spec"] = map[string]any{"priority": int64(10)}
	_, err = dyn.Resource(tiersGVR).Update(ctx, moved, metav1.UpdateOptions{})
	refused("move baseline to 10", err, "its priority is 253 and cannot change")
	_, err = dyn.Resource(tiersGVR).Create(ctx, tier("emergency", 1), metav1.CreateOptions{})
	refused("create emergency at 1", err, "its priority is 50")
	_, err = dyn.Resource(tiersGVR).Create(ctx, tier("mine", 250), metav1.CreateOptions{})
	refused("a custom tier at application's 250", err, "tier priority 250 is not available")
	_, err = dyn.Resource(tiersGVR).Create(ctx, tier("mine", 253), metav1.CreateOptions{})
	// Both seine-tiers (not available) and seine-tier-priorities (taken by
	// baseline) refuse it; the kube-apiserver reports whichever it ran first.
	refused("a custom tier at 253", err, "tier priority 253 is ")
	if _, err := dyn.Resource(tiersGVR).Create(ctx, tier("mine", 120), metav1.CreateOptions{}); err != nil {
		t.Fatalf("a custom tier at 120: %v", err)
	}

	// The checks against other objects (params: every Tier, every
	// ClusterNetworkPolicy) see them once the kube-apiserver's informers
	// do: poll with dry runs until refused.
	eventually := func(what string, try func() error, want string) {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for {
			err := try()
			if err != nil && strings.Contains(err.Error(), want) {
				t.Logf("%s: %v", what, err)
				return
			}
			if time.Now().After(deadline) {
				t.Errorf("%s: %v, want a refusal saying %q within 30 s", what, err, want)
				return
			}
			time.Sleep(300 * time.Millisecond)
		}
	}
	dry := metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}}
	eventually("a second custom tier at 120", func() error {
		_, err := dyn.Resource(tiersGVR).Create(ctx, tier("yours", 120), dry)
		return err
	}, "tier priority 120 is taken by tier mine")
	mine, err := dyn.Resource(tiersGVR).Get(ctx, "mine", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	mine.SetLabels(map[string]string{"team": "sec"})
	if _, err := dyn.Resource(tiersGVR).Update(ctx, mine, metav1.UpdateOptions{}); err != nil {
		t.Errorf("update of tier mine keeping its own priority: %v", err)
	}
	if _, err := dyn.Resource(tiersGVR).Create(ctx, tier("yours", 121), metav1.CreateOptions{}); err != nil {
		t.Errorf("a second custom tier at a free priority: %v", err)
	}

	cnpGVR := schema.GroupVersionResource{Group: "crd.seine.io", Version: "v1beta1", Resource: "clusternetworkpolicies"}
	cnp := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "crd.seine.io/v1beta1", "kind": "ClusterNetworkPolicy",
		"metadata": map[string]any{"name": "uses-mine"},
		"spec": map[string]any{"tier": "mine", "priority": int64(1),
			"appliedTo": []any{map[string]any{"podSelector": map[string]any{}}},
			"ingress":   []any{map[string]any{"action": "Drop"}}},
	}}
	if _, err := dyn.Resource(cnpGVR).Create(ctx, cnp, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create a ClusterNetworkPolicy in tier mine: %v", err)
	}
	eventually("delete tier mine while a policy uses it", func() error {
		return dyn.Resource(tiersGVR).Delete(ctx, "mine", metav1.DeleteOptions{DryRun: []string{metav1.DryRunAll}})
	}, "tier mine is in use by ClusterNetworkPolicy uses-mine")
	if err := dyn.Resource(tiersGVR).Delete(ctx, "yours", metav1.DeleteOptions{}); err != nil {
		t.Errorf("delete tier yours, which no policy uses: %v", err)
	}
	if err := dyn.Resource(cnpGVR).Delete(ctx, "uses-mine", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	checkGroupsInUse(ctx, t, dyn, cnpGVR, eventually)
	deadline = time.Now().Add(30 * time.Second)
	for {
		err := dyn.Resource(tiersGVR).Delete(ctx, "mine", metav1.DeleteOptions{})
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Errorf("delete tier mine once its policy is gone: %v", err)
			break
		}
		time.Sleep(300 * time.Millisecond)
	}
}

// checkGroupsInUse: a ClusterGroup a ClusterNetworkPolicy names (in a
// rule's peers, in appliedTo) or another group names as a child cannot be
// deleted (seine-clustergroups-in-use, seine-clustergroups-children);
// once nothing names it, it can.
func checkGroupsInUse(ctx context.Context, t *testing.T, dyn dynamic.Interface, cnpGVR schema.GroupVersionResource, eventually func(string, func() error, string)) {
	cgGVR := schema.GroupVersionResource{Group: "crd.seine.io", Version: "v1beta1", Resource: "clustergroups"}
	obj := func(kind, name string, spec map[string]any) *unstructured.Unstructured {
		return &unstructured.Unstructured{Object: map[string]any{"apiVersion": "crd.seine.io/v1beta1", "kind": kind, "metadata": map[string]any{"name": name}, "spec": spec}}
	}
	pods := map[string]any{"podSelector": map[string]any{}}
	for _, o := range []struct {
		gvr schema.GroupVersionResource
		u   *unstructured.Unstructured
	}{
		{cgGVR, obj("ClusterGroup", "peer", pods)},
		{cgGVR, obj("ClusterGroup", "target", pods)},
		{cgGVR, obj("ClusterGroup", "child", pods)},
		{cgGVR, obj("ClusterGroup", "parent", map[string]any{"childGroups": []any{"child"}})},
		{cgGVR, obj("ClusterGroup", "free", pods)},
		{cnpGVR, obj("ClusterNetworkPolicy", "uses-groups", map[string]any{"priority": int64(1),
			"ingress": []any{map[string]any{"action": "Drop", "appliedTo": []any{map[string]any{"group": "target"}}}},
			"egress":  []any{map[string]any{"action": "Drop", "appliedTo": []any{pods}, "to": []any{map[string]any{"group": "peer"}}}}})},
	} {
		if _, err := dyn.Resource(o.gvr).Create(ctx, o.u, metav1.CreateOptions{}); err != nil {
			t.Fatalf("create %s %s: %v", o.u.GetKind(), o.u.GetName(), err)
		}
	}
	dryDelete := func(name string) func() error {
		return func() error {
			return dyn.Resource(cgGVR).Delete(ctx, name, metav1.DeleteOptions{DryRun: []string{metav1.DryRunAll}})
		}
	}
	eventually("delete a ClusterGroup a policy's egress rule names as a peer", dryDelete("peer"),
		"ClusterGroup peer is in use by ClusterNetworkPolicy uses-groups: remove it from the policy, or delete the policy, first")
	eventually("delete a ClusterGroup a policy's ingress rule applies to", dryDelete("target"),
		"ClusterGroup target is in use by ClusterNetworkPolicy uses-groups")
	eventually("delete a child group", dryDelete("child"),
		"ClusterGroup child is a child group of ClusterGroup parent: remove it from there first")
	for _, name := range []string{"free", "parent"} {
		if err := dyn.Resource(cgGVR).Delete(ctx, name, metav1.DeleteOptions{}); err != nil {
			t.Errorf("delete ClusterGroup %s, which nothing names: %v", name, err)
		}
	}
	if err := dyn.Resource(cnpGVR).Delete(ctx, "uses-groups", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"peer", "target", "child"} {
		deadline := time.Now().Add(30 * time.Second)
		for {
			err := dyn.Resource(cgGVR).Delete(ctx, name, metav1.DeleteOptions{})
			if err == nil {
				break
			}
			if time.Now().After(deadline) {
				t.Errorf("delete ClusterGroup %s once nothing names it: %v", name, err)
				break
			}
			time.Sleep(300 * time.Millisecond)
		}
	}
}

// clusterWithoutSeine brings up a one-node lab in ptp mode (state
// /run/seine-h3, namespaces seine-h3-*, API port 21443, etcd 21379) and
// takes it down in t's cleanup.
func clusterWithoutSeine(t *testing.T) *lab.Config {
	kube := labtest.Require(t)
	_, labCLI := labtest.Binaries(t)
	off, suffix := lab.Slot()
	c := &lab.Config{
		Nodes: 1, StateDir: "/run/seine-h3" + suffix, NSPrefix: "seine-h3" + suffix + "-", APIPort: 21443 + off, EtcdPort: 21379 + off,
		CNI: lab.CNIPtp, KubeBin: kube, LabBin: labCLI,
	}
	log := labtest.Logger(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	// A lab left by an interrupted run of this test is this test's own.
	if _, err := os.Stat(c.StateDir); err == nil {
		if err := lab.Down(ctx, log, c.StateDir); err != nil {
			t.Fatalf("take down the lab left in %s: %v", c.StateDir, err)
		}
	}
	t.Cleanup(func() {
		if err := lab.Down(context.Background(), log, c.StateDir); err != nil {
			t.Errorf("lab down: %v", err)
		}
	})
	start := time.Now()
	if err := lab.Up(ctx, log, c); err != nil {
		t.Fatalf("lab up: %v", err)
	}
	t.Logf("lab up (1 node, ptp) in %s", time.Since(start).Round(time.Millisecond))
	return c
}

func mustMapping(t *testing.T, mapper apimeta.RESTMapper, group, kind string) schema.GroupVersionResource {
	t.Helper()
	m, err := mapper.RESTMapping(schema.GroupKind{Group: group, Kind: kind})
	if err != nil {
		t.Fatal(err)
	}
	return m.Resource
}

// missingFields names a field path of want that got lacks or holds
// differently ("" when got has all of want). Strings compare exactly,
// numbers by value.
func missingFields(want, got any, path string) string {
	switch w := want.(type) {
	case map[string]any:
		g, ok := got.(map[string]any)
		if !ok && !(len(w) == 0 && got == nil) {
			return path
		}
		for k, v := range w {
			if d := missingFields(v, g[k], path+"."+k); d != "" {
				return d
			}
		}
	case []any:
		g, ok := got.([]any)
		if !ok || len(g) != len(w) {
			return path
		}
		for i := range w {
			if d := missingFields(w[i], g[i], path+"[]"); d != "" {
				return d
			}
		}
	default:
		if fmt.Sprint(want) != fmt.Sprint(got) {
			return fmt.Sprintf("%s (%v != %v)", path, want, got)
		}
	}
	return ""
}
