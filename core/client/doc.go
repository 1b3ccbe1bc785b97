// Package client is the generated Go client of controlplane.seine.io/v1beta1
// (core/apis/controlplane/v1beta1): a typed clientset with a fake
// (clientset/versioned), listers and shared informers. Regenerate with
// `go generate ./core/client` after changing the types.
//
// Watches scoped to a node (fieldSelector=nodeName=<node>) receive group
// membership changes as AppliedToGroupPatch and AddressGroupPatch objects,
// which an informer of AppliedToGroups or AddressGroups cannot apply: use
// these informers without a node selector (the whole state, as kubectl sees
// it), and core/agent/policywatch for a node's view.
package client

//go:generate go run k8s.io/code-generator/cmd/client-gen@v0.37.2 --go-header-file /dev/null --clientset-name versioned --input-base github.com/seine-cni/seine/core/apis --input controlplane/v1beta1 --output-dir clientset --output-pkg github.com/seine-cni/seine/core/client/clientset
//go:generate go run k8s.io/code-generator/cmd/lister-gen@v0.37.2 --go-header-file /dev/null --output-dir listers --output-pkg github.com/seine-cni/seine/core/client/listers ../apis/controlplane/v1beta1
//go:generate go run k8s.io/code-generator/cmd/informer-gen@v0.37.2 --go-header-file /dev/null --versioned-clientset-package github.com/seine-cni/seine/core/client/clientset/versioned --listers-package github.com/seine-cni/seine/core/client/listers --output-dir informers --output-pkg github.com/seine-cni/seine/core/client/informers ../apis/controlplane/v1beta1
