// Package served tells whether the cluster serves a resource, so that a
// component leaves a feature whose CustomResourceDefinition is not
// installed off, saying so once, rather than retry a watch forever.
package served

import (
	"fmt"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/discovery"
)

// Resource reports whether the cluster serves r.
func Resource(d discovery.DiscoveryInterface, r schema.GroupVersionResource) (bool, error) {
	gv := r.GroupVersion().String()
	rl, err := d.ServerResourcesForGroupVersion(gv)
	if apierrors.IsNotFound(err) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("discover %s: %w", gv, err)
	}
	for _, ar := range rl.APIResources {
		if ar.Name == r.Resource {
			return true, nil
		}
	}
	return false, nil
}
