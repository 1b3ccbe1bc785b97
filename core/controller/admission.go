package controller

import (
	"context"
	"errors"
	"slices"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/tools/cache"

	"github.com/seine-cni/seine/core/admission"
	crdv1 "github.com/seine-cni/seine/core/apis/crd/v1beta1"
	"github.com/seine-cni/seine/core/tiers"
)

// AdmissionLookup answers the admission webhook's questions
// (core/admission) from the controller's informers: the same view of
// tiers, ClusterGroups and policies the controller computes from. Call it
// after AddTiered (and AddNamespacedTiered, AddClusterGroups when the
// cluster serves them).
func (c *Controller) AdmissionLookup() admission.Lookup { return lookup{c} }

type lookup struct{ c *Controller }

// SetAdmissionClient gives the admission lookups a client of the cluster:
// every refusal is judged again with the kube-apiserver's tiers,
// ClusterGroups and overlapping policies as it holds them now
// (Lookup.Confirming), not as the informers last saw them (a policy
// deleted, a tier created a moment ago). Call it before serving.
func (c *Controller) SetAdmissionClient(dc dynamic.Interface) { c.admissionClient = dc }

// Fresh is p as the informers hold it: the first look reads nothing from
// the cluster (confirming's Fresh does).
func (l lookup) Fresh(p admission.Policy) (admission.Policy, bool) { return p, true }

func (l lookup) Ready() error {
	if l.c.tierIndexer == nil {
		return errors.New("seine-controller does not enforce crd.seine.io's policies: the cluster did not serve their CustomResourceDefinitions " +
			"when it started (seine.yml installs them); restart it")
	}
	for _, s := range l.c.synced {
		if !s() {
			return errors.New("seine-controller has not listed tiers, policies and ClusterGroups yet: try again in a few seconds")
		}
	}
	return nil
}

func (l lookup) Tiers() []tiers.Tier {
	out := slices.Clone(tiers.BuiltIn)
	for _, o := range l.c.tierIndexer.List() {
		var t crdv1.Tier
		if err := fromUnstructured(o, &t); err != nil || tiers.IsBuiltIn(t.Name) {
			continue
		}
		out = append(out, tiers.Tier{Name: t.Name, Priority: t.Spec.Priority})
	}
	return out
}

func (l lookup) Tier(name string) (tiers.Tier, bool) {
	if t, ok := builtInTier(name); ok {
		return t, true
	}
	var t crdv1.Tier
	if o, ok, err := l.c.tierIndexer.GetByKey(name); err == nil && ok && fromUnstructured(o, &t) == nil {
		return tiers.Tier{Name: t.Name, Priority: t.Spec.Priority}, true
	}
	return tiers.Tier{}, false
}

func builtInTier(name string) (tiers.Tier, bool) {
	i := slices.IndexFunc(tiers.BuiltIn, func(t tiers.Tier) bool { return t.Name == name })
	if i < 0 {
		return tiers.Tier{}, false
	}
	return tiers.BuiltIn[i], true
}

func (l lookup) ClusterGroup(name string) (*crdv1.ClusterGroup, bool) {
	g, err := l.c.getClusterGroup(name)
	return g, err == nil && g != nil
}

// Confirming is l with the tiers, ClusterGroups and overlapping policies
// that validation names read from the kube-apiserver (one GET each) when
// the lookup has a client: a refusal is judged again with it, since the
// informers may not hold yet a tier or group created a moment ago, or
// still hold a group as it was before a change, a policy deleted (CI's
// make test of a3a73ab refused a NetworkPolicy naming a tier created the
// line before).
func (l lookup) Confirming() admission.Lookup {
	if l.c.admissionClient == nil {
		return l
	}
	return confirming{l}
}

// confirming is a lookup whose tiers, ClusterGroups and policies read
// again (Fresh) come from the cluster itself. When a read fails the
// informers answer.
type confirming struct{ lookup }

func (l confirming) Confirming() admission.Lookup { return l }

// Fresh reads p again from the kube-apiserver: gone, or as it is now.
func (l confirming) Fresh(p admission.Policy) (admission.Policy, bool) {
	dc := l.c.admissionClient
	var r dynamic.ResourceInterface = dc.Resource(crdv1.ClusterNetworkPoliciesResource)
	if p.Kind == admission.KindNetworkPolicy {
		r = dc.Resource(crdv1.NetworkPoliciesResource).Namespace(p.Namespace)
	}
	var np crdv1.NetworkPolicy
	switch found, err := l.get(r, p.Name, &np); {
	case err != nil:
		return p, true // cannot tell: the cached one stands
	case !found:
		return p, false
	}
	p.Spec = &np.Spec
	return p, true
}

func (l confirming) Tier(name string) (tiers.Tier, bool) {
	if t, ok := builtInTier(name); ok {
		return t, true
	}
	var t crdv1.Tier
	switch found, err := l.get(l.c.admissionClient.Resource(crdv1.TiersResource), name, &t); {
	case err != nil:
		return l.lookup.Tier(name)
	case !found:
		return tiers.Tier{}, false
	}
	return tiers.Tier{Name: t.Name, Priority: t.Spec.Priority}, true
}

func (l confirming) ClusterGroup(name string) (*crdv1.ClusterGroup, bool) {
	var g crdv1.ClusterGroup
	switch found, err := l.get(l.c.admissionClient.Resource(crdv1.ClusterGroupsResource), name, &g); {
	case err != nil:
		return l.lookup.ClusterGroup(name)
	case !found:
		return nil, false
	}
	return &g, true
}

