package linux

import (
	"net"
	"net/netip"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/seine-cni/seine/ovs/ovsdb"
	"github.com/seine-cni/seine/platform"
	"github.com/seine-cni/seine/test/ovsdaemon"
)

// rulesNode makes a node netns with an uplink eth0 (192.168.1.11/24,
// fd00:1::11/64) and a gateway seine-gw0 (10.244.1.1/24), both veths (the
// kernel here has no dummy links), plus things that are not Seine's and must
// survive every Sync: a static route and a MASQUERADE rule in POSTROUTING.
func rulesNode(t testing.TB) string {
	t.Helper()
	node := ovsdaemon.NewNetNS(t)
	for _, c := range [][]string{
		{"ip", "link", "add", "eth0", "type", "veth", "peer", "name", "eth0-peer"},
		{"ip", "link", "add", "seine-gw0", "type", "veth", "peer", "name", "gw-peer"},
		{"ip", "addr", "add", "192.168.1.11/24", "dev", "eth0"},
		{"ip", "addr", "add", "fd00:1::11/64", "dev", "eth0", "nodad"},
		{"ip", "addr", "add", "10.244.1.1/24", "dev", "seine-gw0"},
		{"ip", "link", "set", "eth0", "up"}, {"ip", "link", "set", "eth0-peer", "up"},
		{"ip", "link", "set", "seine-gw0", "up"}, {"ip", "link", "set", "gw-peer", "up"},
		{"ip", "route", "add", "10.50.0.0/16", "via", "192.168.1.1", "proto", "static"},
		{"iptables", "-t", "nat", "-A", "POSTROUTING", "-s", "172.17.0.0/16", "-j", "MASQUERADE"},
	} {
		sh(t, node, c...)
	}
	return node
}

// saveTable is iptables-save of one table without comments and counters.
func saveTable(t *testing.T, netns, prog, table string) string {
	t.Helper()
	var b strings.Builder
	for line := range strings.Lines(sh(t, netns, prog, "-t", table)) {
		if strings.HasPrefix(line, "#") {
			continue
		}
		b.WriteString(line)
	}
	return b.String()
}

func lines(ls ...string) string { return strings.Join(ls, "\n") + "\n" }

