package proxy

import (
	"maps"
	"net/netip"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
)

// Slice is the part of an EndpointSlice the proxy reads (ParseSlice): its
// name, Service, family, trigger time, ports and endpoints, parsed. The
// agent's informer keeps it in place of the object (a transform), and the
// tracker keeps the same value: one compact copy of each slice in the
// process.
type Slice struct {
	metav1.TypeMeta
	// ObjectMeta holds the name, namespace, resource version and deletion
	// timestamp only.
	metav1.ObjectMeta
	// Service is the kubernetes.io/service-name label ("" for none);
	// Headless is set by the service.kubernetes.io/headless label.
	Service  string
	Headless bool
	IPv6     bool // the address type: IPv4 or IPv6 (FQDN slices have no endpoints here)
	// Trigger is the endpoints.kubernetes.io/last-change-trigger-time.
	Trigger time.Time
	// Ports maps name/PROTO to the slice's port number.
	Ports map[string]uint16
	// Endpoints have Port unset (the port number is per slice port) and
	// Local unset (the tracker knows the node).
	Endpoints []Endpoint
}

// DeepCopyObject makes Slice a runtime.Object (the informer's store keeps
// it). Endpoints' hints are shared: nothing changes them.
func (s *Slice) DeepCopyObject() runtime.Object {
	c := *s
	s.ObjectMeta.DeepCopyInto(&c.ObjectMeta)
	c.Ports = maps.Clone(s.Ports)
	c.Endpoints = slices.Clone(s.Endpoints)
	return &c
}

// ParseSlice reads what the proxy needs from s. Endpoints without an
// address of the slice's family, and ports without a name or number, are
// left out (kube-proxy does the same).
func ParseSlice(s *discoveryv1.EndpointSlice) *Slice {
	si := &Slice{
		ObjectMeta: metav1.ObjectMeta{Namespace: s.Namespace, Name: s.Name, UID: s.UID,
			ResourceVersion: s.ResourceVersion, DeletionTimestamp: s.DeletionTimestamp},
		Service: s.Labels[discoveryv1.LabelServiceName],
		IPv6:    s.AddressType == discoveryv1.AddressTypeIPv6,
		Ports:   map[string]uint16{},
	}
	_, si.Headless = s.Labels[LabelHeadless]
	si.Trigger, _ = triggerTime(s)
	if s.AddressType != discoveryv1.AddressTypeIPv4 && s.AddressType != discoveryv1.AddressTypeIPv6 {
		return si
	}
	for _, p := range s.Ports {
		if p.Name == nil || p.Port == nil || *p.Port <= 0 || *p.Port > 65535 {
			continue
		}
		proto := corev1.ProtocolTCP
		if p.Protocol != nil {
			proto = *p.Protocol
		}
		n, err := protoNumber(proto)
		if err != nil {
			continue
		}
		si.Ports[*p.Name+"/"+ProtoName(n)] = uint16(*p.Port)
	}
	si.Endpoints = make([]Endpoint, 0, len(s.Endpoints))
	for _, e := range s.Endpoints {
		if len(e.Addresses) == 0 {
			continue
		}
		ip, err := netip.ParseAddr(e.Addresses[0])
		if err != nil || ip.Unmap().Is4() == si.IPv6 {
			continue
		}
		ep := Endpoint{
			IP:          ip.Unmap(),
			Ready:       e.Conditions.Ready == nil || *e.Conditions.Ready,
			Serving:     e.Conditions.Serving == nil || *e.Conditions.Serving,
			Terminating: e.Conditions.Terminating != nil && *e.Conditions.Terminating,
		}
		if e.NodeName != nil {
			ep.Node = *e.NodeName
		}
		if e.Hints != nil && (len(e.Hints.ForZones) > 0 || len(e.Hints.ForNodes) > 0) {
			ep.hints = &hints{}
			for _, z := range e.Hints.ForZones {
				ep.hints.zones = append(ep.hints.zones, z.Name)
			}
			for _, n := range e.Hints.ForNodes {
				ep.hints.nodes = append(ep.hints.nodes, n.Name)
			}
		}
		si.Endpoints = append(si.Endpoints, ep)
	}
	return si
}

// triggerTime reads the slice's endpoints.kubernetes.io/last-change-trigger-time
// annotation: when the change it carries was triggered (a pod or Service
// change), for the network programming latency.
func triggerTime(s *discoveryv1.EndpointSlice) (time.Time, bool) {
	v, ok := s.Annotations[corev1.EndpointsLastChangeTriggerTime]
	if !ok {
		return time.Time{}, false
	}
	t, err := time.Parse(time.RFC3339Nano, v)
	if err != nil {
		return time.Time{}, false
	}
	return t, true
}

