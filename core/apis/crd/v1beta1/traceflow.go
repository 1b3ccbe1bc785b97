package v1beta1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Traceflow asks Seine to inject one packet from a pod (or to tag a real
// one: liveTraffic) and report, node by node, what the OpenFlow pipeline
// did with it. It is cluster-scoped: the
// source and destination name their namespaces. core/traceflow/README.md
// explains how it works.
//
// +genclient
// +genclient:nonNamespaced
// +k8s:deepcopy-gen:interfaces=k8s.io/apimachinery/pkg/runtime.Object
// +kubebuilder:resource:scope=Cluster,shortName=tf
// +kubebuilder:subresource:status
// +kubebuilder:printcolumn:name="Phase",type=string,JSONPath=`.status.phase`
// +kubebuilder:printcolumn:name="Source",type=string,JSONPath=`.spec.source.pod`
// +kubebuilder:printcolumn:name="Dst-Pod",type=string,JSONPath=`.spec.destination.pod`
// +kubebuilder:printcolumn:name="Dst-Service",type=string,JSONPath=`.spec.destination.service`
// +kubebuilder:printcolumn:name="Dst-IP",type=string,JSONPath=`.spec.destination.ip`
// +kubebuilder:printcolumn:name="Live",type=boolean,JSONPath=`.spec.liveTraffic`,priority=1
// +kubebuilder:printcolumn:name="Dropped-Only",type=boolean,JSONPath=`.spec.droppedOnly`,priority=1
// +kubebuilder:printcolumn:name="Tag",type=integer,JSONPath=`.status.dataplaneTag`,priority=1
// +kubebuilder:printcolumn:name="Reason",type=string,JSONPath=`.status.reason`,priority=1
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type Traceflow struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   TraceflowSpec   `json:"spec"`
	Status TraceflowStatus `json:"status,omitempty"`
}

// TraceflowSpec is what to trace.
type TraceflowSpec struct {
	Source      Source      `json:"source"`
	Destination Destination `json:"destination"`
	// Packet is the packet to inject; a TCP SYN to port 80 when empty.
	Packet Packet `json:"packet,omitempty"`
	// LiveTraffic traces a real packet instead of injecting one: the
	// first packet of a new connection that matches the source, the
	// destination and the packet's protocol and ports (all optional but a
	// source or destination pod) is tagged where it enters the pipeline.
	// Packet then only filters (protocol, srcPort, dstPort).
	LiveTraffic bool `json:"liveTraffic,omitempty"`
	// DroppedOnly (live traffic only) traces matching packets until one is
	// dropped, and reports only that drop.
	DroppedOnly bool `json:"droppedOnly,omitempty"`
	// Timeout in seconds (MinTimeout..MaxTimeout, DefaultTimeout when 0):
	// the Traceflow fails if it is not complete by then.
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=300
	Timeout int32 `json:"timeout,omitempty"`
}

// Limits of a Traceflow, the same in the CRD's schema and in seinectl.
const (
	DefaultTimeout = 20
	MinTimeout     = 1
	MaxTimeout     = 300
)

// Source is the pod the packet comes from; for live traffic it may be an
// IP address instead (or nothing: any source), and the packet is then
// tagged on the destination pod's node.
type Source struct {
	Namespace string `json:"namespace,omitempty"`
	Pod       string `json:"pod,omitempty"`
	// IP is a live packet's source address (live traffic only).
	IP string `json:"ip,omitempty"`
}

// Destination is exactly one of a pod, a Service (its cluster IP) or an
// IP address (for live traffic, at most one: none is any destination).
type Destination struct {
	Namespace string `json:"namespace,omitempty"`
	Pod       string `json:"pod,omitempty"`
	Service   string `json:"service,omitempty"`
	IP        string `json:"ip,omitempty"`
}

// Packet describes the injected packet.
type Packet struct {
	// Protocol is TCP (the default), UDP or ICMP; for live traffic, empty
	// is any protocol.
	// +kubebuilder:validation:Enum=TCP;UDP;ICMP;tcp;udp;icmp
	Protocol string `json:"protocol,omitempty"`
	// SrcPort is chosen by Seine when 0 (TCP, UDP).
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=65535
	SrcPort int32 `json:"srcPort,omitempty"`
	// DstPort defaults to 80 (TCP, UDP); for a Service, its first port.
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=65535
	DstPort int32 `json:"dstPort,omitempty"`
	// TCPFlags defaults to SYN (2).
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=255
	TCPFlags int32 `json:"tcpFlags,omitempty"`
	// TTL defaults to 64.
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=255
	TTL int32 `json:"ttl,omitempty"`
	// Length is the IP packet's total length; the headers alone when 0.
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=1500
	Length int32 `json:"length,omitempty"`
}

// Phase is where a Traceflow is.
// +kubebuilder:validation:Enum=Pending;Running;Succeeded;Failed
type Phase string

// Phases of a Traceflow.
const (
	// Pending: accepted, waiting for a data-plane tag.
	Pending Phase = "Pending"
	// Running: tagged; the nodes install its flows, then the packet goes.
	Running Phase = "Running"
	// Succeeded: the packet's fate is known (delivered, dropped, rejected
	// or forwarded out of the cluster's network).
	Succeeded Phase = "Succeeded"
	// Failed: bad input, no tag free, or not complete at the timeout.
	Failed Phase = "Failed"
)

