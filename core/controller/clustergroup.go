package controller

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"time"

	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/dynamic/dynamicinformer"
	"k8s.io/client-go/tools/cache"

	controlplane "github.com/seine-cni/seine/core/apis/controlplane/v1beta1"
	crdv1 "github.com/seine-cni/seine/core/apis/crd/v1beta1"
)

// AddClusterGroups makes the controller resolve ClusterGroups
// (crd.seine.io) that tiered policies name in their peers and appliedTo,
// from the informers of f. A change of a group recomputes the policies
// that read it, and only those. Call it after AddTiered and before f.Start
// and Run.
func (c *Controller) AddClusterGroups(f dynamicinformer.DynamicSharedInformerFactory) error {
	inf := f.ForResource(crdv1.ClusterGroupsResource).Informer()
	on := func(o any) {
		if d, ok := o.(cache.DeletedFinalStateUnknown); ok {
			o = d.Obj
		}
		u, ok := o.(*unstructured.Unstructured)
		if !ok {
			return
		}
		c.mu.Lock()
		keys := make([]string, 0, len(c.groupUsers[u.GetName()]))
		for k := range c.groupUsers[u.GetName()] {
			keys = append(keys, k)
		}
		c.mu.Unlock()
		for _, k := range keys {
			c.enqueueKey(k)
		}
	}
	reg, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: on, UpdateFunc: func(_, o any) { on(o) }, DeleteFunc: on,
	})
	if err != nil {
		return fmt.Errorf("add informer event handler: %w", err)
	}
	c.synced = append(c.synced, reg.HasSynced)
	c.cgIndexer = inf.GetIndexer()
	return nil
}

// useGroups records that the policy of key read the ClusterGroups names
// (nil: none any more), so a change of one of them recomputes it.
func (c *Controller) useGroups(key string, names []string) {
	p := c.policies[key]
	var old []string
	if p != nil {
		old = p.groups
	}
	for _, n := range old {
		removeFrom(c.groupUsers, n, key)
	}
	for _, n := range names {
		addTo(c.groupUsers, n, key)
	}
	if p != nil {
		p.groups = names
	}
}

// resolvedGroup is a ClusterGroup in the controller's terms: its pod
// selections and its address blocks, its children's included.
type resolvedGroup struct {
	sels   []*groupSelector
	blocks []controlplane.IPBlock
}

// getClusterGroup returns the ClusterGroup name, nil if it does not exist.
func (c *Controller) getClusterGroup(name string) (*crdv1.ClusterGroup, error) {
	if c.cgIndexer == nil {
		return nil, fmt.Errorf("ClusterGroups are not served (apply seine.yml's CustomResourceDefinitions and restart seine-controller)")
	}
	o, ok, err := c.cgIndexer.GetByKey(name)
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, nil
	}
	var g crdv1.ClusterGroup
	if err := fromUnstructured(o, &g); err != nil {
		return nil, fmt.Errorf("decode: %w", err)
	}
	return &g, nil
}

// resolveGroup resolves the ClusterGroup name, appending every group it
// reads to deps. A group that does not exist selects nothing (it may be
// created after the policy: its creation recomputes the policy). A group
// that cannot be resolved is an error naming the group and why.
func (c *Controller) resolveGroup(name string, deps *[]string) (resolvedGroup, error) {
	var out resolvedGroup
	*deps = append(*deps, name)
	g, err := c.getClusterGroup(name)
	if err != nil || g == nil {
		if err != nil {
			err = fmt.Errorf("group %s: %w", name, err)
		}
		return out, err
	}
	if err := groupKinds(&g.Spec); err != nil {
		return out, fmt.Errorf("group %s: %w", name, err)
	}
	if len(g.Spec.ChildGroups) == 0 {
		return out, addGroupMembers(&out, name, &g.Spec)
	}
	for _, child := range g.Spec.ChildGroups {
		if child == name {
			return out, fmt.Errorf("group %s: a cycle: it is its own child group", name)
		}
		*deps = append(*deps, child)
		cg, err := c.getClusterGroup(child)
		if err != nil {
			return out, fmt.Errorf("group %s: child group %s: %w", name, child, err)
		}
		if cg == nil {
			continue
		}
		if len(cg.Spec.ChildGroups) > 0 {
			if slices.Contains(cg.Spec.ChildGroups, name) {
				return out, fmt.Errorf("group %s: a cycle: its child group %s has %s as a child group", name, child, name)
			}
			return out, fmt.Errorf("group %s: child group %s has child groups of its own: ClusterGroups nest one level only", name, child)
		}
		if err := groupKinds(&cg.Spec); err != nil {
			return out, fmt.Errorf("group %s: child group %s: %w", name, child, err)
		}
		if err := addGroupMembers(&out, child, &cg.Spec); err != nil {
			return out, fmt.Errorf("group %s: %w", name, err)
		}
	}
	return out, nil
}