func TestSyncHostRules(t *testing.T) {
	requirePrivileges(t, "iptables", "iptables-save", "ip6tables-save")
	ctx := testCtx(t)
	node := rulesNode(t)
	b := newBackend(t, node, nil, ovsdb.DatapathSystem, "")
	vmac := net.HardwareAddr{0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff}
	state := platform.HostState{
		Gateway:      "seine-gw0",
		PodCIDRs:     []netip.Prefix{pfx("10.244.1.0/24"), pfx("fd00:10:244:1::/64")},
		ClusterCIDRs: []netip.Prefix{pfx("10.244.0.0/16"), pfx("fd00:10:244::/48")},
		SNATIPs:      []netip.Addr{ip("192.168.1.11")},
		PeerRoutes: []platform.PeerRoute{
			{PodCIDR: pfx("10.244.2.0/24"), NodeIP: ip("192.168.1.12")},
			{PodCIDR: pfx("10.244.3.0/24"), NodeIP: ip("192.168.2.13"), GatewayIP: ip("10.244.3.1")},
			{PodCIDR: pfx("fd00:10:244:2::/64"), NodeIP: ip("fd00:1::12")},
		},
		ServiceRoutes: []platform.ServiceRoute{
			{CIDR: pfx("10.96.0.0/12"), NextHop: ip("169.254.0.253")},
			{CIDR: pfx("fd00:10:96::/112")},
		},
		ServiceNextHopMAC: vmac,
	}
	natV4 := lines(
		"*nat",
		":PREROUTING ACCEPT [0:0]",
		":INPUT ACCEPT [0:0]",
		":OUTPUT ACCEPT [0:0]",
		":POSTROUTING ACCEPT [0:0]",
		":SEINE-POSTROUTING - [0:0]",
		"-A POSTROUTING -s 172.17.0.0/16 -j MASQUERADE",
		`-A POSTROUTING -m comment --comment "seine: SNAT pod traffic leaving the cluster" -j SEINE-POSTROUTING`,
		`-A SEINE-POSTROUTING -d 10.244.0.0/16 -m comment --comment "seine: no SNAT to cluster pods" -j RETURN`,
		`-A SEINE-POSTROUTING -s 10.244.1.0/24 ! -o seine-gw0 -m comment --comment "seine: SNAT pods leaving the cluster" -j SNAT --to-source 192.168.1.11`,
		"COMMIT")
	natV6 := lines(
		"*nat",
		":PREROUTING ACCEPT [0:0]",
		":INPUT ACCEPT [0:0]",
		":OUTPUT ACCEPT [0:0]",
		":POSTROUTING ACCEPT [0:0]",
		":SEINE-POSTROUTING - [0:0]",
		`-A POSTROUTING -m comment --comment "seine: SNAT pod traffic leaving the cluster" -j SEINE-POSTROUTING`,
		`-A SEINE-POSTROUTING -d fd00:10:244::/48 -m comment --comment "seine: no SNAT to cluster pods" -j RETURN`,
		`-A SEINE-POSTROUTING -s fd00:10:244:1::/64 ! -o seine-gw0 -m comment --comment "seine: SNAT pods leaving the cluster" -j MASQUERADE`,
		"COMMIT")
	filter := lines(
		"*filter",
		":INPUT ACCEPT [0:0]",
		":FORWARD ACCEPT [0:0]",
		":OUTPUT ACCEPT [0:0]",
		":SEINE-FORWARD - [0:0]",
		`-A FORWARD -m comment --comment "seine: forward pod traffic" -j SEINE-FORWARD`,
		`-A SEINE-FORWARD -i seine-gw0 -m comment --comment "seine: from pods" -j ACCEPT`,
		`-A SEINE-FORWARD -o seine-gw0 -m comment --comment "seine: to pods" -j ACCEPT`,
		"COMMIT")
	routesV4 := lines(
		"10.96.0.0/12 via 169.254.0.253 dev seine-gw0 onlink ",
		"10.244.2.0/24 via 192.168.1.12 dev eth0 ",
		"10.244.3.0/24 via 10.244.3.1 dev seine-gw0 onlink ")
	routesV6 := lines(
		"fd00:10:96::/112 dev seine-gw0 metric 1024 pref medium",
		"fd00:10:244:2::/64 via fd00:1::12 dev eth0 metric 1024 pref medium")
	// pending fails if Sync left anything for the next Sync with s to do:
	// a route or neighbour it would rewrite is one it does not recognise.
	pending := func(step string, s platform.HostState) {
		t.Helper()
		gw, err := b.host.nl.LinkByName("seine-gw0")
		if err != nil {
			t.Fatal(err)
		}
		idx := gw.Attrs().Index
		have, err := b.host.nl.RouteListFiltered(netlink.FAMILY_ALL, &netlink.Route{Protocol: RouteProtocol, Table: unix.RT_TABLE_MAIN},
			netlink.RT_FILTER_PROTOCOL|netlink.RT_FILTER_TABLE)
		if err != nil {
			t.Fatal(err)
		}
		if p := planRoutes(have, desiredRoutes(s, idx)); len(p.replace)+len(p.del) > 0 {
			t.Errorf("%s: the next Sync would replace %v and delete %v", step, p.replace, p.del)
		}
		neighs, err := b.host.nl.NeighList(idx, netlink.FAMILY_ALL)
		if err != nil {
			t.Fatal(err)
		}
		if p := planNeighbours(neighs, desiredNeighbours(s, idx)); len(p.set)+len(p.del) > 0 {
			t.Errorf("%s: the next Sync would set neighbours %v and delete %v", step, p.set, p.del)
		}
		// A resync of the same state runs no iptables-restore.
		for _, fam := range []iptablesFamily{familyV4, familyV6} {
			if !upToDate(s, fam.ipv6, sh(t, node, fam.save)) {
				t.Errorf("%s: the next Sync would run %s", step, fam.restore)
			}
		}
	}
	check := func(step, natV4, natV6, filter, routesV4, routesV6, neigh string) {
		t.Helper()
		for _, c := range []struct{ what, got, want string }{
			{"iptables nat", saveTable(t, node, "iptables-save", "nat"), natV4},
			{"ip6tables nat", saveTable(t, node, "ip6tables-save", "nat"), natV6},
			{"iptables filter", saveTable(t, node, "iptables-save", "filter"), filter},
			{"ip6tables filter", saveTable(t, node, "ip6tables-save", "filter"), filter},
			{"IPv4 routes", sh(t, node, "ip", "-4", "route", "show", "proto", "83"), routesV4},
			{"IPv6 routes", sh(t, node, "ip", "-6", "route", "show", "proto", "83"), routesV6},
			{"neighbours", sh(t, node, "ip", "neigh", "show", "nud", "permanent"), neigh},
		} {
			if c.got != c.want {
				t.Errorf("%s: %s:\n--- got\n%s--- want\n%s", step, c.what, c.got, c.want)
			}
		}
		mustContain(t, step+": foreign route", sh(t, node, "ip", "route", "show"), "10.50.0.0/16 via 192.168.1.1 dev eth0 proto static")
	}
	neigh := "169.254.0.253 dev seine-gw0 lladdr aa:bb:cc:dd:ee:ff PERMANENT \n"

	if err := b.Sync(ctx, state); err != nil {
		t.Fatal(err)
	}
	check("first sync", natV4, natV6, filter, routesV4, routesV6, neigh)
	pending("first sync", state)

	// The same state again: identical rules, and iptables-save prints the
	// jumps exactly as Sync renders them, so nothing would be rewritten.
	if err := b.Sync(ctx, state); err != nil {
		t.Fatal(err)
	}
	check("second sync", natV4, natV6, filter, routesV4, routesV6, neigh)
	for _, prog := range []string{"iptables-save", "ip6tables-save"} {
		saved := sh(t, node, prog)
		for _, j := range jumps {
			if fix := jumpFix(saved, j); fix != nil {
				t.Errorf("%s: jump %s -> %s would be rewritten: %v", prog, j.chain, j.target, fix)
			}
		}
	}

	// Duplicated and outdated jumps (another agent version, a manual edit)
	// are reduced to one current jump.
	sh(t, node, "iptables", "-t", "nat", "-A", "POSTROUTING", "-m", "comment", "--comment", "seine: SNAT pod traffic leaving the cluster", "-j", ChainPostrouting)
	sh(t, node, "iptables", "-t", "nat", "-I", "POSTROUTING", "-m", "comment", "--comment", "old seine", "-j", ChainPostrouting)
	sh(t, node, "iptables", "-I", "FORWARD", "-j", ChainForward)
	// A rule Sync did not make, in Seine's chain, is gone after it.
	sh(t, node, "iptables", "-t", "nat", "-A", ChainPostrouting, "-s", "10.9.9.0/24", "-j", "MASQUERADE")
	sh(t, node, "ip", "route", "add", "10.244.200.0/24", "via", "192.168.1.200", "proto", "83")
	if err := b.Sync(ctx, state); err != nil {
		t.Fatal(err)
	}
	check("sync after tampering", natV4, natV6, filter, routesV4, routesV6, neigh)
	pending("sync after tampering", state)

	// Someone flushes Seine's NAT chain, deletes its jump or a route
	// (iptables -t nat -F, a careless script): the next Sync of the same
	// state (the agent's periodic resync) puts them back.
	sh(t, node, "iptables", "-t", "nat", "-F", ChainPostrouting)
	sh(t, node, "ip6tables", "-D", "FORWARD", "-m", "comment", "--comment", "seine: forward pod traffic", "-j", ChainForward)
	sh(t, node, "ip", "route", "del", "10.244.2.0/24")
	for _, fam := range []iptablesFamily{familyV4, familyV6} {
		if upToDate(state, fam.ipv6, sh(t, node, fam.save)) {
			t.Errorf("tampered rules look up to date to %s", fam.save)
		}
	}
	if err := b.Sync(ctx, state); err != nil {
		t.Fatal(err)
	}
	check("sync after a flush", natV4, natV6, filter, routesV4, routesV6, neigh)
	pending("sync after a flush", state)

	// A changed state: one peer gone, SNAT by masquerade, the service next
	// hop dropped (a device route instead), one peer moved to a new node.
	changed := state
	changed.SNATIPs = nil
	changed.PeerRoutes = []platform.PeerRoute{
		{PodCIDR: pfx("10.244.3.0/24"), NodeIP: ip("192.168.1.13")},
	}
	changed.ServiceRoutes = []platform.ServiceRoute{{CIDR: pfx("10.96.0.0/12")}}
	if err := b.Sync(ctx, changed); err != nil {
		t.Fatal(err)
	}
	check("changed state",
		strings.Replace(natV4, "-j SNAT --to-source 192.168.1.11", "-j MASQUERADE", 1), natV6, filter,
		lines("10.96.0.0/12 dev seine-gw0 scope link ", "10.244.3.0/24 via 192.168.1.13 dev eth0 "), "", "")
	pending("changed state", changed)

	// The empty state removes everything of Seine's but the (empty) chains and their jumps.
	if err := b.Sync(ctx, platform.HostState{}); err != nil {
		t.Fatal(err)
	}
	emptyNAT := func(nat string) string {
		var keep []string
		for _, l := range strings.Split(strings.TrimSuffix(nat, "\n"), "\n") {
			if !strings.HasPrefix(l, "-A SEINE-") {
				keep = append(keep, l)
			}
		}
		return lines(keep...)
	}
	check("empty state", emptyNAT(natV4), emptyNAT(natV6), emptyNAT(filter), "", "", "")
	pending("empty state", platform.HostState{})
}

