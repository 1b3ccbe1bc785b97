package platform

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
)

// Topology is how the node's uplink relates to the OVS bridge.
type Topology string

const (
	// RoutedHost: the uplink stays in the host stack and keeps the node IP;
	// the gateway internal port holds the pod CIDRs' gateway IPs and the host
	// routes pod traffic between the gateway and the uplink. Linux with the
	// kernel datapath.
	RoutedHost Topology = "RoutedHost"
	// BridgedUplink: the uplink is a port of the bridge; the node IP, its
	// routes and the uplink's MAC move to the bridge's internal port, and the
	// pipeline forwards uplink <-> host traffic. The gateway port exists as in
	// RoutedHost. Windows always; Linux with the userspace (netdev) datapath.
	BridgedUplink Topology = "BridgedUplink"
)

// Default names.
const (
	DefaultBridge  = "br-int"
	DefaultGateway = "seine-gw0"
)

// OFPortLocal is the OpenFlow number of a bridge's own internal port.
const OFPortLocal = 0xfffe

// NodeConfig is the whole desired state of the node's host networking.
type NodeConfig struct {
	Topology Topology
	// Bridge is the OVS integration bridge (DefaultBridge when empty).
	Bridge string
	// Gateway is the name of the gateway internal port (DefaultGateway when empty).
	Gateway string
	// GatewayIPs are the gateway's addresses with the pod CIDR's prefix length
	// (the first host address of each pod CIDR: 10.244.1.1/24), one per family.
	GatewayIPs []netip.Prefix
	// GatewayMAC fixes the gateway's MAC; nil keeps the one it has.
	GatewayMAC net.HardwareAddr
	// Uplink is the interface to the node network (eth0, "Ethernet 2").
	// Required for BridgedUplink. For RoutedHost it may be empty when NodeIPs
	// is set: the uplink is then the interface holding one of them.
	Uplink string
	// NodeIPs are the node's addresses as Kubernetes knows them (InternalIP);
	// used to find the uplink when Uplink is empty.
	NodeIPs []netip.Addr
	// MTU is the pod and gateway MTU; 0 derives it as the uplink MTU minus
	// EncapOverhead.
	MTU int
	// EncapOverhead is what encapsulation adds to a packet (Geneve over IPv4:
	// 50 bytes plus options); 0 for noEncap.
	EncapOverhead int
}

// WithDefaults returns cfg with empty names filled in.
func (cfg NodeConfig) WithDefaults() NodeConfig {
	if cfg.Bridge == "" {
		cfg.Bridge = DefaultBridge
	}
	if cfg.Gateway == "" {
		cfg.Gateway = DefaultGateway
	}
	return cfg
}

// Validate checks cfg (after WithDefaults) for mistakes any backend would reject.
func (cfg NodeConfig) Validate() error {
	var errs []error
	switch cfg.Topology {
	case RoutedHost:
		if cfg.Uplink == "" && len(cfg.NodeIPs) == 0 && cfg.MTU == 0 {
			errs = append(errs, errors.New("routed host: need the uplink, the node IPs or an explicit MTU"))
		}
	case BridgedUplink:
		if cfg.Uplink == "" {
			errs = append(errs, errors.New("bridged uplink: the uplink is required"))
		}
	case "":
		errs = append(errs, errors.New("topology is empty"))
	default:
		errs = append(errs, fmt.Errorf("topology %q: want %s or %s", cfg.Topology, RoutedHost, BridgedUplink))
	}
	if cfg.Bridge == "" || cfg.Gateway == "" {
		errs = append(errs, errors.New("bridge and gateway names must not be empty"))
	}
	if cfg.Bridge != "" && (cfg.Bridge == cfg.Gateway || cfg.Bridge == cfg.Uplink || cfg.Gateway == cfg.Uplink) {
		errs = append(errs, fmt.Errorf("bridge %q, gateway %q and uplink %q must differ", cfg.Bridge, cfg.Gateway, cfg.Uplink))
	}
	if len(cfg.GatewayIPs) == 0 {
		errs = append(errs, errors.New("no gateway IP"))
	}
	if err := onePerFamily("gateway IP", cfg.GatewayIPs); err != nil {
		errs = append(errs, err)
	}
	if cfg.GatewayMAC != nil && len(cfg.GatewayMAC) != 6 {
		errs = append(errs, fmt.Errorf("gateway MAC %s: want 6 bytes", cfg.GatewayMAC))
	}
	for _, ip := range cfg.NodeIPs {
		if !ip.IsValid() {
			errs = append(errs, errors.New("invalid node IP"))
		}
	}
	if cfg.MTU < 0 || (cfg.MTU > 0 && cfg.MTU < 576) || cfg.EncapOverhead < 0 {
		errs = append(errs, fmt.Errorf("MTU %d, encap overhead %d: want MTU 0 or >= 576, overhead >= 0", cfg.MTU, cfg.EncapOverhead))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("node config: %w", err)
	}
	return nil
}

// onePerFamily checks that prefixes are valid, not masked-to-network (an
// interface address, not a route), and at most one per IP family.
func onePerFamily(what string, ps []netip.Prefix) error {
	var v4, v6 int
	for _, p := range ps {
		if !p.IsValid() {
			return fmt.Errorf("%s: invalid prefix", what)
		}
		if p.Addr().Is4() {
			v4++
		} else {
			v6++
		}
	}
	if v4 > 1 || v6 > 1 {
		return fmt.Errorf("%s: at most one per IP family, got %v", what, ps)
	}
	return nil
}

// NodeState is what Setup made, as the core needs it to build flows.
type NodeState struct {
	Topology Topology
	Bridge   string
	// Gateway is the gateway internal port with its OpenFlow port, MAC and IPs.
	Gateway PortState
	// Uplink is the uplink interface. OFPort is 0 in RoutedHost (not on the
	// bridge); IPs are the node IPs in RoutedHost and empty in BridgedUplink.
	Uplink PortState
	// Host is the bridge's internal port holding the node IPs in
	// BridgedUplink (OFPort OFPortLocal, the uplink's MAC); zero in RoutedHost.
	Host PortState
	// NodeIPs are the node's global unicast addresses with their prefixes.
	NodeIPs []netip.Prefix
	// MTU is the pod and gateway MTU; UplinkMTU the uplink's.
	MTU, UplinkMTU int
}

// PortState is one interface of the node as OVS and the host see it.
type PortState struct {
	Name   string
	OFPort int // 0 when not on the bridge
	MAC    net.HardwareAddr
	IPs    []netip.Prefix
}

// NodeIP returns the node IP of the given family (true for IPv6), if any.
func (s NodeState) NodeIP(ipv6 bool) (netip.Addr, bool) {
	i := slices.IndexFunc(s.NodeIPs, func(p netip.Prefix) bool { return p.Addr().Is6() == ipv6 })
	if i < 0 {
		return netip.Addr{}, false
	}
	return s.NodeIPs[i].Addr(), true
}
