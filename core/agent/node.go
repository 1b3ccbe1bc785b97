package agent

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"slices"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/seine-cni/seine/core/pipeline"
	"github.com/seine-cni/seine/ovs/ovsdb"
	"github.com/seine-cni/seine/platform"
)

// nodeInfo is what the agent reads from a Node object.
type nodeInfo struct {
	ip       netip.Addr
	podCIDRs []netip.Prefix // IPv4 only: the pipeline is IPv4-only for now
}

func parseNode(n *corev1.Node) (nodeInfo, error) {
	var ni nodeInfo
	for _, a := range n.Status.Addresses {
		if a.Type != corev1.NodeInternalIP {
			continue
		}
		ip, err := netip.ParseAddr(a.Address)
		if err == nil && ip.Is4() {
			ni.ip = ip
			break
		}
	}
	cidrs := n.Spec.PodCIDRs
	if len(cidrs) == 0 && n.Spec.PodCIDR != "" {
		cidrs = []string{n.Spec.PodCIDR}
	}
	for _, s := range cidrs {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return ni, fmt.Errorf("node %s: podCIDR %q: %w", n.Name, s, err)
		}
		if p.Addr().Is4() {
			ni.podCIDRs = append(ni.podCIDRs, p.Masked())
		}
	}
	switch {
	case !ni.ip.IsValid():
		return ni, fmt.Errorf("node %s: no IPv4 InternalIP yet", n.Name)
	case len(ni.podCIDRs) == 0:
		return ni, fmt.Errorf("node %s: no IPv4 podCIDR yet", n.Name)
	}
	return ni, nil
}

// setupNode reads the agent's Node, opens IPAM, prepares the host and the
// bridge through the backend and ensures the tunnel port.
func (a *Agent) setupNode(ctx context.Context) error {
	n, err := a.nodes.Get(a.cfg.NodeName)
	if apierrors.IsNotFound(err) {
		a.setNotReady("waiting for Node " + a.cfg.NodeName)
		return fmt.Errorf("node %s is not registered yet", a.cfg.NodeName)
	}
	if err != nil {
		return err
	}
	ni, err := parseNode(n)
	if err != nil {
		a.setNotReady(err.Error())
		return err
	}
	if a.ipam == nil {
		alloc, err := a.openIPAM(ni.podCIDRs)
		if err != nil {
			return fmt.Errorf("ipam: %w", err)
		}
		a.ipam = alloc
	}
	a.gateways = a.ipam.Gateways()
	overhead := 0
	if a.mode != pipeline.NoEncap {
		overhead = a.tunnel.Overhead()
	}
	st, err := a.backend.Setup(ctx, platform.NodeConfig{
		Topology: a.topo, Bridge: a.cfg.OVS.Bridge, Uplink: a.cfg.Uplink,
		NodeIPs: []netip.Addr{ni.ip}, GatewayIPs: a.gateways, GatewayMAC: gatewayMAC(a.gateways),
		MTU: a.cfg.MTU, EncapOverhead: overhead,
	}.WithDefaults())
	if err != nil {
		return fmt.Errorf("node network: %w", err)
	}
	if !slices.ContainsFunc(st.NodeIPs, func(p netip.Prefix) bool { return p.Addr() == ni.ip }) {
		st.NodeIPs = append([]netip.Prefix{netip.PrefixFrom(ni.ip, 32)}, st.NodeIPs...)
	}
	a.nodeState = st
	a.podMTU = st.MTU
	a.setupSRIOV(ctx)
	a.warnOVSDefects(ctx)
	if err := a.ensureTunnel(ctx); err != nil {
		return err
	}
	a.log.Info("node set up", "ip", ni.ip, "podCIDRs", fmt.Sprint(ni.podCIDRs),
		"mode", a.mode, "tunnel", a.tunnel, "podMTU", a.podMTU, "gateway_ofport", st.Gateway.OFPort, "flowSetOS", nodeOS(a.cfg))
	return nil
}

// gatewayMAC is the gateway port's MAC, fixed by its first gateway IP
// (0a:58:<IPv4>) so that it survives a restart of ovs-vswitchd, which
// recreates the port: pods keep a permanent neighbour entry for it.
func gatewayMAC(gateways []netip.Prefix) net.HardwareAddr {
	for _, gw := range gateways {
		if gw.Addr().Is4() {
			b := gw.Addr().As4()
			return net.HardwareAddr{0x0a, 0x58, b[0], b[1], b[2], b[3]}
		}
	}
	return nil
}

