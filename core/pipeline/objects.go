package pipeline

import (
	"github.com/seine-cni/seine/ovs/openflow"
)

// PodFlows are the flows of one local pod, under the pod's cookie
// (CategoryPod, PodID), so they can be deleted together by ObjectSelector.
func PodFlows(n NodeConfig, p Pod, r Round) ([]*openflow.Flow, error) {
	if err := n.Validate(); err != nil {
		return nil, err
	}
	if err := n.validatePod(&p); err != nil {
		return nil, err
	}
	b := &builder{n: &n, cookie: NewCookie(r, CategoryPod, PodID(p.Namespace, p.Name))}
	b.add(Classifier, prioLow, match().InPort(p.Port), FromPodMark.load(actions()).GotoTable(uint8(SpoofGuard)))
	for _, ip := range p.IPs {
		b.add(SpoofGuard, prioNormal, match().IP().InPort(p.Port).EthSrc(p.MAC).IPSrcAddr(ip), gotoT(UnSNAT))
		b.add(SpoofGuard, prioNormal, match().ARP().InPort(p.Port).ARPSPA(host(ip)).ARPSHA(p.MAC), gotoT(ARPResponder))
		// Pods and the host learn a pod's MAC from the bridge, so ARP
		// requests are never flooded.
		b.add(ARPResponder, prioNormal, match().ARP().ARPTPA(host(ip)).ARPOp(1), arpReply(p.MAC, ip))
		// Routed to this pod: arrived from a tunnel or the uplink, DNAT'ed
		// by the service slot, or sent by a pod to the gateway MAC.
		// Switched traffic (addressed to the pod's MAC) keeps its MACs and
		// TTL: see the NoRewriteMAC flow of the pod CIDR.
		a := actions().SetEthSrc(n.GatewayMAC).SetEthDst(p.MAC).GotoTable(uint8(L3DecTTL))
		b.add(L3Forwarding, prioNormal, RewriteMACMark.match(match().IP()).IPDstAddr(ip), a)
		b.add(L3Forwarding, prioNormal, NoRewriteMACMark.match(match().IP()).EthDst(n.GatewayMAC).IPDstAddr(ip), a)
	}
	b.add(L2ForwardingCalc, prioNormal, match().EthDst(p.MAC), outputTo(p.Port, ToLocalPodMark))
	if n.ServiceProxy {
		b.servicePodFlows(&p)
		b.hostPortFlows(&p)
	} else {
		b.kubeProxyPodFlows(&p)
	}
	return b.flows, nil
}

// PeerFlows are the flows that reach one peer node's pod CIDRs, under the
// peer's cookie (CategoryPeer, PeerID).
func PeerFlows(n NodeConfig, p Peer, r Round) ([]*openflow.Flow, error) {
	if err := n.Validate(); err != nil {
		return nil, err
	}
	if err := n.validatePeer(&p); err != nil {
		return nil, err
	}
	b := &builder{n: &n, cookie: NewCookie(r, CategoryPeer, PeerID(p.Name))}
	for _, cidr := range p.PodCIDRs {
		m := match().IP().IPDst(cidr)
		switch {
		case n.encapsulates(&p):
			// The host routes the peer's pod CIDR "via <peer gateway IP>
			// onlink" through the gateway port; answering that ARP with the
			// global virtual MAC brings host traffic into the tunnel flow.
			b.add(ARPResponder, prioNormal, match().ARP().InPort(n.Ports.Gateway).ARPTPA(host(gatewayOf(cidr))).ARPOp(1),
				arpReply(GlobalVirtualMAC, gatewayOf(cidr)))
			a := actions().SetEthSrc(n.GatewayMAC).SetEthDst(GlobalVirtualMAC).SetTunDst(p.NodeIP)
			b.add(L3Forwarding, prioPeer, m, a.GotoTable(uint8(L3DecTTL)))
			if n.ServiceProxy {
				b.serviceTunnelPeerCIDR(cidr)
			}
		case n.Topology == BridgedUplink && p.NodeMAC != nil:
			// Straight out of the uplink to the peer's node MAC.
			a := actions().SetEthSrc(n.NodeMAC).SetEthDst(p.NodeMAC)
			b.add(L3Forwarding, prioPeer, m, ToUplinkMark.load(a).GotoTable(uint8(L3DecTTL)))
		default:
			// The host routes it via the peer's node IP.
			b.add(L3Forwarding, prioPeer, m, toGateway(&n))
		}
	}
	if n.ServiceProxy && n.encapsulates(&p) {
		b.serviceTunnelPeer(&p)
	}
	return b.flows, nil
}
