package v1beta1

import (
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// ClusterNetworkPolicy is a cluster-wide policy in a tier: its rules are
// evaluated in order (tier priority, then policy priority, then rule
// order) and the first that matches a new connection decides it. See
// core/tiers/README.md for the whole evaluation order.
//
// +k8s:deepcopy-gen:interfaces=k8s.io/apimachinery/pkg/runtime.Object
// +kubebuilder:resource:scope=Cluster,shortName=scnp
// +kubebuilder:subresource:status
// +kubebuilder:printcolumn:name="Tier",type=string,JSONPath=`.spec.tier`
// +kubebuilder:printcolumn:name="Priority",type=number,JSONPath=`.spec.priority`
// +kubebuilder:printcolumn:name="Desired",type=integer,JSONPath=`.status.desiredNodesRealized`
// +kubebuilder:printcolumn:name="Realized",type=integer,JSONPath=`.status.currentNodesRealized`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type ClusterNetworkPolicy struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   ClusterNetworkPolicySpec `json:"spec"`
	Status NetworkPolicyStatus      `json:"status,omitempty"`
}

// ClusterNetworkPolicySpec is what the policy applies to and its rules.
// The pods a rule applies to are either the policy's appliedTo or, when
// the policy has none, the rule's own appliedTo, which every rule then
// has (as in Antrea): the two are never mixed.
//
// +kubebuilder:validation:XValidation:rule="(has(self.appliedTo) && size(self.appliedTo) > 0) || (has(self.ingress) && size(self.ingress) > 0) || (has(self.egress) && size(self.egress) > 0)",message="appliedTo is required: set it on the policy, or on every rule"
// +kubebuilder:validation:XValidation:rule="!has(self.ingress) || (has(self.appliedTo) && size(self.appliedTo) > 0 ? self.ingress.all(r, !has(r.appliedTo) || size(r.appliedTo) == 0) : self.ingress.all(r, has(r.appliedTo) && size(r.appliedTo) > 0))",message="appliedTo is set either on the policy or on every rule, not both: with spec.appliedTo no ingress rule may have one, without it every ingress rule needs one"
// +kubebuilder:validation:XValidation:rule="!has(self.egress) || (has(self.appliedTo) && size(self.appliedTo) > 0 ? self.egress.all(r, !has(r.appliedTo) || size(r.appliedTo) == 0) : self.egress.all(r, has(r.appliedTo) && size(r.appliedTo) > 0))",message="appliedTo is set either on the policy or on every rule, not both: with spec.appliedTo no egress rule may have one, without it every egress rule needs one"
type ClusterNetworkPolicySpec struct {
	// Tier names the Tier the policy is evaluated in (application when
	// empty).
	// +optional
	// +kubebuilder:default=application
	Tier string `json:"tier,omitempty"`
	// Priority orders the policies of a tier, lower first.
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=10000
	Priority float64 `json:"priority"`
	// AppliedTo selects the pods the policy applies to: the union of its
	// entries. Without it, every rule has an appliedTo of its own.
	// +optional
	AppliedTo []AppliedTo `json:"appliedTo,omitempty"`
	// Ingress rules judge new connections to the selected pods, in order.
	// +optional
	Ingress []Rule `json:"ingress,omitempty"`
	// Egress rules judge new connections from the selected pods, in order.
	// +optional
	Egress []Rule `json:"egress,omitempty"`
}

// AppliedTo selects pods: podSelector alone selects in every namespace,
// namespaceSelector alone every pod of the selected namespaces, both the
// selected pods of the selected namespaces; or group, the pods of a
// ClusterGroup (alone in its entry).
type AppliedTo struct {
	// +optional
	PodSelector *metav1.LabelSelector `json:"podSelector,omitempty"`
	// +optional
	NamespaceSelector *metav1.LabelSelector `json:"namespaceSelector,omitempty"`
	// Group names a ClusterGroup of pods.
	// +optional
	Group string `json:"group,omitempty"`
}

// RuleAction is what a rule does with the connections it matches.
// +kubebuilder:validation:Enum=Allow;Drop;Reject;Pass
type RuleAction string

// Rule actions.
const (
	// RuleActionAllow accepts the connection: no later tier, Kubernetes
	// NetworkPolicy or baseline rule is asked.
	RuleActionAllow RuleAction = "Allow"
	// RuleActionDrop drops it silently.
	RuleActionDrop RuleAction = "Drop"
	// RuleActionReject refuses it: the client gets a TCP RST or an ICMP
	// unreachable, sent by the agent.
	RuleActionReject RuleAction = "Reject"
	// RuleActionPass skips the remaining tiers: Kubernetes NetworkPolicy
	// (then baseline) decides. In the baseline tier it means no decision.
	RuleActionPass RuleAction = "Pass"
)

