package windows

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"time"

	"github.com/seine-cni/seine/ovs/ovsdb"
	"github.com/seine-cni/seine/platform"
)

// How long and how often Setup looks for the interface of an OVS port that
// the extension is creating.
var (
	interfaceWait = 10 * time.Second
	interfacePoll = 50 * time.Millisecond
)

// Setup prepares the node (see platform.NodeNetwork) in the bridged-uplink
// topology, the only one Windows has:
//
//  1. the Transparent HNS network "seine" on the uplink adapter (found by
//     name and verified, recreated when wrong);
//  2. the OVS extension enabled on its vSwitch;
//  3. the bridge, its gateway internal port with the gateway IPs and IP
//     forwarding, the uplink as a bridge port;
//  4. the node's addresses and gateway routes moved from where they are
//     (the host vNIC HNS made, or still the uplink) to the bridge's own
//     internal port, which keeps them.
//
// Calling it again with the same config moves nothing and creates nothing.
func (b *Backend) Setup(ctx context.Context, cfg platform.NodeConfig) (platform.NodeState, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return platform.NodeState{}, err
	}
	if cfg.Topology != platform.BridgedUplink {
		return platform.NodeState{}, fmt.Errorf("node setup: topology %s: %w", cfg.Topology,
			platform.NotSupported("Windows nodes run the bridged-uplink topology only;"))
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
	ifs, routes, src, err := b.nodeAddresses(ctx, cfg)
	if errors.Is(err, errNoNodeAddress) {
		// After a reboot the bridge's port can come back without the
		// addresses Setup moved there: put back what Setup recorded.
		if rerr := b.restoreNode(ctx, cfg); rerr != nil {
			return platform.NodeState{}, fmt.Errorf("%w (and restoring the recorded ones: %w)", err, rerr)
		}
		ifs, routes, src, err = b.nodeAddresses(ctx, cfg)
	}
	if err != nil {
		return platform.NodeState{}, err
	}
	uplink, _ := findInterface(ifs, cfg.Uplink)
	st := platform.NodeState{Topology: cfg.Topology, Bridge: cfg.Bridge, UplinkMTU: uplink.MTU, MTU: cfg.MTU}
	if st.MTU == 0 {
		st.MTU = uplink.MTU - cfg.EncapOverhead
	}

	network, err := b.ensureNetwork(ctx, cfg.Uplink, src.IPs, gatewayRoutes(routes, src.Index))
	if err != nil {
		return st, err
	}
	if err := b.ensureExtension(ctx, network.Id); err != nil {
		return st, err
	}
	// Creating the network moved the node's addresses and routes to the
	// host vNIC: look again.
	if _, routes, src, err = b.nodeAddresses(ctx, cfg); err != nil {
		return st, err
	}
	br := ovsdb.BridgeConfig{Name: cfg.Bridge, DatapathType: ovsdb.DatapathSystem,
		OtherConfig: map[string]string{"hwaddr": uplink.MAC.String()}}
	if err := b.ovs.EnsureBridge(ctx, br); err != nil {
		return st, err
	}

	// The gateway.
	gw, gwOFPort, err := b.ensureInternalPort(ctx, cfg.Bridge, cfg.Gateway, TypeGateway, st.MTU)
	if err != nil {
		return st, err
	}
	if cfg.GatewayMAC != nil && !bytes.Equal(gw.MAC, cfg.GatewayMAC) {
		err := b.stack.SetMAC(ctx, gw.Index, cfg.GatewayMAC)
		switch {
		case errors.Is(err, platform.ErrNotSupported):
			// The node state reports the MAC the gateway has; the core
			// builds its flows from that.
			b.log.Warn("keeping the gateway's MAC", "interface", cfg.Gateway, "mac", gw.MAC.String(),
				"wanted", cfg.GatewayMAC.String(), "err", err)
		case err != nil:
			return st, fmt.Errorf("set %s MAC %s: %w", cfg.Gateway, cfg.GatewayMAC, err)
		default:
			gw.MAC = slices.Clone(cfg.GatewayMAC)
		}
	}
	if err := b.ensureAddrs(ctx, gw, cfg.GatewayIPs, true); err != nil {
		return st, err
	}

	// The uplink joins the bridge.
	up := ovsdb.PortConfig{Name: cfg.Uplink, Type: ovsdb.TypeSystem,
		ExternalIDs: map[string]string{ExternalIDType: TypeUplink}}
	if err := b.ovs.EnsurePort(ctx, cfg.Bridge, up); err != nil {
		return st, err
	}
	upOFPort, err := b.ovs.PortOfport(ctx, cfg.Uplink)
	if err != nil {
		return st, err
	}

	// The node's addresses and routes move to the bridge's own port.
	host, err := b.waitInterface(ctx, cfg.Bridge)
	if err != nil {
		return st, err
	}
	if src.Index != host.Index {
		if err := b.moveNode(ctx, src, host, gatewayRoutes(routes, src.Index)); err != nil {
			return st, err
		}
		host.IPs = src.IPs
	}
	if err := b.dropDuplicates(ctx, host, hostVNICName(cfg.Uplink), cfg.Uplink); err != nil {
		return st, err
	}
	if err := b.recordNode(ctx, cfg.Bridge, host.IPs, gatewayRoutes(routes, src.Index)); err != nil {
		return st, err
	}
	for _, i := range []ipInterface{gw, host} {
		if err := b.forwarding(ctx, i, cfg.GatewayIPs); err != nil {
			return st, err
		}
	}

	st.Gateway = platform.PortState{Name: cfg.Gateway, OFPort: gwOFPort, MAC: gw.MAC, IPs: slices.Clone(cfg.GatewayIPs)}
	st.Uplink = platform.PortState{Name: cfg.Uplink, OFPort: upOFPort, MAC: uplink.MAC}
	st.Host = platform.PortState{Name: cfg.Bridge, OFPort: platform.OFPortLocal, MAC: host.MAC, IPs: host.IPs}
	st.NodeIPs = slices.Clone(host.IPs)
	b.node.Lock()
	b.node.networkID, b.node.uplinkMTU = network.Id, uplink.MTU
	b.node.Unlock()
	b.log.Debug("node set up", "network", network.Id, "gateway_ofport", gwOFPort,
		"uplink_ofport", upOFPort, "node_ips", fmt.Sprint(st.NodeIPs), "mtu", st.MTU)
	return st, nil
}

