// Package pipeline builds Seine's OpenFlow pipeline: the tables, the
// register map, the cookie scheme, and pure functions from desired state
// (node config, local pods, peer nodes) to flows. Nothing here does I/O;
// the agent installs the flows through ovs/openflow in one bundle.
//
// README.md lists every table in the order a packet meets them.
package pipeline

import (
	"fmt"
	"net"
)

// Table is an OpenFlow table of the pipeline. The numbers leave gaps so
// that later tables (session affinity, endpoint DNAT, policy tiers) can be
// inserted without renumbering the others.
type Table uint8

// The tables in the order a packet meets them.
const (
	// Classifier sorts packets by in_port: pods, gateway, tunnel, uplink
	// and host; it forwards uplink <-> host traffic of a bridged uplink.
	Classifier Table = 0
	// SpoofGuard checks the source IP+MAC (IP) or sender IP+MAC (ARP) of
	// packets from pod ports; gateway packets pass.
	SpoofGuard Table = 10
	// ARPResponder answers ARP requests for the gateway, local pods and
	// (encap) peer gateways; other ARP goes on to L2 forwarding.
	ARPResponder Table = 20
	// UnSNAT reverses the proxy's source NAT (SNATZone) of replies to the
	// gateway IP before conntrack sees them in CtZone.
	UnSNAT Table = 29
	// ConntrackZone sends IP packets through conntrack in CtZone.
	ConntrackZone Table = 30
	// ConntrackState drops packets conntrack finds invalid.
	ConntrackState Table = 31
	// ServiceLB matches new connections to service frontends (cluster,
	// node port, external and load-balancer IPs) and picks an endpoint
	// through the service's select group, or rejects or drops them.
	ServiceLB Table = 40
	// SessionAffinity holds the learned flows of ClientIP affinity: client,
	// frontend -> the endpoint it was given.
	SessionAffinity Table = 41
	// ServiceSelect picks the endpoint of a Service with affinity: the
	// learned one, else through the group (whose buckets learn).
	ServiceSelect Table = 42
	// EndpointDNAT DNATs the connections of Services with affinity to the
	// endpoint in the registers.
	EndpointDNAT Table = 43
	// ServiceSNAT source-NATs the service connections whose replies would
	// otherwise not come back through this node (SNATZone).
	ServiceSNAT Table = 44
	// EgressTier holds the egress rules of tiered policies evaluated before
	// Kubernetes NetworkPolicy (core/tiers/README.md).
	EgressTier Table = 45
	// EgressPolicy holds egress Kubernetes NetworkPolicy.
	EgressPolicy Table = 50
	// EgressBaseline holds the egress rules of baseline tiers: only
	// traffic of pods no NetworkPolicy isolates reaches it.
	EgressBaseline Table = 51
	// L3Forwarding picks the next hop by destination IP and rewrites MACs.
	L3Forwarding Table = 60
	// L3DecTTL decrements the TTL of packets the pipeline routed, unless the
	// host already did (packets from the gateway).
	L3DecTTL Table = 61
	// L2ForwardingCalc maps the destination MAC to the output port (reg1).
	L2ForwardingCalc Table = 70
	// IngressTier holds the ingress rules of tiered policies evaluated
	// before Kubernetes NetworkPolicy.
	IngressTier Table = 75
	// IngressPolicy holds ingress Kubernetes NetworkPolicy.
	IngressPolicy Table = 80
	// IngressBaseline holds the ingress rules of baseline tiers.
	IngressBaseline Table = 81
	// ConntrackCommit commits new connections in CtZone.
	ConntrackCommit Table = 90
	// EgressMetric and IngressMetric count the later packets of the
	// connections an allow rule let in, by the rule's ID that
	// ConntrackCommit left in ct_label (policy stats, see README.md).
	EgressMetric  Table = 91
	IngressMetric Table = 92
	// Output sends the packet to the port in reg1.
	Output Table = 100
)

// Tables lists the tables in pipeline order.
var Tables = []Table{
	Classifier, SpoofGuard, ARPResponder, UnSNAT, ConntrackZone, ConntrackState, ServiceLB, SessionAffinity,
	ServiceSelect, EndpointDNAT, ServiceSNAT, EgressTier, EgressPolicy, EgressBaseline, L3Forwarding, L3DecTTL, L2ForwardingCalc,
	IngressTier, IngressPolicy, IngressBaseline, ConntrackCommit, EgressMetric, IngressMetric, Output,
}

var tableNames = map[Table]string{
	Classifier: "Classifier", SpoofGuard: "SpoofGuard", ARPResponder: "ARPResponder",
	UnSNAT: "UnSNAT", ConntrackZone: "ConntrackZone", ConntrackState: "ConntrackState", ServiceLB: "ServiceLB",
	SessionAffinity: "SessionAffinity", ServiceSelect: "ServiceSelect", EndpointDNAT: "EndpointDNAT",
	ServiceSNAT: "ServiceSNAT",
	EgressTier:  "EgressTier", EgressPolicy: "EgressPolicy", EgressBaseline: "EgressBaseline",
	L3Forwarding: "L3Forwarding", L3DecTTL: "L3DecTTL", L2ForwardingCalc: "L2ForwardingCalc",
	IngressTier: "IngressTier", IngressPolicy: "IngressPolicy", IngressBaseline: "IngressBaseline",
	ConntrackCommit: "ConntrackCommit", EgressMetric: "EgressMetric", IngressMetric: "IngressMetric", Output: "Output",
}

func (t Table) String() string {
	if n, ok := tableNames[t]; ok {
		return n
	}
	return fmt.Sprintf("table%d", uint8(t))
}

// CtZone is the conntrack zone of pod traffic; the proxy's DNAT happens
// in it.
const CtZone uint16 = 0xfff0

// SNATZone is the conntrack zone of the proxy's source NAT (hairpin,
// external clients of remote endpoints). A connection is DNATed in CtZone
// and SNATed here: conntrack keeps one NAT per connection and zone.
const SNATZone uint16 = 0xfff1

// GlobalVirtualMAC is the destination MAC of every packet sent into the
// tunnel, and the MAC the ARP responder gives the host for a peer's gateway
// IP. The receiving node rewrites it to the destination pod's MAC, so no
// node needs to know another node's gateway MAC. It is a locally
// administered unicast address ("SEINE" in ASCII after 02).
var GlobalVirtualMAC = net.HardwareAddr{0x02, 0x53, 0x45, 0x49, 0x4e, 0x45}