// Rule is one ingress or egress rule.
type Rule struct {
	// Action is taken on the new connections the rule matches.
	Action RuleAction `json:"action"`
	// Name names the rule in status, logs and traces; unique in the policy.
	// +optional
	Name string `json:"name,omitempty"`
	// AppliedTo selects the pods this rule applies to (the union of its
	// entries), when the policy has no appliedTo of its own; then every
	// rule has one. The policy spans the nodes of all of them.
	// +optional
	AppliedTo []AppliedTo `json:"appliedTo,omitempty"`
	// EnableLogging writes a line to the policy audit log of the node that
	// decides it for every connection the rule decides (time, policy, rule,
	// direction, action, addresses, ports and pods): core/tiers/README.md.
	// +optional
	EnableLogging bool `json:"enableLogging,omitempty"`
	// From are the sources of an ingress rule; none means every source.
	// +optional
	From []Peer `json:"from,omitempty"`
	// To are the destinations of an egress rule; none means every
	// destination.
	// +optional
	To []Peer `json:"to,omitempty"`
	// Ports the rule matches; none means every port and protocol.
	// +optional
	Ports []NetworkPolicyPort `json:"ports,omitempty"`
}

// Peer is the other end of a rule: pods (podSelector and/or
// namespaceSelector, with AppliedTo's meaning), an ipBlock, a ClusterGroup
// (group, alone in its entry), Nodes (nodeSelector, alone in its entry), or
// domain names (fqdn, alone in its entry, egress only).
type Peer struct {
	// Group names a ClusterGroup: its pods and IP blocks.
	// +optional
	Group string `json:"group,omitempty"`
	// +optional
	PodSelector *metav1.LabelSelector `json:"podSelector,omitempty"`
	// +optional
	NamespaceSelector *metav1.LabelSelector `json:"namespaceSelector,omitempty"`
	// +optional
	IPBlock *IPBlock `json:"ipBlock,omitempty"`
	// NodeSelector selects Nodes by label: the peer is their addresses
	// (every InternalIP and ExternalIP of their status.addresses), as
	// Nodes come, go and change.
	// +optional
	NodeSelector *metav1.LabelSelector `json:"nodeSelector,omitempty"`
	// FQDN is a domain name, or "*." and a domain for one or more labels
	// before it (the upstream ClusterNetworkPolicy's domainNames): the
	// peer is the addresses the DNS answers to the rule's pods gave for
	// the names it matches, each until its TTL (at least 5 s) has passed
	// (core/fqdn). Egress rules only; it stands alone in its entry.
	// +optional
	// +kubebuilder:validation:Pattern=`^(\*\.)?([a-zA-Z0-9]([-a-zA-Z0-9_]*[a-zA-Z0-9])?\.)+[a-zA-Z0-9]([-a-zA-Z0-9_]*[a-zA-Z0-9])?\.?$`
	FQDN string `json:"fqdn,omitempty"`
}

// IPBlock is a CIDR minus the CIDRs in Except.
type IPBlock struct {
	CIDR string `json:"cidr"`
	// +optional
	Except []string `json:"except,omitempty"`
}

// NetworkPolicyPort is a protocol (TCP when empty) and a port, named port
// or range port..endPort; no port means every port of the protocol.
type NetworkPolicyPort struct {
	// +optional
	// +kubebuilder:validation:Enum=TCP;UDP;SCTP
	Protocol *corev1.Protocol `json:"protocol,omitempty"`
	// +optional
	Port *intstr.IntOrString `json:"port,omitempty"`
	// +optional
	EndPort *int32 `json:"endPort,omitempty"`
}

// NetworkPolicyStatus is the policy's realization, written by
// seine-controller from the agents' reports: the phase (Realizing,
// Realized, Failed), the generation it describes, and how many nodes of
// the policy's span (desired) have realized that generation.
type NetworkPolicyStatus struct {
	// +optional
	Phase string `json:"phase,omitempty"`
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`
	// +optional
	DesiredNodesRealized int32 `json:"desiredNodesRealized,omitempty"`
	// +optional
	CurrentNodesRealized int32 `json:"currentNodesRealized,omitempty"`
	// +optional
	Message string `json:"message,omitempty"`
}

// +k8s:deepcopy-gen:interfaces=k8s.io/apimachinery/pkg/runtime.Object

// ClusterNetworkPolicyList is a list of ClusterNetworkPolicies.
type ClusterNetworkPolicyList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []ClusterNetworkPolicy `json:"items"`
}
