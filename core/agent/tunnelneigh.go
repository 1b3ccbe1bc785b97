package agent

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"time"

	"github.com/seine-cni/seine/ovs/ovsdb"
	"github.com/seine-cni/seine/platform"
)

// OVS's userspace tunnelling (datapath_type=netdev) resolves the outer
// destination MAC of a tunnelled packet from its own neighbour cache, not
// the host's. A packet whose next hop is missing there (or expired, after
// 15 minutes without traffic) is dropped while ovs-vswitchd sends an ARP
// request; the cache learns only from ARP replies crossing the bridge
// towards one of its addresses. So the first packet to a peer is lost
// unless something filled the cache first, and a warm-up datagram from the
// host fills it only when the host happens to ARP (not when its own entry is
// still valid, as after an ovs-vswitchd restart).
//
// The agent therefore checks the cache for every tunnelled peer's next hop
// and fills what is missing from the host's neighbour table
// (platform.NextHopResolver), sending a warm-up datagram where the host
// has no entry either. It checks at start (before the node is ready), when
// the peers change, on every new OpenFlow connection, after a back-off
// while anything is missing, and every tunnelNeighbourCheckEvery otherwise.
// Each check also sets the entries OVS has again, with the address OVS
// has: that only restarts their idle timer, so a peer nothing was sent to
// for a while is not dropped on its next packet. OVS itself corrects an
// entry from every ARP reply and tunnelled packet the peer sends.
const (
	tunnelNeighbourCheckEvery = time.Minute
	tunnelNeighbourRetryMax   = 5 * time.Second
	tunnelNeighbourTimeout    = 5 * time.Second
)

// unixctl is the part of *appctl.Client the check uses.
type unixctl interface {
	Call(ctx context.Context, method string, args ...string) (string, error)
}

// tunnelNeighbour is one entry of ovs-vswitchd's tunnel neighbour cache.
type tunnelNeighbour struct {
	mac     string
	bridge  string
	expired bool
}

// parseTunnelNeighbours reads `tnl/neigh/show`: a header, a rule of "="
// and one "IP MAC BRIDGE [STALE]" line per entry; STALE marks an expired
// entry, which ovs-vswitchd no longer uses.
func parseTunnelNeighbours(s string) (map[netip.Addr]tunnelNeighbour, error) {
	out := map[netip.Addr]tunnelNeighbour{}
	lines := strings.Split(s, "\n")
	if len(lines) < 2 || !strings.HasPrefix(lines[0], "IP") || !strings.HasPrefix(lines[1], "===") {
		return nil, fmt.Errorf("tnl/neigh/show: unexpected output %q", s)
	}
	for _, l := range lines[2:] {
		f := strings.Fields(l)
		if len(f) == 0 {
			continue
		}
		if len(f) < 3 {
			return nil, fmt.Errorf("tnl/neigh/show: bad line %q", l)
		}
		ip, err := netip.ParseAddr(f[0])
		if err != nil {
			return nil, fmt.Errorf("tnl/neigh/show: bad line %q: %w", l, err)
		}
		out[ip.Unmap()] = tunnelNeighbour{mac: f[1], bridge: f[2], expired: len(f) > 3 && f[3] == "STALE"}
	}
	return out, nil
}

// parseRouteLookup reads `ovs/route/lookup`: "src A", "gateway G" (:: when
// the destination is on-link) and "dev D" lines.
func parseRouteLookup(s string) (gw netip.Addr, dev string, err error) {
	for _, l := range strings.Split(s, "\n") {
		k, v, _ := strings.Cut(strings.TrimSpace(l), " ")
		switch k {
		case "gateway":
			if gw, err = netip.ParseAddr(v); err != nil {
				return netip.Addr{}, "", fmt.Errorf("ovs/route/lookup: bad gateway %q", v)
			}
		case "dev":
			dev = v
		}
	}
	if !gw.IsValid() || dev == "" {
		return netip.Addr{}, "", fmt.Errorf("ovs/route/lookup: unexpected output %q", s)
	}
	return gw.Unmap(), dev, nil
}

// tunnelNeighbourResult is what one check found and did.
type tunnelNeighbourResult struct {
	set       []string     // "peer -> next hop MAC on bridge" for each entry the check added
	refreshed int          // entries OVS had, set again to restart their idle timer
	pending   []netip.Addr // peers whose next hop neither OVS nor the host knows
	warm      []netip.Addr // peers to send a warm-up datagram to
}

