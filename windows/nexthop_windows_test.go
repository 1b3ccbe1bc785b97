package windows

import (
	"context"
	"errors"
	"strings"
	"testing"
	"unsafe"

	"github.com/seine-cni/seine/platform"
	"github.com/seine-cni/seine/windows/internal/winapi"
)

// nextHopNode is a node after Setup as the host stack shows it: the node
// address, its connected and host routes and the default route on br-int,
// two more routers on the node's subnet, an unrelated adapter, one of
// Seine's peer routes, and the neighbour entries the host has learned.
func nextHopNode(t *testing.T) (*host, *Backend) {
	t.Helper()
	h := newHost()
	br := h.stack.addInterface("br-int", 1500, "192.168.1.11/24")
	other := h.stack.addInterface("Ethernet1", 1500, "172.16.0.5/16")
	h.stack.addInterface("seine-gw0", 1450, "10.244.1.1/24")
	route := func(dst, via string, ifc ipInterface, metric uint32) ipRoute {
		r := ipRoute{Dst: pfx(dst), IfIndex: ifc.Index, Metric: metric}
		if via != "" {
			r.NextHop = addr(via)
		} else {
			r.NextHop = addr("0.0.0.0") // on-link, as GetIpForwardTable2 reports it
		}
		return r
	}
	h.stack.routes = []ipRoute{
		route("0.0.0.0/0", "192.168.1.1", br, 0),
		route("192.168.1.0/24", "", br, 256),
		route("192.168.1.11/32", "", br, 256),
		route("192.168.1.255/32", "", br, 256),
		route("224.0.0.0/4", "", br, 256),
		route("10.20.0.0/16", "192.168.1.254", br, 0),
		route("10.30.0.0/16", "192.168.1.253", br, 20),
		route("10.30.0.0/16", "192.168.1.252", br, 5),
		route("10.244.2.0/24", "192.168.1.12", br, RouteMetric),
		route("172.16.0.0/16", "", other, 256),
		route("10.9.0.0/16", "172.16.0.1", other, 0),
		{Dst: pfx("fd00::/64"), IfIndex: br.Index, Metric: 256},
	}
	for _, n := range []struct {
		dev, ip, mac string
		state        neighborState
	}{
		{"br-int", "192.168.1.1", "02:00:00:00:01:01", nlnsReachable},
		{"br-int", "192.168.1.12", "02:00:00:00:01:12", nlnsReachable},
		{"br-int", "192.168.1.13", "02:00:00:00:01:13", nlnsStale},
		{"br-int", "192.168.1.14", "02:00:00:00:01:14", nlnsDelay},
		{"br-int", "192.168.1.15", "02:00:00:00:01:15", nlnsProbe},
		{"br-int", "192.168.1.16", "", nlnsIncomplete},
		{"br-int", "192.168.1.17", "", nlnsUnreachable},
		{"Ethernet1", "192.168.1.18", "02:00:00:00:01:18", nlnsReachable},
		{"br-int", "192.168.1.252", "02:00:00:00:01:fc", nlnsReachable},
		{"br-int", "192.168.1.253", "02:00:00:00:01:fd", nlnsReachable},
		{"br-int", "192.168.1.254", "02:00:00:00:01:fe", nlnsReachable},
		{"Ethernet1", "172.16.0.1", "02:00:00:00:02:01", nlnsReachable},
	} {
		h.stack.learn(n.dev, n.ip, n.mac, n.state)
	}
	h.stack.neighbors = []ipNeighbor{{IfIndex: br.Index, IP: addr("192.168.1.19"), MAC: vmac}}
	return h, h.backend(t)
}

func TestNextHopMAC(t *testing.T) {
	h, b := nextHopNode(t)
	for _, c := range []struct {
		name, ip string
		mac      string // "" with noNeigh: errors.Is(err, platform.ErrNoNeighbour)
		fresh    bool
		noNeigh  bool
	}{
		{name: "on-link peer", ip: "192.168.1.12", mac: "02:00:00:00:01:12", fresh: true},
		{name: "peer behind a router: longest prefix over the default route", ip: "10.20.5.6", mac: "02:00:00:00:01:fe", fresh: true},
		{name: "peer behind the default router", ip: "203.0.113.9", mac: "02:00:00:00:01:01", fresh: true},
		{name: "equal prefixes: the lowest metric", ip: "10.30.1.1", mac: "02:00:00:00:01:fc", fresh: true},
		{name: "router on another adapter", ip: "10.9.3.4", mac: "02:00:00:00:02:01", fresh: true},
		{name: "stale entry", ip: "192.168.1.13", mac: "02:00:00:00:01:13"},
		{name: "delay entry", ip: "192.168.1.14", mac: "02:00:00:00:01:14"},
		{name: "probe entry", ip: "192.168.1.15", mac: "02:00:00:00:01:15"},
		{name: "permanent entry", ip: "192.168.1.19", mac: vmac.String(), fresh: true},
		{name: "incomplete entry", ip: "192.168.1.16", noNeigh: true},
		{name: "unreachable entry", ip: "192.168.1.17", noNeigh: true},
		{name: "no entry", ip: "192.168.1.20", noNeigh: true},
		{name: "an entry on another interface than the route's", ip: "192.168.1.18", noNeigh: true},
	} {
		t.Run(c.name, func(t *testing.T) {
			mac, fresh, err := b.NextHopMAC(context.Background(), addr(c.ip))
			if c.noNeigh {
				if !errors.Is(err, platform.ErrNoNeighbour) || mac != nil {
					t.Fatalf("NextHopMAC(%s) = %v, %v, %v; want an error wrapping ErrNoNeighbour", c.ip, mac, fresh, err)
				}
				t.Logf("error: %v", err)
				return
			}
			if err != nil || mac.String() != c.mac || fresh != c.fresh {
				t.Errorf("NextHopMAC(%s) = %v, fresh=%v, %v; want %s, fresh=%v", c.ip, mac, fresh, err, c.mac, c.fresh)
			}
		})
	}
	diff(t, "host calls (NextHopMAC only reads)", h.Take(), "")
}