// ensureTunnel makes the tunnel port exist in encap and hybrid mode (flow-based
// remote IP and key) and not exist in noEncap mode.
func (a *Agent) ensureTunnel(ctx context.Context) error {
	if a.mode == pipeline.NoEncap {
		return a.db.DeletePort(ctx, TunnelPort)
	}
	typ := map[pipeline.TunnelType]ovsdb.InterfaceType{
		pipeline.Geneve: ovsdb.TypeGeneve, pipeline.VXLAN: ovsdb.TypeVXLAN, pipeline.GRE: ovsdb.TypeGRE,
	}[a.tunnel]
	if err := a.db.EnsurePort(ctx, a.cfg.OVS.Bridge, ovsdb.PortConfig{
		Name: TunnelPort, Type: typ,
		Tunnel:      &ovsdb.TunnelConfig{RemoteIP: "flow", Key: "flow"},
		ExternalIDs: map[string]string{extType: "tunnel"},
	}); err != nil {
		return fmt.Errorf("tunnel port: %w", err)
	}
	if _, err := a.db.PortOfport(ctx, TunnelPort); err != nil {
		return fmt.Errorf("tunnel port: %w", err)
	}
	return nil
}

// nodeConfigLocked is the pipeline's node configuration; the caller holds a.mu
// (it reads the peers for the cluster's pod CIDRs).
func (a *Agent) nodeConfigLocked() *pipeline.NodeConfig {
	st := a.nodeState
	nc := &pipeline.NodeConfig{
		Name: a.cfg.NodeName, OS: nodeOS(a.cfg), Mode: a.mode, Tunnel: a.tunnel,
		GatewayMAC: st.Gateway.MAC, MTU: st.UplinkMTU, ServiceProxy: a.proxy != nil,
		ServiceCIDRs: a.kubeProxyServiceCIDRs(),
	}
	if a.topo == platform.BridgedUplink {
		nc.Topology = pipeline.BridgedUplink
		nc.NodeMAC = st.Host.MAC
		nc.Ports.Uplink = uint32(st.Uplink.OFPort)
		if st.Host.OFPort != platform.OFPortLocal {
			nc.Ports.Host = uint32(st.Host.OFPort)
		}
	} else {
		nc.Topology = pipeline.RoutedHost
	}
	nc.Ports.Gateway = uint32(st.Gateway.OFPort)
	if a.mode != pipeline.NoEncap {
		if p, err := a.db.GetPort(context.Background(), TunnelPort); err == nil && p.OFPort > 0 {
			nc.Ports.Tunnel = uint32(p.OFPort)
		}
	}
	for _, p := range st.NodeIPs {
		if p.Addr().Is4() && !slices.Contains(nc.NodeIPs, p.Addr()) {
			nc.NodeIPs = append(nc.NodeIPs, p.Addr())
		}
	}
	for _, gw := range a.gateways {
		if gw.Addr().Is4() {
			nc.GatewayIP = gw.Addr()
			break
		}
	}
	nc.PodCIDRs = a.ipam.PodCIDRs()
	nc.ClusterPodCIDRs = a.clusterCIDRsLocked()
	return nc
}

// clusterCIDRsLocked is the cluster's pod address space as the agent knows
// it: its own pod CIDRs and every peer's. The configuration has no cluster
// CIDR key, and the union of the nodes' ranges is exactly the set of
// addresses a pod can hold.
func (a *Agent) clusterCIDRsLocked() []netip.Prefix {
	out := slices.Clone(a.ipam.PodCIDRs())
	for _, p := range a.peers {
		out = append(out, p.PodCIDRs...)
	}
	slices.SortFunc(out, func(x, y netip.Prefix) int { return x.Addr().Compare(y.Addr()) })
	return out
}

