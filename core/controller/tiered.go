package controller

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"

	networkingv1 "k8s.io/api/networking/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/dynamic/dynamicinformer"
	"k8s.io/client-go/tools/cache"

	controlplane "github.com/seine-cni/seine/core/apis/controlplane/v1beta1"
	crdv1 "github.com/seine-cni/seine/core/apis/crd/v1beta1"
	"github.com/seine-cni/seine/core/fqdn"
	"github.com/seine-cni/seine/core/tiers"
)

// cnpKeyPrefix starts the work queue key of a ClusterNetworkPolicy; a
// namespace name never holds a colon, so it never meets a Kubernetes
// policy's namespace/name key.
const cnpKeyPrefix = "cnp:"

// AddTiered makes the controller compute Seine's ClusterNetworkPolicies,
// in the order of their Tiers, from the informers of f (a dynamic factory
// of a client of the cluster's crd.seine.io). Call it after New and before
// f.Start and Run. See core/tiers/README.md.
func (c *Controller) AddTiered(f dynamicinformer.DynamicSharedInformerFactory) error {
	cnps := f.ForResource(crdv1.ClusterNetworkPoliciesResource).Informer()
	tierInf := f.ForResource(crdv1.TiersResource).Informer()
	enqueueCNP := func(o any) {
		key, err := cache.DeletionHandlingMetaNamespaceKeyFunc(o)
		if err != nil {
			c.log.Error("cluster network policy key", "error", err)
			return
		}
		c.enqueueKey(cnpKeyPrefix + key)
	}
	// A tier's priority is part of its policies' order: a change of a
	// tier (created after its policies, moved, deleted) recomputes them.
	onTier := func(o any) {
		if d, ok := o.(cache.DeletedFinalStateUnknown); ok {
			o = d.Obj
		}
		u, ok := o.(*unstructured.Unstructured)
		if !ok {
			return
		}
		for _, p := range cnps.GetIndexer().List() {
			pu, ok := p.(*unstructured.Unstructured)
			if !ok {
				continue
			}
			if t, _, _ := unstructured.NestedString(pu.Object, "spec", "tier"); tierName(t) == u.GetName() {
				enqueueCNP(p)
			}
		}
		if c.snpIndexer == nil {
			return
		}
		for _, p := range c.snpIndexer.List() {
			pu, ok := p.(*unstructured.Unstructured)
			if !ok {
				continue
			}
			if t, _, _ := unstructured.NestedString(pu.Object, "spec", "tier"); tierName(t) == u.GetName() {
				c.enqueueNamespaced(p)
			}
		}
	}
	for _, t := range []struct {
		inf cache.SharedIndexInformer
		h   cache.ResourceEventHandler
	}{
		{cnps, cache.ResourceEventHandlerFuncs{
			AddFunc: enqueueCNP, UpdateFunc: func(_, o any) { enqueueCNP(o) }, DeleteFunc: enqueueCNP,
		}},
		{tierInf, cache.ResourceEventHandlerFuncs{
			AddFunc: onTier, UpdateFunc: func(_, o any) { onTier(o) }, DeleteFunc: onTier,
		}},
	} {
		reg, err := t.inf.AddEventHandler(t.h)
		if err != nil {
			return fmt.Errorf("add informer event handler: %w", err)
		}
		c.synced = append(c.synced, reg.HasSynced)
	}
	c.cnpIndexer, c.tierIndexer = cnps.GetIndexer(), tierInf.GetIndexer()
	return nil
}

func tierName(t string) string {
	if t == "" {
		return tiers.DefaultTier
	}
	return t
}

// tierPriority is the priority of the tier named name: a built-in tier's
// is fixed, another's is its Tier object's.
func (c *Controller) tierPriority(name string) (int32, error) {
	for _, t := range tiers.BuiltIn {
		if t.Name == name {
			return t.Priority, nil
		}
	}
	o, ok, err := c.tierIndexer.GetByKey(name)
	if err != nil || !ok {
		return 0, fmt.Errorf("tier %q does not exist", name)
	}
	var t crdv1.Tier
	if err := fromUnstructured(o, &t); err != nil {
		return 0, fmt.Errorf("tier %q: %w", name, err)
	}
	if err := tiers.ValidateCustomPriority(t.Spec.Priority); err != nil {
		return 0, fmt.Errorf("tier %q: %w", name, err)
	}
	return t.Spec.Priority, nil
}

func fromUnstructured(o any, into any) error {
	u, ok := o.(*unstructured.Unstructured)
	if !ok {
		return fmt.Errorf("unexpected object %T", o)
	}
	return runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, into)
}

