package pipeline

import (
	"net/netip"
	"slices"
)

// PortMask is a masked port match: the ports p with p&Mask == Value.
type PortMask struct {
	Value, Mask uint16
}

// Contains reports whether port matches.
func (m PortMask) Contains(port uint16) bool { return port&m.Mask == m.Value }

// PortRangeMasks covers the ports start..end (inclusive) exactly with the
// fewest value/mask pairs: the range is cut into aligned power-of-two
// blocks, largest first, so a range of n ports needs at most 2·16-2 masks
// (1-65535 needs 16). start > end gives none.
func PortRangeMasks(start, end uint16) []PortMask {
	var out []PortMask
	lo, hi := uint32(start), uint32(end)
	for lo <= hi {
		// The largest block aligned at lo that does not pass hi.
		size := uint32(1)
		for lo&(size*2-1) == 0 && size*2 <= 1<<16 && lo+size*2-1 <= hi {
			size *= 2
		}
		out = append(out, PortMask{Value: uint16(lo), Mask: uint16(^(size - 1))})
		lo += size
	}
	return out
}

// SubtractPrefixes returns p minus every prefix in except, as the fewest
// disjoint prefixes in address order. An except that does not overlap p is
// ignored; one that covers p leaves nothing. Rules use it for an ipBlock's
// except list: the remaining prefixes become ordinary peer clauses of the
// rule's conjunction, so the rule needs no priorities of its own and an
// address the rule allows some other way (a selected pod inside the except
// range) stays allowed.
func SubtractPrefixes(p netip.Prefix, except []netip.Prefix) []netip.Prefix {
	p = p.Masked()
	var relevant []netip.Prefix
	for _, e := range except {
		e = e.Masked()
		if e.Addr().BitLen() != p.Addr().BitLen() || !e.Overlaps(p) {
			continue
		}
		if e.Bits() <= p.Bits() {
			return nil // e covers p
		}
		relevant = append(relevant, e)
	}
	if len(relevant) == 0 {
		return []netip.Prefix{p}
	}
	lo, hi := halves(p)
	return slices.Concat(SubtractPrefixes(lo, relevant), SubtractPrefixes(hi, relevant))
}

// halves splits p (not a host prefix) into its two halves.
func halves(p netip.Prefix) (netip.Prefix, netip.Prefix) {
	bits := p.Bits() + 1
	lo := netip.PrefixFrom(p.Addr(), bits)
	b := p.Addr().AsSlice()
	i := p.Bits()
	b[i/8] |= 0x80 >> (i % 8)
	a, _ := netip.AddrFromSlice(b)
	return lo, netip.PrefixFrom(a, bits)
}
