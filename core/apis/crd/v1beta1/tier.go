package v1beta1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Tier is a named step of the policy evaluation order: policies of a tier
// of lower priority are evaluated first. Six tiers are built in and created
// by seine-controller (emergency 50, securityops 100, networkops 150,
// platform 200, application 250, baseline 253); Kubernetes NetworkPolicies
// are evaluated after every tier but baseline. See core/tiers/README.md.
//
// +k8s:deepcopy-gen:interfaces=k8s.io/apimachinery/pkg/runtime.Object
// +kubebuilder:resource:scope=Cluster
// +kubebuilder:printcolumn:name="Priority",type=integer,JSONPath=`.spec.priority`
// +kubebuilder:printcolumn:name="Description",type=string,JSONPath=`.spec.description`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type Tier struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec TierSpec `json:"spec"`
}

// TierSpec is a tier's place in the order.
type TierSpec struct {
	// Priority orders the tiers, lower first: 1-252 for a tier of your
	// own, distinct from every other tier's (the built-in tiers hold 50,
	// 100, 150, 200, 250 and 253).
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=255
	Priority int32 `json:"priority"`
	// Description says what the tier is for.
	// +optional
	Description string `json:"description,omitempty"`
}

// +k8s:deepcopy-gen:interfaces=k8s.io/apimachinery/pkg/runtime.Object

// TierList is a list of Tiers.
type TierList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []Tier `json:"items"`
}