// syncClusterPolicy recomputes the internal policy of one
// ClusterNetworkPolicy. Call with c.mu held.
func (c *Controller) syncClusterPolicy(key, name string) {
	o, ok, err := c.cnpIndexer.GetByKey(name)
	if err != nil {
		c.log.Error("get cluster network policy", "name", name, "error", err)
		return
	}
	if !ok {
		c.forgetPolicy(key)
		return
	}
	var cnp crdv1.ClusterNetworkPolicy
	if err := fromUnstructured(o, &cnp); err != nil {
		// The CRD's schema makes this unreachable for stored objects;
		// keep the last translation rather than open anything.
		c.log.Error("decode cluster network policy: keeping its last translation", "name", name, "error", err)
		return
	}
	obj, atgs, ags, groups := c.translateCluster(&cnp)
	if obj.TranslationError != "" {
		c.log.Warn("cluster network policy only partly translated", "name", name, "error", obj.TranslationError)
	}
	c.storePolicy(key, obj, atgs, ags)
	c.useGroups(key, groups)
}

// clusterInternalName names the internal policy of a ClusterNetworkPolicy
// after its UID, or a hash of its kind and name when it has none (tests).
func clusterInternalName(cnp *crdv1.ClusterNetworkPolicy) string {
	if cnp.UID != "" {
		return string(cnp.UID)
	}
	sum := sha256.Sum256([]byte("ClusterNetworkPolicy/" + cnp.Name))
	return hex.EncodeToString(sum[:16])
}

// translateCluster builds the internal policy of a ClusterNetworkPolicy
// and takes references on its groups. Like translate it never fails; what
// it cannot translate is named in TranslationError (the policy's status is
// then Failed):
//
//   - an unknown tier: the policy gets no rules (it is not enforced, and
//     says so), since no place in the order can be guessed for it;
//   - an appliedTo entry that cannot be parsed or selects nothing
//     explicitly (neither selector) is left out; a rule whose own appliedTo
//     (the policy has none) is left out whole, or that has none, is left
//     out; appliedTo on the policy and on rules (refused by the CRD's
//     validation) is enforced with each rule's own, or the policy's;
//   - a peer that cannot be parsed is left out of an Allow rule (a rule
//     whose peers are all left out matches nothing: it allows less); a
//     deny rule never denies less for it: a Drop or Reject takes every
//     address instead, a Pass becomes a Drop of every address (a Pass
//     narrowed or left out lets a later tier's Allow decide);
//   - an action this controller does not know becomes a Drop.
//
// The agent does the same with what it cannot realize (core/agent/policy,
// failClosed).
func (c *Controller) translateCluster(cnp *crdv1.ClusterNetworkPolicy) (obj *controlplane.NetworkPolicy, atgs, ags []*group, groups []string) {
	tier := tierName(cnp.Spec.Tier)
	tp, err := c.tierPriority(tier)
	return c.translateTiered(tieredSpec{
		ref:  controlplane.NetworkPolicyReference{Type: controlplane.SeineClusterNetworkPolicy, Name: cnp.Name, UID: string(cnp.UID)},
		name: clusterInternalName(cnp), generation: cnp.Generation,
		tier: tier, tierPriority: tp, tierErr: err, priority: cnp.Spec.Priority,
		appliedTo: cnp.Spec.AppliedTo, ingress: cnp.Spec.Ingress, egress: cnp.Spec.Egress,
	})
}

// tieredSpec is a tiered policy of any kind (Seine's ClusterNetworkPolicy,
// the upstream one) in Seine's terms, for translateTiered.
type tieredSpec struct {
	ref          controlplane.NetworkPolicyReference
	name         string
	generation   int64
	tier         string
	tierPriority int32
	tierErr      error
	priority     float64
	// namespace confines a namespaced policy's selections (empty: a
	// cluster-wide policy).
	namespace       string
	appliedTo       []crdv1.AppliedTo
	ingress, egress []crdv1.Rule
	// peerErrs are peers of a rule ("ingress/<i>", "egress/<i>") that
	// have no Seine equivalent, treated as peers that do not parse.
	peerErrs map[string][]error
}

