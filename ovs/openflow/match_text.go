package openflow

import (
	"fmt"
	"strconv"
	"strings"
)

// matchView gives the renderer random access to decoded match entries.
type matchView []oxmEntry

func (mv matchView) get(f *Field) (v, m []byte, ok bool) {
	for _, e := range mv {
		if e.f == f {
			return e.v, e.m, true
		}
	}
	return nil, nil, false
}

// uint returns value and mask (all-ones when unmasked) of a field of up to 64 bits.
func (mv matchView) uint(f *Field) (v, m uint64, ok bool) {
	bv, bm, ok := mv.get(f)
	if !ok {
		return 0, 0, false
	}
	v = beUint(bv)
	if bm == nil {
		m = ^uint64(0) >> (64 - 8*uint(len(bv)))
	} else {
		m = beUint(bm)
	}
	return v & m, m, true
}

type textBuf struct{ strings.Builder }

func (t *textBuf) kv(name, val string) {
	t.WriteString(name)
	t.WriteByte('=')
	t.WriteString(val)
	t.WriteByte(',')
}

// hexMasked is OVS's format_uint32_masked / format_be64_masked.
func (t *textBuf) hexMasked(mv matchView, f *Field, name string) {
	v, m, ok := mv.uint(f)
	if !ok || m == 0 {
		return
	}
	s := cHex(v)
	if full := ^uint64(0) >> (64 - 8*uint(f.bytes)); m != full {
		s += "/" + cHex(m)
	}
	t.kv(name, s)
}

// decMasked is OVS's format_be16_masked / format_uint16_masked.
func (t *textBuf) decMasked(mv matchView, f *Field, name string) {
	v, m, ok := mv.uint(f)
	if !ok || m == 0 {
		return
	}
	if full := ^uint64(0) >> (64 - 8*uint(f.bytes)); m == full {
		t.kv(name, strconv.FormatUint(v, 10))
	} else {
		t.kv(name, fmt.Sprintf("0x%x/0x%x", v, m))
	}
}

func (t *textBuf) ip4(mv matchView, f *Field, name string) {
	if v, m, ok := mv.get(f); ok && (m == nil || !isZero(m)) {
		t.kv(name, formatIPv4Masked(v, m))
	}
}

func (t *textBuf) ip6(mv matchView, f *Field, name string) {
	if v, m, ok := mv.get(f); ok && (m == nil || !isZero(m)) {
		t.kv(name, formatIPv6Masked(v, m))
	}
}

func (t *textBuf) eth(mv matchView, f *Field, name string) {
	if v, m, ok := mv.get(f); ok && (m == nil || !isZero(m)) {
		t.kv(name, formatEthMasked(v, m))
	}
}

