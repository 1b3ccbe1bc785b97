package v1beta1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// NetworkPolicy is Seine's namespaced tiered policy: a ClusterNetworkPolicy
// (tier, priority, ordered rules with Allow, Drop, Reject and Pass) whose
// reach is its own namespace. Its appliedTo entries take a podSelector
// only and select pods of its namespace; a peer's podSelector alone
// selects pods of its namespace, with a namespaceSelector pods of the
// selected namespaces (as in a Kubernetes NetworkPolicy); ipBlocks as in
// a ClusterNetworkPolicy. ClusterGroups are for cluster-wide policies.
// It takes its place in the one evaluation order (core/tiers/README.md)
// by its tier and priority, like a ClusterNetworkPolicy.
//
// +k8s:deepcopy-gen:interfaces=k8s.io/apimachinery/pkg/runtime.Object
// +kubebuilder:resource:scope=Namespaced,shortName=snp
// +kubebuilder:subresource:status
// +kubebuilder:printcolumn:name="Tier",type=string,JSONPath=`.spec.tier`
// +kubebuilder:printcolumn:name="Priority",type=number,JSONPath=`.spec.priority`
// +kubebuilder:printcolumn:name="Desired",type=integer,JSONPath=`.status.desiredNodesRealized`
// +kubebuilder:printcolumn:name="Realized",type=integer,JSONPath=`.status.currentNodesRealized`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type NetworkPolicy struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   ClusterNetworkPolicySpec `json:"spec"`
	Status NetworkPolicyStatus      `json:"status,omitempty"`
}

// +k8s:deepcopy-gen:interfaces=k8s.io/apimachinery/pkg/runtime.Object

// NetworkPolicyList is a list of NetworkPolicies.
type NetworkPolicyList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []NetworkPolicy `json:"items"`
}
