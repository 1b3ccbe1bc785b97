package linux

import (
	"context"
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"

	"github.com/seine-cni/seine/platform"
)

// The linux backend has the platform.NextHopResolver capability.
var _ platform.NextHopResolver = (*Backend)(nil)

// NextHopMAC returns the link-layer address of the next hop the node's host
// stack uses towards ip: ip itself when it is on a connected subnet, else
// the gateway of the route to it. fresh is false when the neighbour entry is
// not confirmed (STALE, DELAY, PROBE): the address may be out of date until
// the host sends something there and confirms it again. Without an entry
// the error wraps platform.ErrNoNeighbour.
//
// In the bridged-uplink topology this is how the pipeline learns the MAC to
// which it sends noEncap pod traffic straight out of the uplink: the host
// port holds the node IP and the host's ARP passes through the bridge, so
// the host's neighbour table is the node's view of the underlay, whether the
// peer is on the node's subnet or behind a router.
func (b *Backend) NextHopMAC(_ context.Context, ip netip.Addr) (mac net.HardwareAddr, fresh bool, err error) {
	if !ip.Is4() {
		return nil, false, fmt.Errorf("next hop of %s: IPv4 only", ip)
	}
	nl := b.host.nl
	routes, err := nl.RouteGet(net.IP(ip.AsSlice()))
	if err != nil {
		return nil, false, fmt.Errorf("route to %s: %w", ip, err)
	}
	if len(routes) == 0 {
		return nil, false, fmt.Errorf("route to %s: none", ip)
	}
	r := routes[0]
	hop := ip
	if r.Gw != nil {
		hop = addrOf(r.Gw)
	}
	neighs, err := retryDump(func() ([]netlink.Neigh, error) { return nl.NeighList(r.LinkIndex, netlink.FAMILY_V4) })
	if err != nil {
		return nil, false, fmt.Errorf("neighbours of link #%d: %w", r.LinkIndex, err)
	}
	return pickNeighbour(neighs, hop)
}

// pickNeighbour finds hop's entry with a link-layer address among neighs.
func pickNeighbour(neighs []netlink.Neigh, hop netip.Addr) (net.HardwareAddr, bool, error) {
	for _, n := range neighs {
		if addrOf(n.IP) != hop || len(n.HardwareAddr) != 6 {
			continue
		}
		switch {
		case n.State&(netlink.NUD_INCOMPLETE|netlink.NUD_FAILED|netlink.NUD_NOARP) != 0:
			continue
		case n.State&(netlink.NUD_REACHABLE|netlink.NUD_PERMANENT) != 0:
			return n.HardwareAddr, true, nil
		default: // STALE, DELAY, PROBE: an address, not confirmed lately
			return n.HardwareAddr, false, nil
		}
	}
	return nil, false, fmt.Errorf("next hop %s: %w", hop, platform.ErrNoNeighbour)
}