// translateTiered also returns the ClusterGroups it read.
func (c *Controller) translateTiered(sp tieredSpec) (obj *controlplane.NetworkPolicy, atgs, ags []*group, groups []string) {
	var problems []string
	tier := sp.tier
	prio := sp.priority
	ref := sp.ref
	obj = &controlplane.NetworkPolicy{
		SourceRef: &ref,
		Tier:      tier,
		Priority:  &prio,
	}
	obj.Name = sp.name
	obj.Generation = sp.generation
	// appliedTo adds the groups of entries to the policy's (the union every
	// node of its span receives) and returns their names.
	appliedTo := func(what string, entries []crdv1.AppliedTo) []string {
		var names []string
		for i, at := range entries {
			sels, err := c.appliedToSelections(at, sp.namespace, &groups)
			if err != nil {
				problems = append(problems, fmt.Sprintf("%sappliedTo %d: %v: left out", what, i, err))
				continue
			}
			for _, gs := range sels {
				g := c.ensureGroup(appliedToKind, gs)
				atgs = append(atgs, g)
				if !containsString(names, g.name) {
					names = append(names, g.name)
				}
				if !containsString(obj.AppliedToGroups, g.name) {
					obj.AppliedToGroups = append(obj.AppliedToGroups, g.name)
				}
			}
		}
		return names
	}
	policyATGs := appliedTo("", sp.appliedTo)
	perRule := false
	for _, r := range slices.Concat(sp.ingress, sp.egress) {
		perRule = perRule || len(r.AppliedTo) > 0
	}
	switch {
	case perRule && len(sp.appliedTo) > 0:
		// The kube-apiserver refuses this (the CRD's validation); one
		// stored before is enforced with what each rule says.
		problems = append(problems, "appliedTo is set on the policy and on rules, not on one or the other: "+
			"each rule applies to its own appliedTo, a rule without one to the policy's")
	case !perRule && len(sp.appliedTo) == 0 && len(sp.ingress)+len(sp.egress) > 0:
		problems = append(problems, "no appliedTo on the policy nor on its rules: it applies to no pod")
	}
	tp, err := sp.tierPriority, sp.tierErr
	if err != nil {
		problems = append(problems, fmt.Sprintf("%v: the policy is not enforced", err))
		obj.TranslationError = strings.Join(problems, "; ")
		return obj, atgs, ags, groups
	}
	obj.TierPriority = &tp
	for _, d := range []struct {
		dir   controlplane.Direction
		name  string
		rules []crdv1.Rule
	}{
		{controlplane.DirectionIn, "ingress", sp.ingress},
		{controlplane.DirectionOut, "egress", sp.egress},
	} {
		for i, r := range d.rules {
			// A rule applies to the pods of its own appliedTo when the
			// policy's rules have one (then every rule names its groups:
			// an empty list means the policy's, and the policy's list is
			// the union of the rules').
			var ruleATGs []string
			if perRule {
				ruleATGs = policyATGs
				if len(r.AppliedTo) > 0 {
					ruleATGs = appliedTo(fmt.Sprintf("%s rule %d: ", d.name, i), r.AppliedTo)
				} else if len(sp.appliedTo) == 0 {
					problems = append(problems, fmt.Sprintf("%s rule %d: no appliedTo (nor on the policy): left out", d.name, i))
				}
				if len(ruleATGs) == 0 {
					// It applies to no pod (yet: a ClusterGroup not
					// created; or its entries were left out).
					continue
				}
			}
			peers := r.From
			if d.dir == controlplane.DirectionOut {
				peers = r.To
			}
			peer, errs := c.clusterPeer(peers, sp.namespace, &ags, &groups)
			if d.dir == controlplane.DirectionIn && len(peer.DomainNames) > 0 {
				// A name is learned from the answers the rule's own pods
				// receive: it cannot stand for a client.
				errs = append(errs, fmt.Errorf("fqdn peers are for egress rules"))
				peer.DomainNames = nil
			}
			if extra := sp.peerErrs[fmt.Sprintf("%s/%d", d.name, i)]; len(extra) > 0 {
				if len(peers) == 0 {
					// Every peer had no equivalent: the rule matches
					// nothing (no peers would mean every address).
					peer = controlplane.NetworkPolicyPeer{}
				}
				errs = append(errs, extra...)
			}
			action := controlplane.RuleAction(r.Action)
			switch action {
			case controlplane.RuleActionAllow, controlplane.RuleActionDrop, controlplane.RuleActionReject, controlplane.RuleActionPass:
			default:
				problems = append(problems, fmt.Sprintf("%s rule %d: unknown action %q: installed as Drop (fails closed)", d.name, i, r.Action))
				action = controlplane.RuleActionDrop
			}
			// A bad peer of an Allow rule is left out (it allows less); of
			// a deny rule it would deny less: the rule takes every address
			// instead, and a Pass becomes a Drop (core/tiers/README.md,
			// "Rules that cannot be realized").
			for _, err := range errs {
				switch action {
				case controlplane.RuleActionAllow:
					problems = append(problems, fmt.Sprintf("%s rule %d: %v: peer left out", d.name, i, err))
				case controlplane.RuleActionPass:
					problems = append(problems, fmt.Sprintf("%s rule %d: %v: installed as Drop of every address (fails closed)", d.name, i, err))
				default:
					problems = append(problems, fmt.Sprintf("%s rule %d: %v: %s of every address (fails closed)", d.name, i, err, action))
				}
			}
			if len(errs) > 0 && action != controlplane.RuleActionAllow {
				peer = matchAll()
				if action == controlplane.RuleActionPass {
					action = controlplane.RuleActionDrop
				}
			}
			rule := controlplane.NetworkPolicyRule{
				Direction: d.dir, Services: services(clusterPorts(r.Ports)),
				Priority: int32(i), Action: &action, Name: r.Name,
				AppliedToGroups: ruleATGs, EnableLogging: r.EnableLogging,
			}
			if d.dir == controlplane.DirectionIn {
				rule.From = peer
			} else {
				rule.To = peer
			}
			obj.Rules = append(obj.Rules, rule)
		}
	}
	obj.TranslationError = strings.Join(problems, "; ")
	return obj, atgs, ags, groups
}

