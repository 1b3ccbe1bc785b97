package pipeline

import (
	"errors"
	"fmt"
	"github.com/seine-cni/seine/core/hostport"
	"net"
	"net/netip"
	"slices"
	"strings"

	"github.com/seine-cni/seine/ovs/openflow"
)

// ErrUnsupported is wrapped by validation errors for inputs the pipeline
// does not handle yet (IPv6 addresses, STT tunnels), so callers can tell
// "not yet" from "wrong".
var ErrUnsupported = errors.New("not supported by the pipeline")

// OS is the operating system of the node the flows are for.
type OS string

// The operating systems Seine runs on.
const (
	OSLinux   OS = "linux"
	OSWindows OS = "windows"
)

// Topology says how the node's uplink relates to the OVS bridge.
type Topology uint8

const (
	// RoutedHost keeps the uplink in the host: the host routes between the
	// uplink and the gateway port, the tunnel port uses host routing
	// (Linux with the kernel datapath).
	RoutedHost Topology = iota + 1
	// BridgedUplink makes the uplink a port of the bridge and puts the node
	// IP on the bridge's internal (LOCAL) port; the pipeline forwards
	// uplink <-> host traffic (Windows with the Hyper-V extension; Linux
	// with the userspace netdev datapath).
	BridgedUplink
)

func (t Topology) String() string {
	switch t {
	case RoutedHost:
		return "routedHost"
	case BridgedUplink:
		return "bridgedUplink"
	}
	return fmt.Sprintf("topology(%d)", uint8(t))
}

// TrafficMode says how pod traffic crosses nodes.
type TrafficMode uint8

const (
	// Encap tunnels all traffic to peer pod CIDRs.
	Encap TrafficMode = iota + 1
	// NoEncap routes traffic to peer pod CIDRs via the peer's node IP.
	NoEncap
	// Hybrid routes to peers on the same subnet and tunnels to the others.
	Hybrid
)

func (m TrafficMode) String() string {
	switch m {
	case Encap:
		return "encap"
	case NoEncap:
		return "noEncap"
	case Hybrid:
		return "hybrid"
	}
	return fmt.Sprintf("mode(%d)", uint8(m))
}

// ParseTrafficMode is the inverse of TrafficMode.String. Callers prefix the
// error with the name of their setting.
func ParseTrafficMode(s string) (TrafficMode, error) {
	for _, m := range []TrafficMode{Encap, NoEncap, Hybrid} {
		if m.String() == s {
			return m, nil
		}
	}
	return 0, fmt.Errorf("%q: want encap, noEncap or hybrid", s)
}

// TunnelType is the encapsulation of the tunnel port.
type TunnelType uint8

// The tunnel types the pipeline knows.
const (
	Geneve TunnelType = iota + 1
	VXLAN
	GRE
)

func (t TunnelType) String() string {
	switch t {
	case Geneve:
		return "geneve"
	case VXLAN:
		return "vxlan"
	case GRE:
		return "gre"
	}
	return fmt.Sprintf("tunnel(%d)", uint8(t))
}

// ParseTunnelType is the inverse of TunnelType.String, ignoring case.
func ParseTunnelType(s string) (TunnelType, error) {
	for _, t := range []TunnelType{Geneve, VXLAN, GRE} {
		if strings.EqualFold(t.String(), s) {
			return t, nil
		}
	}
	return 0, fmt.Errorf("%q: want geneve, vxlan or gre", s)
}

// Overhead is the number of bytes the encapsulation adds to an inner
// Ethernet frame over an IPv4 underlay (outer IPv4 + UDP/GRE + tunnel
// header + inner Ethernet).
func (t TunnelType) Overhead() int {
	switch t {
	case Geneve, VXLAN:
		return 20 + 8 + 8 + 14
	case GRE:
		return 20 + 4 + 14
	}
	return 0
}

// UDPPort is the IANA destination port of a UDP tunnel (0 for GRE).
func (t TunnelType) UDPPort() uint16 {
	switch t {
	case Geneve:
		return 6081
	case VXLAN:
		return 4789
	}
	return 0
}

