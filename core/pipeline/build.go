package pipeline

import (
	"cmp"
	"net/netip"
	"slices"
	"strings"

	"github.com/seine-cni/seine/ovs/openflow"
)

// Flow priorities, highest first. Tables use only these, so the relative
// order of flows is visible in one place.
const (
	prioHigh    uint16 = 210
	prioNormal  uint16 = 200
	prioLow     uint16 = 190
	prioPeer    uint16 = 180
	prioCluster uint16 = 170
	prioRouted  uint16 = 160
	prioMiss    uint16 = 0
	// prioLoopback drops in L3Forwarding what is for 127.0.0.0/8, above
	// every other flow of the table.
	prioLoopback uint16 = 250
)

// builder accumulates flows under one cookie.
type builder struct {
	n      *NodeConfig
	cookie Cookie
	flows  []*openflow.Flow
}

func (b *builder) add(t Table, prio uint16, m *openflow.Match, a *openflow.Actions) {
	f := openflow.NewFlow(uint8(t), prio).Cookie(uint64(b.cookie))
	if m != nil {
		f.Match(m)
	}
	if a != nil {
		f.Actions(a)
	}
	b.flows = append(b.flows, f)
}

func match() *openflow.Match     { return openflow.NewMatch() }
func actions() *openflow.Actions { return openflow.NewActions() }

// gotoT continues in table t.
func gotoT(t Table) *openflow.Actions { return actions().GotoTable(uint8(t)) }

func ip4(a netip.Addr) []byte {
	v := a.Unmap().As4()
	return v[:]
}

// Build returns every flow of the pipeline for the desired state under
// round r: the table defaults, the node's flows, and the flows of each
// pod and peer, sorted by table, then priority (highest first), then text.
// The order is deterministic for a given state.
func Build(s State, r Round) ([]*openflow.Flow, error) {
	if err := s.Validate(); err != nil {
		return nil, err
	}
	flows := PipelineFlows(r)
	nf, err := NodeFlows(s.Node, r)
	if err != nil {
		return nil, err
	}
	flows = append(flows, nf...)
	for _, p := range s.Pods {
		pf, err := PodFlows(s.Node, p, r)
		if err != nil {
			return nil, err
		}
		flows = append(flows, pf...)
	}
	for _, p := range s.Peers {
		pf, err := PeerFlows(s.Node, p, r)
		if err != nil {
			return nil, err
		}
		flows = append(flows, pf...)
	}
	Sort(flows)
	return flows, nil
}

// Sort orders flows by table, priority (highest first) and text, the order
// the golden files use.
func Sort(flows []*openflow.Flow) {
	type keyed struct {
		f *openflow.Flow
		s string
	}
	ks := make([]keyed, len(flows))
	for i, f := range flows {
		ks[i] = keyed{f, f.String()}
	}
	slices.SortStableFunc(ks, func(a, b keyed) int {
		if c := cmp.Compare(a.f.TableID(), b.f.TableID()); c != 0 {
			return c
		}
		if c := cmp.Compare(b.f.Priority(), a.f.Priority()); c != 0 {
			return c
		}
		return strings.Compare(a.s, b.s)
	})
	for i := range ks {
		flows[i] = ks[i].f
	}
}

// Text renders flows one per line as "ovs-ofctl -O OpenFlow15 dump-flows
// --no-stats" prints them.
func Text(flows []*openflow.Flow) string {
	var sb strings.Builder
	for _, f := range flows {
		sb.WriteString(f.String())
		sb.WriteByte('\n')
	}
	return sb.String()
}