// appliedToSelections is the pod selections of one appliedTo entry: its
// selectors, or the ClusterGroup it names (whose IP blocks cannot be
// applied to).
func (c *Controller) appliedToSelections(at crdv1.AppliedTo, namespace string, groups *[]string) ([]*groupSelector, error) {
	if namespace != "" {
		return namespacedAppliedTo(at, namespace)
	}
	if at.Group == "" {
		gs, err := clusterSelection(at.PodSelector, at.NamespaceSelector)
		if err != nil {
			return nil, err
		}
		return []*groupSelector{gs}, nil
	}
	if at.PodSelector != nil || at.NamespaceSelector != nil {
		return nil, fmt.Errorf("group %s with a selector beside it (a group stands alone in its entry)", at.Group)
	}
	r, err := c.resolveGroup(at.Group, groups)
	if err != nil {
		return nil, err
	}
	if len(r.blocks) > 0 {
		return nil, fmt.Errorf("group %s holds ipBlocks: a policy applies to pods only", at.Group)
	}
	return r.sels, nil
}

// clusterSelection is a cluster-wide pod selection: podSelector alone
// selects in every namespace, namespaceSelector alone every pod of the
// selected namespaces, both the selected pods of the selected namespaces.
func clusterSelection(podSel, nsSel *metav1.LabelSelector) (*groupSelector, error) {
	if podSel == nil && nsSel == nil {
		return nil, fmt.Errorf("neither podSelector nor namespaceSelector")
	}
	pod, err := parseSelector(podSel)
	if err != nil {
		return nil, fmt.Errorf("podSelector: %w", err)
	}
	ns, err := parseSelector(nsSel)
	if err != nil {
		return nil, fmt.Errorf("namespaceSelector: %w", err)
	}
	return &groupSelector{pod: pod, ns: ns}, nil
}