// nodeAddresses lists the interfaces and routes and finds the interface
// holding the node's addresses.
func (b *Backend) nodeAddresses(ctx context.Context, cfg platform.NodeConfig) ([]ipInterface, []ipRoute, ipInterface, error) {
	ifs, err := b.stack.Interfaces(ctx)
	if err != nil {
		return nil, nil, ipInterface{}, fmt.Errorf("list interfaces: %w", err)
	}
	routes, err := b.stack.Routes(ctx)
	if err != nil {
		return nil, nil, ipInterface{}, fmt.Errorf("list routes: %w", err)
	}
	if _, ok := findInterface(ifs, cfg.Uplink); !ok {
		return nil, nil, ipInterface{}, fmt.Errorf("uplink %q: no such interface", cfg.Uplink)
	}
	src, err := nodeAddressHolder(ifs, cfg.Bridge, hostVNICName(cfg.Uplink), cfg.Uplink)
	if err != nil {
		return nil, nil, ipInterface{}, err
	}
	return ifs, routes, src, nil
}

// ensureInternalPort makes an internal port exist on bridge (the extension
// creates its host interface), waits for its OpenFlow port and interface.
func (b *Backend) ensureInternalPort(ctx context.Context, bridge, name, role string, mtu int) (ipInterface, int, error) {
	p := ovsdb.PortConfig{Name: name, Type: ovsdb.TypeInternal, MTURequest: mtu,
		ExternalIDs: map[string]string{ExternalIDType: role}}
	if err := b.ovs.EnsurePort(ctx, bridge, p); err != nil {
		return ipInterface{}, 0, err
	}
	ofport, err := b.ovs.PortOfport(ctx, name)
	if err != nil {
		return ipInterface{}, 0, err
	}
	i, err := b.waitInterface(ctx, name)
	if err != nil {
		return ipInterface{}, 0, err
	}
	return i, ofport, nil
}

// waitInterface polls for an interface the OVS extension is creating.
func (b *Backend) waitInterface(ctx context.Context, name string) (ipInterface, error) {
	ctx, cancel := context.WithTimeout(ctx, interfaceWait)
	defer cancel()
	for {
		ifs, err := b.stack.Interfaces(ctx)
		if err != nil {
			return ipInterface{}, fmt.Errorf("list interfaces: %w", err)
		}
		if i, ok := findInterface(ifs, name); ok {
			return i, nil
		}
		select {
		case <-ctx.Done():
			return ipInterface{}, fmt.Errorf("interface %q of the OVS port did not appear: %w", name, ctx.Err())
		case <-time.After(interfacePoll):
		}
	}
}

