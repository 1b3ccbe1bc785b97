package openflow

import "fmt"

// fmtKind says how Open vSwitch formats a field's value in set_field and learn.
type fmtKind uint8

const (
	fmtHex fmtKind = iota
	fmtDec
	fmtIPv4
	fmtIPv6
	fmtEth
	fmtPort
	fmtCTState
	fmtTCPFlags
)

// OXM/NXM classes.
const (
	classNXM0 uint16 = 0x0000
	classNXM1 uint16 = 0x0001
	classOXM  uint16 = 0x8000
	// classPktReg is OXM_OF_PKT_REG<N>: 64-bit registers OVS uses in
	// OpenFlow 1.5 replies for pairs of 32-bit registers.
	classPktReg uint16 = 0x8001
)

// Field describes one OpenFlow match field: its wire headers and the names
// Open vSwitch uses for it. Fields are package-level values; compare them by
// pointer.
type Field struct {
	name    string // Open vSwitch field name, as in "set_field:1->reg0"
	nxmName string // name in subfield syntax, as in "NXM_NX_REG0[0..15]"
	oxm     uint32 // header (no mask bit, no length) used in matches and set_field
	nxm     uint32 // header used in subfields (move, output:reg, learn); 0: same as oxm
	bytes   uint8  // value length; 0 means variable (tun_metadata)
	kind    fmtKind
}

// Name returns the Open vSwitch name of the field ("reg0", "ip_src").
func (f *Field) Name() string { return f.name }

// Bits returns the width of the field in bits (tun_metadata: 124 bytes).
func (f *Field) Bits() uint16 {
	if f.bytes == 0 {
		return 124 * 8
	}
	return uint16(f.bytes) * 8
}

func (f *Field) String() string { return f.name }

func hdr(class uint16, field uint8) uint32 { return uint32(class)<<16 | uint32(field)<<9 }

func (f *Field) subHeader() uint32 {
	if f.nxm != 0 {
		return f.nxm
	}
	return f.oxm
}

var fieldsByHeader = map[uint32]*Field{}

func newField(name, nxmName string, oxm, nxm uint32, bytes uint8, kind fmtKind) *Field {
	f := &Field{name: name, nxmName: nxmName, oxm: oxm, nxm: nxm, bytes: bytes, kind: kind}
	fieldsByHeader[oxm] = f
	if nxm != 0 {
		if _, dup := fieldsByHeader[nxm]; !dup {
			fieldsByHeader[nxm] = f
		}
	}
	return f
}

