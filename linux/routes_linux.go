package linux

import (
	"bytes"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/seine-cni/seine/platform"
)

// RouteProtocol marks every route HostRules installs (`ip route show proto
// 83`): Sync finds its own routes by it and removes those the state no longer
// has, without touching anyone else's. 83 is unassigned in iproute2's
// rt_protos; an installer may name it there (`83 seine`).
const RouteProtocol netlink.RouteProtocol = 83

// desiredRoutes turns the state into routes in the main table. gwIndex is
// the gateway's ifindex; routes through the gateway are left out when it is
// 0 (Sync reports the missing gateway).
func desiredRoutes(s platform.HostState, gwIndex int) []netlink.Route {
	var out []netlink.Route
	add := func(dst netip.Prefix, gw netip.Addr, link int, onlink bool) {
		r := netlink.Route{Dst: ipNet(dst), LinkIndex: link, Protocol: RouteProtocol,
			Table: unix.RT_TABLE_MAIN, Type: unix.RTN_UNICAST, Family: family(dst.Addr())}
		switch {
		case gw.IsValid():
			r.Gw = gw.AsSlice()
		case dst.Addr().Is4():
			r.Scope = netlink.SCOPE_LINK // IPv6 routes have no scope (the kernel says universe)
		}
		if onlink {
			r.Flags = unix.RTNH_F_ONLINK
		}
		out = append(out, r)
	}
	for _, p := range s.PeerRoutes {
		switch {
		case p.GatewayIP.IsValid() && gwIndex != 0:
			add(p.PodCIDR, p.GatewayIP, gwIndex, true)
		case !p.GatewayIP.IsValid():
			add(p.PodCIDR, p.NodeIP, 0, false) // the kernel picks the device that reaches the node
		}
	}
	for _, r := range s.ServiceRoutes {
		if gwIndex != 0 {
			add(r.CIDR, r.NextHop, gwIndex, r.NextHop.IsValid())
		}
	}
	return out
}

// routePlan is what Sync does to the routes: replace (add or change) and delete.
type routePlan struct {
	replace, del []netlink.Route
}

// planRoutes compares Seine's routes (have, all with RouteProtocol) with the
// desired ones, keyed by destination. A desired route with no LinkIndex
// accepts whatever device the kernel chose.
func planRoutes(have, want []netlink.Route) routePlan {
	var p routePlan
	for _, w := range want {
		i := slices.IndexFunc(have, func(h netlink.Route) bool { return routeDst(h) == routeDst(w) })
		if i < 0 || !sameRoute(have[i], w) {
			p.replace = append(p.replace, w)
		}
	}
	for _, h := range have {
		if !slices.ContainsFunc(want, func(w netlink.Route) bool { return routeDst(w) == routeDst(h) }) {
			p.del = append(p.del, h)
		}
	}
	return p
}

func sameRoute(have, want netlink.Route) bool {
	return addrOf(have.Gw) == addrOf(want.Gw) &&
		(want.LinkIndex == 0 || have.LinkIndex == want.LinkIndex) &&
		have.Flags&unix.RTNH_F_ONLINK == want.Flags&unix.RTNH_F_ONLINK &&
		have.Scope == want.Scope
}

// syncRoutes makes the routes with RouteProtocol in the main table match
// the state.
func (b *Backend) syncRoutes(s platform.HostState, gwIndex int) error {
	nl := b.host.nl
	have, err := retryDump(func() ([]netlink.Route, error) {
		return nl.RouteListFiltered(netlink.FAMILY_ALL, &netlink.Route{Protocol: RouteProtocol, Table: unix.RT_TABLE_MAIN},
			netlink.RT_FILTER_PROTOCOL|netlink.RT_FILTER_TABLE)
	})
	if err != nil {
		return fmt.Errorf("list routes: %w", err)
	}
	plan := planRoutes(have, desiredRoutes(s, gwIndex))
	var errs []error
	for _, r := range plan.del {
		if err := ignoreNotFound(nl.RouteDel(&r)); err != nil {
			errs = append(errs, fmt.Errorf("delete route %s: %w", routeText(r), err))
			continue
		}
		b.log.Info("deleted route", "route", routeText(r))
	}
	for _, r := range plan.replace {
		if err := nl.RouteReplace(&r); err != nil {
			errs = append(errs, fmt.Errorf("route %s: %w", routeText(r), err))
			continue
		}
		b.log.Info("installed route", "route", routeText(r))
	}
	return errors.Join(errs...)
}

