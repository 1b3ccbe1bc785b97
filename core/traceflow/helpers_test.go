package traceflow

import (
	"net"
	"net/netip"
	"testing"

	"github.com/seine-cni/seine/core/pipeline"
	"github.com/seine-cni/seine/ovs/openflow"
)

// The node of these tests: node-a (10.244.1.0/24) with web-0 (port 10)
// and db-0 (port 11, isolated for ingress by a policy allowing TCP 5432
// from web-0 only), a peer node-b reached through the tunnel.
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
	webIP      = netip.MustParseAddr("10.244.1.10")
	webMAC     = mustMAC("0a:00:00:00:01:0a")
	dbIP       = netip.MustParseAddr("10.244.1.11")
	dbMAC      = mustMAC("0a:00:00:00:01:0b")
	peerIP     = netip.MustParseAddr("192.168.10.12")
	peerPod    = netip.MustParseAddr("10.244.2.20")
	externIP   = netip.MustParseAddr("8.8.8.8")
	clusterNet = netip.MustParsePrefix("10.244.0.0/16")
)

func mustMAC(s string) net.HardwareAddr {
	m, err := net.ParseMAC(s)
	if err != nil {
		panic(err)
	}
	return m
}

func nodeState(topo pipeline.Topology, mode pipeline.TrafficMode, tun pipeline.TunnelType) pipeline.State {
	n := pipeline.NodeConfig{
		Name: "node-a", OS: pipeline.OSLinux, Topology: topo, Mode: mode, Tunnel: tun,
		NodeIPs:         []netip.Addr{nodeIP},
		PodCIDRs:        []netip.Prefix{netip.MustParsePrefix("10.244.1.0/24")},
		ClusterPodCIDRs: []netip.Prefix{clusterNet},
		GatewayIP:       gatewayIP, GatewayMAC: gatewayMAC,
		Ports: pipeline.Ports{Gateway: portGateway},
		MTU:   1500,
	}
	if mode != pipeline.NoEncap {
		n.Ports.Tunnel = portTunnel
	} else {
		n.Tunnel = 0
	}
	if topo == pipeline.BridgedUplink {
		n.Ports.Uplink = portUplink
		n.NodeMAC = nodeMAC
	}
	return pipeline.State{
		Node: n,
		Pods: []pipeline.Pod{
			{Namespace: "default", Name: "web-0", Port: portWeb, IPs: []netip.Addr{webIP}, MAC: webMAC},
			{Namespace: "prod", Name: "db-0", Port: portDB, IPs: []netip.Addr{dbIP}, MAC: dbMAC},
		},
		Peers: []pipeline.Peer{
			{Name: "node-b", NodeIP: peerIP, PodCIDRs: []netip.Prefix{netip.MustParsePrefix("10.244.2.0/24")}, NodeMAC: mustMAC("52:54:00:00:10:0c"), SameSubnet: true},
		},
	}
}

var dbPolicy = pipeline.PolicySet{
	Rules: []pipeline.PolicyRule{{
		Policy: "uid-db", Key: "0", Direction: pipeline.PolicyIngress, Targets: []uint32{portDB},
		Peers:    []pipeline.PolicyPeer{{CIDR: netip.PrefixFrom(webIP, 32)}},
		Services: []pipeline.PolicyService{{Protocol: pipeline.ProtoTCP, Port: 5432}},
	}},
	IngressIsolated: []uint32{portDB},
	NodeSources:     []netip.Addr{gatewayIP},
}

// baseFlows is the node's whole flow set in round 1 with the policy.
func baseFlows(t *testing.T, s pipeline.State) []*openflow.Flow {
	t.Helper()
	flows, err := pipeline.Build(s, 1)
	if err != nil {
		t.Fatal(err)
	}
	pf, err := pipeline.PolicyFlows(dbPolicy, 1)
	if err != nil {
		t.Fatal(err)
	}
	return append(flows, pf...)
}

// Tiered rules as the agent installs them (core/agent/policy): each a
// conjunction whose conj_id flow takes the rule's action, at an even
// priority of its own.
var tieredPolicy = pipeline.PolicySet{
	Rules: []pipeline.PolicyRule{
		// secops denies web-0 -> db-0:5432 ...
		{Policy: "uid-secops", Key: "0", Direction: pipeline.PolicyIngress, Targets: []uint32{portDB},
			Peers: []pipeline.PolicyPeer{{CIDR: netip.PrefixFrom(webIP, 32)}}, Services: []pipeline.PolicyService{{Protocol: pipeline.ProtoTCP, Port: 5432}},
			Tier: pipeline.TierMain, Action: pipeline.ActionDrop, Priority: 40000},
		// ... below an allow of web-0 -> db-0:80 that overlaps it on
		// everything but the port ...
		{Policy: "uid-app", Key: "0", Direction: pipeline.PolicyIngress, Targets: []uint32{portDB},
			Peers: []pipeline.PolicyPeer{{CIDR: netip.PrefixFrom(webIP, 32)}}, Services: []pipeline.PolicyService{{Protocol: pipeline.ProtoTCP, Port: 80}},
			Tier: pipeline.TierMain, Action: pipeline.ActionAllow, Priority: 50000},
		// ... and a lower rule denying everything from web-0, which the
		// Drop above must win over for 5432.
		{Policy: "uid-app", Key: "1", Direction: pipeline.PolicyIngress, Targets: []uint32{portDB},
			Peers: []pipeline.PolicyPeer{{CIDR: netip.PrefixFrom(webIP, 32)}},
			Tier:  pipeline.TierMain, Action: pipeline.ActionDrop, Priority: 20000},
		// web-0 -> the peer's pod on TCP 80 is rejected; the baseline drops
		// db-0 -> web-0.
		{Policy: "uid-app", Key: "2", Direction: pipeline.PolicyEgress, Targets: []uint32{portWeb},
			Peers: []pipeline.PolicyPeer{{CIDR: netip.PrefixFrom(peerPod, 32)}}, Services: []pipeline.PolicyService{{Protocol: pipeline.ProtoTCP, Port: 80}},
			Tier: pipeline.TierMain, Action: pipeline.ActionReject, Priority: 30000},
		{Policy: "uid-base", Key: "0", Direction: pipeline.PolicyIngress, Targets: []uint32{portWeb},
			Peers: []pipeline.PolicyPeer{{CIDR: netip.PrefixFrom(dbIP, 32)}},
			Tier:  pipeline.TierBaseline, Action: pipeline.ActionDrop, Priority: 10000},
	},
	NodeSources: []netip.Addr{gatewayIP},
}

// tieredRules names the rules of tieredPolicy by table and priority, as
// the agent's policy controller does.
func tieredRules(table uint8, prio uint16) (string, string, bool) {
	names := map[[2]int][2]string{
		{int(pipeline.IngressTier), 40000}:     {"clusternetworkpolicies.crd.seine.io/secops", "deny-db"},
		{int(pipeline.IngressTier), 50000}:     {"clusternetworkpolicies.crd.seine.io/app", "allow-http"},
		{int(pipeline.IngressTier), 20000}:     {"clusternetworkpolicies.crd.seine.io/app", "ingress rule 1"},
		{int(pipeline.EgressTier), 30000}:      {"clusternetworkpolicies.crd.seine.io/app", "reject-peer"},
		{int(pipeline.IngressBaseline), 10000}: {"clusternetworkpolicies.crd.seine.io/base", "baseline-db"},
	}
	n, ok := names[[2]int{int(table), int(prio)}]
	return n[0], n[1], ok
}
