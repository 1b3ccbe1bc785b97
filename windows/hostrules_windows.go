package windows

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/seine-cni/seine/platform"
)

// Sync makes the host's routes, service neighbours and SNAT match s (see
// platform.HostRules):
//
//   - routes through the IP Helper API, all with metric RouteMetric, which
//     is how Sync knows its own: encap peers via their gateway IP on the
//     gateway interface, noEncap peers via their node IP on the interface
//     of the node network, service CIDRs via the virtual next hop (or
//     on-link) on the gateway; missing ones are added before stale ones are
//     deleted, routes without the marker are never touched;
//   - a permanent neighbour entry on the gateway for every service next
//     hop (every permanent entry on the gateway is Seine's);
//   - one WinNAT instance per IPv4 pod CIDR, named NATPrefix+CIDR (see
//     README.md for why WinNAT).
//
// Every part is attempted; the error joins the failures and the next Sync
// redoes what is missing. NoHostIngress needs nothing on Windows: the
// extension owns the uplink's frames, the host stack only sees what OVS
// sends to the bridge's port. KubeProxyCIDRs need nothing either: Seine
// adds no forwarding rule on Windows that could take kube-proxy's traffic
// before kube-proxy's own (HNS) rules see it.
func (b *Backend) Sync(ctx context.Context, s platform.HostState) error {
	if err := s.Validate(); err != nil {
		return err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	ifs, err := b.stack.Interfaces(ctx)
	if err != nil {
		return fmt.Errorf("sync host rules: list interfaces: %w", err)
	}
	var gw ipInterface
	var errs []error
	if s.Gateway != "" {
		var ok bool
		if gw, ok = findInterface(ifs, s.Gateway); !ok {
			errs = append(errs, fmt.Errorf("gateway interface %q: no such interface", s.Gateway))
		}
	}
	errs = append(errs, b.syncRoutes(ctx, s, ifs, gw), b.syncNeighbors(ctx, s, gw), b.syncNAT(ctx, s))
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("sync host rules: %w", err)
	}
	return nil
}

// desiredRoutes turns s into routes; a route whose interface is missing is
// left out and reported.
func desiredRoutes(s platform.HostState, ifs []ipInterface, gw ipInterface) ([]ipRoute, error) {
	var out []ipRoute
	var errs []error
	for _, r := range s.PeerRoutes {
		switch {
		case r.GatewayIP.IsValid():
			if gw.Index != 0 {
				out = append(out, ipRoute{Dst: r.PodCIDR, NextHop: r.GatewayIP, IfIndex: gw.Index, Metric: RouteMetric})
			}
		default:
			i, ok := interfaceOnLink(ifs, r.NodeIP)
			if !ok {
				errs = append(errs, fmt.Errorf("peer route %s: no interface on the network of %s", r, r.NodeIP))
				continue
			}
			out = append(out, ipRoute{Dst: r.PodCIDR, NextHop: r.NodeIP, IfIndex: i.Index, Metric: RouteMetric})
		}
	}
	for _, r := range s.ServiceRoutes {
		if gw.Index == 0 {
			break
		}
		nh := r.NextHop
		if !nh.IsValid() {
			nh = unspecified(r.CIDR.Addr().Is6())
		}
		out = append(out, ipRoute{Dst: r.CIDR, NextHop: nh, IfIndex: gw.Index, Metric: RouteMetric})
	}
	return out, errors.Join(errs...)
}

func unspecified(ipv6 bool) netip.Addr {
	if ipv6 {
		return netip.IPv6Unspecified()
	}
	return netip.IPv4Unspecified()
}

// interfaceOnLink returns the interface with an address whose subnet holds ip.
func interfaceOnLink(ifs []ipInterface, ip netip.Addr) (ipInterface, bool) {
	for _, i := range ifs {
		for _, p := range i.IPs {
			if p.Masked().Contains(ip) {
				return i, true
			}
		}
	}
	return ipInterface{}, false
}

// planRoutes compares the desired routes with Seine's current ones (those
// with RouteMetric in current) and returns what to add and what to delete,
// sorted.
func planRoutes(desired, current []ipRoute) (add, del []ipRoute) {
	want := map[string]bool{}
	for _, r := range desired {
		want[r.key()] = true
	}
	have := map[string]bool{}
	for _, r := range current {
		if r.Metric != RouteMetric {
			continue
		}
		have[r.key()] = true
		if !want[r.key()] {
			del = append(del, r)
		}
	}
	for _, r := range desired {
		if !have[r.key()] {
			add = append(add, r)
			have[r.key()] = true
		}
	}
	byKey := func(a, b ipRoute) int { return strings.Compare(a.key(), b.key()) }
	slices.SortFunc(add, byKey)
	slices.SortFunc(del, byKey)
	return add, del
}

