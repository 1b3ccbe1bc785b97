package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// TrafficStats are the traffic a policy or rule decided, summed over the
// nodes: connections (sessions), and their packets and bytes
// (core/policystats/README.md says exactly what counts).
type TrafficStats struct {
	Sessions int64 `json:"sessions"`
	Packets  int64 `json:"packets"`
	Bytes    int64 `json:"bytes"`
}

// RuleStats are one rule's totals. Name is the rule's name, or for a rule
// without one "<direction>-<n>" (ingress-0: the policy's first ingress
// rule); Direction is Ingress or Egress, Action what the rule does.
type RuleStats struct {
	Name         string       `json:"name"`
	Direction    string       `json:"direction"`
	Action       string       `json:"action"`
	TrafficStats TrafficStats `json:"trafficStats"`
}

// PolicyStats are what every stats kind holds: the policy's totals and its
// rules'. The object's name and namespace are the policy's, its uid the
// policy's, and its creationTimestamp the moment the first node began
// counting it (the totals are since then; none yet: unset).
type PolicyStats struct {
	TrafficStats     TrafficStats `json:"trafficStats"`
	RuleTrafficStats []RuleStats  `json:"ruleTrafficStats,omitempty"`
}

// +k8s:deepcopy-gen:interfaces=k8s.io/apimachinery/pkg/runtime.Object

// NetworkPolicyStats are the totals of a Kubernetes NetworkPolicy
// (networking.k8s.io/v1), in its namespace.
type NetworkPolicyStats struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`
	PolicyStats       `json:",inline"`
}

// +k8s:deepcopy-gen:interfaces=k8s.io/apimachinery/pkg/runtime.Object

// NetworkPolicyStatsList is a list of NetworkPolicyStats.
type NetworkPolicyStatsList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []NetworkPolicyStats `json:"items"`
}

// +k8s:deepcopy-gen:interfaces=k8s.io/apimachinery/pkg/runtime.Object

// SeineNetworkPolicyStats are the totals of a crd.seine.io NetworkPolicy,
// in its namespace.
type SeineNetworkPolicyStats struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`
	PolicyStats       `json:",inline"`
}

// +k8s:deepcopy-gen:interfaces=k8s.io/apimachinery/pkg/runtime.Object

// SeineNetworkPolicyStatsList is a list of SeineNetworkPolicyStats.
type SeineNetworkPolicyStatsList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []SeineNetworkPolicyStats `json:"items"`
}

// +k8s:deepcopy-gen:interfaces=k8s.io/apimachinery/pkg/runtime.Object

// SeineClusterNetworkPolicyStats are the totals of a crd.seine.io
// ClusterNetworkPolicy.
type SeineClusterNetworkPolicyStats struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`
	PolicyStats       `json:",inline"`
}

// +k8s:deepcopy-gen:interfaces=k8s.io/apimachinery/pkg/runtime.Object

// SeineClusterNetworkPolicyStatsList is a list of SeineClusterNetworkPolicyStats.
type SeineClusterNetworkPolicyStatsList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []SeineClusterNetworkPolicyStats `json:"items"`
}

// +k8s:deepcopy-gen:interfaces=k8s.io/apimachinery/pkg/runtime.Object

// ClusterNetworkPolicyStats are the totals of an upstream
// policy.networking.k8s.io ClusterNetworkPolicy.
type ClusterNetworkPolicyStats struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`
	PolicyStats       `json:",inline"`
}

// +k8s:deepcopy-gen:interfaces=k8s.io/apimachinery/pkg/runtime.Object

// ClusterNetworkPolicyStatsList is a list of ClusterNetworkPolicyStats.
type ClusterNetworkPolicyStatsList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []ClusterNetworkPolicyStats `json:"items"`
}

// SchemeGroupVersion is stats.seine.io/v1alpha1.
var SchemeGroupVersion = schema.GroupVersion{Group: GroupName, Version: Version}

// Resource returns the group-qualified resource.
func Resource(resource string) schema.GroupResource {
	return SchemeGroupVersion.WithResource(resource).GroupResource()
}

// Objects returns one empty value of every type of the API, for scheme
// registration.
func Objects() []runtime.Object {
	return []runtime.Object{
		&NetworkPolicyStats{}, &NetworkPolicyStatsList{},
		&SeineNetworkPolicyStats{}, &SeineNetworkPolicyStatsList{},
		&SeineClusterNetworkPolicyStats{}, &SeineClusterNetworkPolicyStatsList{},
		&ClusterNetworkPolicyStats{}, &ClusterNetworkPolicyStatsList{},
	}
}

var (
	// SchemeBuilder registers the API's types under SchemeGroupVersion.
	SchemeBuilder = runtime.NewSchemeBuilder(func(s *runtime.Scheme) error {
		s.AddKnownTypes(SchemeGroupVersion, Objects()...)
		metav1.AddToGroupVersion(s, SchemeGroupVersion)
		return nil
	})
	// AddToScheme adds the API's types to a scheme.
	AddToScheme = SchemeBuilder.AddToScheme
)