// peersFromNodes computes the peers from the node lister.
func (a *Agent) peersFromNodes() []pipeline.Peer {
	nodes, err := a.nodes.List(everything)
	if err != nil {
		a.log.Error("list nodes", "err", err)
		return nil
	}
	var nodeNet netip.Prefix
	for _, p := range a.nodeState.NodeIPs {
		if p.Addr().Is4() {
			nodeNet = p.Masked()
			break
		}
	}
	own := a.ipam.PodCIDRs()
	var peers []pipeline.Peer
	for _, n := range nodes {
		if n.Name == a.cfg.NodeName {
			continue
		}
		ni, err := parseNode(n)
		if err != nil {
			continue // not ready to be a peer yet; its update brings it back
		}
		overlaps := slices.ContainsFunc(ni.podCIDRs, func(p netip.Prefix) bool {
			return slices.ContainsFunc(own, p.Overlaps)
		})
		if overlaps {
			a.log.Warn("peer pod CIDR overlaps ours, ignored", "peer", n.Name, "podCIDRs", fmt.Sprint(ni.podCIDRs))
			continue
		}
		peers = append(peers, pipeline.Peer{
			Name: n.Name, NodeIP: ni.ip, PodCIDRs: ni.podCIDRs,
			SameSubnet: nodeNet.IsValid() && nodeNet.Bits() < 32 && nodeNet.Contains(ni.ip),
		})
	}
	a.fillNextHops(peers)
	slices.SortFunc(peers, func(x, y pipeline.Peer) int {
		if x.Name < y.Name {
			return -1
		} else if x.Name > y.Name {
			return 1
		}
		return 0
	})
	return peers
}

// refreshPeers recomputes the peers; it reports whether they changed.
func (a *Agent) refreshPeers() bool {
	peers := a.peersFromNodes()
	a.mu.Lock()
	defer a.mu.Unlock()
	// The service CIDRs are part of the node's flows in the kube-proxy
	// mode: a change replays them too.
	if fmt.Sprint(peers) == fmt.Sprint(a.peers) && (a.node == nil || fmt.Sprint(a.node.ServiceCIDRs) == fmt.Sprint(a.kubeProxyServiceCIDRs())) {
		return false
	}
	a.peers = peers
	if a.node != nil {
		a.node = a.nodeConfigLocked()
	}
	return true
}

// followPeers reacts to Node changes until ctx ends: a changed peer set
// changes the flows that differ (syncFlows) and syncs the host rules; a
// changed pod CIDR of our own makes the agent not ready, and ends it with an
// error wrapping ErrPodCIDRChanged once its old range is empty (podcidr.go).
func (a *Agent) followPeers(ctx context.Context) error {
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-a.kick:
		}
		if err := a.updateReady(); err != nil {
			return err
		}
		changed := a.refreshPeers()
		if changed {
			a.mu.Lock()
			names := make([]string, 0, len(a.peers))
			for _, p := range a.peers {
				names = append(names, p.Name)
			}
			a.mu.Unlock()
			a.log.Info("peers changed", "peers", fmt.Sprint(names))
			if err := retry(ctx, a.log, "peer flows", a.syncFlows); err != nil {
				return nil
			}
		}
		// Also when nothing changed: a failed sync is retried on the next
		// Node event (kubelets update their Node every few seconds).
		if err := a.syncHost(ctx); err != nil {
			a.log.Error("host rules", "err", err)
		}
		if changed {
			a.kickTunnelNeighbours()
		}
	}
}

// hostState is what HostRules (and the node-port redirection) must make
// true on the node.
func (a *Agent) hostState() (platform.HostState, platform.NodePortState) {
	nps := platform.NodePortState{}
	a.mu.Lock()
	defer a.mu.Unlock()
	hs := platform.HostState{
		Gateway:      platform.NodeConfig{}.WithDefaults().Gateway,
		PodCIDRs:     a.ipam.PodCIDRs(),
		ClusterCIDRs: a.clusterCIDRsLocked(),
	}
	if a.node != nil && len(a.node.NodeIPs) > 0 {
		hs.SNATIPs = []netip.Addr{a.node.NodeIPs[0]}
	}
	if a.topo == platform.BridgedUplink && a.cfg.datapath() == ovsdb.DatapathNetdev {
		hs.NoHostIngress = []string{a.cfg.Uplink}
	}
	for _, p := range a.peers {
		for _, c := range p.PodCIDRs {
			r := platform.PeerRoute{PodCIDR: c, NodeIP: p.NodeIP}
			if a.tunnelled(&p) {
				r.GatewayIP = c.Masked().Addr().Next()
			}
			hs.PeerRoutes = append(hs.PeerRoutes, r)
		}
	}
	if a.node != nil {
		nps = a.proxyHostState(&hs)
	}
	nps.HostPorts = a.hostPortsLocked()
	return hs, nps
}

var everything = labels.Everything()
