package pipeline

import (
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/seine-cni/seine/core/proxy"
	"github.com/seine-cni/seine/ovs/openflow"
)

// Virtual addresses of the service proxy. No host owns them.
var (
	// NodePortVirtualIP: HostRules DNATs the host's own connections to its
	// node ports to this address (same port) and routes it through the
	// gateway, where ServiceLB matches it like a node IP.
	NodePortVirtualIP = netip.AddrFrom4([4]byte{169, 254, 0, 252})
	// ServiceNextHopIP is the next hop of the host's routes to service
	// addresses (the service CIDRs, external and load-balancer IPs) on the
	// gateway, and ServiceNextHopMAC its MAC (a permanent neighbour entry).
	// The bridge forwards nothing by that MAC: a packet to it that no
	// Service takes is dropped.
	ServiceNextHopIP  = netip.AddrFrom4([4]byte{169, 254, 0, 253})
	ServiceNextHopMAC = net.HardwareAddr{0x02, 0x53, 0x45, 0x49, 0x4e, 0x53}
)

// ServiceRejectMeter is the meter that bounds the packet-ins of rejected
// connections (Services without endpoints): ServiceRejectRate per second,
// so a client hammering a Service without endpoints cannot flood the agent.
const (
	ServiceRejectMeter uint32 = 1
	ServiceRejectRate  uint32 = 200
)

// PacketInReject is the first byte of the userdata of a packet-in asking
// the agent to reject the connection it starts (TCP RST, ICMP port
// unreachable).
const PacketInReject byte = 1

// ServiceMeters are the meters the service flows use. OVS refuses meter
// mods inside bundles: install them before the flows.
func ServiceMeters() []*openflow.MeterEntry {
	return []*openflow.MeterEntry{{
		ID: ServiceRejectMeter, Flags: openflow.MeterPktps | openflow.MeterBurst,
		Bands: []openflow.MeterBand{{Rate: ServiceRejectRate, BurstSize: ServiceRejectRate}},
	}}
}

// Priorities of the service tables.
const (
	prioSvcPinned    uint16 = 220 // ServiceSelect: the endpoint was learned
	prioSvcReply     uint16 = 220 // L3Forwarding: replies to uplink clients
	prioSvcLocalSrc  uint16 = 210 // externalTrafficPolicy Local, client on this node
	prioSvcRangeLSrc uint16 = 215 // the same, within loadBalancerSourceRanges
	prioSvcRange     uint16 = 205 // within loadBalancerSourceRanges
	prioSvcFrontend  uint16 = 200
	prioSvcToHost    uint16 = 212 // L3Forwarding: SNATed to ServiceNextHopIP, to the host
	prioSvcPodSNAT   uint16 = 195 // ServiceSNAT: uplink client to another node's pod
	prioSvcHostSNAT  uint16 = 205 // ServiceSNAT: the host to a tunnelled peer's pod
	prioTunnelReply  uint16 = 185 // L3Forwarding: replies to a peer's node address
)

// MaxServicePortID bounds the IDs of ServiceFlows: a port's groups are
// 2*id (cluster endpoints) and 2*id+1 (local endpoints), below OpenFlow's
// reserved group IDs.
const MaxServicePortID = 0x7fffff00

// ServiceGroupIDs are the group IDs of the port with the given ID.
func ServiceGroupIDs(portID uint32) (cluster, local uint32) { return 2 * portID, 2*portID + 1 }

// ServiceFlowSet is what one Service needs on the bridge.
type ServiceFlowSet struct {
	Flows  []*openflow.Flow
	Groups []*openflow.GroupEntry
}

// ErrBadService is wrapped by ServiceFlows' errors about its input.
var ErrBadService = errors.New("invalid service input")

