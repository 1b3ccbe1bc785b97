package windows

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"unsafe"

	"golang.org/x/sys/windows"

	"github.com/seine-cni/seine/platform"
	"github.com/seine-cni/seine/windows/internal/winapi"
)

// iphlpapi is the real ipStack: the IP Helper API, called directly (no
// PowerShell, no netsh). Each method is one or two calls.
type iphlpapi struct{}

// Interfaces lists the adapters with GetAdaptersAddresses: alias, index,
// MAC, MTU and global unicast addresses.
func (iphlpapi) Interfaces(ctx context.Context) ([]ipInterface, error) {
	if err := ctxErr(ctx, "list interfaces"); err != nil {
		return nil, err
	}
	first, err := adapters(0)
	if err != nil {
		return nil, err
	}
	var out []ipInterface
	for a := first; a != nil; a = a.Next {
		i := ipInterface{Index: a.IfIndex, Name: windows.UTF16PtrToString(a.FriendlyName), MTU: int(a.Mtu)}
		if i.Index == 0 {
			i.Index = a.Ipv6IfIndex
		}
		if a.PhysicalAddressLength > 0 {
			i.MAC = net.HardwareAddr(append([]byte(nil), a.PhysicalAddress[:a.PhysicalAddressLength]...))
		}
		for u := a.FirstUnicastAddress; u != nil; u = u.Next {
			ip, ok := netip.AddrFromSlice(u.Address.IP())
			if !ok || !ip.Unmap().IsGlobalUnicast() {
				continue
			}
			i.IPs = append(i.IPs, netip.PrefixFrom(ip.Unmap(), int(u.OnLinkPrefixLength)))
		}
		out = append(out, i)
	}
	return out, nil
}

// adapters returns GetAdaptersAddresses' list (without anycast, multicast
// and DNS server addresses) with the extra flags.
func adapters(flags uint32) (*windows.IpAdapterAddresses, error) {
	size := uint32(15 << 10)
	for range 5 {
		buf := make([]byte, size)
		err := windows.GetAdaptersAddresses(windows.AF_UNSPEC, flags|windows.GAA_FLAG_SKIP_ANYCAST|windows.GAA_FLAG_SKIP_MULTICAST|
			windows.GAA_FLAG_SKIP_DNS_SERVER, 0, (*windows.IpAdapterAddresses)(unsafe.Pointer(&buf[0])), &size)
		if err == nil {
			return (*windows.IpAdapterAddresses)(unsafe.Pointer(&buf[0])), nil
		}
		if !errors.Is(err, windows.ERROR_BUFFER_OVERFLOW) {
			return nil, fmt.Errorf("GetAdaptersAddresses: %w", err)
		}
	}
	return nil, errors.New("GetAdaptersAddresses: the adapter list kept growing")
}

// AdapterWithMAC looks through the adapters of every compartment
// (GAA_FLAG_INCLUDE_ALL_COMPARTMENTS) for one with the MAC.
func (iphlpapi) AdapterWithMAC(ctx context.Context, mac net.HardwareAddr) (bool, error) {
	if err := ctxErr(ctx, "list adapters"); err != nil {
		return false, err
	}
	first, err := adapters(windows.GAA_FLAG_INCLUDE_ALL_COMPARTMENTS)
	if err != nil {
		return false, err
	}
	for a := first; a != nil; a = a.Next {
		if a.PhysicalAddressLength > 0 && bytes.Equal(a.PhysicalAddress[:a.PhysicalAddressLength], mac) {
			return true, nil
		}
	}
	return false, nil
}

func (iphlpapi) AddAddress(ctx context.Context, ifIndex uint32, p netip.Prefix) error {
	if err := ctxErr(ctx, "add address"); err != nil {
		return err
	}
	row, err := unicastRow(ifIndex, p)
	if err != nil {
		return err
	}
	if err := winapi.CreateUnicastIpAddressEntry(row); err != nil && !errors.Is(err, windows.ERROR_OBJECT_ALREADY_EXISTS) {
		return fmt.Errorf("CreateUnicastIpAddressEntry: %w", err)
	}
	return nil
}

func (iphlpapi) DeleteAddress(ctx context.Context, ifIndex uint32, p netip.Prefix) error {
	if err := ctxErr(ctx, "delete address"); err != nil {
		return err
	}
	row, err := unicastRow(ifIndex, p)
	if err != nil {
		return err
	}
	if err := winapi.DeleteUnicastIpAddressEntry(row); err != nil && !errors.Is(err, windows.ERROR_NOT_FOUND) {
		return fmt.Errorf("DeleteUnicastIpAddressEntry: %w", err)
	}
	return nil
}

