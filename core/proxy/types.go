// Package proxy is Seine's service proxy, the pure part: it follows
// Services and EndpointSlices (discovery.k8s.io/v1; never the legacy
// Endpoints API) and tells, for one Service at a time, what this node must
// do with its traffic: the frontends (ClusterIP, NodePort, external and
// load-balancer IPs) of each port and the endpoints each kind of traffic
// may use, after the traffic policies, topology hints and the fallback to
// serving terminating endpoints. It does no I/O; the agent turns a Service
// into pipeline flows and groups (core/pipeline) and installs only what
// changed. See README.md.
package proxy

import (
	"fmt"
	"net/netip"
	"reflect"
	"strings"
)

// IP protocol numbers of the protocols a Service port may use.
const (
	ProtoTCP  uint8 = 6
	ProtoUDP  uint8 = 17
	ProtoSCTP uint8 = 132
)

// ProtoName is the Kubernetes name of an IP protocol number.
func ProtoName(p uint8) string {
	switch p {
	case ProtoTCP:
		return "TCP"
	case ProtoUDP:
		return "UDP"
	case ProtoSCTP:
		return "SCTP"
	}
	return fmt.Sprintf("proto(%d)", p)
}

// Endpoint is one backend of a Service port as the EndpointSlices describe
// it. Its fields are ordered to keep it at 56 bytes (TestEndpointSize):
// there is one per endpoint in the tracker and in each installed Service.
type Endpoint struct {
	IP netip.Addr
	// Node is the endpoint's nodeName ("" when the slice does not say);
	// Local says it is this node.
	Node string
	// hints are the slice's topology hints (nil without any): one pointer
	// rather than two slices keeps the 100,000 endpoints of 10,000
	// Services 40 bytes each smaller.
	hints *hints
	Port  uint16
	Local bool
	// Ready, Serving and Terminating are the slice's conditions with the
	// API's defaults applied (a missing ready or serving means true, a
	// missing terminating false). Ready here is the slice's ready: the
	// EndpointSlice controller already sets it for every address of a
	// Service with publishNotReadyAddresses.
	Ready, Serving, Terminating bool
}

// hints are an endpoint's topology hints.
type hints struct{ zones, nodes []string }

func (e *Endpoint) zoneHints() []string {
	if e.hints == nil {
		return nil
	}
	return e.hints.zones
}

func (e *Endpoint) nodeHints() []string {
	if e.hints == nil {
		return nil
	}
	return e.hints.nodes
}

// String is "ip:port".
func (e Endpoint) String() string { return netip.AddrPortFrom(e.IP, e.Port).String() }

// AddrPort is the endpoint's address and port.
func (e Endpoint) AddrPort() netip.AddrPort { return netip.AddrPortFrom(e.IP, e.Port) }

// Port is one port of a Service: its frontends on this node and the
// endpoints its traffic goes to.
type Port struct {
	// Name is the Service port's name ("" for a Service with one unnamed
	// port); with Protocol it joins the port to the EndpointSlices' ports.
	Name     string
	Protocol uint8
	Port     uint16
	// ClusterIP is the Service's cluster IP of the tracker's family.
	ClusterIP netip.Addr
	// NodePort is 0 for a ClusterIP Service (or a LoadBalancer Service
	// without node ports).
	NodePort        uint16
	ExternalIPs     []netip.Addr
	LoadBalancerIPs []netip.Addr
	// SourceRanges (spec.loadBalancerSourceRanges) restrict the clients of
	// the load-balancer IPs; empty means every client (so does a range
	// covering everything).
	SourceRanges []netip.Prefix
	// AffinitySeconds is the ClientIP session affinity timeout (1..86400),
	// 0 without affinity.
	AffinitySeconds uint32
	// ExternalLocal is externalTrafficPolicy Local (only set for a port
	// reachable from outside), InternalLocal internalTrafficPolicy Local.
	ExternalLocal, InternalLocal bool
	// HealthCheckNodePort is the node port where this node answers whether
	// it has local endpoints (LoadBalancer with externalTrafficPolicy
	// Local), 0 otherwise.
	HealthCheckNodePort uint16

	// ClusterEndpoints serve traffic under the Cluster policy: the ready
	// endpoints (of this node's zone or node when every one carries a
	// topology hint and one matches), else the serving terminating ones.
	// Nil when no traffic of the port uses the Cluster policy.
	ClusterEndpoints []Endpoint
	// LocalEndpoints serve traffic under the Local policy: the ready
	// endpoints on this node, else its serving terminating ones. Nil when
	// no traffic of the port uses the Local policy.
	LocalEndpoints []Endpoint
	// HasEndpoints says some endpoint somewhere can serve the port: a
	// port without any is rejected, one whose Local traffic finds no local
	// endpoint is dropped (as kube-proxy does).
	HasEndpoints bool
	// Serving lists every serving endpoint regardless of policy and
	// topology: UDP conntrack entries towards any other endpoint are stale.
	Serving []netip.AddrPort
}