func (b *Backend) syncRoutes(ctx context.Context, s platform.HostState, ifs []ipInterface, gw ipInterface) error {
	desired, derr := desiredRoutes(s, ifs, gw)
	current, err := b.stack.Routes(ctx)
	if err != nil {
		return errors.Join(derr, fmt.Errorf("list routes: %w", err))
	}
	add, del := planRoutes(desired, current)
	errs := []error{derr}
	for _, r := range add {
		if err := b.stack.AddRoute(ctx, r); err != nil {
			errs = append(errs, fmt.Errorf("add route %s: %w", r, err))
			continue
		}
		b.log.Info("added route", "route", r.String())
	}
	for _, r := range del {
		if err := b.stack.DeleteRoute(ctx, r); err != nil {
			errs = append(errs, fmt.Errorf("delete route %s: %w", r, err))
			continue
		}
		b.log.Info("deleted route", "route", r.String())
	}
	return errors.Join(errs...)
}

// syncNeighbors keeps one permanent entry per service next hop on the
// gateway and removes the gateway's other permanent entries.
func (b *Backend) syncNeighbors(ctx context.Context, s platform.HostState, gw ipInterface) error {
	if gw.Index == 0 {
		return nil // reported by Sync
	}
	var want []ipNeighbor
	for _, r := range s.ServiceRoutes {
		if r.NextHop.IsValid() {
			want = append(want, ipNeighbor{IfIndex: gw.Index, IP: r.NextHop, MAC: s.ServiceNextHopMAC})
		}
	}
	current, err := b.stack.Neighbors(ctx)
	if err != nil {
		return fmt.Errorf("list neighbours: %w", err)
	}
	var errs []error
	for _, n := range want {
		if slices.ContainsFunc(current, func(c ipNeighbor) bool {
			return c.IfIndex == n.IfIndex && c.IP == n.IP && bytes.Equal(c.MAC, n.MAC)
		}) {
			continue
		}
		if err := b.stack.SetNeighbor(ctx, n); err != nil {
			errs = append(errs, fmt.Errorf("set neighbour %s: %w", n, err))
		}
	}
	for _, c := range current {
		if c.IfIndex != gw.Index || slices.ContainsFunc(want, func(n ipNeighbor) bool { return n.IP == c.IP }) {
			continue
		}
		if err := b.stack.DeleteNeighbor(ctx, c); err != nil {
			errs = append(errs, fmt.Errorf("delete neighbour %s: %w", c, err))
		}
	}
	return errors.Join(errs...)
}

// natName is the WinNAT instance of one pod CIDR.
func natName(p netip.Prefix) string {
	return NATPrefix + strings.NewReplacer("/", "_", ":", "-").Replace(p.String())
}

// desiredNAT is one WinNAT instance per IPv4 pod CIDR, with the SNAT IP as
// its external prefix. WinNAT has no IPv6 (NAT66) translation: an IPv6 pod
// CIDR that should be SNATed is reported as not supported.
func desiredNAT(s platform.HostState) ([]natRule, error) {
	if s.NoSNAT {
		return nil, nil
	}
	var out []natRule
	var errs []error
	for _, p := range s.PodCIDRs {
		if p.Addr().Is6() {
			errs = append(errs, fmt.Errorf("SNAT of pod CIDR %s: %w", p, platform.NotSupported("IPv6 with WinNAT")))
			continue
		}
		n := natRule{Name: natName(p), Internal: p}
		if ip := s.SNATIP(false); ip.IsValid() {
			n.External = netip.PrefixFrom(ip, 32)
		}
		out = append(out, n)
	}
	return out, errors.Join(errs...)
}

// syncNAT removes Seine's WinNAT instances that are not desired (or differ)
// before adding the missing ones: WinNAT refuses overlapping internal
// prefixes.
func (b *Backend) syncNAT(ctx context.Context, s platform.HostState) error {
	want, werr := desiredNAT(s)
	current, err := b.nat.NATs(ctx)
	if err != nil {
		return errors.Join(werr, fmt.Errorf("list WinNAT instances: %w", err))
	}
	errs := []error{werr}
	have := map[string]bool{}
	for _, c := range current {
		if !strings.HasPrefix(c.Name, NATPrefix) {
			continue
		}
		if slices.Contains(want, c) {
			have[c.Name] = true
			continue
		}
		if err := b.nat.RemoveNAT(ctx, c.Name); err != nil {
			errs = append(errs, fmt.Errorf("remove WinNAT %s: %w", c.Name, err))
			continue
		}
		b.log.Info("removed WinNAT instance", "nat", c.String())
	}
	for _, n := range want {
		if have[n.Name] {
			continue
		}
		if err := b.nat.AddNAT(ctx, n); err != nil {
			errs = append(errs, fmt.Errorf("add WinNAT %s: %w", n.Name, err))
			continue
		}
		b.log.Info("added WinNAT instance", "nat", n.String())
	}
	return errors.Join(errs...)
}
