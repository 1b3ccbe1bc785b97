package windows

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"strings"

	"github.com/Microsoft/hcsshim/hcn"

	"github.com/seine-cni/seine/windows/internal/winapi"
)

// The seams: every call into the OS goes through one of these small
// interfaces. The real implementations (hcn_windows.go, vswitch_windows.go,
// iphlpapi_windows.go, winnat_windows.go) are thin; the logic around them
// (request building, reconciliation, diffing, clean-up after failures) is
// tested with fakes that record the calls as text.

// hnsAPI is the part of the Host Networking Service Seine uses, in hcn's
// (schema v2) types. Lookups of something absent return (nil, nil) or
// false, not an error.
type hnsAPI interface {
	Networks(ctx context.Context) ([]hcn.HostComputeNetwork, error)
	NetworkByName(ctx context.Context, name string) (*hcn.HostComputeNetwork, error)
	CreateNetwork(ctx context.Context, n *hcn.HostComputeNetwork) (*hcn.HostComputeNetwork, error)
	DeleteNetwork(ctx context.Context, id string) error
	// Endpoints lists the endpoints of one network.
	Endpoints(ctx context.Context, networkID string) ([]hcn.HostComputeEndpoint, error)
	CreateEndpoint(ctx context.Context, networkID string, ep *hcn.HostComputeEndpoint) (*hcn.HostComputeEndpoint, error)
	// DeleteEndpoint succeeds when the endpoint is already gone.
	DeleteEndpoint(ctx context.Context, id string) error
	// AttachEndpoint adds the endpoint to the namespace (compartment).
	AttachEndpoint(ctx context.Context, namespaceID, endpointID string) error
	NamespaceExists(ctx context.Context, id string) (bool, error)
}

// vswitchAPI enables a Hyper-V switch extension on the vSwitch of an HNS
// network (HNS's v1 "Extensions" of a network, which hcn does not model).
type vswitchAPI interface {
	ExtensionEnabled(ctx context.Context, networkID, extensionID string) (bool, error)
	EnableExtension(ctx context.Context, networkID, extensionID string) error
}

// ipStack is the IP Helper API (iphlpapi) part of the host's TCP/IP stack:
// interfaces, unicast addresses, routes, neighbour entries (the permanent
// ones Seine manages, and one entry of any state for a next-hop look-up),
// forwarding.
type ipStack interface {
	Interfaces(ctx context.Context) ([]ipInterface, error)
	AddAddress(ctx context.Context, ifIndex uint32, p netip.Prefix) error
	DeleteAddress(ctx context.Context, ifIndex uint32, p netip.Prefix) error
	// EnableForwarding turns on IP forwarding of the family on the interface.
	EnableForwarding(ctx context.Context, ifIndex uint32, ipv6 bool) error
	// SetMAC changes an interface's MAC; errors wrap platform.ErrNotSupported
	// where the stack cannot.
	SetMAC(ctx context.Context, ifIndex uint32, mac net.HardwareAddr) error
	Routes(ctx context.Context) ([]ipRoute, error)
	AddRoute(ctx context.Context, r ipRoute) error
	// DeleteRoute succeeds when the route is already gone.
	DeleteRoute(ctx context.Context, r ipRoute) error
	// Neighbors lists the permanent (static) neighbour entries.
	Neighbors(ctx context.Context) ([]ipNeighbor, error)
	// Neighbor reads the host's entry for ip on the interface, in whatever
	// state the host's resolution left it; nil (and no error) when the host
	// has none. It only reads: it never makes the host resolve ip.
	Neighbor(ctx context.Context, ifIndex uint32, ip netip.Addr) (*neighborEntry, error)
	SetNeighbor(ctx context.Context, n ipNeighbor) error
	DeleteNeighbor(ctx context.Context, n ipNeighbor) error
	// AdapterWithMAC reports whether an adapter with the MAC exists in any
	// compartment (a container's vNIC lives in the container's).
	AdapterWithMAC(ctx context.Context, mac net.HardwareAddr) (bool, error)
	// WatchRoutes calls changed (which must not block) whenever a route is
	// deleted or changed, until ctx ends; then it returns nil.
	WatchRoutes(ctx context.Context, changed func()) error
}

