package linux

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"

	"github.com/seine-cni/seine/platform"
)

// Sync makes the node's routes, neighbour entries and iptables rules match
// s (see platform.HostRules):
//
//   - iptables: SEINE-POSTROUTING (nat) and SEINE-FORWARD (filter), rebuilt
//     in one `iptables-restore --noflush` transaction per IP family, with
//     their jump rules ensured exactly once;
//   - routes: peer pod CIDRs and service CIDRs in the main table, marked
//     with RouteProtocol, diffed against the routes with that mark;
//   - neighbours: permanent entries for the service next hops on the gateway.
//
// Every part is attempted; the error joins the parts that failed, and the
// next Sync retries them in full.
func (b *Backend) Sync(ctx context.Context, s platform.HostState) error {
	if err := s.Validate(); err != nil {
		return err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.syncedGateway.Store(&s.Gateway)
	var errs []error
	gwIndex := 0
	if s.Gateway != "" {
		l, err := b.host.nl.LinkByName(s.Gateway)
		if err != nil {
			errs = append(errs, fmt.Errorf("gateway %s: %w (routes through it skipped)", s.Gateway, err))
		} else {
			gwIndex = l.Attrs().Index
		}
	}
	families := []iptablesFamily{familyV4}
	if b.host.hasIPv6() {
		families = append(families, familyV6)
	} else if hasIPv6State(s) {
		errs = append(errs, fmt.Errorf("IPv6 rules: %s has no IPv6: %w", b.host, platform.ErrNotSupported))
	}
	for _, fam := range families {
		if err := b.syncIPTables(ctx, s, fam); err != nil {
			errs = append(errs, err)
		}
	}
	if err := b.syncRoutes(s, gwIndex); err != nil {
		errs = append(errs, err)
	}
	if err := b.syncNeighbours(s, gwIndex); err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("sync host rules: %w", err)
	}
	return nil
}

func hasIPv6State(s platform.HostState) bool {
	is6 := func(p netip.Prefix) bool { return p.Addr().Is6() }
	return slices.ContainsFunc(s.PodCIDRs, is6) || slices.ContainsFunc(s.ClusterCIDRs, is6) ||
		slices.ContainsFunc(s.PeerRoutes, func(r platform.PeerRoute) bool { return is6(r.PodCIDR) }) ||
		slices.ContainsFunc(s.ServiceRoutes, func(r platform.ServiceRoute) bool { return is6(r.CIDR) }) ||
		slices.ContainsFunc(s.KubeProxyCIDRs, is6)
}
