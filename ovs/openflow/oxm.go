package openflow

import (
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
)

// oxmEntry is one decoded OXM/NXM TLV; m is nil when the entry has no mask.
type oxmEntry struct {
	f    *Field
	v, m []byte
}

// parseOXM decodes a run of OXM/NXM TLVs. Experimenter OXMs (class 0xffff)
// are decoded with their experimenter id skipped.
func parseOXM(b []byte) ([]oxmEntry, error) {
	var out []oxmEntry
	for len(b) > 0 {
		if len(b) < 4 {
			return nil, errShort("oxm header", 4, len(b))
		}
		h := be.Uint32(b)
		n := int(h & 0xff)
		body := b[4:]
		if n > len(body) {
			return nil, fmt.Errorf("oxm %08x: length %d exceeds %d: %w", h, n, len(body), ErrShort)
		}
		body, b = body[:n], body[n:]
		if h>>16 == 0xffff { // experimenter OXM
			if n < 4 {
				return nil, errShort("experimenter oxm", 4, n)
			}
			body = body[4:]
		}
		e := oxmEntry{f: fieldForHeader(h), v: body}
		if h&0x100 != 0 {
			if len(body)%2 != 0 {
				return nil, fmt.Errorf("oxm %08x: odd masked length %d", h, len(body))
			}
			e.v, e.m = body[:len(body)/2], body[len(body)/2:]
		}
		if e.f.bytes != 0 && len(e.v) != int(e.f.bytes) {
			return nil, fmt.Errorf("oxm %s: value length %d, want %d", e.f.name, len(e.v), e.f.bytes)
		}
		out = append(out, e)
	}
	return out, nil
}

// beUint reads up to 8 big-endian bytes.
func beUint(b []byte) uint64 {
	var v uint64
	for _, c := range b {
		v = v<<8 | uint64(c)
	}
	return v
}

// cHex formats like C's "%#x": 0 is "0", others "0x...".
func cHex(v uint64) string {
	if v == 0 {
		return "0"
	}
	return "0x" + strconv.FormatUint(v, 16)
}

// ovsHex formats bytes the way OVS's ds_put_hex does: leading zero bytes
// dropped, first byte without padding.
func ovsHex(b []byte) string {
	var sb strings.Builder
	printed := false
	for _, c := range b {
		if c == 0 && !printed {
			continue
		}
		if !printed {
			sb.WriteString("0x")
			sb.WriteString(strconv.FormatUint(uint64(c), 16))
			printed = true
		} else {
			sb.WriteByte("0123456789abcdef"[c>>4])
			sb.WriteByte("0123456789abcdef"[c&15])
		}
	}
	if !printed {
		return "0"
	}
	return sb.String()
}

func formatIPv4Masked(v, m []byte) string {
	a := netip.AddrFrom4([4]byte(v))
	if m == nil || allOnes(m) {
		return a.String()
	}
	mask := be.Uint32(m)
	if ones := leadingOnes32(mask); ones >= 0 {
		return fmt.Sprintf("%s/%d", a, ones)
	}
	return a.String() + "/" + netip.AddrFrom4([4]byte(m)).String()
}

// leadingOnes32 returns the prefix length of a CIDR mask, or -1.
func leadingOnes32(m uint32) int {
	n := 0
	for n < 32 && m&(1<<(31-n)) != 0 {
		n++
	}
	if n < 32 && m<<n != 0 {
		return -1
	}
	return n
}

func formatIPv6Masked(v, m []byte) string {
	a := netip.AddrFrom16([16]byte(v)).String()
	if m == nil || allOnes(m) {
		return a
	}
	n := 0
	for n < 128 && m[n/8]&(0x80>>(n%8)) != 0 {
		n++
	}
	cidr := true
	for i := n; i < 128; i++ {
		if m[i/8]&(0x80>>(i%8)) != 0 {
			cidr = false
			break
		}
	}
	if cidr {
		return fmt.Sprintf("%s/%d", a, n)
	}
	return a + "/" + netip.AddrFrom16([16]byte(m)).String()
}

func formatEthMasked(v, m []byte) string {
	s := net.HardwareAddr(v).String()
	if m != nil && !allOnes(m) {
		s += "/" + net.HardwareAddr(m).String()
	}
	return s
}

