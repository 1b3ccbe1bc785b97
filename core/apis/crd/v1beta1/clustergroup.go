package v1beta1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// ClusterGroup is a reusable, named set of pods (podSelector and/or
// namespaceSelector, with AppliedTo's meaning), of IP blocks, or of other
// ClusterGroups (childGroups: one level, the children select pods or IP
// blocks themselves). Policies refer to it by name, as a rule's peer
// (`group: <name>`) or in appliedTo; a change of the group reaches every
// policy that uses it. Its members, computed by seine-controller, are in
// its status. A group that does not exist selects nothing.
//
// +k8s:deepcopy-gen:interfaces=k8s.io/apimachinery/pkg/runtime.Object
// +kubebuilder:resource:scope=Cluster,shortName=cg
// +kubebuilder:subresource:status
// +kubebuilder:printcolumn:name="Pods",type=integer,JSONPath=`.status.podCount`
// +kubebuilder:printcolumn:name="Phase",type=string,JSONPath=`.status.phase`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
// +kubebuilder:validation:XValidation:rule="!has(self.spec.childGroups) || !self.spec.childGroups.exists(c, c == self.metadata.name)",message="a ClusterGroup cannot be its own child group (a cycle)"
type ClusterGroup struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   ClusterGroupSpec   `json:"spec"`
	Status ClusterGroupStatus `json:"status,omitempty"`
}

// ClusterGroupSpec selects the group's members: pods, IP blocks or child
// groups, one kind per group.
//
// +kubebuilder:validation:XValidation:rule="[has(self.podSelector) || has(self.namespaceSelector), has(self.ipBlocks), has(self.childGroups)].filter(x, x).size() <= 1",message="a ClusterGroup holds one kind of member: pods (podSelector, namespaceSelector), ipBlocks or childGroups, not several"
type ClusterGroupSpec struct {
	// PodSelector selects pods: alone, in every namespace; with
	// namespaceSelector, in the namespaces it selects.
	// +optional
	PodSelector *metav1.LabelSelector `json:"podSelector,omitempty"`
	// NamespaceSelector alone selects every pod of the namespaces it
	// selects.
	// +optional
	NamespaceSelector *metav1.LabelSelector `json:"namespaceSelector,omitempty"`
	// IPBlocks are addresses: a group of them is a peer, never an
	// appliedTo.
	// +optional
	// +kubebuilder:validation:MaxItems=100
	IPBlocks []IPBlock `json:"ipBlocks,omitempty"`
	// ChildGroups names other ClusterGroups whose members are this one's.
	// A child cannot have child groups of its own.
	// +optional
	// +kubebuilder:validation:MaxItems=100
	// +kubebuilder:validation:items:MaxLength=253
	ChildGroups []string `json:"childGroups,omitempty"`
}

// ClusterGroupStatus is the group's membership as seine-controller
// computes it.
type ClusterGroupStatus struct {
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`
	// Phase is Computed, or Failed when the group cannot be resolved
	// (Message says why: a child group with children of its own, a cycle,
	// a group of several kinds); policies then treat it as a peer that
	// does not parse (core/tiers/README.md).
	// +optional
	Phase string `json:"phase,omitempty"`
	// +optional
	Message string `json:"message,omitempty"`
	// PodCount is the number of pods the group selects now.
	// +optional
	PodCount int32 `json:"podCount,omitempty"`
	// Pods are the first MaxStatusPods of them, by namespace and name.
	// +optional
	Pods []GroupMemberPod `json:"pods,omitempty"`
	// IPBlocks are the group's address blocks, its children's included.
	// +optional
	IPBlocks []IPBlock `json:"ipBlocks,omitempty"`
}

// MaxStatusPods bounds the pods a ClusterGroup's status lists; podCount
// counts them all.
const MaxStatusPods = 100

// ClusterGroup phases.
const (
	ClusterGroupComputed = "Computed"
	ClusterGroupFailed   = "Failed"
)

// GroupMemberPod is a pod of a group.
type GroupMemberPod struct {
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	// +optional
	Node string `json:"node,omitempty"`
	// +optional
	IPs []string `json:"ips,omitempty"`
}

// +k8s:deepcopy-gen:interfaces=k8s.io/apimachinery/pkg/runtime.Object

// ClusterGroupList is a list of ClusterGroups.
type ClusterGroupList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []ClusterGroup `json:"items"`
}
