package pipeline

import (
	"encoding/binary"
	"fmt"
	"slices"

	"github.com/seine-cni/seine/ovs/openflow"
)

// RegField is a bit range of a 32-bit register carried along the pipeline.
type RegField struct {
	Reg    int
	Lo, Hi uint16
	Name   string
}

// Subfield is the field as an openflow subfield (for move and output:reg).
func (f RegField) Subfield() openflow.Subfield { return openflow.Reg(f.Reg).Range(f.Lo, f.Hi) }

// Mask returns the register mask the field covers.
func (f RegField) Mask() uint32 {
	return uint32((uint64(1)<<(f.Hi-f.Lo+1))-1) << f.Lo
}

func (f RegField) String() string { return fmt.Sprintf("%s(reg%d[%d..%d])", f.Name, f.Reg, f.Lo, f.Hi) }

// RegMark is a value of a RegField.
type RegMark struct {
	Field RegField
	Value uint32
	Name  string
}

// match adds the mark to m.
func (r RegMark) match(m *openflow.Match) *openflow.Match { return matchMarks(m, r) }

// load adds "set_field:value/mask->regN" to a.
func (r RegMark) load(a *openflow.Actions) *openflow.Actions { return loadMarks(a, r) }

// regBits gathers marks into one value and mask per register, in register
// order: a match may name a register only once, and one masked set_field
// per register reads better than several.
func regBits(marks []RegMark) (regs []int, vals, masks map[int]uint32) {
	vals, masks = map[int]uint32{}, map[int]uint32{}
	for _, mk := range marks {
		r := mk.Field.Reg
		if _, ok := masks[r]; !ok {
			regs = append(regs, r)
		}
		vals[r] = vals[r]&^mk.Field.Mask() | mk.Value<<mk.Field.Lo
		masks[r] |= mk.Field.Mask()
	}
	slices.Sort(regs)
	return regs, vals, masks
}

// matchMarks adds all marks to m, one masked field per register.
func matchMarks(m *openflow.Match, marks ...RegMark) *openflow.Match {
	regs, vals, masks := regBits(marks)
	for _, r := range regs {
		m.Reg(r, vals[r], masks[r])
	}
	return m
}

// loadMarks sets all marks, one masked set_field per register.
func loadMarks(a *openflow.Actions, marks ...RegMark) *openflow.Actions {
	regs, vals, masks := regBits(marks)
	for _, r := range regs {
		var v, m [4]byte
		binary.BigEndian.PutUint32(v[:], vals[r])
		binary.BigEndian.PutUint32(m[:], masks[r])
		a.SetFieldMasked(openflow.Reg(r), v[:], m[:])
	}
	return a
}

// Is reports whether the register value v carries the mark.
func (r RegMark) Is(v uint32) bool { return v&r.Field.Mask() == r.Value<<r.Field.Lo }

func (r RegMark) String() string { return r.Name }

