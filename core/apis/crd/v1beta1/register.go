package v1beta1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// SchemeGroupVersion is crd.seine.io/v1beta1.
var SchemeGroupVersion = schema.GroupVersion{Group: GroupName, Version: Version}

// TraceflowsResource is the Traceflow resource, for dynamic clients.
var TraceflowsResource = SchemeGroupVersion.WithResource("traceflows")

var (
	// SchemeBuilder registers the group's types.
	SchemeBuilder = runtime.NewSchemeBuilder(addKnownTypes)
	// AddToScheme adds the group's types to a scheme.
	AddToScheme = SchemeBuilder.AddToScheme
)

func addKnownTypes(s *runtime.Scheme) error {
	s.AddKnownTypes(SchemeGroupVersion, &Traceflow{}, &TraceflowList{})
	metav1.AddToGroupVersion(s, SchemeGroupVersion)
	return nil
}