// The match fields this package knows. Each one can be matched, set (where
// OVS allows) and used as a subfield.
var (
	FieldInPort = newField("in_port", "OXM_OF_IN_PORT", hdr(classOXM, 0), 0, 4, fmtPort)
	// FieldInPort16 is NXM_OF_IN_PORT, the 16-bit in_port OVS uses in learn specs and moves.
	FieldInPort16    = newField("in_port", "NXM_OF_IN_PORT", hdr(classNXM0, 0), 0, 2, fmtPort)
	FieldMetadata    = newField("metadata", "OXM_OF_METADATA", hdr(classOXM, 2), 0, 8, fmtHex)
	FieldEthDst      = newField("eth_dst", "NXM_OF_ETH_DST", hdr(classOXM, 3), hdr(classNXM0, 1), 6, fmtEth)
	FieldEthSrc      = newField("eth_src", "NXM_OF_ETH_SRC", hdr(classOXM, 4), hdr(classNXM0, 2), 6, fmtEth)
	FieldEthType     = newField("eth_type", "NXM_OF_ETH_TYPE", hdr(classOXM, 5), hdr(classNXM0, 3), 2, fmtHex)
	FieldVlanVID     = newField("vlan_vid", "OXM_OF_VLAN_VID", hdr(classOXM, 6), 0, 2, fmtDec)
	FieldVlanPCP     = newField("vlan_pcp", "OXM_OF_VLAN_PCP", hdr(classOXM, 7), 0, 1, fmtDec)
	FieldIPDSCP      = newField("ip_dscp", "OXM_OF_IP_DSCP", hdr(classOXM, 8), 0, 1, fmtDec)
	FieldIPECN       = newField("nw_ecn", "NXM_NX_IP_ECN", hdr(classOXM, 9), hdr(classNXM1, 28), 1, fmtDec)
	FieldIPProto     = newField("nw_proto", "NXM_OF_IP_PROTO", hdr(classOXM, 10), hdr(classNXM0, 6), 1, fmtDec)
	FieldIPSrc       = newField("ip_src", "NXM_OF_IP_SRC", hdr(classOXM, 11), hdr(classNXM0, 7), 4, fmtIPv4)
	FieldIPDst       = newField("ip_dst", "NXM_OF_IP_DST", hdr(classOXM, 12), hdr(classNXM0, 8), 4, fmtIPv4)
	FieldTCPSrc      = newField("tcp_src", "NXM_OF_TCP_SRC", hdr(classOXM, 13), hdr(classNXM0, 9), 2, fmtDec)
	FieldTCPDst      = newField("tcp_dst", "NXM_OF_TCP_DST", hdr(classOXM, 14), hdr(classNXM0, 10), 2, fmtDec)
	FieldUDPSrc      = newField("udp_src", "NXM_OF_UDP_SRC", hdr(classOXM, 15), hdr(classNXM0, 11), 2, fmtDec)
	FieldUDPDst      = newField("udp_dst", "NXM_OF_UDP_DST", hdr(classOXM, 16), hdr(classNXM0, 12), 2, fmtDec)
	FieldSCTPSrc     = newField("sctp_src", "OXM_OF_SCTP_SRC", hdr(classOXM, 17), 0, 2, fmtDec)
	FieldSCTPDst     = newField("sctp_dst", "OXM_OF_SCTP_DST", hdr(classOXM, 18), 0, 2, fmtDec)
	FieldICMPType    = newField("icmp_type", "NXM_OF_ICMP_TYPE", hdr(classOXM, 19), hdr(classNXM0, 13), 1, fmtDec)
	FieldICMPCode    = newField("icmp_code", "NXM_OF_ICMP_CODE", hdr(classOXM, 20), hdr(classNXM0, 14), 1, fmtDec)
	FieldARPOp       = newField("arp_op", "NXM_OF_ARP_OP", hdr(classOXM, 21), hdr(classNXM0, 15), 2, fmtDec)
	FieldARPSPA      = newField("arp_spa", "NXM_OF_ARP_SPA", hdr(classOXM, 22), hdr(classNXM0, 16), 4, fmtIPv4)
	FieldARPTPA      = newField("arp_tpa", "NXM_OF_ARP_TPA", hdr(classOXM, 23), hdr(classNXM0, 17), 4, fmtIPv4)
	FieldARPSHA      = newField("arp_sha", "NXM_NX_ARP_SHA", hdr(classOXM, 24), hdr(classNXM1, 17), 6, fmtEth)
	FieldARPTHA      = newField("arp_tha", "NXM_NX_ARP_THA", hdr(classOXM, 25), hdr(classNXM1, 18), 6, fmtEth)
	FieldIPv6Src     = newField("ipv6_src", "NXM_NX_IPV6_SRC", hdr(classOXM, 26), hdr(classNXM1, 19), 16, fmtIPv6)
	FieldIPv6Dst     = newField("ipv6_dst", "NXM_NX_IPV6_DST", hdr(classOXM, 27), hdr(classNXM1, 20), 16, fmtIPv6)
	FieldIPv6Label   = newField("ipv6_label", "NXM_NX_IPV6_LABEL", hdr(classOXM, 28), hdr(classNXM1, 27), 4, fmtHex)
	FieldICMPv6Type  = newField("icmpv6_type", "NXM_NX_ICMPV6_TYPE", hdr(classOXM, 29), hdr(classNXM1, 21), 1, fmtDec)
	FieldICMPv6Code  = newField("icmpv6_code", "NXM_NX_ICMPV6_CODE", hdr(classOXM, 30), hdr(classNXM1, 22), 1, fmtDec)
	FieldNDTarget    = newField("nd_target", "NXM_NX_ND_TARGET", hdr(classOXM, 31), hdr(classNXM1, 23), 16, fmtIPv6)
	FieldNDSLL       = newField("nd_sll", "NXM_NX_ND_SLL", hdr(classOXM, 32), hdr(classNXM1, 24), 6, fmtEth)
	FieldNDTLL       = newField("nd_tll", "NXM_NX_ND_TLL", hdr(classOXM, 33), hdr(classNXM1, 25), 6, fmtEth)
	FieldTunID       = newField("tun_id", "NXM_NX_TUN_ID", hdr(classOXM, 38), hdr(classNXM1, 16), 8, fmtHex)
	FieldTCPFlags    = newField("tcp_flags", "NXM_NX_TCP_FLAGS", hdr(classOXM, 42), hdr(classNXM1, 34), 2, fmtTCPFlags)
	FieldNwTTL       = newField("nw_ttl", "NXM_NX_IP_TTL", hdr(classNXM1, 29), 0, 1, fmtDec)
	FieldIPFrag      = newField("nw_frag", "NXM_NX_IP_FRAG", hdr(classNXM1, 26), 0, 1, fmtHex)
	FieldTunSrc      = newField("tun_src", "NXM_NX_TUN_IPV4_SRC", hdr(classNXM1, 31), 0, 4, fmtIPv4)
	FieldTunDst      = newField("tun_dst", "NXM_NX_TUN_IPV4_DST", hdr(classNXM1, 32), 0, 4, fmtIPv4)
	FieldPktMark     = newField("pkt_mark", "NXM_NX_PKT_MARK", hdr(classNXM1, 33), 0, 4, fmtHex)
	FieldConjID      = newField("conj_id", "NXM_NX_CONJ_ID", hdr(classNXM1, 37), 0, 4, fmtDec)
	FieldCTState     = newField("ct_state", "NXM_NX_CT_STATE", hdr(classNXM1, 105), 0, 4, fmtCTState)
	FieldCTZone      = newField("ct_zone", "NXM_NX_CT_ZONE", hdr(classNXM1, 106), 0, 2, fmtHex)
	FieldCTMark      = newField("ct_mark", "NXM_NX_CT_MARK", hdr(classNXM1, 107), 0, 4, fmtHex)
	FieldCTLabel     = newField("ct_label", "NXM_NX_CT_LABEL", hdr(classNXM1, 108), 0, 16, fmtHex)
	FieldCTNwProto   = newField("ct_nw_proto", "NXM_NX_CT_NW_PROTO", hdr(classNXM1, 119), 0, 1, fmtDec)
	FieldCTNwSrc     = newField("ct_nw_src", "NXM_NX_CT_NW_SRC", hdr(classNXM1, 120), 0, 4, fmtIPv4)
	FieldCTNwDst     = newField("ct_nw_dst", "NXM_NX_CT_NW_DST", hdr(classNXM1, 121), 0, 4, fmtIPv4)
	FieldCTIPv6Src   = newField("ct_ipv6_src", "NXM_NX_CT_IPV6_SRC", hdr(classNXM1, 122), 0, 16, fmtIPv6)
	FieldCTIPv6Dst   = newField("ct_ipv6_dst", "NXM_NX_CT_IPV6_DST", hdr(classNXM1, 123), 0, 16, fmtIPv6)
	FieldCTTpSrc     = newField("ct_tp_src", "NXM_NX_CT_TP_SRC", hdr(classNXM1, 124), 0, 2, fmtDec)
	FieldCTTpDst     = newField("ct_tp_dst", "NXM_NX_CT_TP_DST", hdr(classNXM1, 125), 0, 2, fmtDec)
	fieldRegs        [16]*Field
	fieldXRegs       [8]*Field
	fieldXXRegs      [4]*Field
	fieldTunMetadata [64]*Field
)