// ServiceFlows are the flows and groups of Service s on node n under round
// r. ids gives every port of s (by proxy.Port Key) an ID in
// 1..MaxServicePortID, unique on the node: it keys the port's groups and
// its learned affinity flows. The flows carry s's cookie (CategoryService,
// ServiceID); the result depends only on the arguments.
func ServiceFlows(n NodeConfig, s *proxy.Service, ids map[string]uint32, r Round) (ServiceFlowSet, error) {
	var out ServiceFlowSet
	if err := n.Validate(); err != nil {
		return out, err
	}
	if !n.ServiceProxy {
		return out, fmt.Errorf("node %s: service flows without the service proxy: %w", n.Name, ErrBadService)
	}
	b := &builder{n: &n, cookie: NewCookie(r, CategoryService, ServiceID(s.Key()))}
	sb := &serviceBuilder{builder: b, svc: s}
	for i := range s.Ports {
		p := &s.Ports[i]
		id, ok := ids[p.Key()]
		if !ok || id == 0 || id > MaxServicePortID {
			return out, fmt.Errorf("service %s port %s: ID %d: %w", s.Key(), p.Key(), id, ErrBadService)
		}
		if err := sb.port(p, id); err != nil {
			return out, fmt.Errorf("service %s port %s: %w", s.Key(), p.Key(), err)
		}
	}
	Sort(b.flows)
	out.Flows, out.Groups = b.flows, sb.groups
	return out, nil
}

type serviceBuilder struct {
	*builder
	svc    *proxy.Service
	groups []*openflow.GroupEntry
}

// target is what a frontend flow does with a new connection.
type target struct {
	group  uint32 // select group; 0: reject or drop
	reject bool
}

// frontend is one address and port of a Service port.
type frontend struct {
	ip       netip.Addr
	port     uint16
	external bool // node port, external or load-balancer IP
	lb       bool // load-balancer IP: loadBalancerSourceRanges apply
}

func checkServiceIPv4(what string, a netip.Addr) error {
	if err := checkIPv4(what, a); err != nil {
		return fmt.Errorf("%w: %w", err, ErrBadService)
	}
	return nil
}

func (sb *serviceBuilder) port(p *proxy.Port, id uint32) error {
	n := sb.n
	switch p.Protocol {
	case proxy.ProtoTCP, proxy.ProtoUDP, proxy.ProtoSCTP:
	default:
		return fmt.Errorf("protocol %d: %w", p.Protocol, ErrBadService)
	}
	if p.Port == 0 {
		return fmt.Errorf("port 0: %w", ErrBadService)
	}
	if err := checkServiceIPv4("cluster IP", p.ClusterIP); err != nil {
		return err
	}
	fronts := []frontend{{ip: p.ClusterIP.Unmap(), port: p.Port}}
	if p.NodePort != 0 {
		for _, ip := range append(append([]netip.Addr(nil), n.NodeIPs...), NodePortVirtualIP) {
			fronts = append(fronts, frontend{ip: ip.Unmap(), port: p.NodePort, external: true})
		}
	}
	for _, ip := range p.ExternalIPs {
		if err := checkServiceIPv4("external IP", ip); err != nil {
			return err
		}
		fronts = append(fronts, frontend{ip: ip.Unmap(), port: p.Port, external: true})
	}
	for _, ip := range p.LoadBalancerIPs {
		if err := checkServiceIPv4("load balancer IP", ip); err != nil {
			return err
		}
		fronts = append(fronts, frontend{ip: ip.Unmap(), port: p.Port, external: true, lb: true})
	}
	for _, r := range p.SourceRanges {
		if err := checkPrefix("source range", r); err != nil {
			return fmt.Errorf("%w: %w", err, ErrBadService)
		}
	}
	clusterGroup, localGroup := ServiceGroupIDs(id)
	var groups []uint32
	pick := func(eps []proxy.Endpoint, group uint32) (target, error) {
		switch {
		case len(eps) > 0:
			if err := sb.group(p, id, group, eps); err != nil {
				return target{}, err
			}
			groups = append(groups, group)
			return target{group: group}, nil
		case !p.HasEndpoints:
			return target{reject: true}, nil
		}
		return target{}, nil // endpoints elsewhere only: drop
	}
	internal, err := pick(p.InternalEndpoints(), map[bool]uint32{true: localGroup, false: clusterGroup}[p.InternalLocal])
	if err != nil {
		return err
	}
	var external, fromNode target
	if p.ExternallyAccessible() {
		if p.ExternalLocal {
			if external, err = pick(p.LocalEndpoints, localGroup); err != nil {
				return err
			}
			if fromNode, err = pick(p.ClusterEndpoints, clusterGroup); err != nil {
				return err
			}
		} else if external, err = pick(p.ClusterEndpoints, clusterGroup); err != nil {
			return err
		}
	}
	for _, f := range fronts {
		if !f.external {
			sb.frontend(p, id, f, prioSvcFrontend, nil, internal)
			continue
		}
		if n.Topology == BridgedUplink && f.ip != NodePortVirtualIP {
			// From the uplink straight into the pipeline: the host stack
			// never sees it.
			m := l4(match().InPort(n.Ports.Uplink), p.Protocol, f.ip, f.port)
			b := sb.builder
			b.add(Classifier, prioNormal, m, loadMarks(actions(), FromUplinkMark, RewriteMACMark).GotoTable(uint8(UnSNAT)))
		}
		var ranges []netip.Prefix
		if f.lb {
			ranges = p.SourceRanges
		}
		if len(ranges) == 0 {
			if p.ExternalLocal {
				sb.frontend(p, id, f, prioSvcLocalSrc, func(m *openflow.Match) { FromNodeMark.match(m) }, fromNode)
			}
			sb.frontend(p, id, f, prioSvcFrontend, nil, external)
			continue
		}
		for _, r := range ranges {
			src := func(m *openflow.Match) { m.IPSrc(r) }
			if p.ExternalLocal {
				sb.frontend(p, id, f, prioSvcRangeLSrc, func(m *openflow.Match) { FromNodeMark.match(m).IPSrc(r) }, fromNode)
			}
			sb.frontend(p, id, f, prioSvcRange, src, external)
		}
		sb.frontend(p, id, f, prioSvcFrontend, nil, target{}) // outside the ranges: drop
	}
	if p.AffinitySeconds != 0 && len(groups) > 0 {
		sb.endpointDNAT(p, id)
	}
	return nil
}