// desiredNeighbours are the permanent entries for the service next hops.
func desiredNeighbours(s platform.HostState, gwIndex int) []netlink.Neigh {
	var out []netlink.Neigh
	if gwIndex == 0 {
		return nil
	}
	for _, r := range s.ServiceRoutes {
		if r.NextHop.IsValid() && !slices.ContainsFunc(out, func(n netlink.Neigh) bool { return addrOf(n.IP) == r.NextHop }) {
			out = append(out, *permanentNeigh(gwIndex, r.NextHop, s.ServiceNextHopMAC))
		}
	}
	return out
}

// neighbourPlan is what Sync does to the gateway's neighbour entries.
type neighbourPlan struct {
	set, del []netlink.Neigh
}

// planNeighbours compares the gateway's entries (have; only permanent ones
// count, and all of those are Seine's) with the desired ones.
func planNeighbours(have, want []netlink.Neigh) neighbourPlan {
	var p neighbourPlan
	for _, h := range have {
		if h.State&netlink.NUD_PERMANENT != 0 &&
			!slices.ContainsFunc(want, func(w netlink.Neigh) bool { return addrOf(w.IP) == addrOf(h.IP) }) {
			p.del = append(p.del, h)
		}
	}
	for _, w := range want {
		if !slices.ContainsFunc(have, func(h netlink.Neigh) bool {
			return addrOf(h.IP) == addrOf(w.IP) && h.State&netlink.NUD_PERMANENT != 0 && bytes.Equal(h.HardwareAddr, w.HardwareAddr)
		}) {
			p.set = append(p.set, w)
		}
	}
	return p
}

// syncNeighbours makes the permanent neighbour entries on the gateway (all
// of them Seine's) match the service next hops.
func (b *Backend) syncNeighbours(s platform.HostState, gwIndex int) error {
	if gwIndex == 0 {
		return nil
	}
	nl := b.host.nl
	have, err := retryDump(func() ([]netlink.Neigh, error) { return nl.NeighList(gwIndex, netlink.FAMILY_ALL) })
	if err != nil {
		return fmt.Errorf("list neighbours: %w", err)
	}
	plan := planNeighbours(have, desiredNeighbours(s, gwIndex))
	var errs []error
	for _, h := range plan.del {
		if err := ignoreNotFound(nl.NeighDel(&h)); err != nil {
			errs = append(errs, fmt.Errorf("delete neighbour %s: %w", h.IP, err))
			continue
		}
		b.log.Info("deleted neighbour", "ip", h.IP.String())
	}
	for _, w := range plan.set {
		if err := nl.NeighSet(&w); err != nil {
			errs = append(errs, fmt.Errorf("neighbour %s lladdr %s: %w", w.IP, w.HardwareAddr, err))
			continue
		}
		b.log.Info("installed neighbour", "ip", w.IP.String(), "mac", w.HardwareAddr.String())
	}
	return errors.Join(errs...)
}

// routeText renders a route the way `ip route` does, for logs and errors.
func routeText(r netlink.Route) string {
	var b strings.Builder
	b.WriteString(routeDst(r).String())
	if r.Gw != nil {
		b.WriteString(" via " + addrOf(r.Gw).String())
	}
	if r.LinkIndex != 0 {
		fmt.Fprintf(&b, " dev #%d", r.LinkIndex)
	}
	if r.Flags&unix.RTNH_F_ONLINK != 0 {
		b.WriteString(" onlink")
	}
	if r.Scope == netlink.SCOPE_LINK {
		b.WriteString(" scope link")
	}
	return b.String()
}
