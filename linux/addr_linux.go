package linux

import (
	"fmt"
	"net"
	"net/netip"
	"slices"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// ipNet converts a prefix (address with its length) to netlink's form.
func ipNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

// addrOf converts a net.IP (4 or 16 bytes, IPv4 possibly mapped) to
// netip.Addr; nil gives the zero Addr.
func addrOf(ip net.IP) netip.Addr {
	a, _ := netip.AddrFromSlice(ip)
	return a.Unmap()
}

// prefixOf converts a *net.IPNet to a prefix keeping the host bits.
func prefixOf(n *net.IPNet) netip.Prefix {
	if n == nil {
		return netip.Prefix{}
	}
	ones, _ := n.Mask.Size()
	return netip.PrefixFrom(addrOf(n.IP), ones)
}

// family is netlink's address family of a.
func family(a netip.Addr) int {
	if a.Is4() {
		return netlink.FAMILY_V4
	}
	return netlink.FAMILY_V6
}

// routeDst is a route's destination; netlink reports a default route with a
// nil Dst, which becomes 0.0.0.0/0 or ::/0 here.
func routeDst(r netlink.Route) netip.Prefix {
	if r.Dst != nil {
		return prefixOf(r.Dst)
	}
	if r.Family == netlink.FAMILY_V6 || (r.Gw != nil && r.Gw.To4() == nil) {
		return netip.PrefixFrom(netip.IPv6Unspecified(), 0)
	}
	return netip.PrefixFrom(netip.IPv4Unspecified(), 0)
}

// globalAddrs lists the link's addresses of global scope (IPv6 link-local
// addresses are the kernel's, not configuration).
func globalAddrs(nl *netlink.Handle, link netlink.Link) ([]netip.Prefix, error) {
	addrs, err := globalNetlinkAddrs(nl, link)
	if err != nil {
		return nil, err
	}
	out := make([]netip.Prefix, len(addrs))
	for i, a := range addrs {
		out[i] = prefixOf(a.IPNet)
	}
	return out, nil
}

func globalNetlinkAddrs(nl *netlink.Handle, link netlink.Link) ([]netlink.Addr, error) {
	addrs, err := retryDump(func() ([]netlink.Addr, error) { return nl.AddrList(link, netlink.FAMILY_ALL) })
	if err != nil {
		return nil, fmt.Errorf("list addresses of %s: %w", link.Attrs().Name, err)
	}
	return slices.DeleteFunc(addrs, func(a netlink.Addr) bool { return a.Scope != unix.RT_SCOPE_UNIVERSE }), nil
}

// samePrefixes reports whether a and b hold the same prefixes in any order.
func samePrefixes(a, b []netip.Prefix) bool {
	if len(a) != len(b) {
		return false
	}
	for _, p := range a {
		if !slices.Contains(b, p) {
			return false
		}
	}
	return true
}
