package linux

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/seine-cni/seine/ovs/ovsdb"
	"github.com/seine-cni/seine/platform"
)

// External IDs Setup puts on the node's OVS ports, so that they can be told
// from pod ports.
const (
	ExternalIDType = "seine-type"
	TypeGateway    = "gateway"
	TypeUplink     = "uplink"
	TypeHost       = "host"
)

// linkWaitPoll is how often Setup looks for a port's device that
// ovs-vswitchd is creating.
const linkWaitPoll = 10 * time.Millisecond

// Setup prepares the node (see platform.NodeNetwork): forwarding sysctls,
// the bridge, the gateway internal port with the gateway IPs, and in
// BridgedUplink the uplink on the bridge with its addresses, routes and MAC
// moved to the bridge's internal port. Internal ports are brought up (a down
// tap makes a netdev ovs-vswitchd spin). Calling it again with the same
// config changes nothing.
//
// In BridgedUplink the node reaches the network through the bridge once its
// address has moved, which needs the pipeline's uplink <-> host flows: the
// core installs them right after Setup (the bridge is fail_mode=secure).
func (b *Backend) Setup(ctx context.Context, cfg platform.NodeConfig) (platform.NodeState, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return platform.NodeState{}, err
	}
	if b.ovs == nil {
		return platform.NodeState{}, errors.New("node setup: the backend has no OVSDB client")
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	st, err := b.setup(ctx, cfg)
	if err != nil {
		return platform.NodeState{}, fmt.Errorf("node setup (%s): %w", cfg.Topology, err)
	}
	return st, nil
}

func (b *Backend) setup(ctx context.Context, cfg platform.NodeConfig) (platform.NodeState, error) {
	nl := b.host.nl
	uplink, err := b.findUplink(cfg)
	if err != nil {
		return platform.NodeState{}, err
	}
	ua := uplink.Attrs()
	st := platform.NodeState{Topology: cfg.Topology, Bridge: cfg.Bridge, UplinkMTU: ua.MTU, MTU: cfg.MTU}
	if st.MTU == 0 {
		st.MTU = ua.MTU - cfg.EncapOverhead
	}
	if err := b.forwarding(cfg); err != nil {
		return st, err
	}

	br := ovsdb.BridgeConfig{Name: cfg.Bridge, DatapathType: b.datapath}
	if cfg.Topology == platform.BridgedUplink {
		// The bridge's internal port takes over the uplink's MAC along with
		// its addresses, so neighbours' ARP caches stay right.
		br.OtherConfig = map[string]string{"hwaddr": ua.HardwareAddr.String()}
	}
	if err := b.ovs.EnsureBridge(ctx, br); err != nil {
		return st, err
	}

	// The gateway.
	gwLink, ofport, err := b.ensureInternalPort(ctx, cfg.Bridge, cfg.Gateway, TypeGateway, st.MTU)
	if err != nil {
		return st, err
	}
	if cfg.GatewayMAC != nil && !bytes.Equal(gwLink.Attrs().HardwareAddr, cfg.GatewayMAC) {
		if err := nl.LinkSetHardwareAddr(gwLink, cfg.GatewayMAC); err != nil {
			return st, fmt.Errorf("set %s MAC %s: %w", cfg.Gateway, cfg.GatewayMAC, err)
		}
	}
	if err := b.ensureAddrs(gwLink, cfg.GatewayIPs, true); err != nil {
		return st, err
	}
	// Loose reverse-path filtering: replies to pods may come back through
	// the gateway from sources the main table routes elsewhere.
	if _, err := b.host.setSysctl("net/ipv4/conf/"+cfg.Gateway+"/rp_filter", "2"); err != nil {
		return st, err
	}
	// route_localnet: the host's connections from 127.0.0.1 to a pod's
	// host port, DNATed to the pod (SyncNodePorts), are routed out of the
	// gateway before their masquerade; the kernel refuses a loopback source
	// on any other interface without it. What it would also let in, pod
	// packets to 127.0.0.0/8 (CVE-2020-8558), the bridge drops
	// (core/pipeline L3Forwarding).
	if _, err := b.host.setSysctl("net/ipv4/conf/"+cfg.Gateway+"/route_localnet", "1"); err != nil {
		return st, err
	}
	// No ICMP redirects: the host routes pod traffic back out of the
	// gateway it came in by (kube-proxy's DNAT to a pod of this node). A
	// redirect would make the pod send that cluster IP's packets straight
	// to the other pod, past the DNAT, and each one resets the host's ICMP
	// rate limit for the pod, which then misses the errors that follow
	// (kube-proxy's REJECT of a Service without endpoints: the pod timed
	// out instead of being refused). The kernel sends a redirect when the
	// interface's or "all"'s send_redirects is on, so both go off.
	for _, k := range []string{"net/ipv4/conf/all/send_redirects", "net/ipv4/conf/" + cfg.Gateway + "/send_redirects"} {
		if _, err := b.host.setSysctl(k, "0"); err != nil {
			return st, err
		}
	}
	if st.Gateway, err = b.portState(cfg.Gateway, ofport); err != nil {
		return st, err
	}

	switch cfg.Topology {
	case platform.RoutedHost:
		// The bridge's own port carries nothing in this topology, but a
		// netdev tap that is down makes ovs-vswitchd spin on it: up, without
		// ARP or IPv6 so the host never uses it.
		local, err := b.waitLink(ctx, cfg.Bridge)
		if err != nil {
			return st, err
		}
		if err := b.prepareOVSPort(local); err != nil {
			return st, err
		}
		if st.Uplink, err = b.portState(ua.Name, 0); err != nil {
			return st, err
		}
		st.NodeIPs = st.Uplink.IPs
	case platform.BridgedUplink:
		if err := b.bridgeUplink(ctx, cfg, uplink, &st); err != nil {
			return st, err
		}
	}
	b.log.Debug("node set up", "topology", string(cfg.Topology), "bridge", cfg.Bridge,
		"gateway_ofport", st.Gateway.OFPort, "node_ips", fmt.Sprint(st.NodeIPs), "mtu", st.MTU)
	return st, nil
}

