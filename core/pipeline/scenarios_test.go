package pipeline

import (
	"net"
	"net/netip"
	"testing"

	"github.com/seine-cni/seine/ovs/openflow"
)

// The representative nodes of the golden, tracer and integration tests.
// All share one cluster: node-a (this node, 10.244.1.0/24) with two pods,
// and two peers: node-b on the same subnet, node-c across a router.

const (
	portTunnel  = 1
	portGateway = 2
	portUplink  = 3
	portWeb     = 10
	portDB      = 11
)

var (
	nodeIP     = netip.MustParseAddr("192.168.10.11")
	nodeMAC    = mustMAC("52:54:00:00:10:0b")
	gatewayIP  = netip.MustParseAddr("10.244.1.1")
	gatewayMAC = mustMAC("0a:00:00:00:01:01")

	webIP  = netip.MustParseAddr("10.244.1.10")
	webMAC = mustMAC("0a:00:00:00:01:0a")
	dbIP   = netip.MustParseAddr("10.244.1.11")
	dbMAC  = mustMAC("0a:00:00:00:01:0b")

	peerBIP   = netip.MustParseAddr("192.168.10.12")
	peerBMAC  = mustMAC("52:54:00:00:10:0c")
	peerBPod  = netip.MustParseAddr("10.244.2.20")
	peerBGw   = netip.MustParseAddr("10.244.2.1")
	peerCIP   = netip.MustParseAddr("192.168.20.13")
	peerCPod  = netip.MustParseAddr("10.244.3.30")
	peerCGw   = netip.MustParseAddr("10.244.3.1")
	externIP  = netip.MustParseAddr("8.8.8.8")
	unknownIP = netip.MustParseAddr("10.244.9.9") // cluster CIDR, no node
	routerMAC = mustMAC("52:54:00:00:10:01")
)

func mustMAC(s string) net.HardwareAddr {
	m, err := net.ParseMAC(s)
	if err != nil {
		panic(err)
	}
	return m
}

func pfx(s string) netip.Prefix { return netip.MustParsePrefix(s) }

type scenario struct {
	name  string
	state State
}

func baseState(os OS, topo Topology, mode TrafficMode, tun TunnelType) State {
	n := NodeConfig{
		Name: "node-a", OS: os, Topology: topo, Mode: mode, Tunnel: tun,
		NodeIPs:         []netip.Addr{nodeIP},
		PodCIDRs:        []netip.Prefix{pfx("10.244.1.0/24")},
		ClusterPodCIDRs: []netip.Prefix{pfx("10.244.0.0/16")},
		GatewayIP:       gatewayIP, GatewayMAC: gatewayMAC,
		Ports: Ports{Gateway: portGateway},
		MTU:   1500,
	}
	if mode != NoEncap {
		n.Ports.Tunnel = portTunnel
	} else {
		n.Tunnel = 0
	}
	if topo == BridgedUplink {
		n.Ports.Uplink = portUplink
		n.NodeMAC = nodeMAC
	}
	return State{
		Node: n,
		Pods: []Pod{
			{Namespace: "default", Name: "web-0", Port: portWeb, IPs: []netip.Addr{webIP}, MAC: webMAC},
			{Namespace: "prod", Name: "db-0", Port: portDB, IPs: []netip.Addr{dbIP}, MAC: dbMAC},
		},
		Peers: []Peer{
			{Name: "node-b", NodeIP: peerBIP, PodCIDRs: []netip.Prefix{pfx("10.244.2.0/24")}, NodeMAC: peerBMAC, SameSubnet: true},
			{Name: "node-c", NodeIP: peerCIP, PodCIDRs: []netip.Prefix{pfx("10.244.3.0/24")}, SameSubnet: false},
		},
	}
}

// scenarios are the golden nodes: one per topology, mode and OS that
// changes the flows.
func scenarios() []scenario {
	return []scenario{
		{"routed-encap-geneve", baseState(OSLinux, RoutedHost, Encap, Geneve)},
		{"bridged-encap-vxlan", baseState(OSLinux, BridgedUplink, Encap, VXLAN)},
		{"routed-noencap", baseState(OSLinux, RoutedHost, NoEncap, 0)},
		{"bridged-noencap", baseState(OSLinux, BridgedUplink, NoEncap, 0)},
		{"routed-hybrid-gre", baseState(OSLinux, RoutedHost, Hybrid, GRE)},
		{"windows-encap-geneve", baseState(OSWindows, BridgedUplink, Encap, Geneve)},
	}
}

func scenarioByName(t *testing.T, name string) State {
	t.Helper()
	for _, s := range scenarios() {
		if s.name == name {
			return s.state
		}
	}
	t.Fatalf("no scenario %q", name)
	return State{}
}

func buildOrFail(t *testing.T, s State, r Round) []*openflow.Flow {
	t.Helper()
	flows, err := Build(s, r)
	if err != nil {
		t.Fatalf("build: %v", err)
	}
	return flows
}
