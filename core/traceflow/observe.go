package traceflow

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"

	crd "github.com/seine-cni/seine/core/apis/crd/v1beta1"
	"github.com/seine-cni/seine/core/pipeline"
	"github.com/seine-cni/seine/ovs/openflow"
)

// Injected is what a node knows of a trace's packet: its tag, IP ID and
// addresses as the source pod sent it. A packet-in is the trace's only if
// tag, ID and protocol agree, so real traffic that happens to carry the
// tag's DSCP is never taken for the trace.
type Injected struct {
	Tag uint8
	// Live: the trace tags real packets, which Matches takes whatever
	// their ID (the agent tells the traced one from later ones by the
	// tagging node's captured packet).
	Live             bool
	ID               uint16
	Proto            uint8 // live: 0 is any
	SrcIP, DstIP     netip.Addr
	SrcPort, DstPort uint16
}

// Report is one tagged copy's packet-in, decoded.
type Report struct {
	Table uint8
	// Priority is the priority of the flow whose copy sent the packet-in.
	Priority uint16
	Kind     byte
	Packet   Packet
	Regs     [16]uint32
	InPort   uint32
	TunDst   netip.Addr
}

// ErrNotTraceflow: the packet-in is not a tagged copy's.
var ErrNotTraceflow = errors.New("not a traceflow packet-in")

// FromPacketIn decodes a packet-in of a tagged copy.
func FromPacketIn(pi *openflow.PacketIn) (Report, error) {
	if len(pi.Userdata) != 5 || pi.Userdata[0] != PacketInTraceflow {
		return Report{}, ErrNotTraceflow
	}
	p, err := ParseFrame(pi.Packet)
	if err != nil {
		return Report{}, fmt.Errorf("traceflow packet-in: %w", err)
	}
	r := Report{Table: pi.TableID, Kind: pi.Userdata[2], Priority: binary.BigEndian.Uint16(pi.Userdata[3:]), Packet: p, InPort: pi.InPort()}
	for i := range r.Regs {
		r.Regs[i] = pi.Reg(i)
	}
	if v, _, ok := pi.Field(openflow.FieldTunDst); ok && len(v) == 4 {
		r.TunDst = netip.AddrFrom4([4]byte(v))
	}
	return r, nil
}

// Matches reports whether the report is the injected packet's.
func (in Injected) Matches(r Report) bool {
	if in.Live {
		return r.Packet.Tag == in.Tag && (in.Proto == 0 || r.Packet.Proto == in.Proto)
	}
	return r.Packet.Tag == in.Tag && r.Packet.ID == in.ID && r.Packet.Proto == in.Proto
}

// PolicyLookup names the policies that isolate the pod on OpenFlow port
// port for ingress (or egress), for a drop by isolation. It may be nil.
type PolicyLookup func(ingress bool, port uint32) []string

// Node is what Observe needs to know of the node.
type Node struct {
	// ClusterCIDRs are the cluster's pod CIDRs: a packet leaving by the
	// gateway or uplink towards one of them is forwarded, otherwise it
	// leaves the cluster's network.
	ClusterCIDRs []netip.Prefix
	Policies     PolicyLookup
	// Rules names the tiered rule of a policy table's flow at a priority.
	// It may be nil.
	Rules RuleLookup
}

// RuleLookup names the tiered policy and rule whose flow sits in table at
// priority (its conj_id flow), and says whether there is one.
type RuleLookup func(table uint8, priority uint16) (policy, rule string, ok bool)

// DefaultDenyRule is the rule named for a drop by isolation: no rule of
// the policies that select the pod allows the packet.
const DefaultDenyRule = "default deny (no rule allows it)"

// Observe turns the report of the injected packet into this node's
// observations, in the order the packet met them, and says whether the
// last one ends the trace (anything but Forwarded).
func Observe(in Injected, r Report, n Node) ([]crd.Observation, bool) {
	var obs []crd.Observation
	src := r.Regs[pipeline.PktSourceField.Reg]
	tbl := pipeline.Table(r.Table)
	switch {
	case pipeline.FromPodMark.Is(src):
		if tbl != pipeline.SpoofGuard {
			obs = append(obs, crd.Observation{Component: crd.ComponentSpoofGuard, Table: pipeline.SpoofGuard.String(), Action: crd.ActionForwarded})
		}
		if lb, ok := translated(in, r.Packet); ok {
			obs = append(obs, lb)
		}
	case pipeline.FromTunnelMark.Is(src):
		obs = append(obs, received("tunnel"))
	case pipeline.FromUplinkMark.Is(src):
		obs = append(obs, received("uplink"))
	case pipeline.FromGatewayMark.Is(src):
		obs = append(obs, received("gateway"))
	}
	last := final(r, n)
	return append(obs, last), last.Action != crd.ActionForwarded
}

