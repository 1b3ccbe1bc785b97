package v1beta1

import (
	"fmt"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// SchemeGroupVersion is controlplane.seine.io/v1beta1, the only version
// served. The types of this package are the wire types: the server
// registers them as its internal version too, so nothing is converted.
var SchemeGroupVersion = schema.GroupVersion{Group: GroupName, Version: Version}

// Resource returns the group-qualified resource.
func Resource(resource string) schema.GroupResource {
	return SchemeGroupVersion.WithResource(resource).GroupResource()
}

// Objects returns one empty value of every type of the API, for scheme
// registration.
func Objects() []runtime.Object {
	return []runtime.Object{
		&NetworkPolicy{}, &NetworkPolicyList{},
		&AppliedToGroup{}, &AppliedToGroupList{}, &AppliedToGroupPatch{},
		&AddressGroup{}, &AddressGroupList{}, &AddressGroupPatch{},
		&NodePolicyStatus{}, &NodePolicyStatusList{},
		&NodePolicyStatsReport{}, &NodePolicyStatsReportList{},
	}
}

// NodeNameField is the field selector agents watch with:
// fieldSelector=nodeName=<node> selects the objects whose span holds node.
const NodeNameField = "nodeName"

// TieredField is the field an agent that enforces tiered policies adds to
// its selector (fieldSelector=nodeName=<node>,tiered=true). A node's list
// or watch without it leaves tiered policies (TierPriority set) out: an
// agent older than them would read their Drop rules as allows.
const TieredField = "tiered"

var (
	// SchemeBuilder registers the API's types under SchemeGroupVersion.
	SchemeBuilder = runtime.NewSchemeBuilder(addKnownTypes)
	// AddToScheme adds the API's types to a scheme.
	AddToScheme = SchemeBuilder.AddToScheme
)

func addKnownTypes(s *runtime.Scheme) error {
	s.AddKnownTypes(SchemeGroupVersion, Objects()...)
	metav1.AddToGroupVersion(s, SchemeGroupVersion)
	for _, kind := range []string{"NetworkPolicy", "AppliedToGroup", "AddressGroup"} {
		err := s.AddFieldLabelConversionFunc(SchemeGroupVersion.WithKind(kind), func(label, value string) (string, string, error) {
			switch label {
			case NodeNameField, TieredField:
				return label, value, nil
			}
			return "", "", fmt.Errorf("field label %q is not supported: use %q and %q", label, NodeNameField, TieredField)
		})
		if err != nil {
			return err
		}
	}
	return nil
}