// l4 adds "proto,nw_dst=ip,tp_dst=port" to m.
func l4(m *openflow.Match, proto uint8, ip netip.Addr, port uint16) *openflow.Match {
	switch proto {
	case proxy.ProtoTCP:
		m.TCP().TCPDst(port)
	case proxy.ProtoUDP:
		m.UDP().UDPDst(port)
	case proxy.ProtoSCTP:
		m.SCTP().SCTPDst(port)
	}
	return m.IPDstAddr(ip)
}

// frontend adds the flows that send new connections to f (and, with
// extra, only those extra matches too) to t.
//
// Each has a twin for fragments (nw_frag=yes). A datagram larger than the
// MTU arrives in fragments; the userspace datapath's ct reassembles it in
// CtZone's first ct, but the fragments, not the datagram, go on through the
// tables, and the flow tables see no transport ports in any fragment (OVS's
// default "normal" fragment handling: ports 0; only the later fragments
// lack the header itself). Matched by tp_dst, the fragments missed the
// Service and left for the cluster IP itself, committed without NAT, and
// nothing answered. The twin matches the datagram's port as conntrack saw
// it (ct_tp_dst), so every fragment takes the Service's group and the ct
// whose fragment completes the datagram DNATs them all alike. OVS gives
// later fragments ct_tp_dst only from 3.1.7 (3.2.5, 3.3.4, 3.4.2, 3.5.0)
// on; where the frontend is its Service's only port of its protocol on a
// cluster IP, the twin leaves the port out and works with older OVS too
// (README, "Fragments").
func (sb *serviceBuilder) frontend(p *proxy.Port, id uint32, f frontend, prio uint16, extra func(*openflow.Match), t target) {
	whole := func() *openflow.Match {
		m := match().CTState(openflow.CTTracked|openflow.CTNew, openflow.CTTracked|openflow.CTNew)
		l4(m, p.Protocol, f.ip, f.port)
		if extra != nil {
			extra(m)
		}
		return m
	}
	frag := func() *openflow.Match {
		m := match().CTState(openflow.CTTracked|openflow.CTNew, openflow.CTTracked|openflow.CTNew)
		m.IP().IPProto(p.Protocol).IPDstAddr(f.ip).NwFrag(openflow.NwFragAny, openflow.NwFragAny)
		if f.external || !sb.onlyPort(p) {
			m.CTNwProto(p.Protocol).CTTpDst(f.port)
		}
		if extra != nil {
			extra(m)
		}
		return m
	}
	sb.frontendFlows(p, id, prio, whole, t)
	sb.frontendFlows(p, id, prio, frag, t)
}