// TestSyncNoHostIngress checks the raw-table drop that keeps the host stack
// from processing frames OVS's userspace datapath already took, and that a
// later state without it empties the chain.
func TestSyncNoHostIngress(t *testing.T) {
	requirePrivileges(t, "iptables", "iptables-save", "ip6tables-save")
	ctx := testCtx(t)
	node := rulesNode(t)
	b := newBackend(t, node, nil, ovsdb.DatapathNetdev, "")
	state := platform.HostState{Gateway: "seine-gw0", NoHostIngress: []string{"eth0"}}
	raw := lines(
		"*raw",
		":PREROUTING ACCEPT [0:0]",
		":OUTPUT ACCEPT [0:0]",
		":SEINE-PREROUTING - [0:0]",
		`-A PREROUTING -m comment --comment "seine: frames the host stack must not process" -j SEINE-PREROUTING`,
		`-A SEINE-PREROUTING -i eth0 -m comment --comment "seine: OVS userspace datapath port" -j DROP`,
		"COMMIT")
	for _, step := range []string{"first sync", "second sync"} {
		if err := b.Sync(ctx, state); err != nil {
			t.Fatal(err)
		}
		for _, prog := range []string{"iptables-save", "ip6tables-save"} {
			if got := saveTable(t, node, prog, "raw"); got != raw {
				t.Errorf("%s, %s -t raw:\n%s\nwant\n%s", step, prog, got, raw)
			}
		}
	}
	if err := b.Sync(ctx, platform.HostState{Gateway: "seine-gw0"}); err != nil {
		t.Fatal(err)
	}
	empty := strings.Replace(raw, `-A SEINE-PREROUTING -i eth0 -m comment --comment "seine: OVS userspace datapath port" -j DROP`+"\n", "", 1)
	if got := saveTable(t, node, "iptables-save", "raw"); got != empty {
		t.Errorf("after a state without it, -t raw:\n%s\nwant\n%s", got, empty)
	}
}

func TestSyncReportsMissingGateway(t *testing.T) {
	requirePrivileges(t, "iptables-save")
	ctx := testCtx(t)
	node := rulesNode(t)
	b := newBackend(t, node, nil, ovsdb.DatapathSystem, "")
	err := b.Sync(ctx, platform.HostState{
		Gateway:    "seine-gw9",
		PeerRoutes: []platform.PeerRoute{{PodCIDR: pfx("10.244.2.0/24"), NodeIP: ip("192.168.1.12")}},
	})
	if err == nil || !strings.Contains(err.Error(), "gateway seine-gw9") {
		t.Errorf("Sync error %v, want the missing gateway reported", err)
	}
	// What does not need the gateway is still applied.
	if got := sh(t, node, "ip", "route", "show", "proto", "83"); got != "10.244.2.0/24 via 192.168.1.12 dev eth0 \n" {
		t.Errorf("routes: %q", got)
	}
}