// maxPort bounds the port numbers of pods and node ports: reg1 holds
// 16-bit port numbers, and 0xff00 and up are reserved (see regPort).
const maxPort = 0xff00

// ipProtoGRE is the IP protocol number of GRE.
const ipProtoGRE = 47

// Ports are the OpenFlow port numbers of the node's infrastructure ports.
type Ports struct {
	Tunnel  uint32 // encap and hybrid modes
	Gateway uint32 // seine-gw0: holds the gateway IP
	Uplink  uint32 // bridged uplink only
	// Host is the internal port that holds the node IP in the bridged
	// uplink topology; zero means the bridge's LOCAL port.
	Host uint32
}

// NodeConfig is what the pipeline needs to know about the node itself.
type NodeConfig struct {
	Name     string
	OS       OS
	Topology Topology
	Mode     TrafficMode
	Tunnel   TunnelType // encap and hybrid modes

	// NodeIPs are the node's addresses; the first is the tunnel endpoint.
	NodeIPs []netip.Addr
	// NodeMAC is the MAC of the interface holding the node IP (the host
	// port). Required in the bridged uplink topology, where pod traffic to
	// the node IP and noEncap traffic to peers is addressed with it.
	NodeMAC net.HardwareAddr

	PodCIDRs        []netip.Prefix // this node's pod CIDRs
	ClusterPodCIDRs []netip.Prefix // the whole cluster's pod CIDRs

	GatewayIP  netip.Addr
	GatewayMAC net.HardwareAddr

	Ports Ports
	// MTU is the underlay (uplink) MTU; 0 means 1500. See PodMTU.
	MTU int

	// ServiceProxy turns on Seine's service proxy: the node-level flows
	// the Services' own flows (ServiceFlows) rely on, and each pod's
	// hairpin flows. Without it Service traffic is left to the host (a
	// kube-proxy on the node): see ServiceCIDRs.
	ServiceProxy bool
	// ServiceCIDRs are the cluster's service address ranges. Without the
	// service proxy (kube-proxy mode), pod traffic to them is handed to
	// the host unchecked by egress policy, which checks it when the host
	// sends it back DNATed to an endpoint (see README, "kube-proxy mode").
	ServiceCIDRs []netip.Prefix
}

// Pod is a pod plugged into the bridge on this node.
type Pod struct {
	Namespace, Name string
	Port            uint32
	IPs             []netip.Addr
	MAC             net.HardwareAddr
	// HostPorts are the pod's host ports (hostPort in its spec, passed by
	// the runtime); a node with the service proxy DNATs those on its
	// addresses to the pod (hostport.go).
	HostPorts []hostport.Mapping
}

// Key is namespace/name.
func (p Pod) Key() string { return p.Namespace + "/" + p.Name }

// Peer is another node of the cluster.
type Peer struct {
	Name     string
	NodeIP   netip.Addr
	PodCIDRs []netip.Prefix
	// NodeMAC is the MAC of the next hop towards the peer's node IP on the
	// uplink's segment: the peer's own MAC, or a router's that several peers
	// share. Only noEncap forwarding from a bridged uplink uses it, to send
	// pod traffic straight out of the uplink; without it that traffic is
	// handed to the host, which routes it (crossing the bridge twice).
	NodeMAC net.HardwareAddr
	// SameSubnet says the peer's node IP is on this node's subnet: in
	// hybrid mode such a peer is reached without encapsulation.
	SameSubnet bool
}

// State is the whole desired state the flows are built from.
type State struct {
	Node  NodeConfig
	Pods  []Pod
	Peers []Peer
}

// hostPort returns the port holding the node IP in the bridged topology.
func (c *NodeConfig) hostPort() uint32 {
	if c.Ports.Host == 0 {
		return openflow.PortLocal
	}
	return c.Ports.Host
}

// encapsulates reports whether traffic to peer is tunnelled.
func (c *NodeConfig) encapsulates(p *Peer) bool {
	switch c.Mode {
	case Encap:
		return true
	case Hybrid:
		return !p.SameSubnet
	}
	return false
}

// usesTunnel reports whether the node has a tunnel port at all.
func (c *NodeConfig) usesTunnel() bool { return c.Mode == Encap || c.Mode == Hybrid }

