// Package v1alpha1 is stats.seine.io/v1alpha1: the traffic totals of every
// policy and rule Seine enforces, summed over the nodes by seine-controller
// when read (core/controller/apiserver/stats.go; nothing is stored in
// etcd) and read with `kubectl get networkpolicystats -A`. One kind per
// kind of policy, since their names and scopes differ. Every kind is
// read-only (get, list). The nodes' reports the sums come from are
// controlplane.seine.io's NodePolicyStatsReports.
//
// Deepcopy functions are generated: run `go generate ./core/apis/stats/v1alpha1`.
//
// +k8s:deepcopy-gen=package
// +groupName=stats.seine.io
package v1alpha1

//go:generate go run k8s.io/code-generator/cmd/deepcopy-gen@v0.37.2 --output-file zz_generated.deepcopy.go --go-header-file /dev/null .

// GroupName and Version identify the API.
const (
	GroupName = "stats.seine.io"
	Version   = "v1alpha1"
)