// clusterPeer translates a tiered rule's peers as peer does a Kubernetes
// rule's, with cluster-wide selections; no peers means every address.
func (c *Controller) clusterPeer(peers []crdv1.Peer, namespace string, ags *[]*group, groups *[]string) (controlplane.NetworkPolicyPeer, []error) {
	if len(peers) == 0 {
		return matchAll(), nil
	}
	var out controlplane.NetworkPolicyPeer
	var errs []error
	addSel := func(gs *groupSelector) {
		g := c.ensureGroup(addressKind, gs)
		*ags = append(*ags, g)
		if !containsString(out.AddressGroups, g.name) {
			out.AddressGroups = append(out.AddressGroups, g.name)
		}
	}
	for i, pr := range peers {
		if pr.FQDN != "" {
			if pr.Group != "" || pr.PodSelector != nil || pr.NamespaceSelector != nil || pr.IPBlock != nil || pr.NodeSelector != nil {
				errs = append(errs, fmt.Errorf("peer %d: fqdn with a selector, ipBlock or group beside it (an fqdn stands alone in its entry)", i))
				continue
			}
			p, err := fqdn.ParsePattern(pr.FQDN)
			if err != nil {
				errs = append(errs, fmt.Errorf("peer %d: fqdn: %w", i, err))
				continue
			}
			if !containsString(out.DomainNames, p.String()) {
				out.DomainNames = append(out.DomainNames, p.String())
			}
			continue
		}
		if pr.NodeSelector != nil {
			if pr.Group != "" || pr.PodSelector != nil || pr.NamespaceSelector != nil || pr.IPBlock != nil {
				errs = append(errs, fmt.Errorf("peer %d: nodeSelector with a selector, ipBlock or group beside it (a nodeSelector stands alone in its entry)", i))
				continue
			}
			gs, err := nodeSelection(pr.NodeSelector)
			if err != nil {
				errs = append(errs, fmt.Errorf("peer %d: nodeSelector: %w", i, err))
				continue
			}
			addSel(gs)
			continue
		}
		if pr.Group != "" && namespace != "" {
			errs = append(errs, fmt.Errorf("peer %d: group %s: ClusterGroups are for cluster-wide policies", i, pr.Group))
			continue
		}
		if pr.Group != "" {
			if pr.PodSelector != nil || pr.NamespaceSelector != nil || pr.IPBlock != nil {
				errs = append(errs, fmt.Errorf("peer %d: group %s with a selector or ipBlock beside it (a group stands alone in its entry)", i, pr.Group))
				continue
			}
			r, err := c.resolveGroup(pr.Group, groups)
			if err != nil {
				errs = append(errs, fmt.Errorf("peer %d: %w", i, err))
				continue
			}
			for _, gs := range r.sels {
				addSel(gs)
			}
			out.IPBlocks = append(out.IPBlocks, r.blocks...)
			continue
		}
		if pr.IPBlock != nil {
			if pr.PodSelector != nil || pr.NamespaceSelector != nil {
				errs = append(errs, fmt.Errorf("peer %d: ipBlock with a selector", i))
				continue
			}
			b, err := ipBlock(&networkingv1.IPBlock{CIDR: pr.IPBlock.CIDR, Except: pr.IPBlock.Except})
			if err != nil {
				errs = append(errs, fmt.Errorf("peer %d: %w", i, err))
				continue
			}
			out.IPBlocks = append(out.IPBlocks, b)
			continue
		}
		gs, err := clusterSelection(pr.PodSelector, pr.NamespaceSelector)
		if err == nil && namespace != "" && pr.NamespaceSelector == nil {
			// A podSelector alone selects in the policy's namespace.
			gs.ns, gs.namespace = nil, namespace
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("peer %d: %w", i, err))
			continue
		}
		addSel(gs)
	}
	return out, errs
}

func clusterPorts(ports []crdv1.NetworkPolicyPort) []networkingv1.NetworkPolicyPort {
	out := make([]networkingv1.NetworkPolicyPort, 0, len(ports))
	for _, p := range ports {
		out = append(out, networkingv1.NetworkPolicyPort{Protocol: p.Protocol, Port: p.Port, EndPort: p.EndPort})
	}
	return out
}

func containsString(ss []string, s string) bool {
	for _, x := range ss {
		if x == s {
			return true
		}
	}
	return false
}

// EnsureBuiltInTiers creates the built-in tiers that do not exist yet. The
// kube-apiserver keeps them from being deleted or moved (seine.yml's
// ValidatingAdmissionPolicy seine-tiers); the controller orders policies of
// built-in tiers by their fixed priorities whether their objects exist or
// not, so this is for people (kubectl get tiers), not for enforcement.
func EnsureBuiltInTiers(ctx context.Context, dc dynamic.Interface) error {
	var errs []error
	for _, t := range tiers.BuiltIn {
		o := &crdv1.Tier{
			TypeMeta:   metav1.TypeMeta{APIVersion: crdv1.SchemeGroupVersion.String(), Kind: "Tier"},
			ObjectMeta: metav1.ObjectMeta{Name: t.Name, Labels: map[string]string{"app": "seine"}},
			Spec:       crdv1.TierSpec{Priority: t.Priority, Description: "built in (seine-controller)"},
		}
		m, err := runtime.DefaultUnstructuredConverter.ToUnstructured(o)
		if err != nil {
			return err
		}
		_, err = dc.Resource(crdv1.TiersResource).Create(ctx, &unstructured.Unstructured{Object: m}, metav1.CreateOptions{})
		if err != nil && !apierrors.IsAlreadyExists(err) {
			errs = append(errs, fmt.Errorf("create tier %s: %w", t.Name, err))
		}
	}
	return errors.Join(errs...)
}
