package openflow

import (
	"fmt"
	"net"
	"net/netip"
)

// Match is a builder for an OXM match. It holds the encoded TLVs, so a flow
// stores its match in the same bytes it sends. Methods append one field each
// and return the receiver for chaining:
//
//	m := openflow.NewMatch().InPort(3).EthType(0x0800).IPSrc(prefix)
//
// Prerequisites (eth_type before ip fields, ip_proto before ports) are the
// caller's job; ovs-vswitchd rejects a flow that lacks them with
// OFPBMC_BAD_PREREQ. Helpers such as TCP and UDP add both.
type Match struct {
	b []byte
}

// NewMatch returns an empty match (which matches every packet).
func NewMatch() *Match { return &Match{b: make([]byte, 0, 64)} }

// MatchFromBytes returns a match holding the encoded OXM TLVs b, as
// Flow.MatchBytes returns them, to extend a match read from a switch.
func MatchFromBytes(b []byte) *Match { return &Match{b: append(make([]byte, 0, len(b)+16), b...)} }

// Reset empties the match so the builder can be reused.
func (m *Match) Reset() *Match { m.b = m.b[:0]; return m }

// Bytes returns the encoded OXM TLVs (without the ofp_match header).
func (m *Match) Bytes() []byte { return m.b }

// Len returns the encoded length.
func (m *Match) Len() int { return len(m.b) }

// Field appends field f with value v (len(v) must be the field's length,
// or any length for tun_metadata).
func (m *Match) Field(f *Field, v []byte) *Match {
	m.b = u32(m.b, f.oxm|uint32(len(v)))
	m.b = append(m.b, v...)
	return m
}

// FieldMasked appends field f with value v and mask mask; an all-ones mask is
// encoded without mask, as OVS prints it.
func (m *Match) FieldMasked(f *Field, v, mask []byte) *Match {
	if allOnes(mask) {
		return m.Field(f, v)
	}
	m.b = u32(m.b, f.oxm|1<<8|uint32(2*len(v)))
	for i := range v {
		m.b = append(m.b, v[i]&mask[i])
	}
	m.b = append(m.b, mask...)
	return m
}

func allOnes(b []byte) bool {
	for _, c := range b {
		if c != 0xff {
			return false
		}
	}
	return true
}

func (m *Match) u8(f *Field, v uint8) *Match {
	m.b = u32(m.b, f.oxm|1)
	m.b = append(m.b, v)
	return m
}

func (m *Match) u16(f *Field, v uint16) *Match {
	m.b = u32(m.b, f.oxm|2)
	m.b = u16(m.b, v)
	return m
}

func (m *Match) u16m(f *Field, v, mask uint16) *Match {
	if mask == 0xffff {
		return m.u16(f, v)
	}
	m.b = u32(m.b, f.oxm|1<<8|4)
	m.b = u16(m.b, v&mask)
	m.b = u16(m.b, mask)
	return m
}

func (m *Match) u32(f *Field, v uint32) *Match {
	m.b = u32(m.b, f.oxm|4)
	m.b = u32(m.b, v)
	return m
}

func (m *Match) u32m(f *Field, v, mask uint32) *Match {
	if mask == 0xffffffff {
		return m.u32(f, v)
	}
	m.b = u32(m.b, f.oxm|1<<8|8)
	m.b = u32(m.b, v&mask)
	m.b = u32(m.b, mask)
	return m
}

func (m *Match) u64m(f *Field, v, mask uint64) *Match {
	if mask == ^uint64(0) {
		m.b = u32(m.b, f.oxm|8)
		m.b = u64(m.b, v)
		return m
	}
	m.b = u32(m.b, f.oxm|1<<8|16)
	m.b = u64(m.b, v&mask)
	m.b = u64(m.b, mask)
	return m
}

func (m *Match) mac(f *Field, mac, mask net.HardwareAddr) *Match {
	if len(mac) != 6 {
		panic(fmt.Sprintf("openflow: %s: bad MAC %q", f.name, mac))
	}
	if mask == nil {
		return m.Field(f, mac)
	}
	return m.FieldMasked(f, mac, mask)
}

