package v1beta1

import metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

// TrafficStats are the traffic a rule decided: the connections (sessions)
// and their packets and bytes (core/policystats/README.md says exactly
// what counts).
type TrafficStats struct {
	Sessions int64 `json:"sessions"`
	Packets  int64 `json:"packets"`
	Bytes    int64 `json:"bytes"`
}

// RuleTrafficStats are the totals of one rule, by its index in the
// NetworkPolicy's Rules.
type RuleTrafficStats struct {
	Index        int32        `json:"index"`
	TrafficStats TrafficStats `json:"trafficStats"`
}

// PolicyTrafficStats are a node's totals of one policy's rules since Since
// (when the node first counted it).
type PolicyTrafficStats struct {
	// Name is the internal NetworkPolicy's name.
	Name  string             `json:"name"`
	Since metav1.Time        `json:"since"`
	Rules []RuleTrafficStats `json:"rules,omitempty"`
}

// +genclient
// +genclient:nonNamespaced
// +genclient:onlyVerbs=create,get,list
// +k8s:deepcopy-gen:interfaces=k8s.io/apimachinery/pkg/runtime.Object

// NodePolicyStatsReport is a node's report of its policy traffic totals,
// named after the node. The totals are the node's running totals (kept
// across agent restarts), not deltas: an agent sends them whole each time,
// a create replaces what the node reported before, and a restarted
// seine-controller knows everything again at each node's next report.
type NodePolicyStatsReport struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`
	Policies          []PolicyTrafficStats `json:"policies,omitempty"`
}

// +k8s:deepcopy-gen:interfaces=k8s.io/apimachinery/pkg/runtime.Object

// NodePolicyStatsReportList is a list of NodePolicyStatsReports.
type NodePolicyStatsReportList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []NodePolicyStatsReport `json:"items"`
}

// The kinds users read: a policy's totals summed over the nodes, computed
// by seine-controller when read (nothing is stored in etcd). One kind per
// kind of policy, since their names and scopes differ; `kubectl get
// networkpolicystats -A` finds them through API aggregation.

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