// PipelineFlows are the flows every node has regardless of its config:
// the miss flow of each table, conntrack, and the "continue" flows of the
// tables reserved for services and policy.
func PipelineFlows(r Round) []*openflow.Flow {
	b := &builder{cookie: NewCookie(r, CategoryPipeline, 0)}
	// Unknown ports, spoofed packets and unanswered traffic stop here.
	b.add(Classifier, prioMiss, nil, nil)
	b.add(SpoofGuard, prioMiss, nil, nil)
	// ARP the responder does not answer (replies, requests for unknown
	// addresses) is forwarded by destination MAC.
	b.add(ARPResponder, prioMiss, nil, gotoT(L2ForwardingCalc))

	// Replies to the proxy's SNAT are un-SNATed by the node's flow; the
	// rest goes on.
	b.add(UnSNAT, prioMiss, nil, gotoT(ConntrackZone))
	// Every IP packet goes through conntrack in CtZone, reversing any NAT
	// the service proxy applied to the connection.
	b.add(ConntrackZone, prioNormal, match().IP(),
		actions().CT(openflow.NewCT().Table(uint8(ConntrackState)).Zone(CtZone).NAT(openflow.NAT{})))
	b.add(ConntrackZone, prioMiss, nil, nil)
	b.add(ConntrackState, prioLow, match().IP().CTState(openflow.CTTracked|openflow.CTInvalid, openflow.CTTracked|openflow.CTInvalid), nil)
	// Later packets of a connection the proxy DNATed (both directions) are
	// routed like its first: a host client addressed them to the service
	// next hop's MAC.
	svc := match().IP().CTState(openflow.CTTracked, openflow.CTTracked|openflow.CTNew|openflow.CTInvalid).CTMark(ServiceCTMark, ServiceCTMark)
	b.add(ConntrackState, prioNormal, svc, RewriteMACMark.load(actions()).GotoTable(uint8(ServiceLB)))
	// ... and those the proxy also SNATed are SNATed again on their way
	// from the client (replies are un-SNATed in UnSNAT).
	snat := match().IP().CTState(openflow.CTTracked, openflow.CTTracked|openflow.CTNew|openflow.CTInvalid|openflow.CTReply).
		CTMark(ServiceCTMark|ServiceSNATCTMark, ServiceCTMark|ServiceSNATCTMark)
	b.add(ConntrackState, prioHigh, snat, RewriteMACMark.load(actions()).
		CT(openflow.NewCT().Zone(SNATZone).Table(uint8(ServiceLB)).NAT(openflow.NAT{})))
	b.add(ConntrackState, prioMiss, nil, gotoT(ServiceLB))

	// Service load balancing: what no Service frontend takes goes on to
	// egress policy. SessionAffinity's miss (no learned endpoint) ends its
	// resubmit; a learned endpoint is DNATed at once; an endpoint
	// EndpointDNAT no longer knows (removed since it was learned) is
	// forgotten and selected again.
	b.add(ServiceLB, prioMiss, nil, gotoT(EgressTier))
	b.add(SessionAffinity, prioMiss, nil, nil)
	b.add(ServiceSelect, prioSvcPinned, AffinityMark.match(match()), actions().Resubmit(openflow.PortInPort, uint8(EndpointDNAT)))
	b.add(ServiceSelect, prioMiss, nil, nil)
	b.add(EndpointDNAT, prioMiss, nil, loadMarks(actions(), RegMark{AffinityField, 0, "NoAffinity"}).
		Resubmit(openflow.PortInPort, uint8(ServiceSelect)))
	b.add(ServiceSNAT, prioMiss, nil, gotoT(EgressTier))
	// Policy, in the order of core/tiers/README.md: tiers, Kubernetes
	// NetworkPolicy, baseline tiers. A table's miss asks the next one.
	b.add(EgressTier, prioMiss, nil, gotoT(EgressPolicy))
	b.add(EgressPolicy, prioMiss, nil, gotoT(EgressBaseline))
	b.add(EgressBaseline, prioMiss, nil, gotoT(L3Forwarding))

	// Traffic L3 forwarding does not route keeps its destination MAC.
	b.add(L3Forwarding, prioMiss, nil, gotoT(L2ForwardingCalc))
	// The host already decremented the TTL of what it routed to us.
	b.add(L3DecTTL, prioHigh, FromGatewayMark.match(match().IP()), gotoT(L2ForwardingCalc))
	b.add(L3DecTTL, prioNormal, match().IP(), actions().DecTTL().GotoTable(uint8(L2ForwardingCalc)))
	b.add(L3DecTTL, prioMiss, nil, gotoT(L2ForwardingCalc))
	b.add(L2ForwardingCalc, prioMiss, nil, gotoT(IngressTier))
	b.add(IngressTier, prioMiss, nil, gotoT(IngressPolicy))
	b.add(IngressPolicy, prioMiss, nil, gotoT(IngressBaseline))
	b.add(IngressBaseline, prioMiss, nil, gotoT(ConntrackCommit))

	// The connection keeps the rules that allowed it (ct_label, for the
	// metric tables). The proxy committed its connections with their NAT
	// already: committing one again in the zone it was DNATed in (the
	// packet still holds that connection) only writes the labels. One it
	// also SNATed last went through SNATZone, so CtZone would look it up
	// anew by the translated addresses: it is not committed again, and
	// only its first packet is counted (README.md, policy stats).
	rules := actions().
		Move(EgressRuleField.Subfield(), openflow.FieldCTLabel.Range(EgressRuleLabelLo, EgressRuleLabelLo+31)).
		Move(IngressRuleField.Subfield(), openflow.FieldCTLabel.Range(IngressRuleLabelLo, IngressRuleLabelLo+31))
	newConn := func() *openflow.Match {
		return match().IP().CTState(openflow.CTTracked|openflow.CTNew, openflow.CTTracked|openflow.CTNew)
	}
	b.add(ConntrackCommit, prioHigh+1, newConn().CTMark(ServiceCTMark|ServiceSNATCTMark, ServiceCTMark|ServiceSNATCTMark), gotoT(EgressMetric))
	b.add(ConntrackCommit, prioHigh, newConn().CTMark(ServiceCTMark, ServiceCTMark),
		actions().CT(openflow.NewCT().Commit().Zone(CtZone).Exec(rules)).GotoTable(uint8(EgressMetric)))
	// The connection remembers where its first packet came from
	// (ct_mark[4..7]): replies of connections the host sent in go back to
	// the host (kube-proxy mode, see kubeProxyNodeFlows).
	src := actions().Move(PktSourceField.Subfield(), openflow.FieldCTMark.Range(ctMarkSourceShift, ctMarkSourceShift+3))
	src.Move(EgressRuleField.Subfield(), openflow.FieldCTLabel.Range(EgressRuleLabelLo, EgressRuleLabelLo+31)).
		Move(IngressRuleField.Subfield(), openflow.FieldCTLabel.Range(IngressRuleLabelLo, IngressRuleLabelLo+31))
	b.add(ConntrackCommit, prioNormal, newConn(),
		actions().CT(openflow.NewCT().Commit().Zone(CtZone).Exec(src)).GotoTable(uint8(EgressMetric)))
	b.add(ConntrackCommit, prioMiss, nil, gotoT(EgressMetric))
	b.add(EgressMetric, prioMiss, nil, gotoT(IngressMetric))
	b.add(IngressMetric, prioMiss, nil, gotoT(Output))

	b.add(Output, prioNormal, OutputToPortMark.match(match()), actions().OutputReg(TargetPortField.Subfield()))
	b.add(Output, prioMiss, nil, nil)
	return b.flows
}