func (m *Match) prefix4(f *Field, p netip.Prefix) *Match {
	a := p.Addr().Unmap().As4()
	if p.Bits() < 0 || p.Bits() >= 32 {
		return m.Field(f, a[:])
	}
	mask := ^uint32(0) << (32 - p.Bits())
	return m.u32m(f, be.Uint32(a[:]), mask)
}

func (m *Match) prefix6(f *Field, p netip.Prefix) *Match {
	a := p.Addr().As16()
	if p.Bits() < 0 || p.Bits() >= 128 {
		return m.Field(f, a[:])
	}
	var mask [16]byte
	for i := 0; i < p.Bits(); i++ {
		mask[i/8] |= 0x80 >> (i % 8)
	}
	return m.FieldMasked(f, a[:], mask[:])
}

func addrPrefix(a netip.Addr) netip.Prefix { return netip.PrefixFrom(a, a.BitLen()) }

// InPort matches the ingress OpenFlow port.
func (m *Match) InPort(port uint32) *Match { return m.u32(FieldInPort, port) }

// EthSrc matches the Ethernet source address.
func (m *Match) EthSrc(mac net.HardwareAddr) *Match { return m.mac(FieldEthSrc, mac, nil) }

// EthSrcMasked matches the Ethernet source address under mask.
func (m *Match) EthSrcMasked(mac, mask net.HardwareAddr) *Match { return m.mac(FieldEthSrc, mac, mask) }

// EthDst matches the Ethernet destination address.
func (m *Match) EthDst(mac net.HardwareAddr) *Match { return m.mac(FieldEthDst, mac, nil) }

// EthDstMasked matches the Ethernet destination address under mask.
func (m *Match) EthDstMasked(mac, mask net.HardwareAddr) *Match { return m.mac(FieldEthDst, mac, mask) }

// EthType matches the Ethernet type.
func (m *Match) EthType(t uint16) *Match { return m.u16(FieldEthType, t) }

// VlanVID matches a VLAN id (the OFPVID_PRESENT bit 0x1000 is added).
func (m *Match) VlanVID(vid uint16) *Match { return m.u16(FieldVlanVID, vid|0x1000) }

// VlanPCP matches the VLAN priority.
func (m *Match) VlanPCP(pcp uint8) *Match { return m.u8(FieldVlanPCP, pcp) }

// IP is EthType(0x0800).
func (m *Match) IP() *Match { return m.EthType(0x0800) }

// IPv6 is EthType(0x86dd).
func (m *Match) IPv6() *Match { return m.EthType(0x86dd) }

// ARP is EthType(0x0806).
func (m *Match) ARP() *Match { return m.EthType(0x0806) }

// TCP is IPv4 with ip_proto 6.
func (m *Match) TCP() *Match { return m.IP().IPProto(6) }

// UDP is IPv4 with ip_proto 17.
func (m *Match) UDP() *Match { return m.IP().IPProto(17) }

// SCTP is IPv4 with ip_proto 132.
func (m *Match) SCTP() *Match { return m.IP().IPProto(132) }

// ICMP is IPv4 with ip_proto 1.
func (m *Match) ICMP() *Match { return m.IP().IPProto(1) }

// TCP6 is IPv6 with ip_proto 6.
func (m *Match) TCP6() *Match { return m.IPv6().IPProto(6) }

// UDP6 is IPv6 with ip_proto 17.
func (m *Match) UDP6() *Match { return m.IPv6().IPProto(17) }

// ICMP6 is IPv6 with ip_proto 58.
func (m *Match) ICMP6() *Match { return m.IPv6().IPProto(58) }

// IPProto matches the IP protocol.
func (m *Match) IPProto(p uint8) *Match { return m.u8(FieldIPProto, p) }

// IPDSCP matches the DSCP (the upper six bits of the TOS byte, unshifted
// value 0-63).
func (m *Match) IPDSCP(dscp uint8) *Match { return m.u8(FieldIPDSCP, dscp) }