// onlyPort: p is its Service's only port of its protocol.
func (sb *serviceBuilder) onlyPort(p *proxy.Port) bool {
	n := 0
	for i := range sb.svc.Ports {
		if sb.svc.Ports[i].Protocol == p.Protocol {
			n++
		}
	}
	return n == 1
}

func (sb *serviceBuilder) frontendFlows(p *proxy.Port, id uint32, prio uint16, m func() *openflow.Match, t target) {
	switch {
	case t.group != 0 && p.AffinitySeconds != 0:
		// The learned endpoint, if any, then the group (whose buckets
		// learn) in ServiceSelect.
		a := RewriteMACMark.load(actions()).SetReg(ServicePortField.Reg, id).
			Resubmit(openflow.PortInPort, uint8(SessionAffinity)).GotoTable(uint8(ServiceSelect))
		sb.add(ServiceLB, prio, m(), a)
		sb.add(ServiceSelect, prio, m(), actions().Group(t.group))
	case t.group != 0:
		sb.add(ServiceLB, prio, m(), RewriteMACMark.load(actions()).Group(t.group))
	case t.reject:
		sb.add(ServiceLB, prio, m(), actions().Controller(openflow.Controller{
			Reason: openflow.ReasonAction, Userdata: []byte{PacketInReject}, MeterID: ServiceRejectMeter,
		}))
	default:
		sb.add(ServiceLB, prio, m(), nil)
	}
}

// dnatCT commits a new connection to ep in CtZone with its DNAT, marks it
// as the proxy's and records where its first packet came from (ct_mark)
// and its source MAC (ct_label[0..47]): replies to a client on the uplink
// go back to that MAC. It continues in ServiceSNAT.
func dnatCT(ep netip.AddrPort) *openflow.CT {
	exec := actions().
		SetFieldMasked(openflow.FieldCTMark, be32(ServiceCTMark), be32(ServiceCTMark)).
		Move(PktSourceField.Subfield(), openflow.FieldCTMark.Range(ctMarkSourceShift, ctMarkSourceShift+3)).
		Move(openflow.FieldEthSrc.All(), openflow.FieldCTLabel.Range(0, 47))
	return openflow.NewCT().Commit().Zone(CtZone).Table(uint8(ServiceSNAT)).
		NAT(openflow.NAT{Dst: true, IPMin: ep.Addr(), PortMin: ep.Port()}).Exec(exec)
}

func be32(v uint32) []byte { return []byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)} }

// group builds the select group of eps. Without affinity a bucket DNATs
// straight away; with it a bucket puts the endpoint in the registers,
// learns it for the client and DNATs in EndpointDNAT.
//
// The group selects with dp_hash over the 5-tuple (selectionParam's
// algorithm 0, OVS_HASH_ALG_L4), not OVS's default: that is dp_hash with
// the symmetric L3/L4 hash, which in the userspace datapath leaves UDP
// ports out, so every UDP flow of a client went to one endpoint. Where the
// buckets cannot be mapped onto dp_hash values (above 256) OVS falls back
// to its hash method, as with the default.
func (sb *serviceBuilder) group(p *proxy.Port, id, gid uint32, eps []proxy.Endpoint) error {
	g := &openflow.GroupEntry{ID: gid, Type: openflow.GroupTypeSelect, SelectionMethod: selectionMethod, SelectionParam: selectionParam}
	for i, e := range eps {
		if err := checkServiceIPv4("endpoint", e.IP); err != nil {
			return err
		}
		if e.Port == 0 {
			return fmt.Errorf("endpoint %s: port 0: %w", e.IP, ErrBadService)
		}
		ep := netip.AddrPortFrom(e.IP.Unmap(), e.Port)
		var a *openflow.Actions
		if p.AffinitySeconds == 0 {
			a = actions().CT(dnatCT(ep))
		} else {
			a = actions().SetReg(EndpointIPField.Reg, be32u(ep.Addr())).
				SetFieldMasked(openflow.Reg(EndpointPortField.Reg), be32(uint32(ep.Port())), be32(EndpointPortField.Mask())).
				Resubmit(openflow.PortInPort, uint8(EndpointDNAT))
		}
		g.Buckets = append(g.Buckets, openflow.Bucket{ID: uint32(i), Actions: a})
	}
	for _, old := range sb.groups {
		if old.ID == gid {
			return nil // cluster and local endpoints may be the same group
		}
	}
	sb.groups = append(sb.groups, g)
	return nil
}