func TestNextHopMACErrors(t *testing.T) {
	ctx := context.Background()
	h, b := nextHopNode(t)
	checkErr := func(what string, err error, want string) {
		t.Helper()
		if err == nil || errors.Is(err, platform.ErrNoNeighbour) || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v; want an error containing %q that is not ErrNoNeighbour", what, err, want)
		}
	}
	_, _, err := b.NextHopMAC(ctx, addr("fd00::2"))
	checkErr("IPv6", err, "IPv4 only")

	h.FailNext("Routes", errors.New("table unavailable"))
	_, _, err = b.NextHopMAC(ctx, addr("192.168.1.12"))
	checkErr("route table failure", err, "table unavailable")

	h.FailNext("Neighbor", errors.New("GetIpNetEntry2: access denied"))
	_, _, err = b.NextHopMAC(ctx, addr("192.168.1.12"))
	checkErr("neighbour look-up failure", err, "access denied")

	// Without a default route, an address no route holds.
	h.stack.routes = h.stack.routes[1:]
	_, _, err = b.NextHopMAC(ctx, addr("203.0.113.9"))
	checkErr("no route", err, "route to 203.0.113.9: none")
}

// TestSyncIgnoresLearnedNeighbours: the entries the host learned by itself
// (which NextHopMAC reads) are not Seine's permanent service next-hop
// entries; Sync neither lists nor removes them.
func TestSyncIgnoresLearnedNeighbours(t *testing.T) {
	ctx := context.Background()
	h, b := setUpNode(t)
	h.stack.learn("seine-gw0", "10.244.1.5", "02:00:00:00:00:05", nlnsReachable)
	h.stack.learn("seine-gw0", "169.254.0.253", "02:00:00:00:00:06", nlnsStale)
	h.stack.learn("br-int", "192.168.1.1", "02:00:00:00:01:01", nlnsReachable)
	if ns, err := h.stack.Neighbors(ctx); err != nil || len(ns) != 0 {
		t.Fatalf("permanent neighbours before Sync: %v, %v; want none", ns, err)
	}
	if err := b.Sync(ctx, hostState()); err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(h.Take(), "\n") {
		if strings.Contains(l, "Neighbor") && l != "stack SetNeighbor 169.254.0.253 lladdr aa:bb:cc:dd:ee:ff dev seine-gw0" {
			t.Errorf("Sync touched a learned neighbour: %s", l)
		}
	}
	// The default route Setup moved to br-int leads to the learned router.
	if mac, fresh, err := b.NextHopMAC(ctx, addr("203.0.113.9")); err != nil || mac.String() != "02:00:00:00:01:01" || !fresh {
		t.Errorf("learned entry after Sync: %v fresh=%v %v", mac, fresh, err)
	}
}

// TestMibIpNetRow2Layout checks winapi.MibIpNetRow2 against MIB_IPNET_ROW2
// on 64-bit Windows (netioapi.h): GetIpNetEntry2 writes into it.
func TestMibIpNetRow2Layout(t *testing.T) {
	var r winapi.MibIpNetRow2
	for _, c := range []struct {
		field     string
		got, want uintptr
	}{
		{"size", unsafe.Sizeof(r), 88},
		{"InterfaceIndex", unsafe.Offsetof(r.InterfaceIndex), 28},
		{"InterfaceLuid", unsafe.Offsetof(r.InterfaceLuid), 32},
		{"PhysicalAddress", unsafe.Offsetof(r.PhysicalAddress), 40},
		{"PhysicalAddressLength", unsafe.Offsetof(r.PhysicalAddressLength), 72},
		{"State", unsafe.Offsetof(r.State), 76},
		{"Flags", unsafe.Offsetof(r.Flags), 80},
		{"ReachabilityTime", unsafe.Offsetof(r.ReachabilityTime), 84},
	} {
		if c.got != c.want {
			t.Errorf("MibIpNetRow2 %s: %d, want %d", c.field, c.got, c.want)
		}
	}
}
