package platform

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"

	"github.com/seine-cni/seine/ovs/ovsdb"
)

// PodRef identifies one network attachment of one pod sandbox: what Detach
// needs, and what a CNI DEL carries.
type PodRef struct {
	Namespace, Name string
	// ContainerID is the sandbox (infra container) ID.
	ContainerID string
	// IfName is the interface name inside the pod ("eth0").
	IfName string
	// NetNS is where the pod's network lives: on Linux the path of its network
	// namespace (/var/run/netns/cni-…, /proc/<pid>/ns/net); on Windows the
	// HNS namespace ID (a GUID) or the compartment the runtime passes. It may
	// name something already gone on Detach.
	NetNS string
}

func (r PodRef) String() string {
	return fmt.Sprintf("%s/%s (container %s, %s)", r.Namespace, r.Name, shortID(r.ContainerID), r.IfName)
}

func shortID(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	return id
}

// Validate checks that the reference names an attachment.
func (r PodRef) Validate() error {
	var missing []string
	for _, f := range []struct{ name, v string }{
		{"namespace", r.Namespace}, {"name", r.Name}, {"container ID", r.ContainerID}, {"interface name", r.IfName},
	} {
		if f.v == "" {
			missing = append(missing, f.name)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("pod %s: %s empty", r, strings.Join(missing, ", "))
	}
	return nil
}

// Route is a route inside the pod. A zero Via means the gateway of Dst's family.
type Route struct {
	Dst netip.Prefix
	Via netip.Addr
}

func (r Route) String() string {
	if r.Via.IsValid() {
		return r.Dst.String() + " via " + r.Via.String()
	}
	return r.Dst.String() + " via gateway"
}

// PodNetwork is the whole desired network of one pod attachment.
type PodNetwork struct {
	PodRef
	// IPs are the pod's addresses with the pod CIDR's prefix length, one per family.
	IPs []netip.Prefix
	// Gateways are the gateway addresses, one for each family in IPs.
	Gateways []netip.Addr
	// GatewayMAC is the gateway's MAC. The backend pins it for the gateway IPs
	// (a permanent neighbour entry on Linux) so the pod never needs to resolve
	// it; nil leaves resolution to ARP/ND.
	GatewayMAC net.HardwareAddr
	// Routes are the pod's routes. nil means a default route per family via
	// its gateway; an empty non-nil slice means no routes beyond the
	// connected ones.
	Routes []Route
	// MTU of the pod interface; 0 keeps the OS default.
	MTU int
	// MAC fixes the pod interface's MAC; nil lets the OS choose.
	MAC net.HardwareAddr
}

// EffectiveRoutes returns Routes with nil expanded to the default routes and
// every zero Via replaced by the gateway of the route's family.
func (p PodNetwork) EffectiveRoutes() []Route {
	routes := p.Routes
	if routes == nil {
		for _, gw := range p.Gateways {
			unspecified := netip.IPv4Unspecified()
			if gw.Is6() {
				unspecified = netip.IPv6Unspecified()
			}
			routes = append(routes, Route{Dst: netip.PrefixFrom(unspecified, 0)})
		}
	}
	out := make([]Route, 0, len(routes))
	for _, r := range routes {
		if !r.Via.IsValid() {
			r.Via = p.Gateway(r.Dst.Addr().Is6())
		}
		out = append(out, r)
	}
	return out
}

// Gateway returns the gateway of the given family (true for IPv6), or the
// zero Addr.
func (p PodNetwork) Gateway(ipv6 bool) netip.Addr {
	for _, gw := range p.Gateways {
		if gw.Is6() == ipv6 {
			return gw
		}
	}
	return netip.Addr{}
}

// Validate checks the attachment for mistakes any backend would reject.
func (p PodNetwork) Validate() error {
	errs := []error{p.PodRef.Validate()}
	if p.NetNS == "" {
		errs = append(errs, errors.New("network namespace is empty"))
	}
	if len(p.IPs) == 0 {
		errs = append(errs, errors.New("no IP address"))
	}
	if err := onePerFamily("pod IP", p.IPs); err != nil {
		errs = append(errs, err)
	}
	for _, ip := range p.IPs {
		gw := p.Gateway(ip.Addr().Is6())
		switch {
		case !gw.IsValid():
			errs = append(errs, fmt.Errorf("no gateway for %s", ip))
		case !ip.Masked().Contains(gw):
			errs = append(errs, fmt.Errorf("gateway %s outside %s", gw, ip.Masked()))
		case gw == ip.Addr():
			errs = append(errs, fmt.Errorf("pod IP %s is the gateway", ip))
		}
	}
	for _, r := range p.Routes {
		if !r.Dst.IsValid() || r.Dst != r.Dst.Masked() {
			errs = append(errs, fmt.Errorf("route %s: destination must be a network prefix", r))
		} else if r.Via.IsValid() && r.Via.Is6() != r.Dst.Addr().Is6() {
			errs = append(errs, fmt.Errorf("route %s: next hop of another family", r))
		} else if !r.Via.IsValid() && !p.Gateway(r.Dst.Addr().Is6()).IsValid() {
			errs = append(errs, fmt.Errorf("route %s: no gateway of its family", r))
		}
	}
	if p.GatewayMAC != nil && len(p.GatewayMAC) != 6 {
		errs = append(errs, fmt.Errorf("gateway MAC %s: want 6 bytes", p.GatewayMAC))
	}
	if p.MAC != nil && len(p.MAC) != 6 {
		errs = append(errs, fmt.Errorf("MAC %s: want 6 bytes", p.MAC))
	}
	if p.MTU < 0 || (p.MTU > 0 && p.MTU < 576) {
		errs = append(errs, fmt.Errorf("MTU %d: want 0 or >= 576", p.MTU))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("pod network %s: %w", p.PodRef, err)
	}
	return nil
}

// ErrNoNetNS is wrapped by Attach's error when the pod's network namespace
// (Linux: the path; Windows: the HNS namespace) does not exist or is not
// one. The core answers it with CNI's "invalid environment" code.
var ErrNoNetNS = errors.New("no such pod network namespace")

// PodInterface is what Attach made: the port the core plugs into OVS.
type PodInterface struct {
	// HostName is the OVS port/interface name: on Linux the host end of the
	// veth, on Windows the name the HNS endpoint's port takes on the bridge.
	HostName string
	// PortType is the OVS interface type to create for HostName:
	// ovsdb.TypeSystem on Linux (the veth exists; OVS opens it),
	// ovsdb.TypeInternal on Windows (the Hyper-V extension binds the
	// endpoint's vNIC to it).
	PortType ovsdb.InterfaceType
	// MAC is the pod interface's MAC (what the pipeline's spoof guard and L2
	// forwarding use); HostMAC the host end's.
	MAC, HostMAC net.HardwareAddr
	// IPs are the pod's addresses as configured.
	IPs []netip.Prefix
	// Late says the interface exists on the host only after CNI ADD has
	// returned (Windows under containerd: the HNS endpoint's vNIC, and the
	// switch port the OVS extension binds, appear when the runtime starts
	// the pod's sandbox in the namespace Attach attached the endpoint to).
	// Only a backend with the LatePodInterfaces capability returns it; see
	// there for what the core does.
	Late bool
	// VF is set when the pod's interface is an SR-IOV VF (VFPodAttacher):
	// HostName is then its representor, MAC the VF's.
	VF *VF
}

// LatePodInterfaces is the capability of a backend whose Attach returns
// PodInterface.Late. The core then adds the OVS port at once with the pod's
// external_ids but no interface type (so ovs-vswitchd opens no device yet),
// returns the CNI result without waiting for an OpenFlow port, and in the
// background asks PodInterfaceReady (with a back-off) until the interface
// exists; it then sets the port's type to PortType (ovs-vswitchd opens a
// device only when its interface row changes: OVS for Windows does not
// retry one that failed), waits for the OpenFlow port and installs the
// pod's flows. A port with ofport -1 whose attachment Check still finds
// intact is such a pod, and is kept across an agent restart.
type LatePodInterfaces interface {
	PodInterfaceReady(ctx context.Context, ref PodRef, iface PodInterface) (bool, error)
}
