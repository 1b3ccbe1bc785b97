package v1beta1

import metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

// NetworkPolicyPhase summarizes how far a NetworkPolicy's generation has
// been realized on the nodes of its span.
type NetworkPolicyPhase string

// Phases of a NetworkPolicyStatus.
const (
	// PolicyRealizing: some nodes of the span have not reported this
	// generation yet (and none reported an error for it).
	PolicyRealizing NetworkPolicyPhase = "Realizing"
	// PolicyRealized: every node of the span reported this generation
	// without error.
	PolicyRealized NetworkPolicyPhase = "Realized"
	// PolicyFailed: at least one node of the span reported an error for
	// this generation, or the controller could not translate part of the
	// policy (Error says what).
	PolicyFailed NetworkPolicyPhase = "Failed"
)

// NetworkPolicyStatus is how far the nodes of a NetworkPolicy's span have
// realized its current generation. The controller computes it when an
// admin reads the policy (get, or list without a node selector) from the
// agents' last NodePolicyStatus reports; agents' lists and watch events
// never carry it.
type NetworkPolicyStatus struct {
	// Generation is the policy's current generation (the Kubernetes
	// NetworkPolicy's metadata.generation).
	Generation int64 `json:"generation"`
	// DesiredNodes is the number of nodes in the policy's span.
	DesiredNodes int32 `json:"desiredNodes"`
	// RealizedNodes is the number of span nodes whose last report has the
	// policy at Generation without error.
	RealizedNodes int32 `json:"realizedNodes"`
	// FailedNodes are the span nodes that reported an error for Generation,
	// sorted.
	FailedNodes []string           `json:"failedNodes,omitempty"`
	Phase       NetworkPolicyPhase `json:"phase"`
	// Error, when set, is why the policy is Failed whatever the nodes
	// report: the part of it the controller could not translate, which
	// nodes deny (see NetworkPolicy.TranslationError).
	Error string `json:"error,omitempty"`
}

// PolicyRealization is one policy as a node realized it.
type PolicyRealization struct {
	// Name is the internal NetworkPolicy's name.
	Name string `json:"name"`
	// Generation is the generation whose flows the node has installed, or
	// failed to enforce when Error is set.
	Generation int64 `json:"generation"`
	// Error says why the node could not enforce (part of) the policy: a
	// rule it cannot express. Empty when the policy is realized.
	Error string `json:"error,omitempty"`
}

// +genclient
// +genclient:nonNamespaced
// +genclient:onlyVerbs=create,get,list
// +k8s:deepcopy-gen:interfaces=k8s.io/apimachinery/pkg/runtime.Object

// NodePolicyStatus is a node's report of the policies it has realized,
// named after the node. An agent sends its whole realized set each time:
// creating a NodePolicyStatus replaces what that node reported before.
type NodePolicyStatus struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`
	Policies          []PolicyRealization `json:"policies,omitempty"`
}

// +k8s:deepcopy-gen:interfaces=k8s.io/apimachinery/pkg/runtime.Object

// NodePolicyStatusList is a list of NodePolicyStatuses.
type NodePolicyStatusList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []NodePolicyStatus `json:"items"`
}
