package windows

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/seine-cni/seine/platform"
)

var (
	pfx  = netip.MustParsePrefix
	addr = netip.MustParseAddr
	vmac = net.HardwareAddr{0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff}
)

func hostState() platform.HostState {
	return platform.HostState{
		Gateway:      "seine-gw0",
		PodCIDRs:     []netip.Prefix{pfx("10.244.1.0/24")},
		ClusterCIDRs: []netip.Prefix{pfx("10.244.0.0/16")},
		SNATIPs:      []netip.Addr{addr("192.168.1.11")},
		PeerRoutes: []platform.PeerRoute{
			{PodCIDR: pfx("10.244.2.0/24"), NodeIP: addr("192.168.1.12"), GatewayIP: addr("10.244.2.1")},
			{PodCIDR: pfx("10.244.3.0/24"), NodeIP: addr("192.168.1.13")},
		},
		ServiceRoutes:     []platform.ServiceRoute{{CIDR: pfx("10.96.0.0/12"), NextHop: addr("169.254.0.253")}},
		ServiceNextHopMAC: vmac,
		NoHostIngress:     []string{"Ethernet0"},
	}
}

// routesOf renders the table without the routes Setup made, which Sync
// must leave alone.
func routesOf(h *host) string {
	var out []string
	for _, l := range strings.Split(h.stack.dumpRoutes(), "\n") {
		if strings.HasSuffix(l, "metric 83") {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

func TestSync(t *testing.T) {
	ctx := context.Background()
	h, b := setUpNode(t)
	foreign := h.stack.dumpRoutes()
	s := hostState()
	if err := b.Sync(ctx, s); err != nil {
		t.Fatal(err)
	}
	diff(t, "host calls", h.Take(), `
stack AddRoute 10.244.2.0/24 via 10.244.2.1 dev seine-gw0 metric 83
stack AddRoute 10.244.3.0/24 via 192.168.1.13 dev br-int metric 83
stack AddRoute 10.96.0.0/12 via 169.254.0.253 dev seine-gw0 metric 83
stack SetNeighbor 169.254.0.253 lladdr aa:bb:cc:dd:ee:ff dev seine-gw0
nat AddNAT seine-10.244.1.0_24 internal 10.244.1.0/24 external 192.168.1.11/32`)

	// The same state again changes nothing, also in a restarted agent.
	if err := b.Sync(ctx, s); err != nil {
		t.Fatal(err)
	}
	diff(t, "host calls of the second Sync", h.Take(), "")
	if err := h.backend(t).Sync(ctx, s); err != nil {
		t.Fatal(err)
	}
	diff(t, "host calls after a restart", h.Take(), "")

	// Someone deletes one of Seine's routes and its WinNAT instance: the
	// agent's next resync, the same state, puts back exactly those.
	h.stack.routes = slices.DeleteFunc(h.stack.routes, func(r ipRoute) bool { return r.Dst == pfx("10.244.3.0/24") })
	h.nat.rules = nil
	if err := b.Sync(ctx, s); err != nil {
		t.Fatal(err)
	}
	diff(t, "host calls of a resync after tampering", h.Take(), `
stack AddRoute 10.244.3.0/24 via 192.168.1.13 dev br-int metric 83
nat AddNAT seine-10.244.1.0_24 internal 10.244.1.0/24 external 192.168.1.11/32`)

	// A peer moves to noEncap, another leaves, a service route turns into a
	// device route, SNAT without a fixed address.
	s.PeerRoutes = []platform.PeerRoute{{PodCIDR: pfx("10.244.2.0/24"), NodeIP: addr("192.168.1.12")}}
	s.ServiceRoutes = []platform.ServiceRoute{{CIDR: pfx("10.96.0.0/12")}}
	s.SNATIPs = nil
	if err := b.Sync(ctx, s); err != nil {
		t.Fatal(err)
	}
	diff(t, "host calls of the changed Sync", h.Take(), `
stack AddRoute 10.244.2.0/24 via 192.168.1.12 dev br-int metric 83
stack AddRoute 10.96.0.0/12 on-link dev seine-gw0 metric 83
stack DeleteRoute 10.244.2.0/24 via 10.244.2.1 dev seine-gw0 metric 83
stack DeleteRoute 10.244.3.0/24 via 192.168.1.13 dev br-int metric 83
stack DeleteRoute 10.96.0.0/12 via 169.254.0.253 dev seine-gw0 metric 83
stack DeleteNeighbor 169.254.0.253 dev seine-gw0
nat RemoveNAT seine-10.244.1.0_24
nat AddNAT seine-10.244.1.0_24 internal 10.244.1.0/24`)
	diff(t, "Seine's routes", routesOf(h), `
10.244.2.0/24 via 192.168.1.12 dev br-int metric 83
10.96.0.0/12 on-link dev seine-gw0 metric 83`)

	// The empty state removes everything Seine made and nothing else.
	if err := b.Sync(ctx, platform.HostState{}); err != nil {
		t.Fatal(err)
	}
	diff(t, "host calls of the empty Sync", h.Take(), `
stack DeleteRoute 10.244.2.0/24 via 192.168.1.12 dev br-int metric 83
stack DeleteRoute 10.96.0.0/12 on-link dev seine-gw0 metric 83
nat RemoveNAT seine-10.244.1.0_24`)
	diff(t, "routes after the empty Sync", h.stack.dumpRoutes(), foreign)
}

func TestSyncLeavesOthersAlone(t *testing.T) {
	ctx := context.Background()
	h, b := setUpNode(t)
	gw, _ := findInterface(h.stack.ifs, "seine-gw0")
	// An admin's route to the same CIDR with another metric, a stale Seine
	// route, an admin's NAT, a stale Seine NAT, a foreign neighbour on
	// another interface and a stale one on the gateway.
	h.stack.routes = append(h.stack.routes,
		ipRoute{Dst: pfx("10.244.2.0/24"), NextHop: addr("192.168.1.1"), IfIndex: 11, Metric: 5},
		ipRoute{Dst: pfx("10.244.9.0/24"), NextHop: addr("10.244.9.1"), IfIndex: gw.Index, Metric: RouteMetric})
	h.nat.rules = []natRule{{Name: "docker", Internal: pfx("172.17.0.0/16")}, {Name: "seine-10.244.7.0_24", Internal: pfx("10.244.7.0/24")}}
	h.stack.neighbors = []ipNeighbor{{IfIndex: 11, IP: addr("192.168.1.50"), MAC: vmac}, {IfIndex: gw.Index, IP: addr("169.254.0.1"), MAC: vmac}}
	if err := b.Sync(ctx, hostState()); err != nil {
		t.Fatal(err)
	}
	diff(t, "host calls", h.Take(), `
stack AddRoute 10.244.2.0/24 via 10.244.2.1 dev seine-gw0 metric 83
stack AddRoute 10.244.3.0/24 via 192.168.1.13 dev br-int metric 83
stack AddRoute 10.96.0.0/12 via 169.254.0.253 dev seine-gw0 metric 83
stack DeleteRoute 10.244.9.0/24 via 10.244.9.1 dev seine-gw0 metric 83
stack SetNeighbor 169.254.0.253 lladdr aa:bb:cc:dd:ee:ff dev seine-gw0
stack DeleteNeighbor 169.254.0.1 dev seine-gw0
nat RemoveNAT seine-10.244.7.0_24
nat AddNAT seine-10.244.1.0_24 internal 10.244.1.0/24 external 192.168.1.11/32`)
	if !strings.Contains(h.stack.dumpRoutes(), "10.244.2.0/24 via 192.168.1.1 dev Ethernet0 metric 5") {
		t.Errorf("the admin's route is gone:\n%s", h.stack.dumpRoutes())
	}
	if len(h.nat.rules) != 2 || h.nat.rules[0].Name != "docker" {
		t.Errorf("NAT rules %v, want docker's kept", h.nat.rules)
	}
}

func TestSyncPartialFailures(t *testing.T) {
	ctx := context.Background()
	t.Run("a failing route does not stop the rest", func(t *testing.T) {
		h, b := setUpNode(t)
		h.FailNext("AddRoute", errors.New("element not found"))
		err := b.Sync(ctx, hostState())
		if err == nil || !strings.Contains(err.Error(), "add route 10.244.2.0/24 via 10.244.2.1") {
			t.Fatalf("Sync: %v", err)
		}
		log := h.Take()
		if !strings.Contains(log, "nat AddNAT seine-10.244.1.0_24") || !strings.Contains(log, "stack AddRoute 10.96.0.0/12") {
			t.Errorf("the rest was not applied:\n%s", log)
		}
		if err := b.Sync(ctx, hostState()); err != nil {
			t.Fatalf("the next Sync: %v", err)
		}
		diff(t, "the next Sync redoes the failed route", h.Take(), "stack AddRoute 10.244.2.0/24 via 10.244.2.1 dev seine-gw0 metric 83")
	})
	t.Run("missing gateway", func(t *testing.T) {
		h := freshNode()
		err := h.backend(t).Sync(ctx, hostState())
		if err == nil || !strings.Contains(err.Error(), `gateway interface "seine-gw0": no such interface`) {
			t.Fatalf("Sync: %v", err)
		}
		diff(t, "what could be applied was", h.Take(), `
stack AddRoute 10.244.3.0/24 via 192.168.1.13 dev Ethernet0 metric 83
nat AddNAT seine-10.244.1.0_24 internal 10.244.1.0/24 external 192.168.1.11/32`)
	})
	t.Run("IPv6 SNAT", func(t *testing.T) {
		h, b := setUpNode(t)
		s := hostState()
		s.PodCIDRs = append(s.PodCIDRs, pfx("fd00:10:244:1::/64"))
		err := b.Sync(ctx, s)
		if !errors.Is(err, platform.ErrNotSupported) || !strings.Contains(err.Error(), "fd00:10:244:1::/64") {
			t.Fatalf("Sync: %v, want ErrNotSupported naming the IPv6 pod CIDR", err)
		}
		if !strings.Contains(h.Take(), "nat AddNAT seine-10.244.1.0_24") {
			t.Error("the IPv4 SNAT was not applied")
		}
	})
	t.Run("invalid state", func(t *testing.T) {
		h, b := setUpNode(t)
		s := hostState()
		s.ServiceNextHopMAC = nil
		if err := b.Sync(ctx, s); err == nil {
			t.Fatal("Sync accepted a service next hop without a MAC")
		}
		diff(t, "host calls", h.Take(), "")
	})
	t.Run("no SNAT", func(t *testing.T) {
		h, b := setUpNode(t)
		s := hostState()
		s.NoSNAT = true
		if err := b.Sync(ctx, s); err != nil {
			t.Fatal(err)
		}
		if log := h.Take(); strings.Contains(log, "nat ") {
			t.Errorf("NAT touched with NoSNAT:\n%s", log)
		}
	})
}

func TestPlanRoutes(t *testing.T) {
	r := func(dst, nh string, idx, metric uint32) ipRoute {
		var a netip.Addr
		if nh != "" {
			a = addr(nh)
		}
		return ipRoute{Dst: pfx(dst), NextHop: a, IfIndex: idx, Metric: metric}
	}
	desired := []ipRoute{r("10.0.1.0/24", "10.0.1.1", 5, 83), r("10.0.2.0/24", "", 5, 83), r("10.0.2.0/24", "", 5, 83)}
	current := []ipRoute{
		r("10.0.2.0/24", "0.0.0.0", 5, 83), // on-link, as the table reports it
		r("10.0.3.0/24", "10.0.3.1", 5, 83),
		r("10.0.1.0/24", "10.0.1.1", 5, 0), // not Seine's
	}
	add, del := planRoutes(desired, current)
	if len(add) != 1 || add[0].String() != "10.0.1.0/24 via 10.0.1.1 if 5 metric 83" {
		t.Errorf("add %v", add)
	}
	if len(del) != 1 || del[0].String() != "10.0.3.0/24 via 10.0.3.1 if 5 metric 83" {
		t.Errorf("del %v", del)
	}
}

// TestWatchHostRules: a route deleted behind Seine's back is reported, and
// the resync that follows puts it back.
func TestWatchHostRules(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	h, b := setUpNode(t)
	s := hostState()
	if err := b.Sync(ctx, s); err != nil {
		t.Fatal(err)
	}
	h.Take()
	notes := make(chan struct{}, 10)
	done := make(chan error, 1)
	go func() { done <- b.WatchHostRules(ctx, func() { notes <- struct{}{} }) }()
	for h.stack.watching() == 0 {
		time.Sleep(time.Millisecond)
	}
	h.stack.deleteRouteBehindBack(pfx("10.244.2.0/24"))
	select {
	case <-notes:
	case <-time.After(5 * time.Second):
		t.Fatal("a deleted route was not reported")
	}
	if err := b.Sync(ctx, s); err != nil {
		t.Fatal(err)
	}
	diff(t, "host calls of the resync", h.Take(), `
stack AddRoute 10.244.2.0/24 via 10.244.2.1 dev seine-gw0 metric 83`)
	cancel()
	if err := <-done; err != nil {
		t.Errorf("WatchHostRules after its context ended: %v", err)
	}
}
