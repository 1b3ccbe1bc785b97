package controller

import (
	"net/netip"
	"slices"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/tools/cache"

	controlplane "github.com/seine-cni/seine/core/apis/controlplane/v1beta1"
)

// podInfo is what the pod informer keeps of a pod: its transform reduces
// every Pod to this, a few hundred bytes instead of the kilobytes of a Pod,
// with the addresses already parsed. IPs and ports are never modified, so
// copies share them.
type podInfo struct {
	metav1.ObjectMeta // name, namespace, UID, resourceVersion and labels only
	nodeName          string
	ips               []controlplane.IPAddress
	ports             []controlplane.NamedPort
	// eligible: bound to a node, not on the host network, not terminated.
	// Such a pod is applied to (AppliedToGroups) from the moment the
	// scheduler binds it, before it has an IP, so its node isolates it
	// before its first packet; it is a peer (AddressGroups) once it has an
	// IP as well.
	eligible bool
}

func (p *podInfo) GetObjectKind() schema.ObjectKind { return schema.EmptyObjectKind }

func (p *podInfo) DeepCopyObject() runtime.Object {
	c := *p
	p.ObjectMeta.DeepCopyInto(&c.ObjectMeta)
	return &c
}

// trimPod reduces what the pod informer lists and watches to a podInfo;
// anything else is returned as it is.
func trimPod(o runtime.Object) runtime.Object {
	pod, ok := o.(*corev1.Pod)
	if !ok {
		return o
	}
	ips := podIPs(pod)
	return &podInfo{
		ObjectMeta: metav1.ObjectMeta{
			Name: pod.Name, Namespace: pod.Namespace, UID: pod.UID,
			ResourceVersion: pod.ResourceVersion, Labels: pod.Labels,
		},
		nodeName: pod.Spec.NodeName,
		ips:      ips,
		ports:    namedPorts(pod),
		// Host-network pods share the node's IP and have no OVS port: like
		// Antrea, Seine leaves them out of groups.
		eligible: pod.Spec.NodeName != "" && !pod.Spec.HostNetwork &&
			pod.Status.Phase != corev1.PodSucceeded && pod.Status.Phase != corev1.PodFailed,
	}
}

func trimNamespace(o runtime.Object) runtime.Object {
	ns, ok := o.(*corev1.Namespace)
	if !ok {
		return o
	}
	return &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{
		Name: ns.Name, UID: ns.UID, ResourceVersion: ns.ResourceVersion, Labels: ns.Labels,
	}}
}

func trimPolicy(o runtime.Object) runtime.Object {
	np, ok := o.(*networkingv1.NetworkPolicy)
	if !ok {
		return o
	}
	return &networkingv1.NetworkPolicy{
		ObjectMeta: metav1.ObjectMeta{
			Name: np.Name, Namespace: np.Namespace, UID: np.UID,
			ResourceVersion: np.ResourceVersion, Generation: np.Generation,
		},
		Spec: np.Spec,
	}
}

// podIPs returns the pod's addresses as raw bytes, in one allocation.
func podIPs(pod *corev1.Pod) []controlplane.IPAddress {
	var addrs []netip.Addr
	for _, ip := range pod.Status.PodIPs {
		if a, err := netip.ParseAddr(ip.IP); err == nil {
			addrs = append(addrs, a.Unmap())
		}
	}
	if len(addrs) == 0 && pod.Status.PodIP != "" {
		if a, err := netip.ParseAddr(pod.Status.PodIP); err == nil {
			addrs = append(addrs, a.Unmap())
		}
	}
	if len(addrs) == 0 {
		return nil
	}
	size := 0
	for _, a := range addrs {
		size += a.BitLen() / 8
	}
	buf := make([]byte, 0, size)
	out := make([]controlplane.IPAddress, 0, len(addrs))
	for _, a := range addrs {
		start := len(buf)
		buf = append(buf, a.AsSlice()...)
		out = append(out, controlplane.IPAddress(buf[start:len(buf):len(buf)]))
	}
	return out
}

func namedPorts(pod *corev1.Pod) []controlplane.NamedPort {
	var out []controlplane.NamedPort
	for _, ct := range pod.Spec.Containers {
		for _, p := range ct.Ports {
			if p.Name == "" {
				continue
			}
			proto := controlplane.Protocol(p.Protocol)
			if proto == "" {
				proto = controlplane.ProtocolTCP
			}
			out = append(out, controlplane.NamedPort{Name: p.Name, Port: p.ContainerPort, Protocol: proto})
		}
	}
	return out
}

func ipsEqual(a, b []controlplane.IPAddress) bool {
	return slices.EqualFunc(a, b, func(x, y controlplane.IPAddress) bool { return slices.Equal(x, y) })
}

func (c *Controller) onPod(o any) {
	pod, ok := o.(*podInfo)
	if !ok {
		return
	}
	ips, ports, eligible := pod.ips, pod.ports, pod.eligible
	nodeID := int32(-1)
	if pod.nodeName != "" {
		nodeID = c.nodes.id(pod.nodeName)
	}

	c.mu.Lock()
	defer c.mu.Unlock()
	n := c.idx.ns(pod.Namespace)
	p := n.pods[pod.Name]
	var cands []*group
	changed := true
	if p == nil {
		p = &podEntry{name: pod.Name, namespace: pod.Namespace}
	} else {
		cands = c.candidates(n, p.labels, cands)
		n.unindexPod(p)
		changed = p.node != pod.nodeName || p.eligible != eligible ||
			!ipsEqual(p.ips, ips) || !slices.Equal(p.ports, ports)
	}
	if changed {
		p.ips, p.ports, p.node, p.nodeID, p.eligible = ips, ports, pod.nodeName, nodeID, eligible
	}
	p.labels = pod.Labels
	n.indexPod(p)
	cands = c.candidates(n, p.labels, cands)
	for _, g := range cands {
		c.reconcileMember(g, n, p, changed)
	}
}

func (c *Controller) onPodDelete(o any) {
	if d, ok := o.(cache.DeletedFinalStateUnknown); ok {
		o = d.Obj
	}
	pod, ok := o.(*podInfo)
	if !ok {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	n := c.idx.namespaces[pod.Namespace]
	if n == nil {
		return
	}
	p := n.pods[pod.Name]
	if p == nil {
		return
	}
	for _, g := range c.candidates(n, p.labels, nil) {
		if _, ok := g.members[p]; ok {
			delete(g.members, p)
			c.markGroup(g)
		}
	}
	n.unindexPod(p)
	c.idx.maybeDropNS(n)
}

func (c *Controller) onNamespace(o any) {
	ns, ok := o.(*corev1.Namespace)
	if !ok {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	n := c.idx.ns(ns.Name)
	c.idx.setNamespaceLabels(n, true, ns.Labels)
	c.reconcileNamespace(n)
}

func (c *Controller) onNamespaceDelete(o any) {
	if d, ok := o.(cache.DeletedFinalStateUnknown); ok {
		o = d.Obj
	}
	ns, ok := o.(*corev1.Namespace)
	if !ok {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	n := c.idx.namespaces[ns.Name]
	if n == nil {
		return
	}
	c.idx.setNamespaceLabels(n, false, nil)
	c.reconcileNamespace(n)
	c.idx.maybeDropNS(n)
}

// reconcileNamespace re-evaluates the namespace's pods against every group
// with a namespaceSelector, after the namespace's labels changed.
func (c *Controller) reconcileNamespace(n *nsEntry) {
	for g := range c.clusterGroups {
		for _, p := range n.pods {
			c.reconcileMember(g, n, p, false)
		}
	}
}
