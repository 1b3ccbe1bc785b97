package linux

import (
	"context"
	"errors"
	"fmt"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/seine-cni/seine/platform"
)

var _ platform.HostRulesWatcher = (*Backend)(nil)

// WatchHostRules reports the host changes that undo part of what Sync
// installed (platform.HostRulesWatcher), from netlink notifications in the
// node's namespace:
//
//   - one of Seine's routes (protocol RouteProtocol) deleted;
//   - any change of the gateway interface named by the last synced state:
//     when it is deleted or goes down the kernel drops the IPv4 routes
//     through it without a route notification, and when it comes back
//     (ovs-vswitchd recreates its internal ports on restart) they are
//     missing.
//
// iptables has no notifications: a flushed chain comes back with the
// core's periodic resync.
func (b *Backend) WatchHostRules(ctx context.Context, changed func()) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var nsh *netns.NsHandle
	if b.host.ns != nil {
		h := netns.NsHandle(b.host.ns.Fd())
		nsh = &h
	}
	errc := make(chan error, 2)
	onErr := func(err error) {
		select {
		case errc <- err:
		default:
		}
	}
	routes := make(chan netlink.RouteUpdate, 64)
	if err := netlink.RouteSubscribeWithOptions(routes, ctx.Done(), netlink.RouteSubscribeOptions{Namespace: nsh, ErrorCallback: onErr}); err != nil {
		return fmt.Errorf("watch routes in %s: %w", b.host, err)
	}
	links := make(chan netlink.LinkUpdate, 64)
	if err := netlink.LinkSubscribeWithOptions(links, ctx.Done(), netlink.LinkSubscribeOptions{Namespace: nsh, ErrorCallback: onErr}); err != nil {
		return fmt.Errorf("watch links in %s: %w", b.host, err)
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case err := <-errc:
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("host change notifications in %s: %w", b.host, err)
		case u, ok := <-routes:
			if !ok {
				return closedErr(ctx, b.host, "route")
			}
			if u.Type == unix.RTM_DELROUTE && u.Protocol == RouteProtocol {
				changed()
			}
		case u, ok := <-links:
			if !ok {
				return closedErr(ctx, b.host, "link")
			}
			if gw := b.syncedGateway.Load(); u.Link != nil && gw != nil && *gw != "" && u.Attrs().Name == *gw {
				changed()
			}
		}
	}
}

func closedErr(ctx context.Context, host *netNS, what string) error {
	if ctx.Err() != nil {
		return nil
	}
	return fmt.Errorf("%s notifications in %s: %w", what, host, errors.New("subscription ended"))
}