func unicastRow(ifIndex uint32, p netip.Prefix) (*windows.MibUnicastIpAddressRow, error) {
	var row windows.MibUnicastIpAddressRow
	if err := winapi.InitializeUnicastIpAddressEntry(&row); err != nil {
		return nil, fmt.Errorf("InitializeUnicastIpAddressEntry: %w", err)
	}
	raw := sockaddr(p.Addr())
	row.Address = *(*windows.RawSockaddrInet6)(unsafe.Pointer(&raw))
	row.InterfaceIndex = ifIndex
	row.OnLinkPrefixLength = uint8(p.Bits())
	row.DadState = 4 // IpDadStatePreferred: no duplicate detection delay
	return &row, nil
}

func (iphlpapi) EnableForwarding(ctx context.Context, ifIndex uint32, ipv6 bool) error {
	if err := ctxErr(ctx, "enable forwarding"); err != nil {
		return err
	}
	row := windows.MibIpInterfaceRow{Family: windows.AF_INET, InterfaceIndex: ifIndex}
	if ipv6 {
		row.Family = windows.AF_INET6
	}
	if err := winapi.GetIpInterfaceEntry(&row); err != nil {
		return fmt.Errorf("GetIpInterfaceEntry: %w", err)
	}
	if row.ForwardingEnabled != 0 {
		return nil
	}
	row.ForwardingEnabled = 1
	if !ipv6 {
		row.SitePrefixLength = 0 // SetIpInterfaceEntry refuses anything else for IPv4
	}
	if err := winapi.SetIpInterfaceEntry(&row); err != nil {
		return fmt.Errorf("SetIpInterfaceEntry: %w", err)
	}
	return nil
}

// SetMAC: the IP Helper API cannot change a MAC; that takes the adapter's
// driver properties (NetworkAddress) or Hyper-V's port settings.
func (iphlpapi) SetMAC(context.Context, uint32, net.HardwareAddr) error {
	return platform.NotSupported("changing an interface's MAC through the IP Helper API")
}

func (iphlpapi) Routes(ctx context.Context) ([]ipRoute, error) {
	if err := ctxErr(ctx, "list routes"); err != nil {
		return nil, err
	}
	var table *windows.MibIpForwardTable2
	if err := windows.GetIpForwardTable2(windows.AF_UNSPEC, &table); err != nil {
		return nil, fmt.Errorf("GetIpForwardTable2: %w", err)
	}
	defer windows.FreeMibTable(unsafe.Pointer(table))
	var out []ipRoute
	for _, r := range table.Rows() {
		dst, ok := addrOf(&r.DestinationPrefix.Prefix)
		if !ok {
			continue
		}
		nh, _ := addrOf(&r.NextHop)
		out = append(out, ipRoute{Dst: netip.PrefixFrom(dst, int(r.DestinationPrefix.PrefixLength)),
			NextHop: nh, IfIndex: r.InterfaceIndex, Metric: r.Metric})
	}
	return out, nil
}

func (iphlpapi) AddRoute(ctx context.Context, r ipRoute) error {
	if err := ctxErr(ctx, "add route"); err != nil {
		return err
	}
	row, err := forwardRow(r)
	if err != nil {
		return err
	}
	if err := winapi.CreateIpForwardEntry2(row); err != nil && !errors.Is(err, windows.ERROR_OBJECT_ALREADY_EXISTS) {
		return fmt.Errorf("CreateIpForwardEntry2: %w", err)
	}
	return nil
}

func (iphlpapi) DeleteRoute(ctx context.Context, r ipRoute) error {
	if err := ctxErr(ctx, "delete route"); err != nil {
		return err
	}
	row, err := forwardRow(r)
	if err != nil {
		return err
	}
	if err := winapi.DeleteIpForwardEntry2(row); err != nil && !errors.Is(err, windows.ERROR_NOT_FOUND) {
		return fmt.Errorf("DeleteIpForwardEntry2: %w", err)
	}
	return nil
}

func forwardRow(r ipRoute) (*windows.MibIpForwardRow2, error) {
	var row windows.MibIpForwardRow2
	if err := winapi.InitializeIpForwardEntry(&row); err != nil {
		return nil, fmt.Errorf("InitializeIpForwardEntry: %w", err)
	}
	row.InterfaceIndex = r.IfIndex
	row.DestinationPrefix.Prefix = sockaddr(r.Dst.Addr())
	row.DestinationPrefix.PrefixLength = uint8(r.Dst.Bits())
	nh := r.NextHop
	if r.onLink() {
		nh = unspecified(r.Dst.Addr().Is6())
	}
	row.NextHop = sockaddr(nh)
	row.Metric = r.Metric
	row.Protocol = windows.MIB_IPPROTO_NETMGMT
	return &row, nil
}

