// Package controlplane holds the internal objects seine-controller computes
// from Kubernetes NetworkPolicies and serves to agents: AppliedToGroups (the
// pods a policy applies to), AddressGroups (the pods a rule allows) and
// NetworkPolicies (rules referring to both by name). Groups are named by a
// hash of their normalized selector, so policies with the same selector share
// one group.
//
// The types are kept compact on purpose: a cluster with 100k pods and 75k
// policies holds hundreds of thousands of group members in memory. Member IPs
// are raw 4- or 16-byte slices, and members carry plain strings rather than
// object references.
//
// Deepcopy functions are generated: run `go generate ./core/apis/controlplane/v1beta1`,
// then `go generate ./core/client` for the clientset, listers and informers.
//
// +k8s:deepcopy-gen=package
// +groupName=controlplane.seine.io
package v1beta1

//go:generate go run k8s.io/code-generator/cmd/deepcopy-gen@v0.37.2 --output-file zz_generated.deepcopy.go --go-header-file /dev/null .

// GroupName and Version identify the API these objects are served under.
const (
	GroupName = "controlplane.seine.io"
	Version   = "v1beta1"
)
