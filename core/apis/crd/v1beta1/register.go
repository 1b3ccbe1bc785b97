package v1beta1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// SchemeGroupVersion is crd.seine.io/v1beta1.
var SchemeGroupVersion = schema.GroupVersion{Group: GroupName, Version: Version}

// Resources, for dynamic clients and informers.
var (
	TraceflowsResource             = SchemeGroupVersion.WithResource("traceflows")
	TiersResource                  = SchemeGroupVersion.WithResource("tiers")
	ClusterNetworkPoliciesResource = SchemeGroupVersion.WithResource("clusternetworkpolicies")
	ClusterGroupsResource          = SchemeGroupVersion.WithResource("clustergroups")
	NetworkPoliciesResource        = SchemeGroupVersion.WithResource("networkpolicies")
	SeineAgentInfosResource        = SchemeGroupVersion.WithResource("seineagentinfos")
	SeineControllerInfosResource   = SchemeGroupVersion.WithResource("seinecontrollerinfos")
)

var (
	// SchemeBuilder registers the group's types.
	SchemeBuilder = runtime.NewSchemeBuilder(addKnownTypes)
	// AddToScheme adds the group's types to a scheme.
	AddToScheme = SchemeBuilder.AddToScheme
)

func addKnownTypes(s *runtime.Scheme) error {
	s.AddKnownTypes(SchemeGroupVersion,
		&Traceflow{}, &TraceflowList{},
		&Tier{}, &TierList{},
		&ClusterNetworkPolicy{}, &ClusterNetworkPolicyList{},
		&ClusterGroup{}, &ClusterGroupList{},
		&NetworkPolicy{}, &NetworkPolicyList{},
		&SeineAgentInfo{}, &SeineAgentInfoList{},
		&SeineControllerInfo{}, &SeineControllerInfoList{},
	)
	metav1.AddToGroupVersion(s, SchemeGroupVersion)
	return nil
}
