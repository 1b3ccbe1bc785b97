package v1beta1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// IPAddress is an IPv4 (4 bytes) or IPv6 (16 bytes) address.
type IPAddress []byte

// Protocol is a transport protocol: TCP, UDP or SCTP.
type Protocol string

// Protocols of a Service or NamedPort.
const (
	ProtocolTCP  Protocol = "TCP"
	ProtocolUDP  Protocol = "UDP"
	ProtocolSCTP Protocol = "SCTP"
)

// Direction is the direction of a rule, relative to the applied-to pods.
type Direction string

// Rule directions.
const (
	DirectionIn  Direction = "In"
	DirectionOut Direction = "Out"
)

// PolicyType says which traffic a policy isolates.
type PolicyType string

// Policy types, as in Kubernetes NetworkPolicy.
const (
	PolicyTypeIngress PolicyType = "Ingress"
	PolicyTypeEgress  PolicyType = "Egress"
)

// PodReference names a pod.
type PodReference struct {
	Name      string `json:"name,omitempty"`
	Namespace string `json:"namespace,omitempty"`
}

// NamedPort is a container port with a name, which rules may refer to.
type NamedPort struct {
	Name     string   `json:"name,omitempty"`
	Port     int32    `json:"port,omitempty"`
	Protocol Protocol `json:"protocol,omitempty"`
}

// GroupMember is one pod of a group, or one Node of an AddressGroup of a
// tiered rule's nodeSelector peer (Node set, Pod empty; IPs its
// InternalIP and ExternalIP addresses).
type GroupMember struct {
	Pod        PodReference `json:"pod"`
	IPs        []IPAddress  `json:"ips,omitempty"`
	NamedPorts []NamedPort  `json:"namedPorts,omitempty"`
	NodeName   string       `json:"nodeName,omitempty"`
	Node       string       `json:"node,omitempty"`
}

// +genclient
// +genclient:nonNamespaced
// +genclient:onlyVerbs=get,list,watch
// +k8s:deepcopy-gen:interfaces=k8s.io/apimachinery/pkg/runtime.Object

// AppliedToGroup is the set of pods a NetworkPolicy applies to.
type AppliedToGroup struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`
	Members           []GroupMember `json:"members,omitempty"`
}

// +k8s:deepcopy-gen:interfaces=k8s.io/apimachinery/pkg/runtime.Object

// AppliedToGroupList is a list of AppliedToGroups.
type AppliedToGroupList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []AppliedToGroup `json:"items"`
}

// +genclient
// +genclient:nonNamespaced
// +genclient:onlyVerbs=get,list,watch
// +k8s:deepcopy-gen:interfaces=k8s.io/apimachinery/pkg/runtime.Object

// AddressGroup is the set of pods a rule's peer selects.
type AddressGroup struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`
	Members           []GroupMember `json:"members,omitempty"`
}

// +k8s:deepcopy-gen:interfaces=k8s.io/apimachinery/pkg/runtime.Object

// AddressGroupList is a list of AddressGroups.
type AddressGroupList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []AddressGroup `json:"items"`
}

// NetworkPolicyType is the kind of user policy a NetworkPolicy comes from.
type NetworkPolicyType string

// Kinds of user policy.
const (
	// K8sNetworkPolicy is a networking.k8s.io/v1 NetworkPolicy.
	K8sNetworkPolicy NetworkPolicyType = "K8sNetworkPolicy"
	// SeineClusterNetworkPolicy is a crd.seine.io/v1beta1 ClusterNetworkPolicy.
	SeineClusterNetworkPolicy NetworkPolicyType = "SeineClusterNetworkPolicy"
	// SeineNetworkPolicy is a crd.seine.io/v1beta1 NetworkPolicy (namespaced).
	SeineNetworkPolicy NetworkPolicyType = "SeineNetworkPolicy"
	// UpstreamClusterNetworkPolicy is a policy.networking.k8s.io
	// ClusterNetworkPolicy (sigs.k8s.io/network-policy-api).
	UpstreamClusterNetworkPolicy NetworkPolicyType = "UpstreamClusterNetworkPolicy"
)

// RuleAction is what a tiered rule does with a new connection it matches
// (see core/tiers/README.md). A rule without one allows: that is all a
// Kubernetes NetworkPolicy rule does.
type RuleAction string

// Rule actions.
const (
	RuleActionAllow  RuleAction = "Allow"
	RuleActionDrop   RuleAction = "Drop"
	RuleActionReject RuleAction = "Reject"
	RuleActionPass   RuleAction = "Pass"
)

// NetworkPolicyReference points back at the user's policy.
type NetworkPolicyReference struct {
	Type      NetworkPolicyType `json:"type,omitempty"`
	Namespace string            `json:"namespace,omitempty"`
	Name      string            `json:"name,omitempty"`
	UID       string            `json:"uid,omitempty"`
}

// IPNet is a CIDR: an address and a prefix length.
type IPNet struct {
	IP           IPAddress `json:"ip,omitempty"`
	PrefixLength int32     `json:"prefixLength,omitempty"`
}

// IPBlock is a CIDR minus the CIDRs in Except.
type IPBlock struct {
	CIDR   IPNet   `json:"cidr"`
	Except []IPNet `json:"except,omitempty"`
}

