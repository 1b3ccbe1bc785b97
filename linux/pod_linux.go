package linux

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/seine-cni/seine/ovs/ovsdb"
	"github.com/seine-cni/seine/platform"
)

// Attach creates the pod's veth pair: the host end (HostInterfaceName) in
// the node's namespace with ARP and IPv6 off, the pod end created directly in
// the pod's namespace under pod.IfName with the MTU, addresses, a permanent
// neighbour entry for the gateway, the routes, and (netdev datapath) tx
// checksum offload off. An existing pair that already matches pod is
// returned as is; one that does not is replaced. On failure nothing is left.
func (b *Backend) Attach(ctx context.Context, pod platform.PodNetwork) (platform.PodInterface, error) {
	if err := pod.Validate(); err != nil {
		return platform.PodInterface{}, err
	}
	what := "attach pod " + pod.PodRef.String()
	podNS, err := openPodNetNS(pod.NetNS)
	if err != nil {
		return platform.PodInterface{}, fmt.Errorf("%s: %w", what, err)
	}
	defer podNS.Close()
	host := HostInterfaceName(pod.PodRef)
	log := b.log.With("pod", pod.Namespace+"/"+pod.Name, "container", pod.ContainerID, "host_if", host)

	_, err = b.host.nl.LinkByName(host)
	switch {
	case err == nil:
		iface, cerr := b.checkPod(pod, podNS, host)
		if cerr == nil {
			log.Debug("pod interface already as desired")
			return iface, nil
		}
		log.Info("pod interface differs from the desired state; recreating it", "diff", cerr.Error())
		if err := b.deleteVeth(host); err != nil {
			return platform.PodInterface{}, fmt.Errorf("%s: %w", what, err)
		}
	case !isNotFound(err):
		return platform.PodInterface{}, fmt.Errorf("%s: look up %s: %w", what, host, err)
	}
	if err := ctxErr(ctx, what); err != nil {
		return platform.PodInterface{}, err
	}
	iface, err := b.createPod(pod, podNS, host)
	if err != nil {
		// Deleting the host end deletes the pod end with it.
		if derr := b.deleteVeth(host); derr != nil {
			err = errors.Join(err, fmt.Errorf("clean up: %w", derr))
		}
		return platform.PodInterface{}, fmt.Errorf("%s: %w", what, err)
	}
	log.Info("attached pod", "ips", fmt.Sprint(pod.IPs), "mac", iface.MAC.String())
	return iface, nil
}

func (b *Backend) createPod(pod platform.PodNetwork, podNS *netNS, host string) (platform.PodInterface, error) {
	veth := &netlink.Veth{
		LinkAttrs:        netlink.LinkAttrs{Name: host, MTU: pod.MTU},
		PeerName:         pod.IfName,
		PeerNamespace:    netlink.NsFd(int(podNS.ns.Fd())),
		PeerHardwareAddr: pod.MAC,
	}
	if err := b.host.nl.LinkAdd(veth); err != nil {
		return platform.PodInterface{}, fmt.Errorf("create veth %s (peer %s in %s): %w", host, pod.IfName, podNS, err)
	}
	hostLink, err := b.host.nl.LinkByName(host)
	if err != nil {
		return platform.PodInterface{}, fmt.Errorf("find %s: %w", host, err)
	}
	if err := b.prepareOVSPort(hostLink); err != nil {
		return platform.PodInterface{}, err
	}

	podLink, err := configurePodLink(pod, podNS, b.datapath)
	if err != nil {
		return platform.PodInterface{}, err
	}
	return podInterface(pod, hostLink, podLink), nil
}

