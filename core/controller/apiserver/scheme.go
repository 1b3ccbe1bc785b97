package apiserver

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/runtime/serializer"

	cp "github.com/seine-cni/seine/core/apis/controlplane/v1beta1"
	statsv1 "github.com/seine-cni/seine/core/apis/stats/v1alpha1"
)

// Scheme and Codecs serve controlplane.seine.io and stats.seine.io. Each
// API has one version, so its wire types are registered as the internal
// version as well: the handlers then never convert.
var (
	Scheme = runtime.NewScheme()
	Codecs = serializer.NewCodecFactory(Scheme)
)

func init() {
	must(cp.AddToScheme(Scheme))
	Scheme.AddKnownTypes(schema.GroupVersion{Group: cp.GroupName, Version: runtime.APIVersionInternal}, cp.Objects()...)
	must(statsv1.AddToScheme(Scheme))
	Scheme.AddKnownTypes(schema.GroupVersion{Group: statsv1.GroupName, Version: runtime.APIVersionInternal}, statsv1.Objects()...)
	// Options, Status and discovery types, as every apiserver registers them.
	metav1.AddToGroupVersion(Scheme, schema.GroupVersion{Version: "v1"})
	Scheme.AddUnversionedTypes(schema.GroupVersion{Version: "v1"},
		&metav1.Status{}, &metav1.APIVersions{}, &metav1.APIGroupList{}, &metav1.APIGroup{}, &metav1.APIResourceList{})
}

func must(err error) {
	if err != nil {
		panic(err)
	}
}