// formatMatch renders a match exactly as OVS's match_format does for the
// fields this package supports, including the priority prefix.
func formatMatch(mv matchView, priority uint16) string {
	var t textBuf
	if priority != 0x8000 {
		t.kv("priority", strconv.Itoa(int(priority)))
	}
	t.hexMasked(mv, FieldPktMark, "pkt_mark")
	if v, _, ok := mv.uint(FieldConjID); ok {
		t.kv("conj_id", strconv.FormatUint(v, 10))
	}
	if v, m, ok := mv.uint(FieldCTState); ok && m&0xff != 0 {
		m &= 0xff
		if m == 0xff {
			t.kv("ct_state", formatFlags(ctStateName, uint32(v&0xff), "|"))
		} else {
			t.kv("ct_state", formatFlagsMasked(ctStateName, uint32(v), uint32(m), 0xff))
		}
	}
	t.decMasked(mv, FieldCTZone, "ct_zone")
	t.hexMasked(mv, FieldCTMark, "ct_mark")
	if v, m, ok := mv.get(FieldCTLabel); ok && (m == nil || !isZero(m)) {
		s := ovsHex(v)
		if m != nil && !allOnes(m) {
			s += "/" + ovsHex(m)
		}
		t.kv("ct_label", s)
	}
	t.ip4(mv, FieldCTNwSrc, "ct_nw_src")
	t.ip6(mv, FieldCTIPv6Src, "ct_ipv6_src")
	t.ip4(mv, FieldCTNwDst, "ct_nw_dst")
	t.ip6(mv, FieldCTIPv6Dst, "ct_ipv6_dst")
	if v, _, ok := mv.uint(FieldCTNwProto); ok {
		t.kv("ct_nw_proto", strconv.FormatUint(v, 10))
		t.decMasked(mv, FieldCTTpSrc, "ct_tp_src")
		t.decMasked(mv, FieldCTTpDst, "ct_tp_dst")
	}

	dlType, _, hasType := mv.uint(FieldEthType)
	proto, _, hasProto := mv.uint(FieldIPProto)
	skipType, skipProto := false, false
	if hasType {
		skipType = true
		switch dlType {
		case 0x0800:
			name := "ip"
			if hasProto {
				skipProto = true
				switch proto {
				case 1:
					name = "icmp"
				case 6:
					name = "tcp"
				case 17:
					name = "udp"
				case 132:
					name = "sctp"
				default:
					skipProto = false
				}
			}
			t.WriteString(name + ",")
		case 0x86dd:
			name := "ipv6"
			if hasProto {
				skipProto = true
				switch proto {
				case 58:
					name = "icmp6"
				case 6:
					name = "tcp6"
				case 17:
					name = "udp6"
				case 132:
					name = "sctp6"
				default:
					skipProto = false
				}
			}
			t.WriteString(name + ",")
		case 0x0806:
			t.WriteString("arp,")
		case 0x8035:
			t.WriteString("rarp,")
		case 0x8847:
			t.WriteString("mpls,")
		case 0x8848:
			t.WriteString("mplsm,")
		default:
			skipType = false
		}
	}

	t.formatRegs(mv)

	t.hexMasked(mv, FieldTunID, "tun_id")
	t.ip4(mv, FieldTunSrc, "tun_src")
	t.ip4(mv, FieldTunDst, "tun_dst")
	for i := range fieldTunMetadata {
		if v, m, ok := mv.get(fieldTunMetadata[i]); ok {
			if m != nil && isZero(m) {
				t.WriteString(fmt.Sprintf("tun_metadata%d,", i))
				continue
			}
			s := ovsHex(v)
			if m != nil && !allOnes(m) {
				s += "/" + ovsHex(m)
			}
			t.kv(fmt.Sprintf("tun_metadata%d", i), s)
		}
	}
	t.hexMasked(mv, FieldMetadata, "metadata")
	if v, _, ok := mv.uint(FieldInPort); ok {
		t.kv("in_port", formatPort(uint32(v)))
	} else if v, _, ok := mv.uint(FieldInPort16); ok {
		t.kv("in_port", formatPort(uint32(v)))
	}
	t.formatVlan(mv)
	t.eth(mv, FieldEthSrc, "dl_src")
	t.eth(mv, FieldEthDst, "dl_dst")
	if !skipType && hasType {
		t.kv("dl_type", fmt.Sprintf("0x%04x", dlType))
	}
	isARP := hasType && (dlType == 0x0806 || dlType == 0x8035)
	switch {
	case hasType && dlType == 0x86dd:
		t.ip6(mv, FieldIPv6Src, "ipv6_src")
		t.ip6(mv, FieldIPv6Dst, "ipv6_dst")
		if v, m, ok := mv.uint(FieldIPv6Label); ok && m != 0 {
			if m&0xfffff == 0xfffff {
				t.kv("ipv6_label", fmt.Sprintf("0x%05x", v))
			} else {
				t.kv("ipv6_label", fmt.Sprintf("0x%05x/0x%05x", v, m))
			}
		}
	case isARP:
		t.ip4(mv, FieldARPSPA, "arp_spa")
		t.ip4(mv, FieldARPTPA, "arp_tpa")
	default:
		t.ip4(mv, FieldIPSrc, "nw_src")
		t.ip4(mv, FieldIPDst, "nw_dst")
	}
	if !skipProto {
		if isARP {
			if v, _, ok := mv.uint(FieldARPOp); ok {
				t.kv("arp_op", strconv.FormatUint(v, 10))
			}
		} else if hasProto {
			t.kv("nw_proto", strconv.FormatUint(proto, 10))
		}
	}
	if isARP {
		t.eth(mv, FieldARPSHA, "arp_sha")
		t.eth(mv, FieldARPTHA, "arp_tha")
	}
	if v, _, ok := mv.uint(FieldIPDSCP); ok {
		t.kv("nw_tos", strconv.FormatUint((v<<2)&0xfc, 10))
	}
	if v, _, ok := mv.uint(FieldIPECN); ok {
		t.kv("nw_ecn", strconv.FormatUint(v&3, 10))
	}
	if v, _, ok := mv.uint(FieldNwTTL); ok {
		t.kv("nw_ttl", strconv.FormatUint(v, 10))
	}
	if v, m, ok := mv.uint(FieldIPFrag); ok {
		switch m & 3 {
		case 3:
			switch v & 3 {
			case 3:
				t.kv("nw_frag", "later")
			case 1:
				t.kv("nw_frag", "first")
			case 0:
				t.kv("nw_frag", "no")
			default:
				t.kv("nw_frag", "<error>")
			}
		case 1:
			t.kv("nw_frag", map[bool]string{true: "yes", false: "no"}[v&1 != 0])
		case 2:
			t.kv("nw_frag", map[bool]string{true: "later", false: "not_later"}[v&2 != 0])
		}
	}
	switch {
	case hasType && dlType == 0x0800 && proto == 1:
		t.decMasked(mv, FieldICMPType, "icmp_type")
		t.decMasked(mv, FieldICMPCode, "icmp_code")
	case hasType && dlType == 0x86dd && proto == 58:
		t.decMasked(mv, FieldICMPv6Type, "icmp_type")
		t.decMasked(mv, FieldICMPv6Code, "icmp_code")
		t.ip6(mv, FieldNDTarget, "nd_target")
		t.eth(mv, FieldNDSLL, "nd_sll")
		t.eth(mv, FieldNDTLL, "nd_tll")
	default:
		for _, f := range [...]*Field{FieldTCPSrc, FieldUDPSrc, FieldSCTPSrc} {
			t.decMasked(mv, f, "tp_src")
		}
		for _, f := range [...]*Field{FieldTCPDst, FieldUDPDst, FieldSCTPDst} {
			t.decMasked(mv, f, "tp_dst")
		}
	}
	if hasType && (dlType == 0x0800 || dlType == 0x86dd) && proto == 6 {
		if v, m, ok := mv.uint(FieldTCPFlags); ok && m&0xfff != 0 {
			t.kv("tcp_flags", formatFlagsMasked(tcpFlagName, uint32(v), uint32(m&0xfff), 0xfff))
		}
	}
	s := t.String()
	return strings.TrimSuffix(s, ",")
}