// PodMTU is the MTU for pod interfaces and the gateway: the underlay MTU
// minus the encapsulation overhead (none in noEncap mode). OVS neither
// fragments nor sends "fragmentation needed", so a larger pod MTU makes big
// tunnelled frames vanish.
func (c *NodeConfig) PodMTU() int {
	mtu := c.MTU
	if mtu == 0 {
		mtu = 1500
	}
	if c.usesTunnel() {
		mtu -= c.Tunnel.Overhead()
	}
	return mtu
}

// Validate checks the node config for what the builders rely on.
func (c *NodeConfig) Validate() error {
	if c.Name == "" {
		return errors.New("node name is empty")
	}
	switch c.OS {
	case OSLinux:
	case OSWindows:
		if c.Topology != BridgedUplink {
			return fmt.Errorf("node %s: windows nodes use the %s topology, not %s", c.Name, BridgedUplink, c.Topology)
		}
	default:
		return fmt.Errorf("node %s: unknown OS %q", c.Name, c.OS)
	}
	if c.Topology != RoutedHost && c.Topology != BridgedUplink {
		return fmt.Errorf("node %s: unknown %s", c.Name, c.Topology)
	}
	switch c.Mode {
	case Encap, Hybrid:
		if c.Tunnel == 0 {
			return fmt.Errorf("node %s: %s mode needs a tunnel type", c.Name, c.Mode)
		}
		if c.Tunnel.Overhead() == 0 {
			return fmt.Errorf("node %s: %s: %w", c.Name, c.Tunnel, ErrUnsupported)
		}
		if c.Ports.Tunnel == 0 {
			return fmt.Errorf("node %s: %s mode needs the tunnel port", c.Name, c.Mode)
		}
	case NoEncap:
		if c.Ports.Tunnel != 0 {
			return fmt.Errorf("node %s: noEncap mode has no tunnel port, got %d", c.Name, c.Ports.Tunnel)
		}
	default:
		return fmt.Errorf("node %s: unknown %s", c.Name, c.Mode)
	}
	if len(c.NodeIPs) == 0 {
		return fmt.Errorf("node %s: no node IP", c.Name)
	}
	for _, ip := range c.NodeIPs {
		if err := checkIPv4("node IP", ip); err != nil {
			return fmt.Errorf("node %s: %w", c.Name, err)
		}
	}
	if err := checkIPv4("gateway IP", c.GatewayIP); err != nil {
		return fmt.Errorf("node %s: %w", c.Name, err)
	}
	if err := checkMAC("gateway MAC", c.GatewayMAC); err != nil {
		return fmt.Errorf("node %s: %w", c.Name, err)
	}
	if c.Ports.Gateway == 0 {
		return fmt.Errorf("node %s: no gateway port", c.Name)
	}
	if len(c.PodCIDRs) == 0 {
		return fmt.Errorf("node %s: no pod CIDR", c.Name)
	}
	if len(c.ClusterPodCIDRs) == 0 {
		return fmt.Errorf("node %s: no cluster pod CIDR", c.Name)
	}
	for _, p := range c.ClusterPodCIDRs {
		if err := checkPrefix("cluster pod CIDR", p); err != nil {
			return fmt.Errorf("node %s: %w", c.Name, err)
		}
	}
	gwInside := false
	for _, p := range c.PodCIDRs {
		if err := checkPrefix("pod CIDR", p); err != nil {
			return fmt.Errorf("node %s: %w", c.Name, err)
		}
		if !coveredBy(p, c.ClusterPodCIDRs) {
			return fmt.Errorf("node %s: pod CIDR %s is outside the cluster pod CIDRs %v", c.Name, p, c.ClusterPodCIDRs)
		}
		gwInside = gwInside || p.Contains(c.GatewayIP)
	}
	if !gwInside {
		return fmt.Errorf("node %s: gateway IP %s is outside the pod CIDRs %v", c.Name, c.GatewayIP, c.PodCIDRs)
	}
	switch c.Topology {
	case BridgedUplink:
		if c.Ports.Uplink == 0 {
			return fmt.Errorf("node %s: %s needs the uplink port", c.Name, c.Topology)
		}
		if err := checkMAC("node MAC", c.NodeMAC); err != nil {
			return fmt.Errorf("node %s: %s: %w", c.Name, c.Topology, err)
		}
	case RoutedHost:
		if c.Ports.Uplink != 0 || c.Ports.Host != 0 {
			return fmt.Errorf("node %s: %s has no uplink or host port on the bridge", c.Name, c.Topology)
		}
	}
	ports := []uint32{}
	for _, p := range []uint32{c.Ports.Gateway, c.Ports.Tunnel, c.Ports.Uplink, c.Ports.Host} {
		if p == 0 {
			continue
		}
		if p >= maxPort && p != openflow.PortLocal {
			return fmt.Errorf("node %s: bad port %d", c.Name, p)
		}
		if slices.Contains(ports, p) {
			return fmt.Errorf("node %s: port %d used twice", c.Name, p)
		}
		ports = append(ports, p)
	}
	for _, p := range c.ServiceCIDRs {
		if err := checkPrefix("service CIDR", p); err != nil {
			return fmt.Errorf("node %s: %w", c.Name, err)
		}
	}
	if c.MTU != 0 && c.PodMTU() < 576 {
		return fmt.Errorf("node %s: MTU %d leaves a pod MTU of %d", c.Name, c.MTU, c.PodMTU())
	}
	return nil
}

