// Package v1beta1 holds Seine's custom resources, group crd.seine.io: the
// objects users create and read with kubectl, which the kube-apiserver
// stores as CustomResourceDefinitions (their YAML is generated from these
// types into installer/kubernetes/seine.yml). The internal objects
// seine-controller serves to agents are in core/apis/controlplane instead.
//
// Deepcopy functions are generated: run `go generate ./core/apis/crd/v1beta1`
// (deepcopy), then `go generate ./installer/kubernetes/manifest` (CRD YAML
// and seine.yml: go generate ./installer/kubernetes/manifest runs both).
//
// +k8s:deepcopy-gen=package
// +groupName=crd.seine.io
package v1beta1

//go:generate go run k8s.io/code-generator/cmd/deepcopy-gen@v0.37.2 --output-file zz_generated.deepcopy.go --go-header-file /dev/null .

// GroupName and Version identify the API.
const (
	GroupName = "crd.seine.io"
	Version   = "v1beta1"
)