// NodeFlows are the flows of the node's own ports and addresses.
func NodeFlows(n NodeConfig, r Round) ([]*openflow.Flow, error) {
	if err := n.Validate(); err != nil {
		return nil, err
	}
	b := &builder{n: &n, cookie: NewCookie(r, CategoryNode, 0)}
	b.gatewayFlows()
	if n.usesTunnel() {
		b.tunnelFlows()
	}
	if n.Topology == BridgedUplink {
		b.bridgedUplinkFlows()
	}
	b.podCIDRFlows()
	b.gatewayReplyFlows()
	if n.ServiceProxy {
		b.serviceNodeFlows()
	} else {
		b.kubeProxyNodeFlows()
	}
	return b.flows, nil
}

// gatewayFlows: the gateway port and the gateway and node IPs.
func (b *builder) gatewayFlows() {
	n := b.n
	gw := n.Ports.Gateway
	b.add(Classifier, prioNormal, match().InPort(gw), FromGatewayMark.load(actions()).GotoTable(uint8(SpoofGuard)))
	// The host routes traffic from anywhere into the gateway, so only the
	// port is checked for IP; its ARP must carry the gateway MAC, but may
	// announce any of the host's addresses.
	b.add(SpoofGuard, prioNormal, match().IP().InPort(gw), gotoT(UnSNAT))
	b.add(SpoofGuard, prioNormal, match().ARP().InPort(gw).ARPSHA(n.GatewayMAC), gotoT(ARPResponder))
	// Pods asking for their gateway get the answer from the bridge.
	b.add(ARPResponder, prioNormal, FromPodMark.match(match().ARP()).ARPTPA(host(n.GatewayIP)).ARPOp(1),
		arpReply(n.GatewayMAC, n.GatewayIP))

	b.add(L3Forwarding, prioHigh, match().IP().IPDstAddr(n.GatewayIP), toGateway(n))
	for _, ip := range n.NodeIPs {
		if n.Topology == BridgedUplink {
			// The node IP lives on the host port of the bridge: deliver
			// straight to it.
			a := actions().SetEthSrc(n.GatewayMAC).SetEthDst(n.NodeMAC).GotoTable(uint8(L3DecTTL))
			b.add(L3Forwarding, prioHigh, match().IP().IPDstAddr(ip), a)
		} else {
			b.add(L3Forwarding, prioHigh, match().IP().IPDstAddr(ip), toGateway(n))
		}
	}
	b.add(L2ForwardingCalc, prioNormal, match().EthDst(n.GatewayMAC), outputTo(gw, ToGatewayMark))
}

