package platformtest

import (
	"context"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"slices"
	"strings"

	"github.com/seine-cni/seine/ovs/ovsdb"
	"github.com/seine-cni/seine/platform"
)

// Link is a host interface the fake node has before Setup.
type Link struct {
	MAC net.HardwareAddr
	MTU int
	IPs []netip.Prefix
}

// FakeNodeNetwork is a platform.NodeNetwork that builds the bridge and node
// ports in an OVSDB (a FakeOVSDB unless given another) the way a backend
// does, and moves the uplink's addresses to the bridge's internal port in
// BridgedUplink. Links holds the host's interfaces; tests add the uplink.
type FakeNodeNetwork struct {
	recorder
	OVSDB platform.OVSDB
	// Links are the host's interfaces by name. Setup reads the uplink here
	// and writes the gateway (and, bridged, the bridge port) back.
	Links map[string]Link
	state *platform.NodeState
}

var _ platform.NodeNetwork = (*FakeNodeNetwork)(nil)

// UplinkMAC is the MAC of the fake node's eth0.
var UplinkMAC = net.HardwareAddr{0x02, 0, 0, 0, 0xe0, 0}

// NewFakeNodeNetwork returns a fake node whose uplink eth0 has uplinkIPs,
// MTU 1500 and UplinkMAC. A nil db gets a fresh FakeOVSDB.
func NewFakeNodeNetwork(db platform.OVSDB, uplinkIPs ...netip.Prefix) *FakeNodeNetwork {
	if db == nil {
		db = NewFakeOVSDB()
	}
	return &FakeNodeNetwork{
		OVSDB: db,
		Links: map[string]Link{"eth0": {MAC: UplinkMAC, MTU: 1500, IPs: uplinkIPs}},
	}
}

// Setup validates cfg, creates the bridge and ports, and returns the state.
func (f *FakeNodeNetwork) Setup(ctx context.Context, cfg platform.NodeConfig) (platform.NodeState, error) {
	cfg = cfg.WithDefaults()
	f.mu.Lock()
	defer f.mu.Unlock()
	line := fmt.Sprintf("Setup %s bridge=%s gateway=%s[%s] uplink=%s mtu=%d overhead=%d",
		cfg.Topology, cfg.Bridge, cfg.Gateway, joinPrefixes(cfg.GatewayIPs), cfg.Uplink, cfg.MTU, cfg.EncapOverhead)
	st, err := f.setup(ctx, cfg)
	if err != nil {
		f.logf("%s: error: %v", line, err)
		return platform.NodeState{}, err
	}
	if f.state != nil && renderNodeState(*f.state) == renderNodeState(st) {
		f.logf("%s (no change)", line)
	} else {
		f.logf("%s", line)
	}
	f.state = &st
	return st, nil
}