func init() {
	for i := range fieldRegs {
		fieldRegs[i] = newField(fmt.Sprintf("reg%d", i), fmt.Sprintf("NXM_NX_REG%d", i), hdr(classNXM1, uint8(i)), 0, 4, fmtHex)
	}
	for i := range fieldXRegs {
		fieldXRegs[i] = newField(fmt.Sprintf("xreg%d", i), fmt.Sprintf("OXM_OF_PKT_REG%d", i), hdr(classPktReg, uint8(i)), 0, 8, fmtHex)
	}
	for i := range fieldXXRegs {
		fieldXXRegs[i] = newField(fmt.Sprintf("xxreg%d", i), fmt.Sprintf("NXM_NX_XXREG%d", i), hdr(classNXM1, uint8(111+i)), 0, 16, fmtHex)
	}
	for i := range fieldTunMetadata {
		fieldTunMetadata[i] = newField(fmt.Sprintf("tun_metadata%d", i), fmt.Sprintf("NXM_NX_TUN_METADATA%d", i), hdr(classNXM1, uint8(40+i)), 0, 0, fmtHex)
	}
}

// Reg returns register field reg<i> (0..15). It panics on an invalid index:
// register numbers are constants of the pipeline, not data.
func Reg(i int) *Field { return fieldRegs[i] }