// tunnelFlows: packets from the tunnel port, and the tunnel's MAC.
func (b *builder) tunnelFlows() {
	n := b.n
	// Tunnelled packets were checked by the sending node's spoof guard.
	a := loadMarks(actions(), FromTunnelMark, RewriteMACMark)
	b.add(Classifier, prioNormal, match().IP().InPort(n.Ports.Tunnel), a.GotoTable(uint8(UnSNAT)))
	b.add(L2ForwardingCalc, prioNormal, match().EthDst(GlobalVirtualMAC), outputTo(n.Ports.Tunnel, ToTunnelMark))
}

// bridgedUplinkFlows: the uplink and the host port share the bridge.
func (b *builder) bridgedUplinkFlows() {
	n := b.n
	up, hostPort := n.Ports.Uplink, n.hostPort()
	if n.usesTunnel() {
		// Tunnel packets for the node IP go to the host port, where the
		// userspace datapath terminates them (tnl_pop) and hands the inner
		// packet to the tunnel port.
		for _, ip := range n.NodeIPs {
			m := match()
			if port := n.Tunnel.UDPPort(); port != 0 {
				m.UDP().InPort(up).IPDstAddr(ip).UDPDst(port)
			} else {
				m.IP().InPort(up).IPDstAddr(ip).IPProto(ipProtoGRE)
			}
			b.add(Classifier, prioHigh, m, actions().Output(hostPort))
		}
	}
	if n.Mode == NoEncap || n.Mode == Hybrid {
		// Peers route our pods' traffic to the node's MAC.
		for _, cidr := range n.PodCIDRs {
			a := loadMarks(actions(), FromUplinkMark, RewriteMACMark)
			m := match().IP().InPort(up).EthDst(n.NodeMAC).IPDst(cidr)
			b.add(Classifier, prioNormal, m, a.GotoTable(uint8(UnSNAT)))
		}
	}
	// Everything else is the host's own traffic, ARP included: the uplink
	// and the host port behave as if the uplink were still the host's NIC.
	b.add(Classifier, prioLow, match().InPort(up), actions().Output(hostPort))
	b.add(Classifier, prioLow, match().InPort(hostPort), actions().Output(up))
	b.add(L2ForwardingCalc, prioNormal, match().EthDst(n.NodeMAC), outputTo(hostPort, ToHostMark))
	if n.Mode == NoEncap || n.Mode == Hybrid || n.ServiceProxy {
		// The next hop of a peer behind the uplink is a foreign MAC (several
		// peers may share it, e.g. a router's), and so is a Service's client
		// on the uplink: L3 forwarding marks the packet for the uplink
		// instead.
		b.add(L2ForwardingCalc, prioHigh, ToUplinkMark.match(match()), outputTo(up, ToUplinkMark))
	}
}