// get reads the object name of r from the kube-apiserver into into:
// found false when it does not exist, an error when that cannot be told.
func (l confirming) get(r dynamic.ResourceInterface, name string, into any) (found bool, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	u, err := r.Get(ctx, name, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		return false, nil
	case err != nil:
		return false, err
	}
	return true, fromUnstructured(u, into)
}

func (l lookup) PoliciesAt(tier string, priority float64) []admission.Policy {
	var out []admission.Policy
	for _, s := range []struct {
		kind string
		idx  cache.Indexer
	}{{admission.KindClusterNetworkPolicy, l.c.cnpIndexer}, {admission.KindNetworkPolicy, l.c.snpIndexer}} {
		if s.idx == nil {
			continue
		}
		for _, o := range s.idx.List() {
			u, ok := o.(*unstructured.Unstructured)
			if !ok {
				continue
			}
			// Read in place: only the few at the place are decoded.
			t, _, _ := unstructured.NestedString(u.Object, "spec", "tier")
			p, _, _ := unstructured.NestedFieldNoCopy(u.Object, "spec", "priority")
			if tierName(t) != tier || number(p) != priority {
				continue
			}
			var np crdv1.NetworkPolicy
			if err := fromUnstructured(o, &np); err != nil {
				continue
			}
			out = append(out, admission.Policy{Kind: s.kind, Namespace: np.Namespace, Name: np.Name, Spec: &np.Spec})
		}
	}
	return out
}

// NamespacedIn lists the namespaced policies in tier as the kube-apiserver
// holds them when the lookup has a client: a tier's delete must not pass
// because a policy naming it was created a moment ago and the informers
// have not seen it yet (tier deletes are rare: one list each). Without a
// client, or when the list fails, it answers from the informers.
func (l lookup) NamespacedIn(tier string) []admission.Policy {
	if dc := l.c.admissionClient; dc != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		if list, err := dc.Resource(crdv1.NetworkPoliciesResource).List(ctx, metav1.ListOptions{}); err == nil {
			var out []admission.Policy
			for i := range list.Items {
				if p, ok := namespacedIn(&list.Items[i], tier); ok {
					out = append(out, p)
				}
			}
			return out
		}
	}
	if l.c.snpIndexer == nil {
		return nil
	}
	var out []admission.Policy
	for _, o := range l.c.snpIndexer.List() {
		if u, ok := o.(*unstructured.Unstructured); ok {
			if p, ok := namespacedIn(u, tier); ok {
				out = append(out, p)
			}
		}
	}
	return out
}

// namespacedIn is u as a namespaced policy, if it is in tier.
func namespacedIn(u *unstructured.Unstructured, tier string) (admission.Policy, bool) {
	if t, _, _ := unstructured.NestedString(u.Object, "spec", "tier"); tierName(t) != tier {
		return admission.Policy{}, false
	}
	var np crdv1.NetworkPolicy
	if err := fromUnstructured(u, &np); err != nil {
		return admission.Policy{}, false
	}
	return admission.Policy{Kind: admission.KindNetworkPolicy, Namespace: np.Namespace, Name: np.Name, Spec: &np.Spec}, true
}

// number is a JSON number of an unstructured object (10 decodes as an
// int64, 10.5 as a float64).
func number(v any) float64 {
	switch n := v.(type) {
	case int64:
		return float64(n)
	case float64:
		return n
	}
	return -1
}

func (l lookup) AppliedToUsers(group string) []string {
	var out []string
	for _, s := range []struct {
		kind string
		idx  cache.Indexer
	}{{admission.KindClusterNetworkPolicy, l.c.cnpIndexer}} {
		if s.idx == nil {
			continue
		}
		for _, o := range s.idx.List() {
			u, ok := o.(*unstructured.Unstructured)
			if ok && namesGroupInAppliedTo(u.Object, group) {
				out = append(out, s.kind+" "+u.GetName())
			}
		}
	}
	slices.Sort(out)
	return out
}

// namesGroupInAppliedTo reports whether a policy names group in its
// appliedTo or a rule's.
func namesGroupInAppliedTo(obj map[string]any, group string) bool {
	in := func(v any) bool {
		l, _ := v.([]any)
		for _, e := range l {
			if m, _ := e.(map[string]any); m["group"] == group {
				return true
			}
		}
		return false
	}
	if v, _, _ := unstructured.NestedFieldNoCopy(obj, "spec", "appliedTo"); in(v) {
		return true
	}
	for _, dir := range []string{"ingress", "egress"} {
		rules, _, _ := unstructured.NestedFieldNoCopy(obj, "spec", dir)
		l, _ := rules.([]any)
		for _, r := range l {
			if m, _ := r.(map[string]any); in(m["appliedTo"]) {
				return true
			}
		}
	}
	return false
}

func (l lookup) Parents(group string) []string {
	if l.c.cgIndexer == nil {
		return nil
	}
	var out []string
	for _, o := range l.c.cgIndexer.List() {
		u, ok := o.(*unstructured.Unstructured)
		if !ok {
			continue
		}
		children, _, _ := unstructured.NestedStringSlice(u.Object, "spec", "childGroups")
		if slices.Contains(children, group) {
			out = append(out, u.GetName())
		}
	}
	slices.Sort(out)
	return out
}