// The service groups' selection: dp_hash, hash algorithm 0 (the upper 32
// bits of the parameter: the 5-tuple, UDP ports included) and basis 0.
const (
	selectionMethod        = "dp_hash"
	selectionParam  uint64 = 0
)

func be32u(a netip.Addr) uint32 {
	v := a.Unmap().As4()
	return uint32(v[0])<<24 | uint32(v[1])<<16 | uint32(v[2])<<8 | uint32(v[3])
}

// affinityLearn is the learn action of ep's bucket: a flow in
// SessionAffinity that gives the client the same endpoint on this
// frontend until it has made no new connection for the timeout. Timeouts
// beyond OpenFlow's 16-bit idle_timeout learn a flow without one, which the
// agent expires itself (AffinityTimeout).
func (sb *serviceBuilder) affinityLearn(p *proxy.Port, id uint32, ep netip.AddrPort) *openflow.Learn {
	l := openflow.NewLearn(uint8(SessionAffinity))
	l.Priority = prioSvcFrontend
	// Round 0: learned flows outlive the agent's replays (which never
	// delete category affinity, and whose rounds are never 0).
	l.Cookie = uint64(NewCookie(0, CategoryAffinity, AffinityID(id, ep)))
	if p.AffinitySeconds <= 0xffff {
		l.IdleTimeout = uint16(p.AffinitySeconds)
	}
	var dst *openflow.Field
	switch p.Protocol {
	case proxy.ProtoTCP:
		dst = openflow.FieldTCPDst
	case proxy.ProtoUDP:
		dst = openflow.FieldUDPDst
	default:
		dst = openflow.FieldSCTPDst
	}
	return l.MatchValue(openflow.FieldEthType.All(), uint64(EthIPv4)).
		MatchValue(openflow.FieldIPProto.All(), uint64(p.Protocol)).
		MatchField(openflow.FieldIPSrc.All(), openflow.FieldIPSrc.All()).
		MatchField(openflow.FieldIPDst.All(), openflow.FieldIPDst.All()).
		MatchField(dst.All(), dst.All()).
		LoadField(EndpointIPField.Subfield(), EndpointIPField.Subfield()).
		LoadField(EndpointPortField.Subfield(), EndpointPortField.Subfield()).
		LoadValue(AffinityField.Subfield(), 1)
}

// endpointDNAT: the DNAT of every endpoint of a Service port with
// affinity, keyed by the port's ID and the endpoint in the registers.
func (sb *serviceBuilder) endpointDNAT(p *proxy.Port, id uint32) {
	seen := map[netip.AddrPort]bool{}
	for _, eps := range [][]proxy.Endpoint{p.ClusterEndpoints, p.LocalEndpoints} {
		for _, e := range eps {
			ep := netip.AddrPortFrom(e.IP.Unmap(), e.Port)
			if seen[ep] {
				continue
			}
			seen[ep] = true
			m := protoMatch(p.Protocol).Reg(ServicePortField.Reg, id, ServicePortField.Mask()).
				Reg(EndpointIPField.Reg, be32u(ep.Addr()), EndpointIPField.Mask())
			m.Reg(EndpointPortField.Reg, uint32(ep.Port()), EndpointPortField.Mask())
			sb.add(EndpointDNAT, prioSvcFrontend, m, actions().Learn(sb.affinityLearn(p, id, ep)).CT(dnatCT(ep)))
		}
	}
}

func protoMatch(proto uint8) *openflow.Match {
	switch proto {
	case proxy.ProtoTCP:
		return match().TCP()
	case proxy.ProtoUDP:
		return match().UDP()
	}
	return match().SCTP()
}

