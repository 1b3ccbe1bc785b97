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