func (f *FakeNodeNetwork) setup(ctx context.Context, cfg platform.NodeConfig) (platform.NodeState, error) {
	if err := f.fault("Setup"); err != nil {
		return platform.NodeState{}, err
	}
	if err := cfg.Validate(); err != nil {
		return platform.NodeState{}, err
	}
	upName := cfg.Uplink
	if upName == "" {
		for _, name := range slices.Sorted(maps.Keys(f.Links)) {
			if slices.ContainsFunc(f.Links[name].IPs, func(p netip.Prefix) bool { return slices.Contains(cfg.NodeIPs, p.Addr()) }) {
				upName = name
				break
			}
		}
	}
	up, ok := f.Links[upName]
	if !ok {
		return platform.NodeState{}, fmt.Errorf("uplink %q not found", upName)
	}
	mtu := cfg.MTU
	if mtu == 0 {
		mtu = up.MTU - cfg.EncapOverhead
	}
	st := platform.NodeState{Topology: cfg.Topology, Bridge: cfg.Bridge, MTU: mtu, UplinkMTU: up.MTU}
	brCfg := ovsdb.BridgeConfig{Name: cfg.Bridge}
	if cfg.Topology == platform.BridgedUplink {
		brCfg.OtherConfig = map[string]string{"hwaddr": up.MAC.String()}
	}
	if err := f.OVSDB.EnsureBridge(ctx, brCfg); err != nil {
		return st, err
	}
	if err := f.OVSDB.EnsurePort(ctx, cfg.Bridge, ovsdb.PortConfig{
		Name: cfg.Gateway, Type: ovsdb.TypeInternal, MTURequest: mtu,
		ExternalIDs: map[string]string{"seine-type": "gateway"},
	}); err != nil {
		return st, err
	}
	gw, err := f.port(ctx, cfg.Gateway)
	if err != nil {
		return st, err
	}
	if cfg.GatewayMAC != nil {
		gw.MAC = cfg.GatewayMAC
	}
	gw.IPs = slices.Clone(cfg.GatewayIPs)
	st.Gateway = gw
	f.Links[cfg.Gateway] = Link{MAC: gw.MAC, MTU: mtu, IPs: gw.IPs}
	st.Uplink = platform.PortState{Name: upName, MAC: up.MAC}
	switch cfg.Topology {
	case platform.RoutedHost:
		st.Uplink.IPs = slices.Clone(up.IPs)
		st.NodeIPs = slices.Clone(up.IPs)
	case platform.BridgedUplink:
		if err := f.OVSDB.EnsurePort(ctx, cfg.Bridge, ovsdb.PortConfig{
			Name: upName, ExternalIDs: map[string]string{"seine-type": "uplink"},
		}); err != nil {
			return st, err
		}
		if st.Uplink.OFPort, err = f.OVSDB.PortOfport(ctx, upName); err != nil {
			return st, err
		}
		host := f.Links[cfg.Bridge]
		host.MAC, host.MTU = up.MAC, up.MTU
		host.IPs = append(host.IPs, up.IPs...) // the move; empty after the first Setup
		f.Links[cfg.Bridge] = host
		f.Links[upName] = Link{MAC: up.MAC, MTU: up.MTU}
		st.Host = platform.PortState{Name: cfg.Bridge, OFPort: platform.OFPortLocal, MAC: up.MAC, IPs: slices.Clone(host.IPs)}
		st.NodeIPs = slices.Clone(host.IPs)
	}
	return st, nil
}

func (f *FakeNodeNetwork) port(ctx context.Context, name string) (platform.PortState, error) {
	ofport, err := f.OVSDB.PortOfport(ctx, name)
	if err != nil {
		return platform.PortState{}, err
	}
	info, err := f.OVSDB.GetPort(ctx, name)
	if err != nil {
		return platform.PortState{}, err
	}
	mac, err := net.ParseMAC(info.MAC)
	if err != nil {
		return platform.PortState{}, fmt.Errorf("port %s: MAC %q: %w", name, info.MAC, err)
	}
	return platform.PortState{Name: name, OFPort: ofport, MAC: mac}, nil
}

// Dump renders the state of the last successful Setup ("" before one).
func (f *FakeNodeNetwork) Dump() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.state == nil {
		return ""
	}
	return renderNodeState(*f.state)
}

func renderNodeState(s platform.NodeState) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s bridge=%s mtu=%d uplink_mtu=%d node_ips=%s\n", s.Topology, s.Bridge, s.MTU, s.UplinkMTU, joinPrefixes(s.NodeIPs))
	for _, p := range []struct {
		role string
		p    platform.PortState
	}{{"gateway", s.Gateway}, {"uplink", s.Uplink}, {"host", s.Host}} {
		if p.p.Name == "" {
			continue
		}
		fmt.Fprintf(&b, "%s %s ofport=%d mac=%s ips=%s\n", p.role, p.p.Name, p.p.OFPort, p.p.MAC, joinPrefixes(p.p.IPs))
	}
	return b.String()
}