// serviceNodeFlows are the node's flows the Services rely on: un-SNAT of
// replies to the gateway IP and to ServiceNextHopIP, SNAT of the host's
// and external clients' connections to endpoints elsewhere, replies to
// uplink clients.
func (b *builder) serviceNodeFlows() {
	n := b.n
	b.add(UnSNAT, prioNormal, match().IP().IPDstAddr(n.GatewayIP),
		actions().CT(openflow.NewCT().Zone(SNATZone).Table(uint8(ConntrackZone)).NAT(openflow.NAT{})))
	// The host's own connections (through the gateway) to a Service whose
	// endpoint is outside the pod network: a hostNetwork pod, on this node
	// (the node IP) or another. Left as they came (from the gateway IP, or
	// the node IP for the host's node-port connections), the host would
	// get back packets from its own address, which it drops as martian.
	// SNATed to ServiceNextHopIP, which no host owns, they go back to the
	// host by the port they came in on (IN_PORT below); the host delivers
	// them or forwards them, masqueraded, to the endpoint's node, and
	// answers ServiceNextHopIP through the gateway (HostRules routes it
	// there), where UnSNAT and CtZone undo both NATs and the reply goes
	// back to the gateway as any other. Endpoints in the pod network see
	// the host's address, as before.
	for _, cidr := range n.ClusterPodCIDRs {
		b.add(ServiceSNAT, prioNormal, FromGatewayMark.match(match().IP()).IPDst(cidr), gotoT(EgressTier))
	}
	b.add(ServiceSNAT, prioLow, FromGatewayMark.match(match().IP()), snat(ServiceNextHopIP))
	b.add(UnSNAT, prioNormal, match().IP().IPDstAddr(ServiceNextHopIP),
		actions().CT(openflow.NewCT().Zone(SNATZone).Table(uint8(ConntrackZone)).NAT(openflow.NAT{})))
	b.add(L3Forwarding, prioSvcToHost, match().IP().IPSrcAddr(ServiceNextHopIP),
		actions().SetEthSrc(ServiceNextHopMAC).SetEthDst(n.GatewayMAC).GotoTable(uint8(L3DecTTL)))
	// Both legs of such a connection, and the un-NATed replies of the
	// host's connections, leave by the gateway they came in on: OpenFlow
	// drops an output to the input port unless it says IN_PORT.
	gm := OutputToPortMark.match(match().InPort(n.Ports.Gateway))
	gm.Reg(TargetPortField.Reg, regPort(n.Ports.Gateway), TargetPortField.Mask())
	b.add(Output, prioHigh, gm, actions().OutputInPort())
	if n.usesTunnel() {
		// Replies to the host's connections SNATed to the node IP
		// (serviceTunnelPeerCIDR) come back through the tunnel.
		for _, ip := range n.NodeIPs {
			b.add(UnSNAT, prioNormal, FromTunnelMark.match(match().IP()).IPDstAddr(ip),
				actions().CT(openflow.NewCT().Zone(SNATZone).Table(uint8(ConntrackZone)).NAT(openflow.NAT{})))
		}
	}
	if n.Topology != BridgedUplink {
		return
	}
	// A client on the uplink reaching an endpoint on another node: SNAT to
	// the gateway IP, so the reply comes back here to be un-DNATed. Local
	// endpoints see the client's address.
	for _, cidr := range n.PodCIDRs {
		b.add(ServiceSNAT, prioNormal, FromUplinkMark.match(match().IP()).IPDst(cidr), gotoT(EgressTier))
	}
	for _, cidr := range n.ClusterPodCIDRs {
		b.add(ServiceSNAT, prioSvcPodSNAT, FromUplinkMark.match(match().IP()).IPDst(cidr), snat(n.GatewayIP))
	}
	// An endpoint outside the pod network (a hostNetwork pod: this node's
	// IP or another node's) is the host's to reach, as for the host's own
	// connections above: SNAT to ServiceNextHopIP and hand it to the host
	// through the gateway; the reply leaves by the uplink as any other. The
	// gateway IP would not do: the host drops packets from its own address
	// (martian), and delivered to LOCAL it answers its own address itself.
	b.add(ServiceSNAT, prioLow, FromUplinkMark.match(match().IP()), snat(ServiceNextHopIP))
	// Replies to a client on the uplink leave by the uplink, to the MAC
	// the connection came from: the host never saw the connection.
	m := match().IP().CTState(openflow.CTTracked|openflow.CTReply, openflow.CTTracked|openflow.CTReply).
		CTMark(FromUplinkMark.Value<<ctMarkSourceShift|ServiceCTMark, ctMarkSourceMask|ServiceCTMark)
	a := actions().SetEthSrc(n.NodeMAC).Move(openflow.FieldCTLabel.Range(0, 47), openflow.FieldEthDst.All())
	b.add(L3Forwarding, prioSvcReply, m, ToUplinkMark.load(a).GotoTable(uint8(L3DecTTL)))
	// In noEncap both legs of a node-port connection to another node's
	// endpoint use the uplink (client -> node -> endpoint's node, and the
	// reply back): OpenFlow drops an output to the input port unless it
	// says IN_PORT.
	om := OutputToPortMark.match(match().InPort(n.Ports.Uplink))
	om.Reg(TargetPortField.Reg, regPort(n.Ports.Uplink), TargetPortField.Mask())
	b.add(Output, prioHigh, om, actions().OutputInPort())
}