// validatePod checks one pod against the node config.
func (c *NodeConfig) validatePod(p *Pod) error {
	if p.Namespace == "" || p.Name == "" {
		return fmt.Errorf("pod %q: namespace and name are required", p.Key())
	}
	if p.Port == 0 || p.Port >= maxPort {
		return fmt.Errorf("pod %s: bad port %d", p.Key(), p.Port)
	}
	if p.Port == c.Ports.Gateway || p.Port == c.Ports.Tunnel || p.Port == c.Ports.Uplink || p.Port == c.Ports.Host {
		return fmt.Errorf("pod %s: port %d belongs to the node", p.Key(), p.Port)
	}
	if err := checkMAC("MAC", p.MAC); err != nil {
		return fmt.Errorf("pod %s: %w", p.Key(), err)
	}
	if len(p.IPs) == 0 {
		return fmt.Errorf("pod %s: no IP", p.Key())
	}
	for _, ip := range p.IPs {
		if err := checkIPv4("IP", ip); err != nil {
			return fmt.Errorf("pod %s: %w", p.Key(), err)
		}
		if !slices.ContainsFunc(c.PodCIDRs, func(cidr netip.Prefix) bool { return cidr.Contains(ip) }) {
			return fmt.Errorf("pod %s: IP %s is outside the node's pod CIDRs %v", p.Key(), ip, c.PodCIDRs)
		}
		if ip == c.GatewayIP {
			return fmt.Errorf("pod %s: IP %s is the gateway IP", p.Key(), ip)
		}
	}
	for i, m := range p.HostPorts {
		if err := m.Validate(); err != nil {
			return fmt.Errorf("pod %s: %w", p.Key(), err)
		}
		if j := slices.IndexFunc(p.HostPorts[:i], m.Overlaps); j >= 0 {
			return fmt.Errorf("pod %s: host ports %s and %s overlap", p.Key(), p.HostPorts[j], m)
		}
	}
	return nil
}

// validatePeer checks one peer against the node config.
func (c *NodeConfig) validatePeer(p *Peer) error {
	if p.Name == "" {
		return errors.New("peer with an empty name")
	}
	if p.Name == c.Name {
		return fmt.Errorf("peer %s is this node", p.Name)
	}
	if err := checkIPv4("node IP", p.NodeIP); err != nil {
		return fmt.Errorf("peer %s: %w", p.Name, err)
	}
	if len(p.PodCIDRs) == 0 {
		return fmt.Errorf("peer %s: no pod CIDR", p.Name)
	}
	for _, cidr := range p.PodCIDRs {
		if err := checkPrefix("pod CIDR", cidr); err != nil {
			return fmt.Errorf("peer %s: %w", p.Name, err)
		}
		for _, own := range c.PodCIDRs {
			if own.Overlaps(cidr) {
				return fmt.Errorf("peer %s: pod CIDR %s overlaps this node's %s", p.Name, cidr, own)
			}
		}
	}
	if p.NodeMAC != nil {
		if err := checkMAC("node MAC", p.NodeMAC); err != nil {
			return fmt.Errorf("peer %s: %w", p.Name, err)
		}
	}
	return nil
}