// configurePodLink configures the pod's interface, pod.IfName in podNS:
// addresses, up, a permanent neighbour for each gateway, the routes and,
// with the netdev datapath, tx checksum offload off. Veth and VF pods share
// it. It returns the link as it is afterwards.
func configurePodLink(pod platform.PodNetwork, podNS *netNS, datapath ovsdb.DatapathType) (netlink.Link, error) {
	nl := podNS.nl
	podLink, err := nl.LinkByName(pod.IfName)
	if err != nil {
		return nil, fmt.Errorf("find %s in %s: %w", pod.IfName, podNS, err)
	}
	for _, ip := range pod.IPs {
		addr := &netlink.Addr{IPNet: ipNet(ip)}
		if ip.Addr().Is6() {
			addr.Flags = unix.IFA_F_NODAD // usable at once; the gateway is the only neighbour
		}
		if err := nl.AddrReplace(podLink, addr); err != nil {
			return nil, fmt.Errorf("add address %s to %s: %w", ip, pod.IfName, err)
		}
	}
	if err := nl.LinkSetUp(podLink); err != nil {
		return nil, fmt.Errorf("set %s up: %w", pod.IfName, err)
	}
	if pod.GatewayMAC != nil {
		for _, gw := range pod.Gateways {
			if err := nl.NeighSet(permanentNeigh(podLink.Attrs().Index, gw, pod.GatewayMAC)); err != nil {
				return nil, fmt.Errorf("neighbour %s lladdr %s: %w", gw, pod.GatewayMAC, err)
			}
		}
	}
	for _, r := range pod.EffectiveRoutes() {
		route := &netlink.Route{LinkIndex: podLink.Attrs().Index, Dst: ipNet(r.Dst), Gw: r.Via.AsSlice()}
		if err := nl.RouteReplace(route); err != nil {
			return nil, fmt.Errorf("route %s: %w", r, err)
		}
	}
	if datapath == ovsdb.DatapathNetdev {
		if err := podNS.Do(func() error { return setTxChecksum(pod.IfName, false) }); err != nil {
			return nil, err
		}
	}
	if podLink, err = nl.LinkByName(pod.IfName); err != nil {
		return nil, fmt.Errorf("find %s in %s: %w", pod.IfName, podNS, err)
	}
	return podLink, nil
}

// prepareOVSPort readies a host interface that OVS will own: ARP off and
// IPv6 disabled, so that the node's kernel, which sees every frame on it too,
// neither answers ARP for node addresses nor sends its own packets out of it
// (duplicate packets otherwise), then up.
func (b *Backend) prepareOVSPort(link netlink.Link) error {
	name := link.Attrs().Name
	if link.Attrs().RawFlags&unix.IFF_NOARP == 0 {
		if err := b.host.nl.LinkSetARPOff(link); err != nil {
			return fmt.Errorf("set %s arp off: %w", name, err)
		}
	}
	if b.host.hasIPv6() {
		if _, err := b.host.setSysctl("net/ipv6/conf/"+name+"/disable_ipv6", "1"); err != nil {
			return err
		}
	}
	if err := b.host.nl.LinkSetUp(link); err != nil {
		return fmt.Errorf("set %s up: %w", name, err)
	}
	return nil
}

func podInterface(pod platform.PodNetwork, hostLink, podLink netlink.Link) platform.PodInterface {
	return platform.PodInterface{
		HostName: hostLink.Attrs().Name,
		PortType: ovsdb.TypeSystem,
		MAC:      slices.Clone(podLink.Attrs().HardwareAddr),
		HostMAC:  slices.Clone(hostLink.Attrs().HardwareAddr),
		IPs:      slices.Clone(pod.IPs),
	}
}

// Detach deletes the pod's veth pair by its host end; a missing one, or a
// pod namespace already gone (which takes the pair with it), is success.
func (b *Backend) Detach(_ context.Context, ref platform.PodRef) error {
	if err := ref.Validate(); err != nil {
		return err
	}
	if err := b.deleteVeth(HostInterfaceName(ref)); err != nil {
		return fmt.Errorf("detach pod %s: %w", ref, err)
	}
	return nil
}

// deleteVeth deletes the named veth from the node's namespace, if it exists.
// It refuses to delete a device of another kind.
func (b *Backend) deleteVeth(name string) error {
	link, err := b.host.nl.LinkByName(name)
	if isNotFound(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("look up %s: %w", name, err)
	}
	if link.Type() != "veth" {
		return fmt.Errorf("%s is a %s device, not a veth: not deleting it", name, link.Type())
	}
	if err := ignoreNotFound(b.host.nl.LinkDel(link)); err != nil {
		return fmt.Errorf("delete %s: %w", name, err)
	}
	b.log.Info("deleted pod interface", "host_if", name)
	return nil
}

// Check reports every way the pod's interface differs from pod.
func (b *Backend) Check(_ context.Context, pod platform.PodNetwork) error {
	if err := pod.Validate(); err != nil {
		return err
	}
	podNS, err := openPodNetNS(pod.NetNS)
	if err != nil {
		return fmt.Errorf("check pod %s: %w", pod.PodRef, err)
	}
	defer podNS.Close()
	if _, err := b.checkPod(pod, podNS, HostInterfaceName(pod.PodRef)); err != nil {
		return fmt.Errorf("check pod %s: %w", pod.PodRef, err)
	}
	return nil
}

