package windows

import (
	"context"
	"fmt"

	"github.com/Microsoft/hcsshim/hcn"
	"golang.org/x/sys/windows"

	"github.com/seine-cni/seine/platform"
)

// computenetwork.dll is HNS's v2 API, vmcompute.dll its v1 API.
var (
	modComputeNetwork = windows.NewLazySystemDLL("computenetwork.dll")
	modVMCompute      = windows.NewLazySystemDLL("vmcompute.dll")
)

// hnsAvailable returns an error wrapping platform.ErrNotSupported when the
// host has no HNS (a Windows without the Containers feature, or Wine); hcn
// would otherwise fail each call with a bare "cannot find procedure".
func hnsAvailable(dll *windows.LazyDLL) error {
	if err := dll.Load(); err != nil {
		return fmt.Errorf("host networking service (HNS) unavailable, cannot load %s (%v): %w", dll.Name, err, platform.ErrNotSupported)
	}
	return nil
}

// hcnAPI is the real hnsAPI, on hcsshim's hcn package. hcn takes no
// context; each call checks ctx before it starts.
type hcnAPI struct{}

func (hcnAPI) ready(ctx context.Context, what string) error {
	if err := ctxErr(ctx, what); err != nil {
		return err
	}
	return hnsAvailable(modComputeNetwork)
}

func (a hcnAPI) Networks(ctx context.Context) ([]hcn.HostComputeNetwork, error) {
	if err := a.ready(ctx, "list HNS networks"); err != nil {
		return nil, err
	}
	return hcn.ListNetworks()
}

func (a hcnAPI) NetworkByName(ctx context.Context, name string) (*hcn.HostComputeNetwork, error) {
	if err := a.ready(ctx, "find HNS network"); err != nil {
		return nil, err
	}
	n, err := hcn.GetNetworkByName(name)
	if hcn.IsNotFoundError(err) {
		return nil, nil
	}
	return n, err
}

func (a hcnAPI) CreateNetwork(ctx context.Context, n *hcn.HostComputeNetwork) (*hcn.HostComputeNetwork, error) {
	if err := a.ready(ctx, "create HNS network"); err != nil {
		return nil, err
	}
	return n.Create()
}

func (a hcnAPI) DeleteNetwork(ctx context.Context, id string) error {
	if err := a.ready(ctx, "delete HNS network"); err != nil {
		return err
	}
	err := (&hcn.HostComputeNetwork{Id: id}).Delete()
	if hcn.IsNotFoundError(err) {
		return nil
	}
	return err
}

func (a hcnAPI) Endpoints(ctx context.Context, networkID string) ([]hcn.HostComputeEndpoint, error) {
	if err := a.ready(ctx, "list HNS endpoints"); err != nil {
		return nil, err
	}
	return hcn.ListEndpointsOfNetwork(networkID)
}

func (a hcnAPI) CreateEndpoint(ctx context.Context, networkID string, ep *hcn.HostComputeEndpoint) (*hcn.HostComputeEndpoint, error) {
	if err := a.ready(ctx, "create HNS endpoint"); err != nil {
		return nil, err
	}
	ep.HostComputeNetwork = networkID
	return ep.Create()
}

func (a hcnAPI) DeleteEndpoint(ctx context.Context, id string) error {
	if err := a.ready(ctx, "delete HNS endpoint"); err != nil {
		return err
	}
	err := (&hcn.HostComputeEndpoint{Id: id}).Delete()
	if hcn.IsNotFoundError(err) || hcn.IsElementNotFoundError(err) {
		return nil
	}
	return err
}

func (a hcnAPI) AttachEndpoint(ctx context.Context, namespaceID, endpointID string) error {
	if err := a.ready(ctx, "attach HNS endpoint"); err != nil {
		return err
	}
	return hcn.AddNamespaceEndpoint(namespaceID, endpointID)
}

func (a hcnAPI) NamespaceExists(ctx context.Context, id string) (bool, error) {
	if err := a.ready(ctx, "find HNS namespace"); err != nil {
		return false, err
	}
	_, err := hcn.GetNamespaceByID(id)
	switch {
	case hcn.IsNotFoundError(err):
		return false, nil
	case err != nil:
		return false, err
	}
	return true, nil
}