func (iphlpapi) Neighbors(ctx context.Context) ([]ipNeighbor, error) {
	if err := ctxErr(ctx, "list neighbours"); err != nil {
		return nil, err
	}
	var table *winapi.MibIpNetTable2
	if err := winapi.GetIpNetTable2(windows.AF_UNSPEC, &table); err != nil {
		return nil, fmt.Errorf("GetIpNetTable2: %w", err)
	}
	defer windows.FreeMibTable(unsafe.Pointer(table))
	var out []ipNeighbor
	for _, r := range table.Rows() {
		if r.State != winapi.NlnsPermanent {
			continue
		}
		ip, ok := addrOf((*windows.RawSockaddrInet)(unsafe.Pointer(&r.Address)))
		if !ok {
			continue
		}
		out = append(out, ipNeighbor{IfIndex: r.InterfaceIndex, IP: ip,
			MAC: net.HardwareAddr(append([]byte(nil), r.PhysicalAddress[:min(r.PhysicalAddressLength, 32)]...))})
	}
	return out, nil
}

// Neighbor reads one entry with GetIpNetEntry2, which answers from the
// host's table and sends nothing (ResolveIpNetEntry2 would). ERROR_NOT_FOUND
// is "no entry for this address on the interface"; an interface the host
// does not have is ERROR_FILE_NOT_FOUND, an error; a stack without the
// function (Wine 8) is an error wrapping platform.ErrNotSupported.
func (iphlpapi) Neighbor(ctx context.Context, ifIndex uint32, ip netip.Addr) (*neighborEntry, error) {
	if err := ctxErr(ctx, "read neighbour"); err != nil {
		return nil, err
	}
	row := neighborRow(ipNeighbor{IfIndex: ifIndex, IP: ip})
	if err := winapi.GetIpNetEntry2(row); err != nil {
		if errors.Is(err, windows.ERROR_NOT_FOUND) {
			return nil, nil
		}
		var missing *windows.DLLError
		if errors.As(err, &missing) { // an iphlpapi.dll without it (Wine 8)
			return nil, fmt.Errorf("GetIpNetEntry2 %s if %d: %w (%w)", ip, ifIndex, err, platform.ErrNotSupported)
		}
		return nil, fmt.Errorf("GetIpNetEntry2 %s if %d: %w", ip, ifIndex, err)
	}
	return &neighborEntry{
		ipNeighbor: ipNeighbor{IfIndex: ifIndex, IP: ip,
			MAC: net.HardwareAddr(append([]byte(nil), row.PhysicalAddress[:min(row.PhysicalAddressLength, 32)]...))},
		State: neighborState(row.State),
	}, nil
}

func (iphlpapi) SetNeighbor(ctx context.Context, n ipNeighbor) error {
	if err := ctxErr(ctx, "set neighbour"); err != nil {
		return err
	}
	row := neighborRow(n)
	row.State = winapi.NlnsPermanent
	// A different MAC for the IP: replace the entry.
	_ = winapi.DeleteIpNetEntry2(row)
	if err := winapi.CreateIpNetEntry2(row); err != nil {
		return fmt.Errorf("CreateIpNetEntry2: %w", err)
	}
	return nil
}

func (iphlpapi) DeleteNeighbor(ctx context.Context, n ipNeighbor) error {
	if err := ctxErr(ctx, "delete neighbour"); err != nil {
		return err
	}
	if err := winapi.DeleteIpNetEntry2(neighborRow(n)); err != nil && !errors.Is(err, windows.ERROR_NOT_FOUND) {
		return fmt.Errorf("DeleteIpNetEntry2: %w", err)
	}
	return nil
}

func neighborRow(n ipNeighbor) *winapi.MibIpNetRow2 {
	var row winapi.MibIpNetRow2
	raw := sockaddr(n.IP)
	row.Address = *(*windows.RawSockaddrInet6)(unsafe.Pointer(&raw))
	row.InterfaceIndex = n.IfIndex
	row.PhysicalAddressLength = uint32(copy(row.PhysicalAddress[:], n.MAC))
	return &row
}

// sockaddr renders an address as SOCKADDR_INET: sockaddr_in (family, port,
// 4 address bytes) or sockaddr_in6 (family, port, flow info, 16 address
// bytes, scope).
func sockaddr(a netip.Addr) windows.RawSockaddrInet {
	var raw windows.RawSockaddrInet
	b := (*[28]byte)(unsafe.Pointer(&raw))
	if a.Is4() {
		raw.Family = windows.AF_INET
		a4 := a.As4()
		copy(b[4:8], a4[:])
		return raw
	}
	raw.Family = windows.AF_INET6
	a16 := a.As16()
	copy(b[8:24], a16[:])
	return raw
}

// addrOf reads an address from SOCKADDR_INET.
func addrOf(raw *windows.RawSockaddrInet) (netip.Addr, bool) {
	b := (*[28]byte)(unsafe.Pointer(raw))
	switch raw.Family {
	case windows.AF_INET:
		return netip.AddrFrom4([4]byte(b[4:8])), true
	case windows.AF_INET6:
		return netip.AddrFrom16([16]byte(b[8:24])), true
	}
	return netip.Addr{}, false
}