func received(from string) crd.Observation {
	return crd.Observation{Component: crd.ComponentClassification, ComponentInfo: "from " + from,
		Table: pipeline.Classifier.String(), Action: crd.ActionReceived}
}

// translated is the load balancer's observation when the packet's
// destination (or source) is no longer what the pod sent.
func translated(in Injected, p Packet) (crd.Observation, bool) {
	o := crd.Observation{Component: crd.ComponentLB, Table: pipeline.ServiceLB.String(), Action: crd.ActionForwarded}
	changed := false
	if in.DstIP.IsValid() && (p.DstIP != in.DstIP || (in.DstPort != 0 && p.DstPort != in.DstPort)) {
		o.TranslatedDstIP, changed = p.DstIP.String(), true
		if p.DstPort != 0 {
			o.TranslatedDstPort = int32(p.DstPort)
		}
	}
	if in.SrcIP.IsValid() && p.SrcIP != in.SrcIP {
		o.TranslatedSrcIP, changed = p.SrcIP.String(), true
	}
	return o, changed
}

func final(r Report, n Node) crd.Observation {
	tbl := pipeline.Table(r.Table)
	o := crd.Observation{Table: tbl.String(), Action: crd.ActionDropped}
	switch {
	case tbl == pipeline.SpoofGuard:
		o.Component = crd.ComponentSpoofGuard
	case tbl == pipeline.ConntrackState:
		o.Component, o.ComponentInfo = crd.ComponentConntrack, "invalid connection state"
	case tbl == pipeline.ServiceLB:
		o.Component = crd.ComponentLB
		if r.Kind == KindReject {
			o.Action, o.ComponentInfo = crd.ActionRejected, "no endpoints"
		}
	case isTierTable(tbl):
		o.Component, o.ComponentInfo = crd.ComponentNetworkPolicy, tbl.String()
		tieredDrop(&o, n, r)
	case tbl > pipeline.ServiceSNAT && tbl < pipeline.L3Forwarding: // egress policy
		o.Component, o.ComponentInfo = crd.ComponentNetworkPolicy, tbl.String()
		policyDrop(&o, n, false, r.InPort)
	case tbl > pipeline.L2ForwardingCalc && tbl < pipeline.ConntrackCommit: // ingress policy
		o.Component, o.ComponentInfo = crd.ComponentNetworkPolicy, tbl.String()
		policyDrop(&o, n, true, r.Regs[pipeline.TargetPortField.Reg])
	case tbl == pipeline.Output && r.Kind == KindOutput:
		o.Component = crd.ComponentForwarding
		port := r.Regs[pipeline.TargetPortField.Reg]
		o.OutputPort = portName(port)
		dest := r.Regs[pipeline.PktDestField.Reg]
		switch {
		case pipeline.ToLocalPodMark.Is(dest):
			o.Action = crd.ActionDelivered
		case pipeline.ToTunnelMark.Is(dest):
			o.Action = crd.ActionForwarded
			if r.TunDst.IsValid() {
				o.TunnelDstIP = r.TunDst.String()
			}
		default:
			o.Action = crd.ActionForwardedOutOfNetwork
			for _, c := range n.ClusterCIDRs {
				if c.Contains(r.Packet.DstIP) {
					o.Action = crd.ActionForwarded
				}
			}
		}
	default:
		o.Component = crd.ComponentForwarding
		if tbl == pipeline.Output {
			o.ComponentInfo = "no output port"
		}
	}
	return o
}

func isTierTable(t pipeline.Table) bool {
	switch t {
	case pipeline.EgressTier, pipeline.EgressBaseline, pipeline.IngressTier, pipeline.IngressBaseline:
		return true
	}
	return false
}

// tieredDrop names the tiered rule whose conj_id flow (at the report's
// priority) dropped or rejected the packet. A tiered policy drops only by
// its rules' actions: it isolates nothing.
func tieredDrop(o *crd.Observation, n Node, r Report) {
	if r.Kind == KindReject {
		o.Action = crd.ActionRejected
	}
	if n.Rules != nil {
		if policy, rule, ok := n.Rules(r.Table, r.Priority); ok {
			o.NetworkPolicy, o.Rule = policy, rule
			return
		}
	}
	o.Rule = fmt.Sprintf("tiered rule at OpenFlow priority %d (no longer known to the agent)", r.Priority)
}

func policyDrop(o *crd.Observation, n Node, ingress bool, port uint32) {
	o.Rule = DefaultDenyRule
	if n.Policies != nil {
		o.NetworkPolicy = strings.Join(n.Policies(ingress, port), ",")
	}
}

func portName(p uint32) string {
	switch p {
	case 0xfffe, openflow.PortLocal:
		return "LOCAL"
	}
	return strconv.FormatUint(uint64(p), 10)
}