// IPECN matches the ECN bits.
func (m *Match) IPECN(ecn uint8) *Match { return m.u8(FieldIPECN, ecn) }

// NwTTL matches the IP TTL / hop limit.
func (m *Match) NwTTL(ttl uint8) *Match { return m.u8(FieldNwTTL, ttl) }

// Bits of nw_frag (NXM_NX_IP_FRAG): NwFragAny is set in every fragment,
// NwFragLater in every fragment but the first (which alone carries the
// transport header).
const (
	NwFragAny   uint8 = 1
	NwFragLater uint8 = 2
)

// NwFrag matches the fragment bits (NwFragAny, NwFragLater) under mask:
// (NwFragAny|NwFragLater, NwFragAny|NwFragLater) is ovs-ofctl's
// nw_frag=later, (NwFragAny, NwFragAny|NwFragLater) nw_frag=first,
// (0, NwFragAny) nw_frag=no.
func (m *Match) NwFrag(v, mask uint8) *Match {
	mask &= NwFragAny | NwFragLater
	return m.FieldMasked(FieldIPFrag, []byte{v & mask}, []byte{mask})
}

// IPSrc matches the IPv4 source address or prefix.
func (m *Match) IPSrc(p netip.Prefix) *Match { return m.prefix4(FieldIPSrc, p) }

// IPDst matches the IPv4 destination address or prefix.
func (m *Match) IPDst(p netip.Prefix) *Match { return m.prefix4(FieldIPDst, p) }

// IPSrcAddr matches one IPv4 source address.
func (m *Match) IPSrcAddr(a netip.Addr) *Match { return m.IPSrc(addrPrefix(a)) }

// IPDstAddr matches one IPv4 destination address.
func (m *Match) IPDstAddr(a netip.Addr) *Match { return m.IPDst(addrPrefix(a)) }

// IPSrcMasked matches the IPv4 source under an arbitrary mask.
func (m *Match) IPSrcMasked(a netip.Addr, mask uint32) *Match {
	v := a.As4()
	return m.u32m(FieldIPSrc, be.Uint32(v[:]), mask)
}

// IPv6Src matches the IPv6 source address or prefix.
func (m *Match) IPv6Src(p netip.Prefix) *Match { return m.prefix6(FieldIPv6Src, p) }

// IPv6Dst matches the IPv6 destination address or prefix.
func (m *Match) IPv6Dst(p netip.Prefix) *Match { return m.prefix6(FieldIPv6Dst, p) }

// IPv6Label matches the IPv6 flow label (20 bits) under mask.
func (m *Match) IPv6Label(label, mask uint32) *Match {
	if mask&0xfffff == 0xfffff {
		mask = 0xffffffff
	}
	return m.u32m(FieldIPv6Label, label&0xfffff, mask)
}

// TCPSrc matches the TCP source port.
func (m *Match) TCPSrc(p uint16) *Match { return m.u16(FieldTCPSrc, p) }

// TCPDst matches the TCP destination port.
func (m *Match) TCPDst(p uint16) *Match { return m.u16(FieldTCPDst, p) }

// TCPSrcMasked matches the TCP source port under mask (port ranges).
func (m *Match) TCPSrcMasked(p, mask uint16) *Match { return m.u16m(FieldTCPSrc, p, mask) }

// TCPDstMasked matches the TCP destination port under mask.
func (m *Match) TCPDstMasked(p, mask uint16) *Match { return m.u16m(FieldTCPDst, p, mask) }

// UDPSrc matches the UDP source port.
func (m *Match) UDPSrc(p uint16) *Match { return m.u16(FieldUDPSrc, p) }

// UDPDst matches the UDP destination port.
func (m *Match) UDPDst(p uint16) *Match { return m.u16(FieldUDPDst, p) }

// UDPSrcMasked matches the UDP source port under mask.
func (m *Match) UDPSrcMasked(p, mask uint16) *Match { return m.u16m(FieldUDPSrc, p, mask) }