// findUplink returns cfg.Uplink or, without one, the link holding a node IP.
func (b *Backend) findUplink(cfg platform.NodeConfig) (netlink.Link, error) {
	if cfg.Uplink != "" {
		l, err := b.host.nl.LinkByName(cfg.Uplink)
		if err != nil {
			return nil, fmt.Errorf("uplink %s in %s: %w", cfg.Uplink, b.host, err)
		}
		return l, nil
	}
	links, err := retryDump(b.host.nl.LinkList)
	if err != nil {
		return nil, fmt.Errorf("list links: %w", err)
	}
	for _, l := range links {
		addrs, err := globalAddrs(b.host.nl, l)
		if err != nil {
			return nil, err
		}
		if slices.ContainsFunc(addrs, func(p netip.Prefix) bool { return slices.Contains(cfg.NodeIPs, p.Addr()) }) {
			return l, nil
		}
	}
	return nil, fmt.Errorf("no interface in %s holds a node IP %v", b.host, cfg.NodeIPs)
}

// forwarding turns on IP forwarding for the families the node's pods use.
func (b *Backend) forwarding(cfg platform.NodeConfig) error {
	keys := []string{"net/ipv4/ip_forward"}
	if slices.ContainsFunc(cfg.GatewayIPs, func(p netip.Prefix) bool { return p.Addr().Is6() }) {
		keys = append(keys, "net/ipv6/conf/all/forwarding")
	}
	for _, k := range keys {
		changed, err := b.host.setSysctl(k, "1")
		if err != nil {
			return err
		}
		if changed {
			b.log.Info("enabled forwarding", "sysctl", k)
		}
	}
	return nil
}

// ensureInternalPort makes an internal port exist on bridge with mtu (0
// leaves it to OVS), waits for its ofport and its device, brings it up and
// returns the device.
func (b *Backend) ensureInternalPort(ctx context.Context, bridge, name, role string, mtu int) (netlink.Link, int, error) {
	p := ovsdb.PortConfig{Name: name, Type: ovsdb.TypeInternal, MTURequest: mtu,
		ExternalIDs: map[string]string{ExternalIDType: role}}
	if err := b.ovs.EnsurePort(ctx, bridge, p); err != nil {
		return nil, 0, err
	}
	ofport, err := b.ovs.PortOfport(ctx, name)
	if err != nil {
		return nil, 0, err
	}
	link, err := b.waitLink(ctx, name)
	if err != nil {
		return nil, 0, err
	}
	if mtu != 0 && link.Attrs().MTU != mtu {
		if err := b.host.nl.LinkSetMTU(link, mtu); err != nil {
			return nil, 0, fmt.Errorf("set %s mtu %d: %w", name, mtu, err)
		}
	}
	if link.Attrs().Flags&net.FlagUp == 0 {
		if err := b.host.nl.LinkSetUp(link); err != nil {
			return nil, 0, fmt.Errorf("set %s up: %w", name, err)
		}
	}
	return link, ofport, nil
}

// waitLink polls for a device ovs-vswitchd is creating.
func (b *Backend) waitLink(ctx context.Context, name string) (netlink.Link, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	for {
		l, err := b.host.nl.LinkByName(name)
		if err == nil {
			return l, nil
		}
		if !isNotFound(err) {
			return nil, fmt.Errorf("look up %s: %w", name, err)
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("device %s of the OVS port did not appear in %s: %w", name, b.host, ctx.Err())
		case <-time.After(linkWaitPoll):
		}
	}
}

// portState reads a node port's MAC and global addresses.
func (b *Backend) portState(name string, ofport int) (platform.PortState, error) {
	l, err := b.host.nl.LinkByName(name)
	if err != nil {
		return platform.PortState{}, fmt.Errorf("look up %s: %w", name, err)
	}
	ips, err := globalAddrs(b.host.nl, l)
	if err != nil {
		return platform.PortState{}, err
	}
	return platform.PortState{Name: name, OFPort: ofport, MAC: slices.Clone(l.Attrs().HardwareAddr), IPs: ips}, nil
}

// ensureAddrs adds the missing addresses of want to link and, if exclusive,
// removes its other global addresses.
func (b *Backend) ensureAddrs(link netlink.Link, want []netip.Prefix, exclusive bool) error {
	name := link.Attrs().Name
	have, err := globalAddrs(b.host.nl, link)
	if err != nil {
		return err
	}
	for _, p := range want {
		if slices.Contains(have, p) {
			continue
		}
		addr := &netlink.Addr{IPNet: ipNet(p)}
		if p.Addr().Is6() {
			addr.Flags = unix.IFA_F_NODAD
		}
		if err := b.host.nl.AddrReplace(link, addr); err != nil {
			return fmt.Errorf("add %s to %s: %w", p, name, err)
		}
		b.log.Info("added address", "interface", name, "address", p.String())
	}
	if !exclusive {
		return nil
	}
	for _, p := range have {
		if slices.Contains(want, p) {
			continue
		}
		if err := ignoreNotFound(b.host.nl.AddrDel(link, &netlink.Addr{IPNet: ipNet(p)})); err != nil {
			return fmt.Errorf("remove %s from %s: %w", p, name, err)
		}
		b.log.Info("removed address", "interface", name, "address", p.String())
	}
	return nil
}