// groupKinds refuses a group of several kinds of member (the CRD's
// validation refuses it too; a stored object may predate it).
func groupKinds(s *crdv1.ClusterGroupSpec) error {
	var kinds []string
	if s.PodSelector != nil || s.NamespaceSelector != nil {
		kinds = append(kinds, "pods (podSelector, namespaceSelector)")
	}
	if len(s.IPBlocks) > 0 {
		kinds = append(kinds, "ipBlocks")
	}
	if len(s.ChildGroups) > 0 {
		kinds = append(kinds, "childGroups")
	}
	if len(kinds) > 1 {
		return fmt.Errorf("holds %s: a ClusterGroup holds one kind of member", strings.Join(kinds, " and "))
	}
	return nil
}

// addGroupMembers adds the pods or blocks of a group without children.
func addGroupMembers(out *resolvedGroup, name string, s *crdv1.ClusterGroupSpec) error {
	for i, b := range s.IPBlocks {
		blk, err := ipBlock(&networkingv1.IPBlock{CIDR: b.CIDR, Except: b.Except})
		if err != nil {
			return fmt.Errorf("group %s: ipBlocks %d: %w", name, i, err)
		}
		out.blocks = append(out.blocks, blk)
	}
	if s.PodSelector == nil && s.NamespaceSelector == nil {
		return nil
	}
	gs, err := clusterSelection(s.PodSelector, s.NamespaceSelector)
	if err != nil {
		return fmt.Errorf("group %s: %w", name, err)
	}
	out.sels = append(out.sels, gs)
	return nil
}

// ClusterGroupStatus is the status of the ClusterGroup name as the
// controller computes it now: its pods (eligible ones, as in policies;
// the first crdv1.MaxStatusPods listed), its blocks, or why it cannot be
// resolved. ok is false if the group does not exist.
func (c *Controller) ClusterGroupStatus(name string) (st crdv1.ClusterGroupStatus, ok bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	g, err := c.getClusterGroup(name)
	if g == nil {
		return st, false
	}
	st.ObservedGeneration = g.Generation
	var deps []string
	r, err := c.resolveGroup(name, &deps)
	if err != nil {
		st.Phase, st.Message = crdv1.ClusterGroupFailed, err.Error()
		return st, true
	}
	st.Phase = crdv1.ClusterGroupComputed
	seen := map[*podEntry]struct{}{}
	var pods []*podEntry
	for _, s := range r.sels {
		c.idx.eachNamespace(s.ns, func(n *nsEntry) {
			n.eachPod(s.pod, func(p *podEntry) {
				if _, dup := seen[p]; !dup {
					seen[p] = struct{}{}
					pods = append(pods, p)
				}
			})
		})
	}
	slices.SortFunc(pods, func(a, b *podEntry) int {
		if x := strings.Compare(a.namespace, b.namespace); x != 0 {
			return x
		}
		return strings.Compare(a.name, b.name)
	})
	st.PodCount = int32(len(pods))
	for _, p := range pods[:min(len(pods), crdv1.MaxStatusPods)] {
		m := crdv1.GroupMemberPod{Namespace: p.namespace, Name: p.name, Node: p.node}
		for _, ip := range p.ips {
			if a, ok := netip.AddrFromSlice(ip); ok {
				m.IPs = append(m.IPs, a.String())
			}
		}
		st.Pods = append(st.Pods, m)
	}
	for _, b := range r.blocks {
		blk := crdv1.IPBlock{CIDR: prefixString(b.CIDR)}
		for _, x := range b.Except {
			blk.Except = append(blk.Except, prefixString(x))
		}
		st.IPBlocks = append(st.IPBlocks, blk)
	}
	return st, true
}

func prefixString(n controlplane.IPNet) string {
	a, _ := netip.AddrFromSlice(n.IP)
	return netip.PrefixFrom(a, int(n.PrefixLength)).String()
}

// WriteClusterGroupStatus keeps every ClusterGroup's status its members
// as ClusterGroupStatus computes them, checking every interval until ctx
// ends and patching only what changed, so `kubectl get clustergroups`
// shows the pod counts and `-o yaml` the members.
func (c *Controller) WriteClusterGroupStatus(ctx context.Context, dc dynamic.Interface, every time.Duration) {
	written := map[string]crdv1.ClusterGroupStatus{}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if !c.started.Load() || c.cgIndexer == nil {
			continue
		}
		seen := map[string]bool{}
		for _, name := range c.cgIndexer.ListKeys() {
			st, ok := c.ClusterGroupStatus(name)
			if !ok {
				continue
			}
			seen[name] = true
			if w, ok := written[name]; ok && reflect.DeepEqual(w, st) {
				continue
			}
			// A merge patch replaces the lists whole; null clears them.
			body := map[string]any{"status": map[string]any{
				"observedGeneration": st.ObservedGeneration, "phase": st.Phase, "message": st.Message,
				"podCount": st.PodCount, "pods": st.Pods, "ipBlocks": st.IPBlocks,
			}}
			b, err := json.Marshal(body)
			if err != nil {
				continue
			}
			if _, err := dc.Resource(crdv1.ClusterGroupsResource).Patch(ctx, name, types.MergePatchType, b, metav1.PatchOptions{}, "status"); err != nil {
				c.log.Debug("write cluster group status", "name", name, "err", err)
				continue
			}
			written[name] = st
		}
		for name := range written {
			if !seen[name] {
				delete(written, name)
			}
		}
	}
}