// formatRegs prints reg0..reg15, folding xreg and xxreg matches into the
// 32-bit registers they are made of (reg2N is the upper word of xregN, reg4N
// the most significant word of xxregN).
func (t *textBuf) formatRegs(mv matchView) {
	val, mask := mv.regs()
	for i := 0; i < 16; i++ {
		if mask[i] == 0 {
			continue
		}
		s := cHex(uint64(val[i]))
		if mask[i] != 0xffffffff {
			s += "/" + cHex(uint64(mask[i]))
		}
		t.kv("reg"+strconv.Itoa(i), s)
	}
}

// regs returns the 32-bit registers with their masks, whichever of reg,
// xreg or xxreg carried them.
func (mv matchView) regs() (val, mask [16]uint32) {
	for i := 0; i < 16; i++ {
		if v, m, ok := mv.uint(fieldRegs[i]); ok {
			val[i], mask[i] = uint32(v), uint32(m)
		}
	}
	for x := 0; x < 8; x++ {
		v, m, ok := mv.get(fieldXRegs[x])
		if !ok {
			continue
		}
		for w := 0; w < 2; w++ {
			mw := uint32(0xffffffff)
			if m != nil {
				mw = be.Uint32(m[4*w:])
			}
			val[2*x+w], mask[2*x+w] = be.Uint32(v[4*w:])&mw, mw
		}
	}
	for x := 0; x < 4; x++ {
		v, m, ok := mv.get(fieldXXRegs[x])
		if !ok {
			continue
		}
		for w := 0; w < 4; w++ {
			mw := uint32(0xffffffff)
			if m != nil {
				mw = be.Uint32(m[4*w:])
			}
			val[4*x+w], mask[4*x+w] = be.Uint32(v[4*w:])&mw, mw
		}
	}
	return val, mask
}

// formatVlan renders OXM vlan_vid / vlan_pcp as OVS prints its vlan_tci.
func (t *textBuf) formatVlan(mv matchView) {
	vid, vidMask, hasVID := mv.uint(FieldVlanVID)
	pcp, _, hasPCP := mv.uint(FieldVlanPCP)
	if !hasVID {
		return
	}
	// OXM vlan_vid carries OFPVID_PRESENT (0x1000), which OVS maps to the
	// CFI bit of the TCI.
	tci := uint16(vid & 0x1fff)
	tciMask := uint16(vidMask & 0x1fff)
	if hasPCP {
		tci |= uint16(pcp&7) << 13
		tciMask |= 0xe000
	}
	vm, pm, cfi := tciMask&0x0fff, tciMask&0xe000, tciMask&0x1000
	if cfi != 0 && tci&0x1000 != 0 && (vm == 0 || vm == 0x0fff) && (pm == 0 || pm == 0xe000) && (vm != 0 || pm != 0) {
		if vm != 0 {
			t.kv("dl_vlan", strconv.Itoa(int(tci&0x0fff)))
		}
		if pm != 0 {
			t.kv("dl_vlan_pcp", strconv.Itoa(int(tci>>13)))
		}
	} else if tciMask == 0xffff {
		t.kv("vlan_tci", fmt.Sprintf("0x%04x", tci))
	} else {
		t.kv("vlan_tci", fmt.Sprintf("0x%04x/0x%04x", tci, tciMask))
	}
}

// String renders the match as ovs-ofctl prints it (without priority).
func (m *Match) String() string {
	entries, err := parseOXM(m.b)
	if err != nil {
		return "<bad match: " + err.Error() + ">"
	}
	return formatMatch(entries, 0x8000)
}
