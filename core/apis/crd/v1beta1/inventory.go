package v1beta1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// SeineAgentInfo is what one node's seine-agent says about itself: its
// version, the node's pod CIDRs, Open vSwitch and its flows, the policies
// it enforces, its pods and its connections, with the time it last said
// so. One per node, named after the node: seine-controller creates it when
// the Node appears and deletes it when the Node goes; the node's agent
// writes its status (a credential bound to a node may write only that
// node's: seine.yml's ValidatingAdmissionPolicy seine-agent-info-own-node).
// core/inventory/README.md explains it.
//
// +k8s:deepcopy-gen:interfaces=k8s.io/apimachinery/pkg/runtime.Object
// +kubebuilder:resource:scope=Cluster,path=seineagentinfos,shortName=sai
// +kubebuilder:subresource:status
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.ready`
// +kubebuilder:printcolumn:name="Version",type=string,JSONPath=`.status.version`
// +kubebuilder:printcolumn:name="Pods",type=integer,JSONPath=`.status.localPods`
// +kubebuilder:printcolumn:name="Policies",type=integer,JSONPath=`.status.policy.networkPolicies`
// +kubebuilder:printcolumn:name="Flows",type=integer,JSONPath=`.status.ovs.flows`
// +kubebuilder:printcolumn:name="Heartbeat",type=date,JSONPath=`.status.lastHeartbeatTime`
// +kubebuilder:printcolumn:name="Pod-CIDRs",type=string,JSONPath=`.status.podCIDRs`,priority=1
// +kubebuilder:printcolumn:name="OVS",type=string,JSONPath=`.status.ovs.version`,priority=1
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type SeineAgentInfo struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Status SeineAgentInfoStatus `json:"status,omitempty"`
}

// SeineAgentInfoStatus is the agent's report.
type SeineAgentInfoStatus struct {
	// Ready is "True" when the agent serves CNI requests and every
	// condition is true, "False" otherwise (the conditions say why).
	// +optional
	Ready string `json:"ready,omitempty"`
	// Version is the agent's build (module version, or devel and the
	// commit it was built from).
	// +optional
	Version string `json:"version,omitempty"`
	// NodeIP is the node's address the agent uses for tunnels and node
	// ports.
	// +optional
	NodeIP string `json:"nodeIP,omitempty"`
	// PodCIDRs are the node's pod address ranges.
	// +optional
	PodCIDRs []string `json:"podCIDRs,omitempty"`
	// LocalPods is the number of pods the agent has plugged on the node.
	// +optional
	LocalPods int32 `json:"localPods"`
	// OVS is the node's switch.
	// +optional
	OVS OVSInfo `json:"ovs,omitempty"`
	// Policy is what the agent enforces.
	// +optional
	Policy PolicyInfo `json:"policy,omitempty"`
	// Conditions are the agent's connections and readiness: Ready,
	// ControllerConnected, OVSDBConnected, OpenFlowConnected.
	// +optional
	// +listType=map
	// +listMapKey=type
	Conditions []metav1.Condition `json:"conditions,omitempty"`
	// LastHeartbeatTime is when the agent last wrote this status (every
	// heartbeat interval, and when something above changed).
	// +optional
	LastHeartbeatTime metav1.Time `json:"lastHeartbeatTime,omitempty"`
}

// OVSInfo is a node's Open vSwitch as the agent sees it.
type OVSInfo struct {
	// Version is ovs-vswitchd's (Open_vSwitch table, ovs_version).
	// +optional
	Version string `json:"version,omitempty"`
	// Bridge is the integration bridge.
	// +optional
	Bridge string `json:"bridge,omitempty"`
	// DatapathType is the bridge's datapath: system (the kernel's) or
	// netdev (userspace).
	// +optional
	DatapathType string `json:"datapathType,omitempty"`
	// Flows is the number of OpenFlow flows on the bridge.
	// +optional
	Flows int64 `json:"flows"`
	// FlowsPerTable is the number of flows in every table that has any,
	// by table number.
	// +optional
	FlowsPerTable map[string]int64 `json:"flowsPerTable,omitempty"`
}

// PolicyInfo counts the policy objects an agent holds and the rules it
// installed.
type PolicyInfo struct {
	// +optional
	NetworkPolicies int32 `json:"networkPolicies"`
	// +optional
	AppliedToGroups int32 `json:"appliedToGroups"`
	// +optional
	AddressGroups int32 `json:"addressGroups"`
	// +optional
	IngressRules int32 `json:"ingressRules"`
	// +optional
	EgressRules int32 `json:"egressRules"`
}

// +k8s:deepcopy-gen:interfaces=k8s.io/apimachinery/pkg/runtime.Object

// SeineAgentInfoList is a list of SeineAgentInfos.
type SeineAgentInfoList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []SeineAgentInfo `json:"items"`
}

// SeineControllerInfo is what seine-controller says about itself. There
// is one, named seine-controller; the controller creates it and writes
// its status.
//
// +k8s:deepcopy-gen:interfaces=k8s.io/apimachinery/pkg/runtime.Object
// +kubebuilder:resource:scope=Cluster,path=seinecontrollerinfos,shortName=sci
// +kubebuilder:subresource:status
// +kubebuilder:printcolumn:name="Version",type=string,JSONPath=`.status.version`
// +kubebuilder:printcolumn:name="Agents",type=integer,JSONPath=`.status.connectedAgents`
// +kubebuilder:printcolumn:name="Policies",type=integer,JSONPath=`.status.policy.networkPolicies`
// +kubebuilder:printcolumn:name="Heartbeat",type=date,JSONPath=`.status.lastHeartbeatTime`
// +kubebuilder:printcolumn:name="Pod",type=string,JSONPath=`.status.pod`,priority=1
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type SeineControllerInfo struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Status SeineControllerInfoStatus `json:"status,omitempty"`
}

// SeineControllerInfoStatus is the controller's report.
type SeineControllerInfoStatus struct {
	// +optional
	Version string `json:"version,omitempty"`
	// Pod is the controller's pod (namespace/name) and NodeName its node,
	// when it runs in one.
	// +optional
	Pod string `json:"pod,omitempty"`
	// +optional
	NodeName string `json:"nodeName,omitempty"`
	// ConnectedAgents is the number of agents watching the controller's
	// controlplane API.
	// +optional
	ConnectedAgents int32 `json:"connectedAgents"`
	// Policy counts the internal policies and groups the controller
	// computed (for every node together).
	// +optional
	Policy PolicyInfo `json:"policy,omitempty"`
	// LastHeartbeatTime is when the controller last wrote this status.
	// +optional
	LastHeartbeatTime metav1.Time `json:"lastHeartbeatTime,omitempty"`
}

// +k8s:deepcopy-gen:interfaces=k8s.io/apimachinery/pkg/runtime.Object

// SeineControllerInfoList is a list of SeineControllerInfos.
type SeineControllerInfoList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []SeineControllerInfo `json:"items"`
}

// ControllerInfoName is the name of the one SeineControllerInfo.
const ControllerInfoName = "seine-controller"
