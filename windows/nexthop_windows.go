package windows

import (
	"context"
	"fmt"
	"net"
	"net/netip"

	"github.com/seine-cni/seine/platform"
)

// The Windows backend has the platform.NextHopResolver capability.
var _ platform.NextHopResolver = (*Backend)(nil)

// NextHopMAC returns the link-layer address of the next hop the host stack
// uses towards ip: ip itself when the best route to it is on-link, else
// that route's gateway, looked up on the route's interface. fresh is false
// for an entry the host has not confirmed lately (stale, delay, probe); an
// incomplete or unreachable entry, or none, is an error wrapping
// platform.ErrNoNeighbour. It only reads the host's tables.
//
// In the bridged-uplink topology (the only one on Windows) the node IP lives
// on br-int and the host's ARP goes out of the uplink through the bridge, so
// the host's neighbour table is the node's view of the underlay: the agent
// sends noEncap pod traffic to a peer straight out of the uplink to this MAC.
func (b *Backend) NextHopMAC(ctx context.Context, ip netip.Addr) (mac net.HardwareAddr, fresh bool, err error) {
	if !ip.Is4() {
		return nil, false, fmt.Errorf("next hop of %s: IPv4 only", ip)
	}
	routes, err := b.stack.Routes(ctx)
	if err != nil {
		return nil, false, fmt.Errorf("route to %s: %w", ip, err)
	}
	r, ok := bestRoute(routes, ip)
	if !ok {
		return nil, false, fmt.Errorf("route to %s: none", ip)
	}
	hop := ip
	if !r.onLink() {
		hop = r.NextHop
	}
	n, err := b.stack.Neighbor(ctx, r.IfIndex, hop)
	if err != nil {
		return nil, false, fmt.Errorf("next hop %s of %s: %w", hop, ip, err)
	}
	if n == nil || len(n.MAC) != 6 {
		return nil, false, fmt.Errorf("next hop %s of %s on if %d: %w", hop, ip, r.IfIndex, platform.ErrNoNeighbour)
	}
	switch n.State {
	case nlnsReachable, nlnsPermanent:
		return n.MAC, true, nil
	case nlnsStale, nlnsDelay, nlnsProbe: // an address, not confirmed lately
		return n.MAC, false, nil
	default: // incomplete, unreachable: no usable address
		return nil, false, fmt.Errorf("next hop %s of %s on if %d is %s: %w", hop, ip, r.IfIndex, n.State, platform.ErrNoNeighbour)
	}
}

// bestRoute is the route the host would use towards ip: the longest prefix
// that holds ip, the lowest route metric among equally long ones (and the
// first listed among equal metrics).
//
// Windows ranks equally long prefixes by route metric plus interface metric;
// the seam reports only the route's own metric, which decides on one
// interface (a Seine node's routes to the underlay are all on br-int once
// Setup has moved them) and approximates the host's choice across
// interfaces.
//
// The routes Seine installs itself (metric RouteMetric: peer pod CIDRs,
// service CIDRs) need no filtering: a peer node IP is never inside a pod or
// service CIDR (Kubernetes allocates those ranges apart from the nodes'
// network; a node IP inside one would break the cluster's routing anyway),
// so they never match a node IP, and plain longest-prefix match over the
// whole table is what the host does too.
func bestRoute(routes []ipRoute, ip netip.Addr) (ipRoute, bool) {
	var best ipRoute
	found := false
	for _, r := range routes {
		if !r.Dst.IsValid() || !r.Dst.Contains(ip) {
			continue
		}
		if !found || r.Dst.Bits() > best.Dst.Bits() ||
			(r.Dst.Bits() == best.Dst.Bits() && r.Metric < best.Metric) {
			best, found = r, true
		}
	}
	return best, found
}