// UDPDstMasked matches the UDP destination port under mask.
func (m *Match) UDPDstMasked(p, mask uint16) *Match { return m.u16m(FieldUDPDst, p, mask) }

// SCTPSrc matches the SCTP source port.
func (m *Match) SCTPSrc(p uint16) *Match { return m.u16(FieldSCTPSrc, p) }

// SCTPDst matches the SCTP destination port.
func (m *Match) SCTPDst(p uint16) *Match { return m.u16(FieldSCTPDst, p) }

// SCTPDstMasked matches the SCTP destination port under mask.
func (m *Match) SCTPDstMasked(p, mask uint16) *Match { return m.u16m(FieldSCTPDst, p, mask) }

// TCPFlags matches TCP flags under mask (e.g. 0x002/0x012 for SYN without ACK).
func (m *Match) TCPFlags(flags, mask uint16) *Match { return m.u16m(FieldTCPFlags, flags, mask) }

// ICMPType matches the ICMPv4 type.
func (m *Match) ICMPType(t uint8) *Match { return m.u8(FieldICMPType, t) }

// ICMPCode matches the ICMPv4 code.
func (m *Match) ICMPCode(c uint8) *Match { return m.u8(FieldICMPCode, c) }

// ICMPv6Type matches the ICMPv6 type.
func (m *Match) ICMPv6Type(t uint8) *Match { return m.u8(FieldICMPv6Type, t) }

// ICMPv6Code matches the ICMPv6 code.
func (m *Match) ICMPv6Code(c uint8) *Match { return m.u8(FieldICMPv6Code, c) }

// NDTarget matches the IPv6 neighbour discovery target.
func (m *Match) NDTarget(a netip.Addr) *Match { return m.prefix6(FieldNDTarget, addrPrefix(a)) }

// NDSLL matches the ND source link-layer address option.
func (m *Match) NDSLL(mac net.HardwareAddr) *Match { return m.mac(FieldNDSLL, mac, nil) }

// NDTLL matches the ND target link-layer address option.
func (m *Match) NDTLL(mac net.HardwareAddr) *Match { return m.mac(FieldNDTLL, mac, nil) }

// ARPOp matches the ARP opcode.
func (m *Match) ARPOp(op uint16) *Match { return m.u16(FieldARPOp, op) }

// ARPSPA matches the ARP sender protocol address or prefix.
func (m *Match) ARPSPA(p netip.Prefix) *Match { return m.prefix4(FieldARPSPA, p) }

// ARPTPA matches the ARP target protocol address or prefix.
func (m *Match) ARPTPA(p netip.Prefix) *Match { return m.prefix4(FieldARPTPA, p) }

// ARPSHA matches the ARP sender hardware address.
func (m *Match) ARPSHA(mac net.HardwareAddr) *Match { return m.mac(FieldARPSHA, mac, nil) }

// ARPTHA matches the ARP target hardware address.
func (m *Match) ARPTHA(mac net.HardwareAddr) *Match { return m.mac(FieldARPTHA, mac, nil) }

// Reg matches register reg<i> under mask (0xffffffff for an exact match).
func (m *Match) Reg(i int, v, mask uint32) *Match { return m.u32m(Reg(i), v, mask) }

// RegBits matches value v in bits lo..hi of reg<i>.
func (m *Match) RegBits(i int, lo, hi uint16, v uint32) *Match {
	mask := uint32((uint64(1)<<(hi-lo+1))-1) << lo
	return m.u32m(Reg(i), v<<lo, mask)
}

// XXReg matches the 128-bit register xxreg<i>; value and mask are 16
// big-endian bytes each (mask nil for exact).
func (m *Match) XXReg(i int, v, mask []byte) *Match {
	if mask == nil {
		return m.Field(XXReg(i), v)
	}
	return m.FieldMasked(XXReg(i), v, mask)
}