// syncTunnelNeighbours makes sure ovs-vswitchd's tunnel neighbour cache
// holds the next hop of every peer in peers, adding from the host's
// neighbour table (r, which may be nil) what is missing or expired, and
// refreshing what is there. Peers whose next hop the host has not
// resolved, or not confirmed lately, are returned to be warmed up; the
// former also as pending. The cache is per bridge: an entry is set on the
// device OVS routes the peer through, the bridge's LOCAL port holding the
// node IP.
func syncTunnelNeighbours(ctx context.Context, c unixctl, r platform.NextHopResolver, peers []netip.Addr) (tunnelNeighbourResult, error) {
	var res tunnelNeighbourResult
	show, err := c.Call(ctx, "tnl/neigh/show")
	if err != nil {
		return res, err
	}
	cache, err := parseTunnelNeighbours(show)
	if err != nil {
		return res, err
	}
	refreshed := map[netip.Addr]bool{}
	refresh := func(hop netip.Addr, e tunnelNeighbour) error {
		if refreshed[hop] {
			return nil
		}
		refreshed[hop] = true
		if _, err := c.Call(ctx, "tnl/neigh/set", e.bridge, hop.String(), e.mac); err != nil {
			return fmt.Errorf("tnl/neigh/set %s %s %s: %w", e.bridge, hop, e.mac, err)
		}
		res.refreshed++
		return nil
	}
	for _, peer := range peers {
		if e, ok := cache[peer]; ok && !e.expired {
			// On-link and known.
			if err := refresh(peer, e); err != nil {
				return res, err
			}
			continue
		}
		hop := peer
		out, err := c.Call(ctx, "ovs/route/lookup", peer.String())
		var gw netip.Addr
		var dev string
		if err == nil {
			gw, dev, err = parseRouteLookup(out)
		}
		if err != nil {
			// No route yet (the uplink is being set up), or a daemon
			// without the command: this peer waits for the next check.
			res.pending = append(res.pending, peer)
			res.warm = append(res.warm, peer)
			continue
		}
		if !gw.IsUnspecified() {
			hop = gw
		}
		if e, ok := cache[hop]; ok && !e.expired {
			if err := refresh(hop, e); err != nil {
				return res, err
			}
			continue
		}
		var mac net.HardwareAddr
		fresh := false
		if r != nil {
			if m, f, err := r.NextHopMAC(ctx, peer); err == nil {
				mac, fresh = m, f
			}
		}
		if !fresh {
			res.warm = append(res.warm, peer)
		}
		if mac == nil {
			res.pending = append(res.pending, peer)
			continue
		}
		if _, err := c.Call(ctx, "tnl/neigh/set", dev, hop.String(), mac.String()); err != nil {
			return res, fmt.Errorf("tnl/neigh/set %s %s %s: %w", dev, hop, mac, err)
		}
		res.set = append(res.set, fmt.Sprintf("%s -> %s on %s", peer, mac, dev))
		cache[hop] = tunnelNeighbour{mac: mac.String(), bridge: dev}
		refreshed[hop] = true
	}
	return res, nil
}

// tunnelledPeerIPs are the node IPs of the peers reached through the tunnel.
func (a *Agent) tunnelledPeerIPs() []netip.Addr {
	a.mu.Lock()
	defer a.mu.Unlock()
	var ips []netip.Addr
	for i := range a.peers {
		if a.tunnelled(&a.peers[i]) {
			ips = append(ips, a.peers[i].NodeIP)
		}
	}
	return ips
}

// kickTunnelNeighbours asks the keeper for a check now.
func (a *Agent) kickTunnelNeighbours() {
	select {
	case a.tnlKick <- struct{}{}:
	default:
	}
}

// keepTunnelNeighbours runs checks until ctx ends (see the top of this
// file); complete is what the check before it found.
func (a *Agent) keepTunnelNeighbours(ctx context.Context, complete bool) {
	var delay time.Duration
	next := func(complete bool) time.Duration {
		if complete {
			delay = 0
			return tunnelNeighbourCheckEvery
		}
		delay = min(max(2*delay, 100*time.Millisecond), tunnelNeighbourRetryMax)
		return delay
	}
	timer := time.NewTimer(next(complete))
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-a.tnlKick:
		case <-timer.C:
		}
		timer.Reset(next(a.checkTunnelNeighbours(ctx)))
	}
}

// checkTunnelNeighbours runs one check and reports whether every tunnelled
// peer's next hop is in ovs-vswitchd's cache. Only the userspace datapath
// tunnels with a cache of its own; with the kernel's datapath (and on
// Windows) the host's neighbour table is used directly, and a check is one
// warm-up datagram per peer.
func (a *Agent) checkTunnelNeighbours(ctx context.Context) bool {
	peers := a.tunnelledPeerIPs()
	if len(peers) == 0 {
		return true
	}
	if a.cfg.datapath() != ovsdb.DatapathNetdev {
		sendWarmDatagrams(a.log, peers)
		return true
	}
	ctx, cancel := context.WithTimeout(ctx, tunnelNeighbourTimeout)
	defer cancel()
	res, err := a.syncTunnelNeighboursNow(ctx, peers)
	if err != nil {
		a.log.Debug("tunnel neighbours", "err", err)
		sendWarmDatagrams(a.log, peers)
		return false
	}
	if len(res.set) > 0 {
		a.log.Info("tunnel neighbours set from the host's neighbour table", "count", len(res.set), "entries", strings.Join(res.set, ", "))
	}
	sendWarmDatagrams(a.log, res.warm)
	if len(res.pending) > 0 {
		a.log.Debug("tunnel neighbours unresolved", "peers", fmt.Sprint(res.pending))
		return false
	}
	return true
}

func (a *Agent) syncTunnelNeighboursNow(ctx context.Context, peers []netip.Addr) (tunnelNeighbourResult, error) {
	c, err := a.vswitchd(ctx)
	if err != nil {
		return tunnelNeighbourResult{}, err
	}
	defer c.Close()
	r, _ := a.backend.(platform.NextHopResolver)
	return syncTunnelNeighbours(ctx, c, r, peers)
}

// vswitchdControl is a connection to ovs-vswitchd's unixctl server.
type vswitchdControl interface {
	unixctl
	Close() error
}

// dialVswitchd connects to the ovs-vswitchd serving rundir.
func dialVswitchd(rundir string) func(context.Context) (vswitchdControl, error) {
	return func(ctx context.Context) (vswitchdControl, error) {
		return appctlDialTarget(ctx, rundir, "ovs-vswitchd")
	}
}
