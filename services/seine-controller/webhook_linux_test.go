package main

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/dynamic"
	"sigs.k8s.io/yaml"

	crdv1 "github.com/seine-cni/seine/core/apis/crd/v1beta1"
	"github.com/seine-cni/seine/test/lab"
)

// testAdmissionWebhook creates crd.seine.io objects through the lab's real
// kube-apiserver, which calls seine-controller's admission webhook
// (registered by the lab as seine.yml registers it): bad ones are refused
// with the webhook's message naming the field, what the CRD's own
// validation rules refuse never reaches the webhook, valid ones are
// stored, an update is judged like a create. With the controller down,
// failurePolicy Fail refuses creates and updates ("failed calling
// webhook") while deletes go through; with the controller back, creates
// pass again.
func testAdmissionWebhook(ctx context.Context, t *testing.T, c *lab.Config) {
	dc, err := dynamic.NewForConfig(adminConfig(t, c))
	if err != nil {
		t.Fatal(err)
	}
	cnps := dc.Resource(crdv1.ClusterNetworkPoliciesResource)
	snps := dc.Resource(crdv1.NetworkPoliciesResource).Namespace("default")
	cgs := dc.Resource(crdv1.ClusterGroupsResource)
	tiers := dc.Resource(crdv1.TiersResource)
	t.Cleanup(func() {
		ctx := context.Background()
		_ = cnps.DeleteCollection(ctx, metav1.DeleteOptions{}, metav1.ListOptions{})
		_ = snps.DeleteCollection(ctx, metav1.DeleteOptions{}, metav1.ListOptions{})
		_ = cgs.DeleteCollection(ctx, metav1.DeleteOptions{}, metav1.ListOptions{})
		_ = tiers.Delete(ctx, "h6-mine", metav1.DeleteOptions{})
	})
	obj := func(kind, name, spec string) *unstructured.Unstructured {
		t.Helper()
		u := &unstructured.Unstructured{Object: map[string]any{}}
		if err := yaml.Unmarshal([]byte(spec), &u.Object); err != nil {
			t.Fatalf("%s: %v", spec, err)
		}
		u.Object = map[string]any{"apiVersion": "crd.seine.io/v1beta1", "kind": kind, "metadata": map[string]any{"name": name}, "spec": u.Object}
		return u
	}
	create := func(r dynamic.ResourceInterface, u *unstructured.Unstructured) error {
		_, err := r.Create(ctx, u, metav1.CreateOptions{})
		return err
	}
	mustCreate := func(r dynamic.ResourceInterface, u *unstructured.Unstructured) {
		t.Helper()
		if err := create(r, u); err != nil {
			t.Fatalf("create %s %s: %v", u.GetKind(), u.GetName(), err)
		}
	}
	const denied = `admission webhook "validate.crd.seine.io" denied the request: `
	refused := func(what string, err error, want string) {
		t.Helper()
		switch {
		case err == nil:
			t.Errorf("%s: created, want refused: %s", what, want)
		case !apierrors.IsInvalid(err) || !strings.Contains(err.Error(), want):
			t.Errorf("%s: %v\nwant 422 Invalid with: %s", what, err, want)
		default:
			t.Logf("%s: refused: %v", what, err)
		}
	}

	mustCreate(tiers, obj("Tier", "h6-mine", `{priority: 120}`))
	mustCreate(cgs, obj("ClusterGroup", "h6-web", `{podSelector: {matchLabels: {app: h6-web}}}`))
	mustCreate(cgs, obj("ClusterGroup", "h6-nets", `{ipBlocks: [{cidr: 10.0.0.0/8}]}`))
	mustCreate(cnps, obj("ClusterNetworkPolicy", "h6-web-in", `{tier: h6-mine, priority: 10, appliedTo: [{group: h6-web}], ingress: [{action: Drop, name: a, from: [{group: h6-nets}]}]}`))
	mustCreate(snps, obj("NetworkPolicy", "h6-ns", `{priority: 3, appliedTo: [{podSelector: {}}], egress: [{action: Reject, to: [{ipBlock: {cidr: 192.168.0.0/16, except: [192.168.1.0/24]}}], ports: [{port: 1000, endPort: 2000}]}]}`))
	// The same tier and priority, another direction: no overlap.
	mustCreate(cnps, obj("ClusterNetworkPolicy", "h6-web-out", `{tier: h6-mine, priority: 10, appliedTo: [{podSelector: {matchLabels: {app: h6-web}}}], egress: [{action: Allow}]}`))
	// The cases below that want an overlap refused, or h6-web kept as a
	// group of pods, rest on the controller's informers holding h6-web-in
	// and h6-web-out: two policies created in the same instant are not
	// judged against each other (core/admission/README.md).
	for _, name := range []string{"h6-web-in", "h6-web-out"} {
		waitFor(t, "the webhook sees "+name, "refused", func() string {
			_, err := cnps.Create(ctx, obj("ClusterNetworkPolicy", "h6-probe", `{tier: h6-mine, priority: 10, appliedTo: [{podSelector: {}}], ingress: [{action: Drop}], egress: [{action: Drop}]}`),
				metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
			if err != nil && strings.Contains(err.Error(), name+" is in tier h6-mine") {
				return "refused"
			}
			return fmt.Sprint(err)
		})
	}

	for _, c := range []struct {
		what string
		r    dynamic.ResourceInterface
		u    *unstructured.Unstructured
		want string
	}{
		{"a tier that does not exist", cnps, obj("ClusterNetworkPolicy", "h6-bad", `{tier: foo, priority: 1, appliedTo: [{podSelector: {}}]}`),
			denied + `spec.tier: Invalid value: "foo": tier foo does not exist: create it or use one of emergency, securityops, h6-mine, networkops, platform, application, baseline`},
		{"a bad selector expression", cnps, obj("ClusterNetworkPolicy", "h6-bad", `{priority: 1, appliedTo: [{podSelector: {matchExpressions: [{key: app, operator: Equals, values: [a]}]}}]}`),
			denied + `spec.appliedTo[0].podSelector.matchExpressions[0].operator: Invalid value: "Equals": not a valid selector operator`},
		{"an empty peer", cnps, obj("ClusterNetworkPolicy", "h6-bad", `{priority: 1, appliedTo: [{podSelector: {}}], ingress: [{action: Drop, from: [{}]}]}`),
			denied + `spec.ingress[0].from[0]: Required value: a peer entry selects nothing`},
		{"an except outside its cidr", cnps, obj("ClusterNetworkPolicy", "h6-bad", `{priority: 1, appliedTo: [{podSelector: {}}], egress: [{action: Drop, to: [{ipBlock: {cidr: 10.0.0.0/16, except: [10.1.0.0/24]}}]}]}`),
			denied + `spec.egress[0].to[0].ipBlock.except[0]: Invalid value: "10.1.0.0/24": not inside cidr 10.0.0.0/16`},
		{"a CIDR that does not parse", cnps, obj("ClusterNetworkPolicy", "h6-bad", `{priority: 1, appliedTo: [{podSelector: {}}], egress: [{action: Drop, to: [{ipBlock: {cidr: 10.0.0.0/33}}]}]}`),
			denied + `spec.egress[0].to[0].ipBlock.cidr: Invalid value: "10.0.0.0/33": not a CIDR`},
		{"a port range that ends before it starts", cnps, obj("ClusterNetworkPolicy", "h6-bad", `{priority: 1, appliedTo: [{podSelector: {}}], egress: [{action: Drop, ports: [{port: 8080, endPort: 80}]}]}`),
			denied + `spec.egress[0].ports[0].endPort: Invalid value: 80: the range ends before it starts: endPort must be at least port (8080)`},
		{"a ClusterGroup that does not exist", cnps, obj("ClusterNetworkPolicy", "h6-bad", `{priority: 1, appliedTo: [{podSelector: {}}], ingress: [{action: Drop, from: [{group: h6-nope}]}]}`),
			denied + `spec.ingress[0].from[0].group: Invalid value: "h6-nope": ClusterGroup h6-nope does not exist: create it first`},
		{"overlapping appliedTo at one tier and priority", cnps, obj("ClusterNetworkPolicy", "h6-bad", `{tier: h6-mine, priority: 10, appliedTo: [{podSelector: {matchLabels: {tier: front}}}], ingress: [{action: Allow}]}`),
			denied + `spec.priority: Invalid value: 10: ClusterNetworkPolicy h6-web-in is in tier h6-mine at priority 10 too, and its ingress rules may apply to the same pods ` +
				`(this policy's spec.appliedTo[0] and its spec.appliedTo[0] can select the same pod): the order of the two would be arbitrary; give one of them another priority`},
		{"a namespaced policy applied to other namespaces", snps, obj("NetworkPolicy", "h6-bad", `{priority: 1, appliedTo: [{namespaceSelector: {}}]}`),
			denied + `spec.appliedTo[0].namespaceSelector: Forbidden: a NetworkPolicy applies to pods of its own namespace (default) only`},
		{"a ClusterGroup with a child that does not exist", cgs, obj("ClusterGroup", "h6-bad", `{childGroups: [h6-nope]}`),
			denied + `spec.childGroups[0]: Invalid value: "h6-nope": ClusterGroup h6-nope does not exist: create it first`},
		{"a group in an appliedTo turned into ipBlocks", cgs, nil,
			denied + `spec.ipBlocks: Invalid value: 1: ClusterGroup h6-web is in the appliedTo of ClusterNetworkPolicy h6-web-in`},
		// The CRD's validation rule (CEL), before any webhook is asked.
		{"appliedTo on the policy and on a rule", cnps, obj("ClusterNetworkPolicy", "h6-bad", `{priority: 1, appliedTo: [{podSelector: {}}], ingress: [{action: Drop, appliedTo: [{podSelector: {}}]}]}`),
			`appliedTo is set either on the policy or on every rule, not both`},
	} {
		var err error
		if c.u == nil {
			// An update: h6-web as a group of ipBlocks.
			var cur *unstructured.Unstructured
			if cur, err = cgs.Get(ctx, "h6-web", metav1.GetOptions{}); err == nil {
				cur.Object["spec"] = map[string]any{"ipBlocks": []any{map[string]any{"cidr": "10.0.0.0/8"}}}
				_, err = cgs.Update(ctx, cur, metav1.UpdateOptions{})
			}
		} else {
			err = create(c.r, c.u)
		}
		refused(c.what, err, c.want)
		if c.what == "appliedTo on the policy and on a rule" && err != nil && strings.Contains(err.Error(), "admission webhook") {
			t.Errorf("the CRD's validation rule's refusal went through the webhook: %v", err)
		}
	}

	// An update of a stored policy is judged like a create: moved onto
	// h6-web-out's place it overlaps; its labels alone change freely.
	cur, err := cnps.Get(ctx, "h6-web-in", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	moved := cur.DeepCopy()
	_ = unstructured.SetNestedSlice(moved.Object, []any{map[string]any{"action": "Drop"}}, "spec", "egress")
	_, err = cnps.Update(ctx, moved, metav1.UpdateOptions{})
	refused("an update that makes two policies overlap", err, denied+`spec.priority: Invalid value: 10: ClusterNetworkPolicy h6-web-out is in tier h6-mine at priority 10 too, and its egress rules`)
	cur.SetLabels(map[string]string{"h6": "labelled"})
	if _, err := cnps.Update(ctx, cur, metav1.UpdateOptions{}); err != nil {
		t.Errorf("a label on a valid policy: %v", err)
	}

	// A tier only a namespaced policy names is kept by the webhook (the
	// CEL policy sees ClusterNetworkPolicies only).
	mustCreate(tiers, obj("Tier", "h6-ns-only", `{priority: 121}`))
	mustCreate(snps, obj("NetworkPolicy", "h6-in-ns-only", `{tier: h6-ns-only, priority: 1, appliedTo: [{podSelector: {}}]}`))
	err = tiers.Delete(ctx, "h6-ns-only", metav1.DeleteOptions{})
	if err == nil || !apierrors.IsForbidden(err) || !strings.Contains(err.Error(), denied+"metadata.name: Forbidden: tier h6-ns-only is in use by NetworkPolicy default/h6-in-ns-only: delete the policy or move it to another tier first") {
		t.Errorf("delete a tier a namespaced policy names: %v, want refused by the webhook", err)
	} else {
		t.Logf("delete a tier a namespaced policy names: refused: %v", err)
	}
	if err := snps.Delete(ctx, "h6-in-ns-only", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := tiers.Delete(ctx, "h6-ns-only", metav1.DeleteOptions{}); err != nil {
		t.Errorf("delete the tier once its policy is gone: %v", err)
	}

	// A policy deleted a moment ago no longer counts, though the
	// controller's informers may still hold it: the refusal is confirmed
	// with the kube-apiserver first.
	const rounds = 20
	stale := 0
	for i := range rounds {
		first := obj("ClusterNetworkPolicy", fmt.Sprint("h6-race-a", i), `{tier: h6-mine, priority: 30, appliedTo: [{podSelector: {matchLabels: {app: h6-race}}}], ingress: [{action: Drop}]}`)
		mustCreate(cnps, first)
		// The controller's informers see it before it goes again.
		waitFor(t, "the webhook sees "+first.GetName(), "refused", func() string {
			_, err := cnps.Create(ctx, obj("ClusterNetworkPolicy", "h6-race-probe", `{tier: h6-mine, priority: 30, appliedTo: [{podSelector: {}}], ingress: [{action: Drop}]}`),
				metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
			if err != nil && strings.Contains(err.Error(), first.GetName()+" is in tier h6-mine") {
				return "refused"
			}
			return fmt.Sprint(err)
		})
		if err := cnps.Delete(ctx, first.GetName(), metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		second := obj("ClusterNetworkPolicy", "h6-race-b", `{tier: h6-mine, priority: 30, appliedTo: [{podSelector: {matchLabels: {app: h6-race}}}], ingress: [{action: Allow}]}`)
		if err := create(cnps, second); err != nil {
			stale++
			t.Errorf("round %d: a policy at the place of one deleted a moment before: %v", i, err)
		} else if err := cnps.Delete(ctx, "h6-race-b", metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("%d rounds of delete then create at the same place: %d refused", rounds, stale)

	// What one valid create through the webhook costs, end to end.
	good := obj("ClusterNetworkPolicy", "h6-timed", `{tier: h6-mine, priority: 20, appliedTo: [{group: h6-web}], ingress: [{action: Drop, from: [{group: h6-nets}]}]}`)
	const n = 20
	start := time.Now()
	for range n {
		if _, err := cnps.Create(ctx, good, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}}); err != nil {
			t.Fatalf("dry run create: %v", err)
		}
	}
	t.Logf("a valid dry-run create through the kube-apiserver and the webhook: %v on average (%d)", (time.Since(start) / n).Round(10*time.Microsecond), n)

	// failurePolicy Fail: the controller down, creates and updates are
	// refused, deletes are not asked about.
	if err := c.StopController(); err != nil {
		t.Fatal(err)
	}
	start = time.Now()
	err = create(cnps, good)
	if err == nil || !strings.Contains(err.Error(), `failed calling webhook "validate.crd.seine.io"`) {
		t.Errorf("a valid create with the controller down: %v, want refused: failed calling webhook", err)
	} else {
		t.Logf("the controller down, a valid create is refused after %v: %v", time.Since(start).Round(time.Millisecond), err)
	}
	if err := cnps.Delete(ctx, "h6-web-out", metav1.DeleteOptions{}); err != nil {
		t.Errorf("a delete with the controller down: %v", err)
	}
	if err := c.StartController(ctx); err != nil {
		t.Fatal(err)
	}
	// The controller answers once its informers synced (its readiness).
	waitFor(t, "a valid create once the controller is back", "created", func() string {
		if err := create(cnps, good); err != nil {
			return err.Error()
		}
		return "created"
	})
}
