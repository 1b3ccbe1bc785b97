package linux

import (
	"context"
	"errors"
	"fmt"
	"net"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/seine-cni/seine/ovs/ovsdb"
	"github.com/seine-cni/seine/platform"
)

// bridgeUplink puts the uplink on the bridge and moves its layer 3 (global
// addresses and main-table routes) to the bridge's internal port, which
// Setup gave the uplink's MAC. Once moved, a later Setup finds nothing to
// move and changes nothing.
func (b *Backend) bridgeUplink(ctx context.Context, cfg platform.NodeConfig, uplink netlink.Link, st *platform.NodeState) error {
	ua := uplink.Attrs()
	if err := b.ovs.EnsurePort(ctx, cfg.Bridge, ovsdb.PortConfig{
		Name: ua.Name, Type: ovsdb.TypeSystem, ExternalIDs: map[string]string{ExternalIDType: TypeUplink},
	}); err != nil {
		return err
	}
	ofport, err := b.ovs.PortOfport(ctx, ua.Name)
	if err != nil {
		return err
	}
	host, hostOFPort, err := b.ensureInternalPort(ctx, cfg.Bridge, cfg.Bridge, TypeHost, ua.MTU)
	if err != nil {
		return err
	}
	// OVS sets the internal port's MAC from other_config:hwaddr; do it here
	// too so the address never moves onto a port with another MAC.
	if host.Attrs().HardwareAddr.String() != ua.HardwareAddr.String() {
		if err := b.host.nl.LinkSetHardwareAddr(host, ua.HardwareAddr); err != nil {
			return fmt.Errorf("set %s MAC %s: %w", cfg.Bridge, ua.HardwareAddr, err)
		}
	}
	if err := b.moveL3(uplink, host); err != nil {
		return err
	}
	if err := b.prepareOVSPort(uplink); err != nil {
		return err
	}
	st.Uplink = platform.PortState{Name: ua.Name, OFPort: ofport, MAC: ua.HardwareAddr}
	if st.Host, err = b.portState(cfg.Bridge, hostOFPort); err != nil {
		return err
	}
	st.NodeIPs = st.Host.IPs
	return nil
}

// moveL3 moves the global addresses and the main-table routes of from to to,
// in the order that keeps the node reachable longest: addresses are added to
// to, routes replaced onto to (an atomic switch per route), and only then
// are the addresses removed from from. It does nothing when from has no
// global address.
func (b *Backend) moveL3(from, to netlink.Link) error {
	nl := b.host.nl
	fa, ta := from.Attrs(), to.Attrs()
	addrs, err := globalNetlinkAddrs(nl, from)
	if err != nil || len(addrs) == 0 {
		return err
	}
	routes, err := retryDump(func() ([]netlink.Route, error) {
		return nl.RouteListFiltered(netlink.FAMILY_ALL,
			&netlink.Route{LinkIndex: fa.Index, Table: unix.RT_TABLE_MAIN}, netlink.RT_FILTER_OIF|netlink.RT_FILTER_TABLE)
	})
	if err != nil {
		return fmt.Errorf("list routes of %s: %w", fa.Name, err)
	}
	for _, a := range addrs {
		moved := netlink.Addr{IPNet: a.IPNet, Flags: a.Flags, Scope: a.Scope, Broadcast: a.Broadcast,
			PreferedLft: a.PreferedLft, ValidLft: a.ValidLft}
		if a.IP.To4() == nil {
			moved.Flags |= unix.IFA_F_NODAD
		}
		if err := nl.AddrReplace(to, &moved); err != nil {
			return fmt.Errorf("move address %s from %s to %s: %w", a.IPNet, fa.Name, ta.Name, err)
		}
	}
	var errs []error
	for _, r := range routes {
		if !movableRoute(r) {
			continue
		}
		r.LinkIndex, r.ILinkIndex = ta.Index, 0
		r.Flags &= unix.RTNH_F_ONLINK
		if err := nl.RouteReplace(&r); err != nil {
			errs = append(errs, fmt.Errorf("move route %s from %s to %s: %w", r, fa.Name, ta.Name, err))
			continue
		}
		b.log.Info("moved route", "route", routeDst(r).String(), "gw", addrOf(r.Gw).String(), "from", fa.Name, "to", ta.Name)
	}
	for _, a := range addrs {
		if err := ignoreNotFound(nl.AddrDel(from, &netlink.Addr{IPNet: a.IPNet})); err != nil {
			errs = append(errs, fmt.Errorf("remove address %s from %s: %w", a.IPNet, fa.Name, err))
			continue
		}
		b.log.Info("moved address", "address", a.IPNet.String(), "from", fa.Name, "to", ta.Name)
	}
	return errors.Join(errs...)
}

// movableRoute tells the routes moveL3 moves from those the kernel makes for
// an address (connected and IPv6 link-local routes, recreated on the new
// device by itself) and multipath routes (not tied to one device).
func movableRoute(r netlink.Route) bool {
	if r.Protocol == unix.RTPROT_KERNEL || len(r.MultiPath) > 0 || r.Type != unix.RTN_UNICAST {
		return false
	}
	dst := routeDst(r)
	return !dst.Addr().IsLinkLocalUnicast() && !dst.Addr().IsMulticast()
}

// Teardown undoes Setup (platform.NodeTeardown): in BridgedUplink the
// uplink gets its addresses, routes, ARP and IPv6 back and leaves the
// bridge; the gateway port is deleted. The bridge itself stays (the core
// owns it and the pod ports on it).
func (b *Backend) Teardown(ctx context.Context, cfg platform.NodeConfig) error {
	cfg = cfg.WithDefaults()
	if b.ovs == nil {
		return errors.New("node teardown: the backend has no OVSDB client")
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	var errs []error
	if cfg.Topology == platform.BridgedUplink && cfg.Uplink != "" {
		errs = append(errs, b.unbridgeUplink(ctx, cfg))
	}
	errs = append(errs, b.ovs.DeletePort(ctx, cfg.Gateway))
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("node teardown: %w", err)
	}
	return nil
}

func (b *Backend) unbridgeUplink(ctx context.Context, cfg platform.NodeConfig) error {
	nl := b.host.nl
	// The uplink leaves the bridge first. ovs-vswitchd restores the flags it
	// changed (promiscuous) when it lets go of a port, by writing back the
	// whole flag word from its own cached copy; under load that copy can be
	// older than our "ARP on", and NOARP comes back. DeletePort returns
	// once ovs-vswitchd has applied the deletion, so what follows is final.
	// The node is unreachable from the moment the uplink leaves the bridge
	// until its addresses are back on it: milliseconds.
	if err := b.ovs.DeletePort(ctx, cfg.Uplink); err != nil {
		return err
	}
	uplink, err := nl.LinkByName(cfg.Uplink)
	if err != nil {
		return fmt.Errorf("uplink %s: %w", cfg.Uplink, err)
	}
	if err := nl.LinkSetARPOn(uplink); err != nil {
		return fmt.Errorf("set %s arp on: %w", cfg.Uplink, err)
	}
	if b.host.hasIPv6() {
		if _, err := b.host.setSysctl("net/ipv6/conf/"+cfg.Uplink+"/disable_ipv6", "0"); err != nil {
			return err
		}
	}
	if uplink.Attrs().Flags&net.FlagUp == 0 {
		if err := nl.LinkSetUp(uplink); err != nil {
			return fmt.Errorf("set %s up: %w", cfg.Uplink, err)
		}
	}
	host, err := nl.LinkByName(cfg.Bridge)
	if isNotFound(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("look up %s: %w", cfg.Bridge, err)
	}
	return b.moveL3(host, uplink)
}