// ExternallyAccessible reports whether the port has frontends outside the
// cluster network (a node port, external or load-balancer IPs).
func (p *Port) ExternallyAccessible() bool {
	return p.NodePort != 0 || len(p.ExternalIPs) > 0 || len(p.LoadBalancerIPs) > 0
}

// UsesClusterEndpoints reports whether some traffic of the port is under
// the Cluster traffic policy: internal traffic with internalTrafficPolicy
// Cluster, or any external frontend (clients on this node reach them
// through the cluster endpoints even with externalTrafficPolicy Local).
func (p *Port) UsesClusterEndpoints() bool {
	return !p.InternalLocal || p.ExternallyAccessible()
}

// UsesLocalEndpoints reports whether some traffic of the port is under the
// Local traffic policy.
func (p *Port) UsesLocalEndpoints() bool {
	return p.InternalLocal || (p.ExternalLocal && p.ExternallyAccessible())
}

// InternalEndpoints are the endpoints of traffic to the cluster IP.
func (p *Port) InternalEndpoints() []Endpoint {
	if p.InternalLocal {
		return p.LocalEndpoints
	}
	return p.ClusterEndpoints
}

// ExternalEndpoints are the endpoints of traffic to the external frontends
// that comes from outside the node.
func (p *Port) ExternalEndpoints() []Endpoint {
	if p.ExternalLocal {
		return p.LocalEndpoints
	}
	return p.ClusterEndpoints
}

// Key names the port inside its Service: "name/PROTO".
func (p *Port) Key() string { return p.Name + "/" + ProtoName(p.Protocol) }

// Service is what this node does with one Service's traffic.
type Service struct {
	Namespace, Name string
	// Ports are sorted by Key.
	Ports []Port
}

// Key is "namespace/name".
func (s *Service) Key() string { return s.Namespace + "/" + s.Name }

// String renders the service in a stable text form, one port per line,
// for logs and table tests.
func (s *Service) String() string {
	if s == nil {
		return "<none>"
	}
	var sb strings.Builder
	sb.WriteString(s.Key())
	for i := range s.Ports {
		p := &s.Ports[i]
		fmt.Fprintf(&sb, "\n  %s %s:%d", p.Key(), p.ClusterIP, p.Port)
		if p.NodePort != 0 {
			fmt.Fprintf(&sb, " nodePort=%d", p.NodePort)
		}
		if len(p.ExternalIPs) > 0 {
			fmt.Fprintf(&sb, " externalIPs=%v", p.ExternalIPs)
		}
		if len(p.LoadBalancerIPs) > 0 {
			fmt.Fprintf(&sb, " lb=%v", p.LoadBalancerIPs)
		}
		if len(p.SourceRanges) > 0 {
			fmt.Fprintf(&sb, " sourceRanges=%v", p.SourceRanges)
		}
		if p.AffinitySeconds != 0 {
			fmt.Fprintf(&sb, " affinity=%ds", p.AffinitySeconds)
		}
		if p.ExternalLocal {
			sb.WriteString(" etp=Local")
		}
		if p.InternalLocal {
			sb.WriteString(" itp=Local")
		}
		if p.HealthCheckNodePort != 0 {
			fmt.Fprintf(&sb, " hc=%d", p.HealthCheckNodePort)
		}
		if !p.HasEndpoints {
			sb.WriteString(" no-endpoints")
		}
		if p.ClusterEndpoints != nil {
			sb.WriteString(" cluster=" + endpointList(p.ClusterEndpoints))
		}
		if p.LocalEndpoints != nil {
			sb.WriteString(" local=" + endpointList(p.LocalEndpoints))
		}
	}
	return sb.String()
}

func endpointList(eps []Endpoint) string {
	s := make([]string, len(eps))
	for i, e := range eps {
		s[i] = e.String()
		if !e.Ready {
			s[i] += "(terminating)"
		}
	}
	return "[" + strings.Join(s, " ") + "]"
}

// Equal reports whether a and b are the same desired state.
func Equal(a, b *Service) bool { return reflect.DeepEqual(a, b) }