// formatPort prints a port number the way ovs-ofctl does.
func formatPort(p uint32) string {
	if p >= PortMax && p != PortAny {
		p = p - PortMax + 0xff00
	}
	switch p {
	case 0xfff8, PortInPort:
		return "IN_PORT"
	case 0xfff9:
		return "TABLE"
	case 0xfffa:
		return "NORMAL"
	case 0xfffb:
		return "FLOOD"
	case 0xfffc:
		return "ALL"
	case 0xfffd:
		return "CONTROLLER"
	case 0xfffe:
		return "LOCAL"
	case 0xffff, PortAny:
		return "ANY"
	}
	return strconv.FormatUint(uint64(p), 10)
}

var ctStateNames = [8]string{"new", "est", "rel", "rpl", "inv", "trk", "snat", "dnat"}

func ctStateName(bit uint32) string {
	for i := 0; i < 8; i++ {
		if bit == 1<<i {
			return ctStateNames[i]
		}
	}
	return ""
}

func tcpFlagName(bit uint32) string {
	switch bit {
	case 0x001:
		return "fin"
	case 0x002:
		return "syn"
	case 0x004:
		return "rst"
	case 0x008:
		return "psh"
	case 0x010:
		return "ack"
	case 0x020:
		return "urg"
	case 0x040:
		return "ece"
	case 0x080:
		return "cwr"
	case 0x100:
		return "ns"
	case 0x200:
		return "[200]"
	case 0x400:
		return "[400]"
	case 0x800:
		return "[800]"
	}
	return ""
}

// formatFlags mirrors OVS's format_flags: bit names joined by del.
func formatFlags(name func(uint32) string, flags uint32, del string) string {
	if flags == 0 {
		return "0"
	}
	var parts []string
	var bad uint32
	for flags != 0 {
		bit := flags & -flags
		if s := name(bit); s != "" {
			parts = append(parts, s)
		} else {
			bad |= bit
		}
		flags &^= bit
	}
	if bad != 0 {
		parts = append(parts, fmt.Sprintf("0x%x", bad))
	}
	return strings.Join(parts, del)
}

// formatFlagsMasked mirrors OVS's format_flags_masked (without the name).
func formatFlagsMasked(name func(uint32) string, flags, mask, maxMask uint32) string {
	if mask == maxMask {
		return formatFlags(name, flags, "|")
	}
	if mask == 0 {
		return "0/0"
	}
	var sb strings.Builder
	for mask != 0 {
		bit := mask & -mask
		if flags&bit != 0 {
			sb.WriteByte('+')
		} else {
			sb.WriteByte('-')
		}
		if s := name(bit); s != "" {
			sb.WriteString(s)
		} else {
			sb.WriteString("[Unknown]")
		}
		mask &^= bit
	}
	return sb.String()
}

// formatValue formats a field value (and optional mask) as OVS's mf_format
// does, for set_field and learn.
func formatValue(f *Field, v, m []byte) string {
	if m != nil {
		if isZero(m) {
			return "ANY"
		}
		if allOnes(m) {
			m = nil
		}
	}
	switch f.kind {
	case fmtPort:
		if m == nil {
			return formatPort(uint32(beUint(v)))
		}
		return formatInteger(fmtHex, v, m)
	case fmtHex, fmtDec:
		return formatInteger(f.kind, v, m)
	case fmtCTState:
		mask := uint32(0xffffffff)
		if m != nil {
			mask = uint32(beUint(m))
		}
		return formatFlagsMasked(ctStateName, uint32(beUint(v)), mask, 0xffff)
	case fmtEth:
		return formatEthMasked(v, m)
	case fmtIPv4:
		return formatIPv4Masked(v, m)
	case fmtIPv6:
		return formatIPv6Masked(v, m)
	case fmtTCPFlags:
		mask := uint32(0xffff)
		if m != nil {
			mask = uint32(beUint(m))
		}
		return formatFlagsMasked(tcpFlagName, uint32(beUint(v)), mask, 0xffff)
	}
	return ovsHex(v)
}

func formatInteger(kind fmtKind, v, m []byte) string {
	var s string
	if kind == fmtHex || len(v) > 8 {
		s = ovsHex(v)
	} else {
		s = strconv.FormatUint(beUint(v), 10)
	}
	if m != nil {
		s += "/" + ovsHex(m)
	}
	return s
}

func isZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}
