package inventory

import (
	"k8s.io/client-go/discovery"

	crd "github.com/seine-cni/seine/core/apis/crd/v1beta1"
	"github.com/seine-cni/seine/core/internal/served"
)

// Served reports whether the cluster serves SeineAgentInfos (seine.yml
// installs the CustomResourceDefinitions of both inventory kinds).
func Served(d discovery.DiscoveryInterface) (bool, error) {
	return served.Resource(d, crd.SeineAgentInfosResource)
}