// TraceflowStatus is what the controller and the agents found.
type TraceflowStatus struct {
	Phase  Phase  `json:"phase,omitempty"`
	Reason string `json:"reason,omitempty"`
	// StartTime is when the controller tagged the Traceflow; the timeout
	// counts from it.
	StartTime *metav1.Time `json:"startTime,omitempty"`
	// DataplaneTag is the DSCP value (1-63) the packet carries.
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=63
	DataplaneTag int32 `json:"dataplaneTag,omitempty"`
	// SourceNode injects the packet (live traffic: starts tagging packets)
	// once every node of Nodes reported its flows installed. A live trace
	// without a source pod is tagged on its destination pod's node.
	SourceNode string   `json:"sourceNode,omitempty"`
	Nodes      []string `json:"nodes,omitempty"`
	// The packet as injected (addresses resolved).
	SrcIP string `json:"srcIP,omitempty"`
	DstIP string `json:"dstIP,omitempty"`
	// DstPort is the destination port (TCP, UDP) the packet is sent to:
	// the spec's, else a Service's first port of the protocol, else 80.
	DstPort int32 `json:"dstPort,omitempty"`
	// Results holds one entry per node, written by that node's agent.
	// +listType=map
	// +listMapKey=node
	Results []NodeResult `json:"results,omitempty"`
}

// NodeResult is one node's report.
type NodeResult struct {
	Node string `json:"node"`
	// FlowsInstalled: the node's tagged flows are in its switch.
	FlowsInstalled bool `json:"flowsInstalled,omitempty"`
	// Observations in the order the packet met them.
	Observations []Observation `json:"observations,omitempty"`
	// CapturedPacket is the live packet as this node last saw it (live
	// traffic only; after any NAT of this node).
	CapturedPacket *CapturedPacket `json:"capturedPacket,omitempty"`
}

// CapturedPacket is the headers of a traced live packet.
type CapturedPacket struct {
	SrcIP    string `json:"srcIP"`
	DstIP    string `json:"dstIP"`
	Protocol string `json:"protocol"`
	SrcPort  int32  `json:"srcPort,omitempty"`
	DstPort  int32  `json:"dstPort,omitempty"`
	// IPID is the IPv4 identification; with the protocol and ports it
	// tells the traced packet from others tagged before the tagging
	// flow was removed.
	IPID     int32 `json:"ipID"`
	TTL      int32 `json:"ttl"`
	Length   int32 `json:"length"`
	TCPFlags int32 `json:"tcpFlags,omitempty"`
}

// Component is the part of the pipeline that observed the packet.
// +kubebuilder:validation:Enum=SpoofGuard;Classification;Conntrack;LB;NetworkPolicy;Forwarding
type Component string

// Components.
const (
	ComponentSpoofGuard     Component = "SpoofGuard"
	ComponentClassification Component = "Classification"
	ComponentConntrack      Component = "Conntrack"
	ComponentLB             Component = "LB"
	ComponentNetworkPolicy  Component = "NetworkPolicy"
	ComponentForwarding     Component = "Forwarding"
)

// Action is what the component did.
// +kubebuilder:validation:Enum=Received;Forwarded;Delivered;Dropped;Rejected;ForwardedOutOfNetwork
type Action string

// Actions.
const (
	ActionReceived              Action = "Received"
	ActionForwarded             Action = "Forwarded"
	ActionDelivered             Action = "Delivered"
	ActionDropped               Action = "Dropped"
	ActionRejected              Action = "Rejected"
	ActionForwardedOutOfNetwork Action = "ForwardedOutOfNetwork"
)

// Observation is one thing a node saw happen to the packet.
type Observation struct {
	Component Component `json:"component"`
	// ComponentInfo narrows the component: EgressPolicy, IngressPolicy, ...
	ComponentInfo string `json:"componentInfo,omitempty"`
	// Table is the OpenFlow table that decided (its pipeline name).
	Table  string `json:"table,omitempty"`
	Action Action `json:"action"`
	// NetworkPolicy (namespace/name) and Rule that dropped the packet.
	NetworkPolicy string `json:"networkPolicy,omitempty"`
	Rule          string `json:"rule,omitempty"`
	// TunnelDstIP is the peer node the packet was tunnelled to.
	TunnelDstIP string `json:"tunnelDstIP,omitempty"`
	// TranslatedDstIP/Port is the Service endpoint the packet was sent to.
	TranslatedDstIP   string `json:"translatedDstIP,omitempty"`
	TranslatedDstPort int32  `json:"translatedDstPort,omitempty"`
	// TranslatedSrcIP is the source after SNAT.
	TranslatedSrcIP string `json:"translatedSrcIP,omitempty"`
	// OutputPort is the OpenFlow port the packet left by (or would have).
	OutputPort string `json:"outputPort,omitempty"`
}

// TraceflowList is a list of Traceflows.
//
// +k8s:deepcopy-gen:interfaces=k8s.io/apimachinery/pkg/runtime.Object
type TraceflowList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []Traceflow `json:"items"`
}
