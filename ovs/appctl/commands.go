package appctl

import (
	"context"
	"strconv"
)

// Typed helpers for the commands Seine uses. Each returns the daemon's text
// exactly as `ovs-appctl <command>` prints it.

// Version returns the daemon's version line ("ovs-vswitchd (Open vSwitch) 3.1.0").
func (c *Client) Version(ctx context.Context) (string, error) {
	return c.Call(ctx, "version")
}

// OfprotoTrace traces a packet described by flow (ovs-ofctl flow syntax, e.g.
// "in_port=1,tcp,nw_dst=10.0.0.2") through bridge's OpenFlow tables. Extra
// arguments (e.g. "-generate", or a packet in hex) follow the flow.
func (c *Client) OfprotoTrace(ctx context.Context, bridge, flow string, extra ...string) (string, error) {
	return c.Call(ctx, "ofproto/trace", append([]string{bridge, flow}, extra...)...)
}

// AllZones asks DumpConntrack for every conntrack zone.
const AllZones = -1

// DumpConntrack lists the datapath's connection tracking entries in zone
// (dpctl/dump-conntrack zone=N), or in all zones for AllZones.
func (c *Client) DumpConntrack(ctx context.Context, zone int) (string, error) {
	if zone == AllZones {
		return c.Call(ctx, "dpctl/dump-conntrack")
	}
	return c.Call(ctx, "dpctl/dump-conntrack", "zone="+strconv.Itoa(zone))
}

// FlushConntrack removes the conntrack entries of zone, or of all zones for AllZones.
func (c *Client) FlushConntrack(ctx context.Context, zone int) (string, error) {
	if zone == AllZones {
		return c.Call(ctx, "dpctl/flush-conntrack")
	}
	return c.Call(ctx, "dpctl/flush-conntrack", "zone="+strconv.Itoa(zone))
}

// DpifShow shows the datapaths, their bridges and ports (dpif/show).
func (c *Client) DpifShow(ctx context.Context) (string, error) {
	return c.Call(ctx, "dpif/show")
}

// TnlARPShow shows the userspace tunnel neighbour cache (tnl/arp/show).
func (c *Client) TnlARPShow(ctx context.Context) (string, error) {
	return c.Call(ctx, "tnl/arp/show")
}

// OVSRouteShow shows the routes userspace tunnelling uses (ovs/route/show).
func (c *Client) OVSRouteShow(ctx context.Context) (string, error) {
	return c.Call(ctx, "ovs/route/show")
}

// VlogSet changes log levels, e.g. VlogSet(ctx, "dpif_netdev:file:dbg") or
// VlogSet(ctx, "ANY:console:off").
func (c *Client) VlogSet(ctx context.Context, spec ...string) (string, error) {
	return c.Call(ctx, "vlog/set", spec...)
}
