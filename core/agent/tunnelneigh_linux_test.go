package agent

import (
	"context"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/seine-cni/seine/ovs/appctl"
	"github.com/seine-cni/seine/test/ovsdaemon"
)

// TestSyncTunnelNeighboursRealOVS runs the check against a real
// ovs-vswitchd: a netdev bridge holding the node IP, one peer on-link and
// one behind a gateway. It reads what OVS 3.x prints for tnl/neigh/show
// and ovs/route/lookup, and the entries it sets are the ones the userspace
// tunnel output looks up (per bridge, under the next hop's address).
// ovs-vswitchd runs with --enable-dummy for its time/stop and time/warp
// commands: the aging part runs on OVS's own clock, stopped and advanced
// by the test, so a slow machine cannot age an entry the test refreshed.
func TestSyncTunnelNeighboursRealOVS(t *testing.T) {
	d := ovsdaemon.StartForTestWith(t, ovsdaemon.Options{ExtraVswitchdArgs: []string{"--enable-dummy"}})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if out, err := d.Vsctl(ctx, "add-br", "br-int", "--", "set", "bridge", "br-int", "datapath_type=netdev"); err != nil {
		t.Fatalf("add-br: %v\n%s", err, out)
	}
	for _, args := range [][]string{
		{"addr", "add", "172.30.0.11/24", "dev", "br-int"},
		{"link", "set", "br-int", "up"},
		{"route", "add", "10.1.0.0/24", "via", "172.30.0.1", "dev", "br-int"},
	} {
		if out, err := d.Command(ctx, "ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %v: %v\n%s", args, err, out)
		}
	}
	c, err := appctl.DialTarget(ctx, d.RunDir(), "ovs-vswitchd")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// ovs-vswitchd learns the kernel's routes from netlink.
	for {
		out, err := c.Call(ctx, "ovs/route/lookup", "10.1.0.14")
		if err == nil && strings.Contains(out, "gateway 172.30.0.1") {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("OVS never learnt the route to 10.1.0.0/24: %q %v", out, err)
		}
		time.Sleep(50 * time.Millisecond)
	}

	r := &resolvingBackend{macs: map[netip.Addr]string{
		netip.MustParseAddr("172.30.0.12"): "02:00:00:00:00:12",
		netip.MustParseAddr("10.1.0.14"):   "02:00:00:00:00:01",
	}, fresh: true, asked: map[netip.Addr]int{}}
	peers := addrs("172.30.0.12", "10.1.0.14", "172.30.0.13")
	res, err := syncTunnelNeighbours(ctx, c, r, peers)
	if err != nil {
		t.Fatal(err)
	}
	if want := addrs("172.30.0.13"); !slices.Equal(res.pending, want) {
		t.Errorf("pending %v, want %v", res.pending, want)
	}
	// ovsCache is OVS's tunnel neighbour cache, as printed and as parsed.
	ovsCache := func() (string, map[netip.Addr]tunnelNeighbour) {
		show, err := c.Call(ctx, "tnl/neigh/show")
		if err != nil {
			t.Fatal(err)
		}
		cache, err := parseTunnelNeighbours(show)
		if err != nil {
			t.Fatal(err)
		}
		return show, cache
	}
	show, cache := ovsCache()
	for ip, mac := range map[string]string{"172.30.0.12": "02:00:00:00:00:12", "172.30.0.1": "02:00:00:00:00:01"} {
		if e := cache[netip.MustParseAddr(ip)]; e.mac != mac || e.bridge != "br-int" || e.expired {
			t.Errorf("OVS's entry for %s: %+v, want %s on br-int\n%s", ip, e, mac, show)
		}
	}
	if len(cache) != 2 {
		t.Errorf("OVS's cache has %d entries, want 2:\n%s", len(cache), show)
	}

	// A second check finds both and only refreshes them.
	res, err = syncTunnelNeighbours(ctx, c, r, peers[:2])
	if err != nil || len(res.set) != 0 || len(res.pending) != 0 || res.refreshed != 2 {
		t.Errorf("second check: %+v, %v; want both refreshed, nothing else", res, err)
	}

	// The refresh restarts OVS's idle timer: with a 3 s aging, entries
	// checked every 2.5 s (of OVS's clock) outlive it; left alone, they
	// expire 3 s after the last check, not before.
	if _, err := c.Call(ctx, "tnl/neigh/aging", "3"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Call(ctx, "time/stop"); err != nil {
		t.Fatal(err)
	}
	warp := func(ms int) {
		t.Helper()
		if _, err := c.Call(ctx, "time/warp", strconv.Itoa(ms)); err != nil {
			t.Fatal(err)
		}
	}
	fresh := func() map[netip.Addr]tunnelNeighbour {
		_, cache := ovsCache()
		for ip, e := range cache {
			if e.expired {
				delete(cache, ip)
			}
		}
		return cache
	}
	r.mu.Lock()
	r.macs = map[netip.Addr]string{} // the host forgot them: only the refresh keeps them
	r.mu.Unlock()
	for i := range 4 { // 10 s of OVS's time
		res, err := syncTunnelNeighbours(ctx, c, r, peers[:2])
		if err != nil {
			t.Fatal(err)
		}
		if res.refreshed != 2 || len(res.set) != 0 || len(res.pending) != 0 {
			t.Fatalf("check %d, %d ms after the last one with a 3 s aging: %+v, want both entries found and refreshed", i, 2500*min(i, 1), res)
		}
		warp(2500)
	}
	if got := fresh(); len(got) != 2 {
		t.Errorf("2.5 s after the last check with a 3 s aging, %d live entries, want 2: %v", len(got), got)
	}
	warp(499)
	if got := fresh(); len(got) != 2 {
		t.Errorf("2.999 s after the last check with a 3 s aging, %d live entries, want 2: %v", len(got), got)
	}
	warp(1)
	if got := fresh(); len(got) != 0 {
		t.Errorf("3 s after the last check with a 3 s aging, %d live entries, want them expired: %v", len(got), got)
	}
}