// natAPI manages WinNAT (NetNat) instances.
type natAPI interface {
	NATs(ctx context.Context) ([]natRule, error)
	AddNAT(ctx context.Context, n natRule) error
	RemoveNAT(ctx context.Context, name string) error
}

// ipInterface is one interface of the host stack.
type ipInterface struct {
	Index uint32
	// Name is the interface's alias ("Ethernet 2", "vEthernet (Ethernet 2)",
	// "br-int").
	Name string
	MAC  net.HardwareAddr
	MTU  int
	// IPs are its global unicast addresses with their prefix lengths.
	IPs []netip.Prefix
}

// ipRoute is one route of the host's table. A zero NextHop is on-link.
type ipRoute struct {
	Dst     netip.Prefix
	NextHop netip.Addr
	IfIndex uint32
	Metric  uint32
}

func (r ipRoute) String() string {
	via := "on-link"
	if r.NextHop.IsValid() && !r.NextHop.IsUnspecified() {
		via = "via " + r.NextHop.String()
	}
	return fmt.Sprintf("%s %s if %d metric %d", r.Dst, via, r.IfIndex, r.Metric)
}

// onLink reports whether the route has no gateway.
func (r ipRoute) onLink() bool { return !r.NextHop.IsValid() || r.NextHop.IsUnspecified() }

// key identifies a route for diffing (Windows keys routes by destination,
// interface and next hop).
func (r ipRoute) key() string {
	nh := ""
	if !r.onLink() {
		nh = r.NextHop.String()
	}
	return fmt.Sprintf("%s|%d|%s", r.Dst, r.IfIndex, nh)
}

// ipNeighbor is a permanent neighbour entry.
type ipNeighbor struct {
	IfIndex uint32
	IP      netip.Addr
	MAC     net.HardwareAddr
}

func (n ipNeighbor) String() string {
	return fmt.Sprintf("%s lladdr %s if %d", n.IP, n.MAC, n.IfIndex)
}

// neighborEntry is a neighbour entry of any state. MAC is empty while the
// host has no address (incomplete, unreachable).
type neighborEntry struct {
	ipNeighbor
	State neighborState
}

// neighborState is NL_NEIGHBOR_STATE, the state of a neighbour entry.
type neighborState uint32

const (
	nlnsUnreachable neighborState = winapi.NlnsUnreachable
	nlnsIncomplete  neighborState = winapi.NlnsIncomplete
	nlnsProbe       neighborState = winapi.NlnsProbe
	nlnsDelay       neighborState = winapi.NlnsDelay
	nlnsStale       neighborState = winapi.NlnsStale
	nlnsReachable   neighborState = winapi.NlnsReachable
	nlnsPermanent   neighborState = winapi.NlnsPermanent
)

func (s neighborState) String() string {
	switch s {
	case nlnsUnreachable:
		return "unreachable"
	case nlnsIncomplete:
		return "incomplete"
	case nlnsProbe:
		return "probe"
	case nlnsDelay:
		return "delay"
	case nlnsStale:
		return "stale"
	case nlnsReachable:
		return "reachable"
	case nlnsPermanent:
		return "permanent"
	}
	return fmt.Sprintf("state(%d)", uint32(s))
}

// natRule is one WinNAT instance: traffic from Internal leaving through an
// external interface gets the external interface's address (one within
// External when that is set).
type natRule struct {
	Name     string
	Internal netip.Prefix
	External netip.Prefix // zero: any external address
}

func (n natRule) String() string {
	s := n.Name + " internal " + n.Internal.String()
	if n.External.IsValid() {
		s += " external " + n.External.String()
	}
	return s
}

// findInterface returns the interface called name (aliases compare without
// case, as Windows does).
func findInterface(ifs []ipInterface, name string) (ipInterface, bool) {
	for _, i := range ifs {
		if strings.EqualFold(i.Name, name) {
			return i, true
		}
	}
	return ipInterface{}, false
}