// endpointsOf merges the slices' endpoints of one service port (key
// name/PROTO). An address in two slices (an endpoint moving between slices,
// or a new pod reusing a terminating pod's IP) is taken once, preferring
// the entry that is not terminating. The result is sorted by address.
func endpointsOf(slices_ []*Slice, key, node string) []Endpoint {
	n := 0
	for _, si := range slices_ {
		if _, ok := si.Ports[key]; ok {
			n += len(si.Endpoints)
		}
	}
	all := make([]Endpoint, 0, n)
	for _, si := range slices_ { // sorted by name
		port, ok := si.Ports[key]
		if !ok {
			continue
		}
		for _, e := range si.Endpoints {
			e.Port = port
			e.Local = e.Node != "" && e.Node == node
			all = append(all, e)
		}
	}
	// Sorted by address (stable: slice order within one); of the entries
	// of one address the first that is not terminating, else the last.
	slices.SortStableFunc(all, func(a, b Endpoint) int { return a.AddrPort().Compare(b.AddrPort()) })
	out := all[:0]
	for i := 0; i < len(all); {
		j, pick := i+1, i
		for j < len(all) && all[j].AddrPort() == all[i].AddrPort() {
			j++
		}
		for k := i; k < j; k++ {
			pick = k
			if !all[k].Terminating {
				break
			}
		}
		out = append(out, all[pick])
		i = j
	}
	return out
}

// Topology modes (the values of spec.trafficDistribution that the
// EndpointSlice controller turns into hints).
const (
	topoNone     = ""
	topoSameZone = "PreferSameZone"
	topoSameNode = "PreferSameNode"
)

// topologyMode decides from the ready endpoints' hints whether this node
// filters by them: PreferSameNode when every ready endpoint has a node
// hint and one names this node; else PreferSameZone when every ready
// endpoint has a zone hint and one names this node's zone; else none. The
// fallback happens here, never per endpoint.
func topologyMode(eps []Endpoint, node, zone string) string {
	ready, allNode, forNode, allZone, forZone := false, true, false, true, false
	for _, e := range eps {
		if !e.Ready {
			continue
		}
		ready = true
		if len(e.nodeHints()) == 0 {
			allNode = false
		} else if slices.Contains(e.nodeHints(), node) {
			forNode = true
		}
		if len(e.zoneHints()) == 0 {
			allZone = false
		} else if slices.Contains(e.zoneHints(), zone) {
			forZone = true
		}
	}
	switch {
	case !ready:
		return topoNone
	case allNode && forNode:
		return topoSameNode
	case allZone && forZone:
		return topoSameZone
	}
	return topoNone
}

func availableForTopology(e Endpoint, mode, node, zone string) bool {
	switch mode {
	case topoSameNode:
		return slices.Contains(e.nodeHints(), node)
	case topoSameZone:
		return slices.Contains(e.zoneHints(), zone)
	}
	return true
}

// categorize fills p's endpoint lists from all of the port's endpoints, as
// kube-proxy's CategorizeEndpoints does: Cluster traffic uses the ready
// endpoints (topology-filtered), falling back to the serving terminating
// ones; Local traffic uses this node's ready endpoints, falling back to its
// serving terminating ones.
func categorize(p *Port, eps []Endpoint, node, zone string) {
	p.ClusterEndpoints, p.LocalEndpoints, p.HasEndpoints, p.Serving = nil, nil, false, nil
	serving := 0
	for _, e := range eps {
		if e.Serving {
			serving++
		}
	}
	if serving > 0 {
		p.Serving = make([]netip.AddrPort, 0, serving)
	}
	for _, e := range eps {
		if e.Serving {
			p.Serving = append(p.Serving, e.AddrPort())
		}
	}
	if len(eps) == 0 {
		if p.UsesClusterEndpoints() {
			p.ClusterEndpoints = []Endpoint{}
		}
		if p.UsesLocalEndpoints() {
			p.LocalEndpoints = []Endpoint{}
		}
		return
	}
	if p.UsesClusterEndpoints() {
		mode := topologyMode(eps, node, zone)
		p.ClusterEndpoints = filter(eps, func(e Endpoint) bool {
			return e.Ready && availableForTopology(e, mode, node, zone)
		})
		if len(p.ClusterEndpoints) == 0 {
			p.ClusterEndpoints = filter(eps, func(e Endpoint) bool { return e.Serving && e.Terminating })
		}
		p.HasEndpoints = len(p.ClusterEndpoints) > 0
	}
	if !p.UsesLocalEndpoints() {
		return
	}
	var localReady, localTerminating bool
	for _, e := range eps {
		switch {
		case e.Ready:
			p.HasEndpoints = true
			localReady = localReady || e.Local
		case e.Serving && e.Terminating:
			p.HasEndpoints = true
			localTerminating = localTerminating || e.Local
		}
	}
	switch {
	case localReady:
		p.LocalEndpoints = filter(eps, func(e Endpoint) bool { return e.Local && e.Ready })
	case localTerminating:
		p.LocalEndpoints = filter(eps, func(e Endpoint) bool { return e.Local && e.Serving && e.Terminating })
	default:
		p.LocalEndpoints = []Endpoint{}
	}
}

// filter keeps the endpoints keep accepts, without their hints (the
// desired state carries only what the data path uses).
func filter(eps []Endpoint, keep func(Endpoint) bool) []Endpoint {
	n := 0
	for _, e := range eps {
		if keep(e) {
			n++
		}
	}
	// Exactly sized: installed Services keep these (append's doubling
	// left up to twice the 100,000 endpoints of 10,000 Services).
	out := make([]Endpoint, 0, n)
	for _, e := range eps {
		if keep(e) {
			e.hints = nil
			out = append(out, e)
		}
	}
	return out
}

// zoneOf is the node's zone label.
func zoneOf(labels map[string]string) string {
	return strings.TrimSpace(labels[corev1.LabelTopologyZone])
}
