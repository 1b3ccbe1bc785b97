package controller

import (
	"context"
	"net/netip"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"

	controlplane "github.com/seine-cni/seine/core/apis/controlplane/v1beta1"
)

// Nodes as peers: a tiered rule's peer `nodeSelector` selects Nodes by
// label and means their addresses (every InternalIP and ExternalIP of
// status.addresses). Such a selection is an AddressGroup of its own kind,
// whose members are Nodes (GroupMember.Node) rather than pods; it follows
// Nodes as they come, go and change labels or addresses.

type nodesKey struct{ corev1.Node }

// nodeInfo is what the node informer keeps of a Node: its labels and its
// InternalIP and ExternalIP addresses, parsed.
type nodeInfo struct {
	metav1.ObjectMeta // name, UID, resourceVersion and labels only
	ips               []controlplane.IPAddress
}

func (n *nodeInfo) GetObjectKind() schema.ObjectKind { return schema.EmptyObjectKind }

func (n *nodeInfo) DeepCopyObject() runtime.Object {
	c := *n
	n.ObjectMeta.DeepCopyInto(&c.ObjectMeta)
	return &c
}

// trimNode reduces a Node to a nodeInfo; anything else is returned as it is.
func trimNode(o runtime.Object) runtime.Object {
	n, ok := o.(*corev1.Node)
	if !ok {
		return o
	}
	return &nodeInfo{
		ObjectMeta: metav1.ObjectMeta{Name: n.Name, UID: n.UID, ResourceVersion: n.ResourceVersion, Labels: n.Labels},
		ips:        nodeIPs(n),
	}
}

// nodeIPs returns the node's InternalIP and ExternalIP addresses, each once,
// in the order of status.addresses.
func nodeIPs(n *corev1.Node) []controlplane.IPAddress {
	var out []controlplane.IPAddress
	seen := map[netip.Addr]bool{}
	for _, a := range n.Status.Addresses {
		if a.Type != corev1.NodeInternalIP && a.Type != corev1.NodeExternalIP {
			continue
		}
		ip, err := netip.ParseAddr(a.Address)
		if err != nil {
			continue
		}
		ip = ip.Unmap()
		if seen[ip] {
			continue
		}
		seen[ip] = true
		out = append(out, controlplane.IPAddress(ip.AsSlice()))
	}
	return out
}

// nodeInformer is the controller's trimmed Node informer, registered in
// factory.
func nodeInformer(factory informers.SharedInformerFactory) cache.SharedIndexInformer {
	return factory.InformerFor(&nodesKey{}, func(cs kubernetes.Interface, resync time.Duration) cache.SharedIndexInformer {
		return newTrimmedInformer(cs, &nodeInfo{}, resync, trimNode,
			func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
				return cs.CoreV1().Nodes().List(ctx, o)
			},
			func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
				return cs.CoreV1().Nodes().Watch(ctx, o)
			})
	})
}

func (c *Controller) onNode(o any) {
	n, ok := o.(*nodeInfo)
	if !ok {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	e := c.nodeEntries[n.Name]
	changed := true
	if e == nil {
		e = &podEntry{name: n.Name, node: n.Name, nodeID: -1, eligible: true, isNode: true}
		c.nodeEntries[n.Name] = e
	} else {
		changed = !ipsEqual(e.ips, n.ips)
	}
	e.ips, e.labels = n.ips, n.Labels
	for g := range c.nodeGroups {
		c.reconcileNode(g, e, changed)
	}
}

func (c *Controller) onNodeDelete(o any) {
	if d, ok := o.(cache.DeletedFinalStateUnknown); ok {
		o = d.Obj
	}
	n, ok := o.(*nodeInfo)
	if !ok {
		return
	}
	c.forgetNode(n.Name)
	for _, fn := range c.nodeDeleted {
		fn(n.Name)
	}
}

// NodeExists reports whether the cluster has a Node of that name, as the
// controller's Node informer sees it; synced is false until the informer
// has listed the Nodes once (exists means nothing then).
func (c *Controller) NodeExists(name string) (exists, synced bool) {
	if !c.nodesSynced() {
		return false, false
	}
	_, exists, err := c.nodeIndexer.GetByKey(name)
	return exists && err == nil, true
}

// OnNodeDelete has fn called with the name of every Node deleted, after
// the controller's groups of Nodes let it go (seine-controller drops the
// node's realization report). Call it before the informers start.
func (c *Controller) OnNodeDelete(fn func(name string)) {
	c.nodeDeleted = append(c.nodeDeleted, fn)
}

// forgetNode takes a deleted Node out of every group of Nodes.
func (c *Controller) forgetNode(name string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e := c.nodeEntries[name]
	if e == nil {
		return
	}
	for g := range c.nodeGroups {
		if _, ok := g.members[e]; ok {
			delete(g.members, e)
			c.markGroup(g)
		}
	}
	delete(c.nodeEntries, name)
}

// reconcileNode updates whether node e belongs to the node group g: it does
// when its labels match and it has an address.
func (c *Controller) reconcileNode(g *group, e *podEntry, addrsChanged bool) {
	_, was := g.members[e]
	is := len(e.ips) > 0 && g.sel.node.matches(e.labels)
	switch {
	case was && !is:
		delete(g.members, e)
		c.markGroup(g)
	case !was && is:
		g.members[e] = struct{}{}
		c.markGroup(g)
	case is && addrsChanged:
		c.markGroup(g)
	}
}

// nodeSelection is the AddressGroup selection of a peer's nodeSelector.
func nodeSelection(ls *metav1.LabelSelector) (*groupSelector, error) {
	sel, err := parseSelector(ls)
	if err != nil {
		return nil, err
	}
	return &groupSelector{node: sel}, nil
}