// XReg returns the 64-bit register xreg<i> (0..7): reg<2i> is its upper
// half, reg<2i+1> its lower half.
func XReg(i int) *Field { return fieldXRegs[i] }

// XXReg returns the 128-bit register xxreg<i> (0..3).
func XXReg(i int) *Field { return fieldXXRegs[i] }

// TunMetadata returns tun_metadata<i> (0..63).
func TunMetadata(i int) *Field { return fieldTunMetadata[i] }

// Subfield is a bit range of a field, as in NXM_NX_REG0[0..15].
type Subfield struct {
	Field *Field
	Ofs   uint16
	NBits uint16
}

// All is the whole field as a subfield (NXM_NX_REG0[]).
func (f *Field) All() Subfield { return Subfield{Field: f, NBits: f.Bits()} }

// Range is bits lo..hi inclusive (NXM_NX_REG0[lo..hi]).
func (f *Field) Range(lo, hi uint16) Subfield {
	return Subfield{Field: f, Ofs: lo, NBits: hi - lo + 1}
}

// Bit is the single bit n (NXM_NX_REG0[n]).
func (f *Field) Bit(n uint16) Subfield { return Subfield{Field: f, Ofs: n, NBits: 1} }

// String formats the subfield the way ovs-ofctl does.
func (s Subfield) String() string {
	if s.Field == nil {
		return "<unknown>"
	}
	if s.Ofs == 0 && s.NBits == s.Field.Bits() {
		return s.Field.nxmName + "[]"
	}
	if s.NBits == 1 {
		return fmt.Sprintf("%s[%d]", s.Field.nxmName, s.Ofs)
	}
	return fmt.Sprintf("%s[%d..%d]", s.Field.nxmName, s.Ofs, s.Ofs+s.NBits-1)
}

// ofsNBits encodes (ofs << 6) | (n_bits - 1) as Nicira actions carry it.
func (s Subfield) ofsNBits() uint16 { return s.Ofs<<6 | (s.NBits - 1) }

func decodeOfsNBits(f *Field, v uint16) Subfield {
	return Subfield{Field: f, Ofs: v >> 6, NBits: v&0x3f + 1}
}

// appendFieldHeader appends a bare 4-byte header (no mask) for f with its
// full length, as used for subfields.
func appendSubHeader(b []byte, f *Field) []byte {
	n := f.bytes
	if n == 0 {
		n = 124
	}
	return u32(b, f.subHeader()|uint32(n))
}

// unknownField stands in for headers this package does not know, so that
// their text still renders recognisably.
func unknownField(h uint32) *Field {
	n := fmt.Sprintf("field_%08x", h&0xfffffe00)
	size := h & 0xff
	if h&0x100 != 0 {
		size /= 2
	}
	if h>>16 == 0xffff && size >= 4 {
		size -= 4 // experimenter id
	}
	return &Field{name: n, nxmName: n, oxm: h & 0xfffffe00, bytes: uint8(size), kind: fmtHex}
}

// fieldForHeader maps a wire header to a Field (unknown headers get a
// synthetic field).
func fieldForHeader(h uint32) *Field {
	if f, ok := fieldsByHeader[h&0xfffffe00]; ok {
		return f
	}
	return unknownField(h)
}
