package controller

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"

	"k8s.io/client-go/dynamic/dynamicinformer"
	"k8s.io/client-go/tools/cache"

	controlplane "github.com/seine-cni/seine/core/apis/controlplane/v1beta1"
	crdv1 "github.com/seine-cni/seine/core/apis/crd/v1beta1"
)

// snpKeyPrefix starts the work queue key of a Seine (namespaced)
// NetworkPolicy, followed by its namespace/name.
const snpKeyPrefix = "snp:"

// AddNamespacedTiered makes the controller compute Seine's namespaced
// NetworkPolicies (crd.seine.io) from the informers of f, on the path of
// ClusterNetworkPolicies, their selections confined to their namespace.
// Call it after AddTiered and before f.Start and Run.
func (c *Controller) AddNamespacedTiered(f dynamicinformer.DynamicSharedInformerFactory) error {
	inf := f.ForResource(crdv1.NetworkPoliciesResource).Informer()
	reg, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: c.enqueueNamespaced, UpdateFunc: func(_, o any) { c.enqueueNamespaced(o) }, DeleteFunc: c.enqueueNamespaced,
	})
	if err != nil {
		return fmt.Errorf("add informer event handler: %w", err)
	}
	c.synced = append(c.synced, reg.HasSynced)
	c.snpIndexer = inf.GetIndexer()
	return nil
}

func (c *Controller) enqueueNamespaced(o any) {
	key, err := cache.DeletionHandlingMetaNamespaceKeyFunc(o)
	if err != nil {
		c.log.Error("seine network policy key", "error", err)
		return
	}
	c.enqueueKey(snpKeyPrefix + key)
}

// syncNamespacedPolicy recomputes the internal policy of one namespaced
// Seine NetworkPolicy (nsName is namespace/name). Call with c.mu held.
func (c *Controller) syncNamespacedPolicy(key, nsName string) {
	o, ok, err := c.snpIndexer.GetByKey(nsName)
	if err != nil {
		c.log.Error("get seine network policy", "key", nsName, "error", err)
		return
	}
	if !ok {
		c.forgetPolicy(key)
		return
	}
	var np crdv1.NetworkPolicy
	if err := fromUnstructured(o, &np); err != nil {
		c.log.Error("decode seine network policy: keeping its last translation", "key", nsName, "error", err)
		return
	}
	tier := tierName(np.Spec.Tier)
	tp, tierErr := c.tierPriority(tier)
	obj, atgs, ags, groups := c.translateTiered(tieredSpec{
		ref: controlplane.NetworkPolicyReference{
			Type: controlplane.SeineNetworkPolicy, Namespace: np.Namespace, Name: np.Name, UID: string(np.UID),
		},
		name: namespacedInternalName(&np), generation: np.Generation, namespace: np.Namespace,
		tier: tier, tierPriority: tp, tierErr: tierErr, priority: np.Spec.Priority,
		appliedTo: np.Spec.AppliedTo, ingress: np.Spec.Ingress, egress: np.Spec.Egress,
	})
	obj.Namespace = np.Namespace
	if obj.TranslationError != "" {
		c.log.Warn("seine network policy only partly translated", "key", nsName, "error", obj.TranslationError)
	}
	c.storePolicy(key, obj, atgs, ags)
	c.useGroups(key, groups)
}

// namespacedInternalName names the internal policy after the object's
// UID, or a hash of its kind, namespace and name when it has none (tests).
func namespacedInternalName(np *crdv1.NetworkPolicy) string {
	if np.UID != "" {
		return string(np.UID)
	}
	sum := sha256.Sum256([]byte("crd.seine.io/NetworkPolicy/" + np.Namespace + "/" + np.Name))
	return hex.EncodeToString(sum[:16])
}

// namespacedAppliedTo is the selection of one appliedTo entry of a
// namespaced policy: pods of its namespace, by podSelector only.
func namespacedAppliedTo(at crdv1.AppliedTo, namespace string) ([]*groupSelector, error) {
	switch {
	case at.Group != "":
		return nil, fmt.Errorf("group %s: ClusterGroups are for cluster-wide policies", at.Group)
	case at.NamespaceSelector != nil:
		return nil, fmt.Errorf("namespaceSelector: a NetworkPolicy applies to pods of its own namespace (%s) only", namespace)
	case at.PodSelector == nil:
		return nil, fmt.Errorf("no podSelector")
	}
	pod, err := parseSelector(at.PodSelector)
	if err != nil {
		return nil, fmt.Errorf("podSelector: %w", err)
	}
	return []*groupSelector{{namespace: namespace, pod: pod}}, nil
}