// ensureAddrs adds the missing addresses of want to the interface and, if
// exclusive, removes its other global addresses.
func (b *Backend) ensureAddrs(ctx context.Context, i ipInterface, want []netip.Prefix, exclusive bool) error {
	for _, p := range want {
		if slices.Contains(i.IPs, p) {
			continue
		}
		if err := b.stack.AddAddress(ctx, i.Index, p); err != nil {
			return fmt.Errorf("add %s to %s: %w", p, i.Name, err)
		}
		b.log.Info("added address", "interface", i.Name, "address", p.String())
	}
	if !exclusive {
		return nil
	}
	for _, p := range i.IPs {
		if slices.Contains(want, p) {
			continue
		}
		if err := b.stack.DeleteAddress(ctx, i.Index, p); err != nil {
			return fmt.Errorf("remove %s from %s: %w", p, i.Name, err)
		}
		b.log.Info("removed address", "interface", i.Name, "address", p.String())
	}
	return nil
}

// moveNode moves the node's addresses and gateway routes from src to dst.
// Windows would see the same address twice on one L2 segment as a
// duplicate, so the addresses leave src before they arrive on dst; if dst
// refuses one, they go back to src. Routes follow on dst; the ones left on
// src (if removing the addresses did not take them) are deleted.
func (b *Backend) moveNode(ctx context.Context, src, dst ipInterface, routes []ipRoute) error {
	b.log.Info("moving the node's addresses", "from", src.Name, "to", dst.Name, "addresses", fmt.Sprint(src.IPs))
	for _, p := range src.IPs {
		if err := b.stack.DeleteAddress(ctx, src.Index, p); err != nil {
			return fmt.Errorf("remove %s from %s: %w", p, src.Name, err)
		}
	}
	for _, p := range src.IPs {
		if slices.Contains(dst.IPs, p) {
			continue
		}
		if err := b.stack.AddAddress(ctx, dst.Index, p); err != nil {
			var errs []error
			for _, q := range src.IPs {
				errs = append(errs, b.stack.AddAddress(ctx, src.Index, q))
			}
			if rerr := errors.Join(errs...); rerr != nil {
				return fmt.Errorf("add %s to %s: %w (and giving the addresses back to %s: %v)", p, dst.Name, err, src.Name, rerr)
			}
			return fmt.Errorf("add %s to %s (addresses given back to %s): %w", p, dst.Name, src.Name, err)
		}
	}
	for _, r := range routes {
		moved := r
		moved.IfIndex = dst.Index
		if err := b.stack.AddRoute(ctx, moved); err != nil {
			return fmt.Errorf("move route %s to %s: %w", r, dst.Name, err)
		}
		if err := b.stack.DeleteRoute(ctx, r); err != nil {
			return fmt.Errorf("remove route %s from %s: %w", r, src.Name, err)
		}
	}
	return nil
}

// dropDuplicates removes the node's addresses (now on host) from the other
// interfaces that held them before: a DHCP lease renewed on the host vNIC
// after a reboot would put the node's address on the segment twice.
func (b *Backend) dropDuplicates(ctx context.Context, host ipInterface, names ...string) error {
	ifs, err := b.stack.Interfaces(ctx)
	if err != nil {
		return fmt.Errorf("list interfaces: %w", err)
	}
	for _, name := range names {
		i, ok := findInterface(ifs, name)
		if !ok || i.Index == host.Index {
			continue
		}
		for _, p := range i.IPs {
			if !slices.Contains(host.IPs, p) {
				continue
			}
			if err := b.stack.DeleteAddress(ctx, i.Index, p); err != nil {
				return fmt.Errorf("remove the duplicate %s from %s: %w", p, i.Name, err)
			}
			b.log.Warn("removed a duplicate of the node's address", "interface", i.Name, "address", p.String())
		}
	}
	return nil
}

// forwarding turns on IP forwarding on the interface for the families of
// the gateway IPs: pod traffic enters the host stack on the gateway and
// leaves (SNATed) through the bridge's port, and replies take the way back.
func (b *Backend) forwarding(ctx context.Context, i ipInterface, gateways []netip.Prefix) error {
	for _, v6 := range []bool{false, true} {
		if !slices.ContainsFunc(gateways, func(p netip.Prefix) bool { return p.Addr().Is6() == v6 }) {
			continue
		}
		if err := b.stack.EnableForwarding(ctx, i.Index, v6); err != nil {
			return fmt.Errorf("enable forwarding on %s: %w", i.Name, err)
		}
	}
	return nil
}
