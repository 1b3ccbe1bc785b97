package platform

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
)

// HostState is the whole desired host-side routing and NAT of the node.
type HostState struct {
	// Gateway is the gateway interface (NodeState.Gateway.Name): encap peer
	// routes and service routes leave through it, and SNAT does not apply to
	// traffic going back out through it.
	Gateway string
	// PodCIDRs are this node's pod CIDRs: the sources SNAT applies to.
	PodCIDRs []netip.Prefix
	// ClusterCIDRs are the pod CIDRs of the whole cluster: pod traffic to them
	// is never SNATed.
	ClusterCIDRs []netip.Prefix
	// NoSNAT turns SNAT of pod traffic leaving the cluster off (pods routable
	// from outside).
	NoSNAT bool
	// SNATIPs are the source addresses for SNAT, at most one per family
	// (normally the node IPs). A family without one is masqueraded (the
	// address of the outgoing interface).
	SNATIPs []netip.Addr
	// PeerRoutes route other nodes' pod CIDRs.
	PeerRoutes []PeerRoute
	// ServiceRoutes route service CIDRs into OVS through the gateway, where
	// the pipeline load-balances them.
	ServiceRoutes []ServiceRoute
	// ServiceNextHopMAC is the MAC the host uses for every ServiceRoute
	// NextHop (a permanent neighbour entry, so the host never resolves it);
	// the pipeline treats it as its virtual router. Required when a
	// ServiceRoute has a NextHop.
	ServiceNextHopMAC net.HardwareAddr
	// KubeProxyCIDRs are the service CIDRs a kube-proxy on the host
	// serves (the agent's kube-proxy mode). Forwarded traffic still
	// addressed to them is traffic kube-proxy did not translate: a Service
	// without endpoints, which its own FORWARD rules reject. The host's
	// rules that accept pod traffic leave it to them (on Linux, Seine's
	// FORWARD chain comes first and would otherwise accept it, and the
	// client would time out instead of being refused).
	KubeProxyCIDRs []netip.Prefix
	// NoHostIngress names interfaces whose received frames the host's own
	// network stack must not process. On the userspace (netdev) datapath OVS
	// reads a port's frames through a packet socket while the kernel
	// receives them too; for the uplink of a bridged-uplink node, whose MAC
	// is the node's, the kernel would answer, forward and un-NAT every
	// frame a second time (duplicate replies, ICMP errors for tunnel
	// packets). Linux drops them before conntrack, after packet sockets.
	NoHostIngress []string
}

// PeerRoute routes one peer node's pod CIDR.
type PeerRoute struct {
	PodCIDR netip.Prefix
	// NodeIP is the peer node's IP. Without GatewayIP the route is PodCIDR via
	// NodeIP through the node network (noEncap).
	NodeIP netip.Addr
	// GatewayIP, when set, routes PodCIDR via the peer's gateway IP on this
	// node's gateway interface (on-link), so host traffic enters OVS and is
	// tunnelled (encap).
	GatewayIP netip.Addr
}

func (r PeerRoute) String() string {
	if r.GatewayIP.IsValid() {
		return fmt.Sprintf("%s via %s (gateway of node %s)", r.PodCIDR, r.GatewayIP, r.NodeIP)
	}
	return fmt.Sprintf("%s via node %s", r.PodCIDR, r.NodeIP)
}

// ServiceRoute routes one service CIDR to the gateway.
type ServiceRoute struct {
	CIDR netip.Prefix
	// NextHop is a virtual address of CIDR's family that no host owns: the
	// route is CIDR via NextHop on the gateway (on-link). Zero makes a plain
	// device route, and the host then resolves service IPs on the gateway.
	NextHop netip.Addr
}

func (r ServiceRoute) String() string {
	if r.NextHop.IsValid() {
		return fmt.Sprintf("%s via %s", r.CIDR, r.NextHop)
	}
	return r.CIDR.String() + " on gateway"
}

// Validate checks s for mistakes any backend would reject.
func (s HostState) Validate() error {
	var errs []error
	network := func(what string, p netip.Prefix) {
		if !p.IsValid() || p != p.Masked() {
			errs = append(errs, fmt.Errorf("%s %s: want a network prefix", what, p))
		}
	}
	for _, p := range s.PodCIDRs {
		network("pod CIDR", p)
	}
	for _, p := range s.ClusterCIDRs {
		network("cluster CIDR", p)
	}
	var v4, v6 int
	for _, ip := range s.SNATIPs {
		switch {
		case !ip.IsValid():
			errs = append(errs, errors.New("invalid SNAT IP"))
		case ip.Is4():
			v4++
		default:
			v6++
		}
	}
	if v4 > 1 || v6 > 1 {
		errs = append(errs, fmt.Errorf("SNAT IPs %v: at most one per family", s.SNATIPs))
	}
	needGateway := false
	for _, r := range s.PeerRoutes {
		network("peer pod CIDR", r.PodCIDR)
		fam := r.PodCIDR.Addr().Is6()
		switch {
		case r.GatewayIP.IsValid():
			needGateway = true
			if r.GatewayIP.Is6() != fam {
				errs = append(errs, fmt.Errorf("peer route %s: gateway of another family", r))
			}
		case !r.NodeIP.IsValid():
			errs = append(errs, fmt.Errorf("peer route %s: no node IP", r))
		case r.NodeIP.Is6() != fam:
			errs = append(errs, fmt.Errorf("peer route %s: node IP of another family", r))
		}
	}
	needMAC := false
	for _, r := range s.ServiceRoutes {
		network("service CIDR", r.CIDR)
		needGateway = true
		if r.NextHop.IsValid() {
			needMAC = true
			if r.NextHop.Is6() != r.CIDR.Addr().Is6() {
				errs = append(errs, fmt.Errorf("service route %s: next hop of another family", r))
			}
		}
	}
	for _, p := range s.KubeProxyCIDRs {
		network("kube-proxy service CIDR", p)
	}
	if needGateway && s.Gateway == "" {
		errs = append(errs, errors.New("routes through the gateway but no gateway interface"))
	}
	for _, name := range s.NoHostIngress {
		if name == "" {
			errs = append(errs, errors.New("no-host-ingress interface: empty name"))
		}
	}
	if needMAC && len(s.ServiceNextHopMAC) != 6 {
		errs = append(errs, fmt.Errorf("service next hop MAC %q: want 6 bytes", s.ServiceNextHopMAC))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("host state: %w", err)
	}
	return nil
}

// SNATIP returns the SNAT address of the given family (true for IPv6), or
// the zero Addr.
func (s HostState) SNATIP(ipv6 bool) netip.Addr {
	for _, ip := range s.SNATIPs {
		if ip.Is6() == ipv6 {
			return ip
		}
	}
	return netip.Addr{}
}