// The register map. README.md has it as a table.
var (
	// PktSourceField (reg0[0..3]) says where the packet entered the bridge.
	PktSourceField = RegField{0, 0, 3, "PktSource"}
	// PktDestField (reg0[4..7]) says where L3 forwarding sends the packet.
	PktDestField = RegField{0, 4, 7, "PktDest"}
	// RewriteMACField (reg0[8]): the packet was routed to this node (tunnel,
	// uplink, or DNAT by the service slot) and L3 forwarding must rewrite
	// its MACs when it goes to a local pod.
	RewriteMACField = RegField{0, 8, 8, "RewriteMAC"}
	// OutputField (reg0[9]): L2 forwarding found an output port in reg1.
	OutputField = RegField{0, 9, 9, "Output"}
	// RejectReplyField (reg0 bit 10) marks the agent's answer to a
	// connection a tiered rule rejected: every policy table passes it.
	RejectReplyField = RegField{0, 10, 10, "RejectReply"}
	// TargetPortField (reg1) is the output port chosen by L2 forwarding.
	TargetPortField = RegField{1, 0, 31, "TargetPort"}
	// EndpointIPField (reg3) and EndpointPortField (reg4[0..15]) are the
	// endpoint a Service with affinity picked (learned or from its group).
	EndpointIPField   = RegField{3, 0, 31, "EndpointIP"}
	EndpointPortField = RegField{4, 0, 15, "EndpointPort"}
	// AffinityField (reg4[16]): the endpoint came from a learned flow.
	AffinityField = RegField{4, 16, 16, "Affinity"}
	// ServicePortField (reg5) is the ID of the Service port being
	// selected, which keys EndpointDNAT.
	ServicePortField = RegField{5, 0, 31, "ServicePort"}
	// EgressRuleField (reg6) and IngressRuleField (reg7) are the
	// conjunction IDs of the rules that allowed a new connection, loaded
	// by the rules' conj_id flows; ConntrackCommit keeps them with the
	// connection (EgressRuleLabel, IngressRuleLabel) so that the metric
	// tables count its later packets for the rule (policy stats).
	EgressRuleField  = RegField{6, 0, 31, "EgressRule"}
	IngressRuleField = RegField{7, 0, 31, "IngressRule"}
)

// The bits of ct_label that hold the rules that allowed a connection
// (ct_label[0..47] is the proxy's client MAC).
const (
	EgressRuleLabelLo  = 64 // ct_label[64..95]: EgressRuleField
	IngressRuleLabelLo = 96 // ct_label[96..127]: IngressRuleField
)

// Values of PktSourceField.
var (
	FromTunnelMark  = RegMark{PktSourceField, 1, "FromTunnel"}
	FromGatewayMark = RegMark{PktSourceField, 2, "FromGateway"}
	FromPodMark     = RegMark{PktSourceField, 3, "FromPod"}
	FromUplinkMark  = RegMark{PktSourceField, 4, "FromUplink"}
)

// Values of PktDestField.
var (
	ToTunnelMark   = RegMark{PktDestField, 1, "ToTunnel"}
	ToGatewayMark  = RegMark{PktDestField, 2, "ToGateway"}
	ToLocalPodMark = RegMark{PktDestField, 3, "ToLocalPod"}
	ToUplinkMark   = RegMark{PktDestField, 4, "ToUplink"}
	ToHostMark     = RegMark{PktDestField, 5, "ToHost"}
)

// Single-bit marks.
var (
	RewriteMACMark   = RegMark{RewriteMACField, 1, "RewriteMAC"}
	NoRewriteMACMark = RegMark{RewriteMACField, 0, "NoRewriteMAC"}
	OutputToPortMark = RegMark{OutputField, 1, "OutputToPort"}
	AffinityMark     = RegMark{AffinityField, 1, "Affinity"}
	RejectReplyMark  = RegMark{RejectReplyField, 1, "RejectReply"}
	// FromNodeMark matches FromGateway (2) and FromPod (3) together: the
	// clients on this node, which reach external frontends of a Service
	// with externalTrafficPolicy Local through its cluster endpoints.
	FromNodeMark = RegMark{RegField{0, 1, 3, "PktSource[1..3]"}, 1, "FromNode"}
)

// Bits of ct_mark the proxy sets on the connections it DNATs.
const (
	// ServiceCTMark: the connection was DNATed by the proxy.
	ServiceCTMark uint32 = 0x1
	// ServiceSNATCTMark (in CtZone): the proxy also source-NATed the
	// connection (in SNATZone), so its later packets from the client are
	// SNATed there too.
	ServiceSNATCTMark uint32 = 0x2
	// ctMarkSourceShift: ct_mark[4..7] holds the packet source
	// (PktSourceField) of the connection's first packet, so replies to a
	// client on the uplink go back out of the uplink.
	ctMarkSourceShift = 4
	ctMarkSourceMask  = uint32(0xf) << ctMarkSourceShift
)
