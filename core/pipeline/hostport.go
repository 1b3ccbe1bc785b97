package pipeline

import (
	"github.com/seine-cni/seine/ovs/openflow"
	"net/netip"
)

// Priorities of a pod's host ports: one above the node ports' flows of the
// same tables, so a host port that equals a node port never shares (and
// never deletes) a flow of the Service.
const (
	prioHostPortClassifier uint16 = prioNormal + 1
	prioHostPort           uint16 = prioSvcFrontend + 2
)

// hostPortFlows DNAT new connections to the pod's host ports that reach
// the bridge: the node addresses of each mapping (every node IP for a
// mapping without hostIP, its hostIP when it is a node IP; 127.0.0.1 and
// other addresses are the host's alone) in ServiceLB, committed like a
// Service's DNAT so replies, the uplink's return path and the SNAT of
// hairpin traffic are the proxy's. On a bridged uplink the Classifier takes
// their packets from the uplink: the host never sees them, and the pod sees
// the client's address. The host's own connections are DNATed by the host
// (platform.NodePortState.HostPorts). Only with the service proxy.
func (b *builder) hostPortFlows(p *Pod) {
	n := b.n
	var podIP netip.Addr
	for _, ip := range p.IPs {
		if ip.Is4() {
			podIP = ip
			break
		}
	}
	if !podIP.IsValid() {
		return
	}
	for _, m := range p.HostPorts {
		for _, ip := range n.NodeIPs {
			if m.HostIP.IsValid() && m.HostIP != ip {
				continue
			}
			if n.Topology == BridgedUplink {
				cm := l4(match().InPort(n.Ports.Uplink), m.Protocol, ip, m.HostPort)
				b.add(Classifier, prioHostPortClassifier, cm, loadMarks(actions(), FromUplinkMark, RewriteMACMark).GotoTable(uint8(UnSNAT)))
			}
			lm := l4(match().CTState(openflow.CTTracked|openflow.CTNew, openflow.CTTracked|openflow.CTNew), m.Protocol, ip, m.HostPort)
			b.add(ServiceLB, prioHostPort, lm, RewriteMACMark.load(actions()).CT(dnatCT(netip.AddrPortFrom(podIP, m.PodPort))))
		}
	}
}