func (b *Backend) checkPod(pod platform.PodNetwork, podNS *netNS, host string) (platform.PodInterface, error) {
	hostLink, err := b.host.nl.LinkByName(host)
	if err != nil {
		return platform.PodInterface{}, fmt.Errorf("host interface %s: %w", host, err)
	}
	podLink, err := podNS.nl.LinkByName(pod.IfName)
	if err != nil {
		return platform.PodInterface{}, fmt.Errorf("interface %s in %s: %w", pod.IfName, podNS, err)
	}
	var errs []error
	diff := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	ha, pa := hostLink.Attrs(), podLink.Attrs()
	if hostLink.Type() != "veth" || podLink.Type() != "veth" {
		diff("%s is a %s, %s a %s: want a veth pair", host, hostLink.Type(), pod.IfName, podLink.Type())
	} else if ha.ParentIndex != pa.Index || pa.ParentIndex != ha.Index {
		diff("%s (peer index %d) and %s (peer index %d) are not one veth pair", host, ha.ParentIndex, pod.IfName, pa.ParentIndex)
	}
	checkOVSPort(hostLink, pod.MTU, diff)
	if err := checkPodLink(pod, podNS, podLink, b.datapath, diff); err != nil {
		return platform.PodInterface{}, err
	}
	if err := errors.Join(errs...); err != nil {
		return platform.PodInterface{}, err
	}
	return podInterface(pod, hostLink, podLink), nil
}

// checkOVSPort reports how a host interface OVS owns differs from what
// prepareOVSPort makes of it (and the pod's MTU, when not 0).
func checkOVSPort(link netlink.Link, mtu int, diff func(string, ...any)) {
	a := link.Attrs()
	if a.RawFlags&unix.IFF_NOARP == 0 {
		diff("%s answers ARP", a.Name)
	}
	if a.Flags&net.FlagUp == 0 {
		diff("%s is down", a.Name)
	}
	if mtu != 0 && a.MTU != mtu {
		diff("%s has MTU %d, want %d", a.Name, a.MTU, mtu)
	}
}

// checkPodLink reports through diff how the pod's interface differs from
// pod: up, MTU, MAC, addresses, routes, gateway neighbours, checksum
// offload. Its error is a failure to read, not a difference.
func checkPodLink(pod platform.PodNetwork, podNS *netNS, podLink netlink.Link, datapath ovsdb.DatapathType, diff func(string, ...any)) error {
	nl := podNS.nl
	pa := podLink.Attrs()
	if pa.Flags&net.FlagUp == 0 {
		diff("%s is down", pa.Name)
	}
	if pod.MTU != 0 && pa.MTU != pod.MTU {
		diff("%s has MTU %d, want %d", pa.Name, pa.MTU, pod.MTU)
	}
	if pod.MAC != nil && !bytes.Equal(pa.HardwareAddr, pod.MAC) {
		diff("%s has MAC %s, want %s", pod.IfName, pa.HardwareAddr, pod.MAC)
	}
	have, err := globalAddrs(nl, podLink)
	if err != nil {
		return err
	}
	if !samePrefixes(have, pod.IPs) {
		diff("%s has addresses %v, want %v", pod.IfName, have, pod.IPs)
	}
	routes, err := retryDump(func() ([]netlink.Route, error) { return nl.RouteList(podLink, netlink.FAMILY_ALL) })
	if err != nil {
		return fmt.Errorf("list routes in %s: %w", podNS, err)
	}
	for _, want := range pod.EffectiveRoutes() {
		if !slices.ContainsFunc(routes, func(r netlink.Route) bool {
			return routeDst(r) == want.Dst && addrOf(r.Gw) == want.Via
		}) {
			diff("no route %s", want)
		}
	}
	if pod.GatewayMAC != nil {
		neighs, err := retryDump(func() ([]netlink.Neigh, error) { return nl.NeighList(pa.Index, netlink.FAMILY_ALL) })
		if err != nil {
			return fmt.Errorf("list neighbours in %s: %w", podNS, err)
		}
		for _, gw := range pod.Gateways {
			if !slices.ContainsFunc(neighs, func(n netlink.Neigh) bool {
				return addrOf(n.IP) == gw && n.State&netlink.NUD_PERMANENT != 0 && bytes.Equal(n.HardwareAddr, pod.GatewayMAC)
			}) {
				diff("no permanent neighbour %s lladdr %s", gw, pod.GatewayMAC)
			}
		}
	}
	if datapath == ovsdb.DatapathNetdev {
		var on bool
		if err := podNS.Do(func() (err error) { on, err = txChecksum(pod.IfName); return err }); err != nil {
			return err
		}
		if on {
			diff("%s has tx checksum offload on (netdev datapath wants it off)", pod.IfName)
		}
	}
	return nil
}

func permanentNeigh(linkIndex int, ip netip.Addr, mac net.HardwareAddr) *netlink.Neigh {
	return &netlink.Neigh{
		LinkIndex: linkIndex, Family: family(ip), State: netlink.NUD_PERMANENT,
		IP: ip.AsSlice(), HardwareAddr: mac,
	}
}