// podCIDRFlows: forwarding inside the node's pod CIDRs and the cluster's.
func (b *builder) podCIDRFlows() {
	n := b.n
	for _, cidr := range n.PodCIDRs {
		// Traffic between local pods (and host -> pod) is switched: its
		// destination MAC is already the pod's.
		b.add(L3Forwarding, prioLow, NoRewriteMACMark.match(match().IP()).IPDst(cidr), gotoT(L2ForwardingCalc))
	}
	for _, cidr := range n.ClusterPodCIDRs {
		// A cluster pod address no local pod or peer owns is dropped rather
		// than leaked to the host's default route.
		b.add(L3Forwarding, prioCluster, match().IP().IPDst(cidr), nil)
	}
	// Whatever else was routed to this node is the host's.
	b.add(L3Forwarding, prioRouted, RewriteMACMark.match(match().IP()), toGateway(n))
	// Nothing the bridge forwards is for the host's loopback: the gateway
	// has route_localnet (the host's own connections from 127.0.0.1 to a
	// pod's host port leave by it), with which the host would take a pod's
	// packets to 127.0.0.0/8 for its own (CVE-2020-8558).
	b.add(L3Forwarding, prioLoopback, match().IP().IPDst(loopback), nil)
}

var loopback = netip.MustParsePrefix("127.0.0.0/8")

// toGateway hands the packet to the host through the gateway port.
func toGateway(n *NodeConfig) *openflow.Actions {
	return actions().SetEthDst(n.GatewayMAC).GotoTable(uint8(L2ForwardingCalc))
}

// outputTo is the L2ForwardingCalc action for port: the port goes to reg1,
// and reg0 says what kind of port it is.
func outputTo(port uint32, dest RegMark) *openflow.Actions {
	a := actions().SetReg(TargetPortField.Reg, regPort(port))
	return loadMarks(a, dest, OutputToPortMark).GotoTable(uint8(IngressTier))
}

// arpReply turns an ARP request into the reply "ip is at mac" and sends it
// back where it came from.
func arpReply(mac []byte, ip netip.Addr) *openflow.Actions {
	return actions().
		Move(openflow.FieldEthSrc.All(), openflow.FieldEthDst.All()).
		SetField(openflow.FieldEthSrc, mac).
		SetFieldUint(openflow.FieldARPOp, 2).
		Move(openflow.FieldARPSHA.All(), openflow.FieldARPTHA.All()).
		SetField(openflow.FieldARPSHA, mac).
		Move(openflow.FieldARPSPA.All(), openflow.FieldARPTPA.All()).
		SetField(openflow.FieldARPSPA, ip4(ip)).
		OutputInPort()
}

func host(a netip.Addr) netip.Prefix { return netip.PrefixFrom(a.Unmap(), 32) }

// regPort is the value of port in TargetPortField. output:reg reads a
// 16-bit (OpenFlow 1.0) port number, so the reserved ports of OpenFlow 1.1+
// (0xffffff00 and up: LOCAL is 0xfffffffe) are stored as 0xff00 and up
// (LOCAL: 0xfffe).
func regPort(port uint32) uint32 {
	if port >= openflow.PortMax {
		return port - openflow.PortMax + 0xff00
	}
	return port
}

// portFromReg is the inverse of regPort.
func portFromReg(v uint32) uint32 {
	if v >= 0xff00 && v <= 0xffff {
		return v - 0xff00 + openflow.PortMax
	}
	return v
}
