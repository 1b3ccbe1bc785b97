package windows

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"

	"github.com/seine-cni/seine/ovs/ovsdb"
	"github.com/seine-cni/seine/platform"
)

// External IDs on the bridge's own port that record the node's addresses
// and gateway routes once Setup moved them there, so that a Setup after a
// reboot that left the port bare can put them back.
const (
	TypeHost             = "host"
	ExternalIDNodeIPs    = "seine-node-ips"
	ExternalIDNodeRoutes = "seine-node-routes"
)

// recordNode writes the node's addresses and gateway routes (now on the
// bridge's port) to that port's external_ids.
func (b *Backend) recordNode(ctx context.Context, bridge string, ips []netip.Prefix, routes []ipRoute) error {
	var ipText, routeText []string
	for _, p := range ips {
		ipText = append(ipText, p.String())
	}
	for _, r := range routes {
		routeText = append(routeText, r.Dst.String()+" via "+r.NextHop.String())
	}
	p := ovsdb.PortConfig{Name: bridge, Type: ovsdb.TypeInternal, ExternalIDs: map[string]string{
		ExternalIDType: TypeHost, ExternalIDNodeIPs: strings.Join(ipText, ","), ExternalIDNodeRoutes: strings.Join(routeText, ","),
	}}
	if err := b.ovs.EnsurePort(ctx, bridge, p); err != nil {
		return fmt.Errorf("record the node's addresses on port %s: %w", bridge, err)
	}
	return nil
}

// restoreNode puts the recorded addresses and gateway routes back on the
// bridge's port.
func (b *Backend) restoreNode(ctx context.Context, cfg platform.NodeConfig) error {
	port, err := b.ovs.GetPort(ctx, cfg.Bridge)
	if err != nil {
		return err
	}
	ips, routes, err := parseRecord(port.ExternalIDs)
	if err != nil {
		return fmt.Errorf("port %s: %w", cfg.Bridge, err)
	}
	if len(ips) == 0 {
		return fmt.Errorf("port %s: no recorded node address", cfg.Bridge)
	}
	host, err := b.waitInterface(ctx, cfg.Bridge)
	if err != nil {
		return err
	}
	b.log.Warn("restoring the node's recorded addresses", "interface", cfg.Bridge, "addresses", fmt.Sprint(ips))
	if err := b.ensureAddrs(ctx, host, ips, false); err != nil {
		return err
	}
	for _, r := range routes {
		r.IfIndex = host.Index
		if err := b.stack.AddRoute(ctx, r); err != nil {
			return fmt.Errorf("restore route %s: %w", r, err)
		}
	}
	return nil
}

// parseRecord reads what recordNode wrote.
func parseRecord(ids map[string]string) ([]netip.Prefix, []ipRoute, error) {
	var ips []netip.Prefix
	var routes []ipRoute
	var errs []error
	for _, s := range splitList(ids[ExternalIDNodeIPs]) {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", ExternalIDNodeIPs, err))
			continue
		}
		ips = append(ips, p)
	}
	for _, s := range splitList(ids[ExternalIDNodeRoutes]) {
		dst, nh, ok := strings.Cut(s, " via ")
		d, derr := netip.ParsePrefix(dst)
		n, nerr := netip.ParseAddr(nh)
		if !ok || derr != nil || nerr != nil {
			errs = append(errs, fmt.Errorf("%s: %q: want <prefix> via <address>", ExternalIDNodeRoutes, s))
			continue
		}
		routes = append(routes, ipRoute{Dst: d, NextHop: n})
	}
	return ips, routes, errors.Join(errs...)
}

func splitList(s string) []string {
	if s == "" {
		return nil
	}
	return strings.Split(s, ",")
}