// serviceTunnelPeerCIDR SNATs the host's own Service connections to an
// endpoint in a tunnelled peer's pod CIDR to the node IP: kube-proxy
// masquerades the node's own traffic to a Service (its node ports, kept
// for externalTrafficPolicy Local by the short-circuit, and cluster IPs
// from outside the cluster CIDR), so the endpoint sees the node's
// address, where the host chose the gateway's (a cluster IP through the
// gateway route, a node port through NodePortRedirector's masquerade).
// The endpoint's node sends the replies back through the tunnel
// (serviceTunnelPeer); UnSNAT undoes it here.
func (b *builder) serviceTunnelPeerCIDR(cidr netip.Prefix) {
	b.add(ServiceSNAT, prioSvcHostSNAT, FromGatewayMark.match(match().IP()).IPDst(cidr), snat(b.n.NodeIPs[0]))
}

// serviceTunnelPeer sends the replies of connections that came through the
// tunnel from a peer's node address (that peer's host reaching a Service,
// SNATed by serviceTunnelPeerCIDR there) back through the tunnel to it:
// routed by the host to the peer's address they would reach the peer past
// the conntrack that holds the connection's NAT.
func (b *builder) serviceTunnelPeer(p *Peer) {
	m := match().IP().CTState(openflow.CTTracked|openflow.CTReply, openflow.CTTracked|openflow.CTReply).
		CTMark(FromTunnelMark.Value<<ctMarkSourceShift, ctMarkSourceMask).IPDstAddr(p.NodeIP)
	a := actions().SetEthSrc(b.n.GatewayMAC).SetEthDst(GlobalVirtualMAC).SetTunDst(p.NodeIP)
	b.add(L3Forwarding, prioTunnelReply, m, a.GotoTable(uint8(L3DecTTL)))
}

// snat source-NATs a new service connection to ip in SNATZone and
// continues with egress policy; the connection's CtZone entry is marked so
// its later packets from the client are SNATed too (ConntrackState).
func snat(ip netip.Addr) *openflow.Actions {
	mark := openflow.NewCT().Commit().Zone(CtZone).
		Exec(actions().SetFieldMasked(openflow.FieldCTMark, be32(ServiceSNATCTMark), be32(ServiceSNATCTMark)))
	exec := actions().SetFieldMasked(openflow.FieldCTMark, be32(ServiceCTMark), be32(ServiceCTMark))
	return actions().CT(mark).CT(openflow.NewCT().Commit().Zone(SNATZone).Table(uint8(EgressTier)).
		NAT(openflow.NAT{Src: true, IPMin: ip}).Exec(exec))
}

// servicePodFlows are a pod's flows for reaching itself through a Service
// (hairpin): SNAT to the gateway IP, since a pod drops packets from its own
// address, and output back into its port.
func (b *builder) servicePodFlows(p *Pod) {
	for _, ip := range p.IPs {
		b.add(ServiceSNAT, prioHigh, match().IP().IPSrcAddr(ip).IPDstAddr(ip), snat(b.n.GatewayIP))
	}
	m := OutputToPortMark.match(match().InPort(p.Port))
	m.Reg(TargetPortField.Reg, regPort(p.Port), TargetPortField.Mask())
	b.add(Output, prioHigh, m, actions().OutputInPort())
}