// Validate checks the whole state: node, pods and peers, and that no two
// pods share a port, IP or MAC and no two peers share a pod CIDR.
func (s *State) Validate() error {
	if err := s.Node.Validate(); err != nil {
		return err
	}
	ports := map[uint32]string{}
	ips := map[netip.Addr]string{}
	macs := map[string]string{}
	for i := range s.Pods {
		p := &s.Pods[i]
		if err := s.Node.validatePod(p); err != nil {
			return err
		}
		if other, dup := ports[p.Port]; dup {
			return fmt.Errorf("pods %s and %s share port %d", other, p.Key(), p.Port)
		}
		ports[p.Port] = p.Key()
		if other, dup := macs[p.MAC.String()]; dup {
			return fmt.Errorf("pods %s and %s share MAC %s", other, p.Key(), p.MAC)
		}
		macs[p.MAC.String()] = p.Key()
		for _, ip := range p.IPs {
			if other, dup := ips[ip]; dup {
				return fmt.Errorf("pods %s and %s share IP %s", other, p.Key(), ip)
			}
			ips[ip] = p.Key()
		}
		for j := range i {
			for _, m := range p.HostPorts {
				if k := slices.IndexFunc(s.Pods[j].HostPorts, m.Overlaps); k >= 0 {
					return fmt.Errorf("pods %s and %s take host ports %s and %s", s.Pods[j].Key(), p.Key(), s.Pods[j].HostPorts[k], m)
				}
			}
		}
	}
	names := map[string]bool{}
	var cidrs []netip.Prefix
	for i := range s.Peers {
		p := &s.Peers[i]
		if err := s.Node.validatePeer(p); err != nil {
			return err
		}
		if names[p.Name] {
			return fmt.Errorf("peer %s listed twice", p.Name)
		}
		names[p.Name] = true
		for _, cidr := range p.PodCIDRs {
			for _, other := range cidrs {
				if other.Overlaps(cidr) {
					return fmt.Errorf("peer %s: pod CIDR %s overlaps another peer's %s", p.Name, cidr, other)
				}
			}
			cidrs = append(cidrs, cidr)
		}
	}
	return nil
}

func checkIPv4(what string, a netip.Addr) error {
	switch {
	case !a.IsValid():
		return fmt.Errorf("no %s", what)
	case a.Is6() && !a.Is4In6():
		return fmt.Errorf("%s %s: IPv6: %w", what, a, ErrUnsupported)
	case a.Unmap().IsUnspecified():
		return fmt.Errorf("%s is unspecified", what)
	}
	return nil
}

func checkPrefix(what string, p netip.Prefix) error {
	if !p.IsValid() {
		return fmt.Errorf("invalid %s", what)
	}
	if p.Addr().Is6() {
		return fmt.Errorf("%s %s: IPv6: %w", what, p, ErrUnsupported)
	}
	if p.Masked() != p {
		return fmt.Errorf("%s %s has host bits set", what, p)
	}
	return nil
}

func checkMAC(what string, m net.HardwareAddr) error {
	if len(m) != 6 {
		return fmt.Errorf("%s %q is not a 48-bit MAC", what, m)
	}
	if m[0]&1 != 0 {
		return fmt.Errorf("%s %s is a multicast address", what, m)
	}
	return nil
}

func coveredBy(p netip.Prefix, by []netip.Prefix) bool {
	for _, b := range by {
		if b.Bits() <= p.Bits() && b.Contains(p.Addr()) {
			return true
		}
	}
	return false
}

// gatewayOf returns the conventional gateway address of a pod CIDR: its
// first host address.
func gatewayOf(p netip.Prefix) netip.Addr { return p.Masked().Addr().Next() }