// NetworkPolicyPeer is the other end of a rule: the union of the pods of its
// AddressGroups and of its IPBlocks. A rule that allows all peers carries
// the IPBlocks 0.0.0.0/0 and ::/0.
type NetworkPolicyPeer struct {
	AddressGroups []string  `json:"addressGroups,omitempty"`
	IPBlocks      []IPBlock `json:"ipBlocks,omitempty"`
	// DomainNames are domain-name patterns in canonical form (core/fqdn:
	// lower case, no trailing dot, "*." for one or more labels): the
	// addresses the DNS answers to the node's pods gave for the names they
	// match. Egress (To) only.
	DomainNames []string `json:"domainNames,omitempty"`
}

// Service is a protocol and port (or port range, or named port) a rule
// allows. A nil Port means every port of the protocol.
type Service struct {
	Protocol Protocol            `json:"protocol,omitempty"`
	Port     *intstr.IntOrString `json:"port,omitempty"`
	EndPort  *int32              `json:"endPort,omitempty"`
}

// DefaultRulePriority is the priority of rules from Kubernetes
// NetworkPolicies, which are not ordered among themselves.
const DefaultRulePriority int32 = -1

// NetworkPolicyRule matches traffic from (In) or to (Out) a peer on the
// listed services (no services means every port and protocol) and allows
// it, or, in a tiered policy, takes its Action. Priority is the rule's index
// among the rules of its direction in a tiered policy (evaluated in that
// order), DefaultRulePriority in a Kubernetes NetworkPolicy.
type NetworkPolicyRule struct {
	Direction Direction         `json:"direction"`
	From      NetworkPolicyPeer `json:"from,omitempty"`
	To        NetworkPolicyPeer `json:"to,omitempty"`
	Services  []Service         `json:"services,omitempty"`
	Priority  int32             `json:"priority,omitempty"`
	// Action is nil for Allow (every Kubernetes NetworkPolicy rule).
	Action *RuleAction `json:"action,omitempty"`
	// Name is the user's name of the rule, if any.
	Name string `json:"name,omitempty"`
	// AppliedToGroups, when set, are the pods this rule applies to (a
	// tiered policy with a per-rule appliedTo); empty: the policy's. The
	// policy's AppliedToGroups then hold the groups of every rule, so the
	// policy spans the nodes of all of them and a node has every group.
	AppliedToGroups []string `json:"appliedToGroups,omitempty"`
	// EnableLogging: the node logs every connection the rule decides in
	// its policy audit log.
	EnableLogging bool `json:"enableLogging,omitempty"`
}

// +genclient
// +genclient:nonNamespaced
// +genclient:onlyVerbs=get,list,watch
// +k8s:deepcopy-gen:interfaces=k8s.io/apimachinery/pkg/runtime.Object

// NetworkPolicy is the internal form of a user policy. Its pods (the union of
// its AppliedToGroups) are isolated in each direction of PolicyTypes and
// allow only what Rules allow.
type NetworkPolicy struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`
	Rules             []NetworkPolicyRule     `json:"rules,omitempty"`
	AppliedToGroups   []string                `json:"appliedToGroups,omitempty"`
	PolicyTypes       []PolicyType            `json:"policyTypes,omitempty"`
	SourceRef         *NetworkPolicyReference `json:"sourceRef,omitempty"`
	// TierPriority is the priority of a tiered policy's tier (lower is
	// evaluated first; from tiers.BaselinePriority on, after Kubernetes
	// NetworkPolicy); nil for a Kubernetes NetworkPolicy. A tiered policy
	// isolates nothing: PolicyTypes is empty and only its rules act.
	TierPriority *int32 `json:"tierPriority,omitempty"`
	// Tier names the tier, for people.
	Tier string `json:"tier,omitempty"`
	// Priority orders the tiered policies of one tier, lower first.
	Priority *float64 `json:"priority,omitempty"`
	// TranslationError, when set, says which parts of the Kubernetes policy
	// the controller could not translate (a selector or CIDR an older
	// apiserver stored that this controller cannot parse). They are denied:
	// an unparsable podSelector applies the policy to every pod of its
	// namespace, an unparsable peer is left out of its rule. The policy's
	// status is then Failed.
	TranslationError string `json:"translationError,omitempty"`
	// Status is filled only for admins' reads (get, and list without a
	// node selector); see NetworkPolicyStatus.
	Status *NetworkPolicyStatus `json:"status,omitempty"`
}

// +k8s:deepcopy-gen:interfaces=k8s.io/apimachinery/pkg/runtime.Object

// NetworkPolicyList is a list of NetworkPolicies.
type NetworkPolicyList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []NetworkPolicy `json:"items"`
}

// +k8s:deepcopy-gen:interfaces=k8s.io/apimachinery/pkg/runtime.Object

// AppliedToGroupPatch is a change to the members of an AppliedToGroup: the
// object of a MODIFIED watch event for a node that already has the group.
// Members are compared whole: a member whose IPs, named ports or node
// changed is removed and added again.
type AppliedToGroupPatch struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`
	AddedMembers      []GroupMember `json:"addedMembers,omitempty"`
	RemovedMembers    []GroupMember `json:"removedMembers,omitempty"`
}

// +k8s:deepcopy-gen:interfaces=k8s.io/apimachinery/pkg/runtime.Object

// AddressGroupPatch is a change to the members of an AddressGroup, sent
// like AppliedToGroupPatch.
type AddressGroupPatch struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`
	AddedMembers      []GroupMember `json:"addedMembers,omitempty"`
	RemovedMembers    []GroupMember `json:"removedMembers,omitempty"`
}
