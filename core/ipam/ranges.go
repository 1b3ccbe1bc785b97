package ipam

import (
	"fmt"
	"math"
	"net/netip"
)

// ipRange is one pod CIDR and the part of it pods may use. The network
// address and the gateway (the first host address, held by the node's
// gateway port) are never handed out, nor, in IPv4, the broadcast address.
type ipRange struct {
	prefix   netip.Prefix
	gateway  netip.Addr
	first    netip.Addr // first address a pod may get
	last     netip.Addr // last address a pod may get
	capacity uint64     // addresses in [first, last], saturating
}

func newRange(p netip.Prefix) (ipRange, error) {
	if !p.IsValid() {
		return ipRange{}, fmt.Errorf("invalid pod CIDR %v", p)
	}
	if p.Masked() != p {
		return ipRange{}, fmt.Errorf("pod CIDR %s has host bits set (did you mean %s?)", p, p.Masked())
	}
	if p.Addr().Is4In6() {
		return ipRange{}, fmt.Errorf("pod CIDR %s is an IPv4-mapped IPv6 prefix", p)
	}
	hostBits := p.Addr().BitLen() - p.Bits()
	reserved := uint64(2) // network, gateway
	last := lastAddr(p)
	if p.Addr().Is4() {
		reserved = 3 // and broadcast
		last = last.Prev()
	}
	var total uint64 = math.MaxUint64
	if hostBits < 64 {
		total = 1 << hostBits
	}
	if total <= reserved {
		return ipRange{}, fmt.Errorf("pod CIDR %s is too small: %d addresses, %d of them reserved (network, gateway%s)",
			p, total, reserved, broadcastNote(p))
	}
	r := ipRange{
		prefix:  p,
		gateway: p.Addr().Next(),
		first:   p.Addr().Next().Next(),
		last:    last,
	}
	r.capacity = total - reserved
	if total == math.MaxUint64 {
		r.capacity = math.MaxUint64
	}
	return r, nil
}

// lastAddr is the highest address in p.
func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Addr().As16()
	start := 0
	if p.Addr().Is4() {
		start = 96
	}
	for bit := start + p.Bits(); bit < 128; bit++ {
		b[bit/8] |= 0x80 >> (bit % 8)
	}
	a := netip.AddrFrom16(b)
	if p.Addr().Is4() {
		return a.Unmap()
	}
	return a
}

// usable reports whether a pod may hold a.
func (r *ipRange) usable(a netip.Addr) bool {
	return a.IsValid() && a.BitLen() == r.first.BitLen() && a.Compare(r.first) >= 0 && a.Compare(r.last) <= 0
}

// after is the usable address following a, wrapping from last to first;
// for an address outside the usable span it is first.
func (r *ipRange) after(a netip.Addr) netip.Addr {
	if !r.usable(a) || a == r.last {
		return r.first
	}
	return a.Next()
}

// findFree returns the first free usable address after cursor, given
// inUse addresses of the range are taken (all of them in taken).
func (r *ipRange) findFree(cursor netip.Addr, inUse uint64, taken func(netip.Addr) bool) (netip.Addr, bool) {
	if inUse >= r.capacity {
		return netip.Addr{}, false
	}
	// Among inUse+1 distinct usable addresses at least one is free.
	a := r.after(cursor)
	for i := uint64(0); i <= inUse; i++ {
		if !taken(a) {
			return a, true
		}
		a = r.after(a)
	}
	return netip.Addr{}, false
}

func broadcastNote(p netip.Prefix) string {
	if p.Addr().Is4() {
		return ", broadcast"
	}
	return ""
}
