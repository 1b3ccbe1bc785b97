package pipeline

import "github.com/seine-cni/seine/ovs/openflow"

// Without Seine's service proxy (the kube-proxy-compatible mode) a pod's
// connection to a Service leaves the bridge through the gateway, the host
// (kube-proxy) DNATs it to an endpoint and routes it back into the bridge
// through the gateway. Three things make that work with NetworkPolicy:
//
//   - egress policy does not judge the first pass (the destination is a
//     service address, not what the pod talks to): pod traffic to the
//     service CIDRs goes to the host unchecked (from EgressTier, the first
//     policy table, past all of them);
//   - on the second pass the packet comes from the gateway with the pod's
//     address: SpoofGuard gives it back the pod's port as in_port, so
//     egress policy judges it as the pod's, against the endpoint;
//   - the replies of connections that came in from the gateway go back to
//     the gateway (ct_mark source, recorded at commit; gatewayReplyFlows,
//     in both modes), so the host un-DNATs them, also when the endpoint is
//     a pod on this node or answers through a tunnel.

// kubeProxyNodeFlows are the node's flows of the kube-proxy mode.
func (b *builder) kubeProxyNodeFlows() {
	n := b.n
	for _, cidr := range n.ServiceCIDRs {
		b.add(EgressTier, prioTierKubeProxy, FromPodMark.match(match().IP()).IPDst(cidr), gotoT(L3Forwarding))
	}
}

// gatewayReplyFlows: the replies of connections the host sent into the
// bridge go back to the host, whatever their destination: the host's own
// connections to a node port, DNATed by the host and answered from the
// node port's target, must reach the host through the gateway (a reply
// delivered to the node IP on the host port would be dropped by the host's
// reverse-path check and miss its conntrack), and so must the connections
// kube-proxy DNATed (kube-proxy mode).
func (b *builder) gatewayReplyFlows() {
	m := match().IP().CTState(openflow.CTTracked|openflow.CTReply, openflow.CTTracked|openflow.CTReply).
		CTMark(FromGatewayMark.Value<<ctMarkSourceShift, ctMarkSourceMask)
	b.add(L3Forwarding, prioSvcReply-5, m, toGateway(b.n))
}

// kubeProxyPodFlows: the pod's connections the host sends back (DNATed to
// an endpoint) are the pod's again for egress policy.
func (b *builder) kubeProxyPodFlows(p *Pod) {
	for _, ip := range p.IPs {
		m := match().IP().InPort(b.n.Ports.Gateway).IPSrcAddr(ip)
		// OpenFlow's 32-bit in_port is read-only; OVS lets NXM's 16-bit
		// one be written.
		b.add(SpoofGuard, prioHigh, m, actions().Load(openflow.FieldInPort16.All(), uint64(p.Port)).GotoTable(uint8(UnSNAT)))
	}
}