// Conntrack state bits for CTState.
const (
	CTNew         uint32 = 1 << 0
	CTEstablished uint32 = 1 << 1
	CTRelated     uint32 = 1 << 2
	CTReply       uint32 = 1 << 3
	CTInvalid     uint32 = 1 << 4
	CTTracked     uint32 = 1 << 5
	CTSrcNAT      uint32 = 1 << 6
	CTDstNAT      uint32 = 1 << 7
)

// CTState matches conntrack state bits: the bits in mask must equal those in
// state (CTState(CTTracked|CTNew, CTTracked|CTNew|CTInvalid) is +trk+new-inv).
func (m *Match) CTState(state, mask uint32) *Match { return m.u32m(FieldCTState, state, mask) }

// CTZone matches the conntrack zone.
func (m *Match) CTZone(z uint16) *Match { return m.u16(FieldCTZone, z) }

// CTMark matches the conntrack mark under mask.
func (m *Match) CTMark(v, mask uint32) *Match { return m.u32m(FieldCTMark, v, mask) }

// CTLabel matches the 128-bit conntrack label under mask (hi, lo halves).
func (m *Match) CTLabel(hi, lo, maskHi, maskLo uint64) *Match {
	var v, mk [16]byte
	be.PutUint64(v[:], hi)
	be.PutUint64(v[8:], lo)
	be.PutUint64(mk[:], maskHi)
	be.PutUint64(mk[8:], maskLo)
	return m.FieldMasked(FieldCTLabel, v[:], mk[:])
}

// CTNwProto matches the protocol of the original direction of the connection.
func (m *Match) CTNwProto(p uint8) *Match { return m.u8(FieldCTNwProto, p) }

// CTNwSrc matches the original-direction IPv4 source.
func (m *Match) CTNwSrc(p netip.Prefix) *Match { return m.prefix4(FieldCTNwSrc, p) }

// CTNwDst matches the original-direction IPv4 destination.
func (m *Match) CTNwDst(p netip.Prefix) *Match { return m.prefix4(FieldCTNwDst, p) }

// CTIPv6Src matches the original-direction IPv6 source.
func (m *Match) CTIPv6Src(p netip.Prefix) *Match { return m.prefix6(FieldCTIPv6Src, p) }

// CTIPv6Dst matches the original-direction IPv6 destination.
func (m *Match) CTIPv6Dst(p netip.Prefix) *Match { return m.prefix6(FieldCTIPv6Dst, p) }

// CTTpSrc matches the original-direction transport source port.
func (m *Match) CTTpSrc(p uint16) *Match { return m.u16(FieldCTTpSrc, p) }

// CTTpDst matches the original-direction transport destination port.
func (m *Match) CTTpDst(p uint16) *Match { return m.u16(FieldCTTpDst, p) }

// TunID matches the tunnel key (VNI) under mask.
func (m *Match) TunID(id, mask uint64) *Match { return m.u64m(FieldTunID, id, mask) }

// TunSrc matches the outer IPv4 source of a tunnelled packet.
func (m *Match) TunSrc(p netip.Prefix) *Match { return m.prefix4(FieldTunSrc, p) }

// TunDst matches the outer IPv4 destination of a tunnelled packet.
func (m *Match) TunDst(p netip.Prefix) *Match { return m.prefix4(FieldTunDst, p) }

// TunMetadata matches tun_metadata<i>; v and mask have the option's length
// as mapped with add-tlv-map (mask nil for exact).
func (m *Match) TunMetadata(i int, v, mask []byte) *Match {
	if mask == nil {
		return m.Field(TunMetadata(i), v)
	}
	return m.FieldMasked(TunMetadata(i), v, mask)
}

// PktMark matches the packet mark (skb mark) under mask.
func (m *Match) PktMark(v, mask uint32) *Match { return m.u32m(FieldPktMark, v, mask) }

// ConjID matches a conjunction id.
func (m *Match) ConjID(id uint32) *Match { return m.u32(FieldConjID, id) }

// Metadata matches the 64-bit OpenFlow metadata under mask.
func (m *Match) Metadata(v, mask uint64) *Match { return m.u64m(FieldMetadata, v, mask) }
