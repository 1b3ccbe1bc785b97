package linux

import (
	"fmt"
	"net"
	"net/netip"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/seine-cni/seine/platform"
)

// Pure helpers: no privileges needed.

func TestHostInterfaceName(t *testing.T) {
	ref := platform.PodRef{Namespace: "default", Name: "web-0", ContainerID: "c1", IfName: "eth0"}
	with := func(f func(*platform.PodRef)) platform.PodRef { r := ref; f(&r); return r }
	for _, tc := range []struct {
		ref    platform.PodRef
		prefix string
	}{
		{ref, "web-0-"},
		{with(func(r *platform.PodRef) { r.Name = "a-very-long-deployment-name-7d9f8b6c4-x2k8z" }), "a-very-l-"},
		{with(func(r *platform.PodRef) { r.Name = "Web_Server/..0" }), "webserve-"},
		{with(func(r *platform.PodRef) { r.Name = "___" }), "pod-"},
		{with(func(r *platform.PodRef) { r.Name = "abcdefg-h" }), "abcdefg-"},
	} {
		got := HostInterfaceName(tc.ref)
		if len(got) > 15 || !strings.HasPrefix(got, tc.prefix) || len(got) != len(tc.prefix)+6 {
			t.Errorf("HostInterfaceName(%q) = %q: want %q + 6 hex digits, at most 15 bytes", tc.ref.Name, got, tc.prefix)
		}
		if again := HostInterfaceName(tc.ref); again != got {
			t.Errorf("not deterministic: %q then %q", got, again)
		}
	}
	seen := map[string]string{}
	for _, r := range []platform.PodRef{
		ref,
		with(func(r *platform.PodRef) { r.ContainerID = "c2" }), // a second sandbox of the pod
		with(func(r *platform.PodRef) { r.IfName = "net1" }),    // a second interface
		with(func(r *platform.PodRef) { r.Namespace = "prod" }), // same name elsewhere
	} {
		n := HostInterfaceName(r)
		if prev, ok := seen[n]; ok {
			t.Errorf("%+v and %s share %s", r, prev, n)
		}
		seen[n] = fmt.Sprintf("%+v", r)
	}
}

func testState() platform.HostState {
	return platform.HostState{
		Gateway:       "seine-gw0",
		PodCIDRs:      []netip.Prefix{pfx("10.244.1.0/24"), pfx("fd00:10:244:1::/64")},
		ClusterCIDRs:  []netip.Prefix{pfx("10.244.0.0/16"), pfx("10.245.0.0/16"), pfx("fd00:10:244::/48")},
		SNATIPs:       []netip.Addr{ip("192.168.1.11")},
		NoHostIngress: []string{"eth0"},
	}
}

func TestRestoreInput(t *testing.T) {
	got := restoreInput(testState(), false, "")
	want := lines(
		"*nat",
		":SEINE-POSTROUTING - [0:0]",
		`-A SEINE-POSTROUTING -d 10.244.0.0/16 -m comment --comment "seine: no SNAT to cluster pods" -j RETURN`,
		`-A SEINE-POSTROUTING -d 10.245.0.0/16 -m comment --comment "seine: no SNAT to cluster pods" -j RETURN`,
		`-A SEINE-POSTROUTING -s 10.244.1.0/24 ! -o seine-gw0 -m comment --comment "seine: SNAT pods leaving the cluster" -j SNAT --to-source 192.168.1.11`,
		`-A POSTROUTING -m comment --comment "seine: SNAT pod traffic leaving the cluster" -j SEINE-POSTROUTING`,
		"COMMIT",
		"*filter",
		":SEINE-FORWARD - [0:0]",
		`-A SEINE-FORWARD -i seine-gw0 -m comment --comment "seine: from pods" -j ACCEPT`,
		`-A SEINE-FORWARD -o seine-gw0 -m comment --comment "seine: to pods" -j ACCEPT`,
		`-I FORWARD 1 -m comment --comment "seine: forward pod traffic" -j SEINE-FORWARD`,
		"COMMIT",
		"*raw",
		":SEINE-PREROUTING - [0:0]",
		`-A SEINE-PREROUTING -i eth0 -m comment --comment "seine: OVS userspace datapath port" -j DROP`,
		`-I PREROUTING 1 -m comment --comment "seine: frames the host stack must not process" -j SEINE-PREROUTING`,
		"COMMIT")
	if got != want {
		t.Errorf("IPv4 input:\n%s\nwant\n%s", got, want)
	}

	s := testState()
	s.NoSNAT = true
	s.Gateway = ""
	s.NoHostIngress = nil
	saved := lines("*nat", `-A POSTROUTING -m comment --comment "seine: SNAT pod traffic leaving the cluster" -j SEINE-POSTROUTING`, "COMMIT",
		"*filter", `-A FORWARD -m comment --comment "seine: forward pod traffic" -j SEINE-FORWARD`, "COMMIT",
		"*raw", `-A PREROUTING -m comment --comment "seine: frames the host stack must not process" -j SEINE-PREROUTING`, "COMMIT")
	got = restoreInput(s, true, saved)
	want = lines("*nat", ":SEINE-POSTROUTING - [0:0]", "COMMIT", "*filter", ":SEINE-FORWARD - [0:0]", "COMMIT",
		"*raw", ":SEINE-PREROUTING - [0:0]", "COMMIT")
	if got != want {
		t.Errorf("IPv6 input with no SNAT, no gateway, jumps in place:\n%s\nwant\n%s", got, want)
	}
}

func TestNATRulesPerFamily(t *testing.T) {
	s := testState()
	s.SNATIPs = nil
	got := strings.Join(natRules(s, true), "\n")
	want := `-A SEINE-POSTROUTING -d fd00:10:244::/48 -m comment --comment "seine: no SNAT to cluster pods" -j RETURN` + "\n" +
		`-A SEINE-POSTROUTING -s fd00:10:244:1::/64 ! -o seine-gw0 -m comment --comment "seine: SNAT pods leaving the cluster" -j MASQUERADE`
	if got != want {
		t.Errorf("IPv6 rules:\n%s\nwant\n%s", got, want)
	}
	s.PodCIDRs = s.PodCIDRs[:1]
	if r := natRules(s, true); r != nil {
		t.Errorf("no IPv6 pod CIDR but rules %v", r)
	}
}

func TestJumpFix(t *testing.T) {
	nat, fwd := jumps[0], jumps[1]
	current := `-A POSTROUTING -m comment --comment "seine: SNAT pod traffic leaving the cluster" -j SEINE-POSTROUTING`
	for _, tc := range []struct {
		name  string
		j     jump
		saved string
		want  []string
	}{
		{"nothing saved", nat, "", []string{current}},
		{"current jump", nat, lines("*nat", current, "COMMIT"), nil},
		{"duplicate", nat, lines("*nat", current, "-A POSTROUTING -s 1.2.3.0/24 -j MASQUERADE", current, "COMMIT"),
			[]string{"-D " + current[3:], "-D " + current[3:], current}},
		{"outdated comment", nat, lines("*nat", `-A POSTROUTING -m comment --comment "old" -j SEINE-POSTROUTING`, "COMMIT"),
			[]string{`-D POSTROUTING -m comment --comment "old" -j SEINE-POSTROUTING`, current}},
		{"same text in another table", nat, lines("*mangle", current, "COMMIT"), []string{current}},
		{"another chain's jump", nat, lines("*nat", "-A POSTROUTING -j SEINE-POSTROUTING-X", "-A OUTPUT -j SEINE-POSTROUTING", "COMMIT"),
			[]string{current}},
		{"forward is inserted first", fwd, lines("*filter", "-A FORWARD -j SEINE-FORWARD", "COMMIT"),
			[]string{"-D FORWARD -j SEINE-FORWARD", `-I FORWARD 1 -m comment --comment "seine: forward pod traffic" -j SEINE-FORWARD`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := jumpFix(tc.saved, tc.j); fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Errorf("jumpFix =\n%q\nwant\n%q", got, tc.want)
			}
		})
	}
}

func TestSeineRules(t *testing.T) {
	saved := lines("# Generated by iptables-save", "*nat", ":POSTROUTING ACCEPT [0:0]", ":SEINE-POSTROUTING - [0:0]",
		"-A POSTROUTING -s 172.17.0.0/16 -j MASQUERADE", "-A POSTROUTING -j SEINE-POSTROUTING", "COMMIT")
	if got, want := seineRules(saved), lines("*nat", ":SEINE-POSTROUTING - [0:0]", "-A POSTROUTING -j SEINE-POSTROUTING"); got != want {
		t.Errorf("seineRules:\n%s\nwant\n%s", got, want)
	}
}

func route(dst, gw string, link int, onlink bool) netlink.Route {
	r := netlink.Route{Dst: ipNet(pfx(dst)), LinkIndex: link, Protocol: RouteProtocol, Table: unix.RT_TABLE_MAIN}
	if gw != "" {
		r.Gw = ip(gw).AsSlice()
	} else {
		r.Scope = netlink.SCOPE_LINK
	}
	if onlink {
		r.Flags = unix.RTNH_F_ONLINK
	}
	return r
}

func routesText(rs []netlink.Route) string {
	var s []string
	for _, r := range rs {
		s = append(s, routeText(r))
	}
	return strings.Join(s, "; ")
}

func TestDesiredRoutes(t *testing.T) {
	s := platform.HostState{
		Gateway: "seine-gw0",
		PeerRoutes: []platform.PeerRoute{
			{PodCIDR: pfx("10.244.2.0/24"), NodeIP: ip("192.168.1.12")},
			{PodCIDR: pfx("10.244.3.0/24"), NodeIP: ip("192.168.2.13"), GatewayIP: ip("10.244.3.1")},
		},
		ServiceRoutes: []platform.ServiceRoute{
			{CIDR: pfx("10.96.0.0/12"), NextHop: ip("169.254.0.253")},
			{CIDR: pfx("fd00:10:96::/112")},
		},
		ServiceNextHopMAC: net.HardwareAddr{0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff},
	}
	if got, want := routesText(desiredRoutes(s, 7)),
		"10.244.2.0/24 via 192.168.1.12; 10.244.3.0/24 via 10.244.3.1 dev #7 onlink; "+
			"10.96.0.0/12 via 169.254.0.253 dev #7 onlink; fd00:10:96::/112 dev #7"; got != want {
		t.Errorf("with the gateway:\n%s\nwant\n%s", got, want)
	}
	if got, want := routesText(desiredRoutes(s, 0)), "10.244.2.0/24 via 192.168.1.12"; got != want {
		t.Errorf("without the gateway: %s, want %s", got, want)
	}
	for _, r := range desiredRoutes(s, 7) {
		if r.Protocol != RouteProtocol || r.Table != unix.RT_TABLE_MAIN {
			t.Errorf("route %s: protocol %d table %d", routeText(r), r.Protocol, r.Table)
		}
	}
	n := desiredNeighbours(s, 7)
	if len(n) != 1 || n[0].IP.String() != "169.254.0.253" || n[0].LinkIndex != 7 || n[0].State != netlink.NUD_PERMANENT {
		t.Errorf("neighbours %v", n)
	}
}

func TestPlanRoutes(t *testing.T) {
	peer := route("10.244.2.0/24", "192.168.1.12", 0, false)
	peerOnEth0 := route("10.244.2.0/24", "192.168.1.12", 3, false)
	enc := route("10.244.3.0/24", "10.244.3.1", 7, true)
	for _, tc := range []struct {
		name              string
		have, want        []netlink.Route
		replace, toDelete string
	}{
		{"in place (the kernel chose the device)", []netlink.Route{peerOnEth0, enc}, []netlink.Route{peer, enc}, "", ""},
		{"missing", []netlink.Route{enc}, []netlink.Route{peer, enc}, "10.244.2.0/24 via 192.168.1.12", ""},
		{"stale", []netlink.Route{peerOnEth0, enc}, []netlink.Route{enc}, "", "10.244.2.0/24 via 192.168.1.12 dev #3"},
		{"next hop changed", []netlink.Route{peerOnEth0}, []netlink.Route{route("10.244.2.0/24", "192.168.1.99", 0, false)},
			"10.244.2.0/24 via 192.168.1.99", ""},
		{"onlink lost", []netlink.Route{route("10.244.3.0/24", "10.244.3.1", 7, false)}, []netlink.Route{enc},
			"10.244.3.0/24 via 10.244.3.1 dev #7 onlink", ""},
		{"device changed", []netlink.Route{route("10.244.3.0/24", "10.244.3.1", 5, true)}, []netlink.Route{enc},
			"10.244.3.0/24 via 10.244.3.1 dev #7 onlink", ""},
		{"device route became a next hop", []netlink.Route{route("10.96.0.0/12", "", 7, false)},
			[]netlink.Route{route("10.96.0.0/12", "169.254.0.253", 7, true)}, "10.96.0.0/12 via 169.254.0.253 dev #7 onlink", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := planRoutes(tc.have, tc.want)
			if got := routesText(p.replace); got != tc.replace {
				t.Errorf("replace %q, want %q", got, tc.replace)
			}
			if got := routesText(p.del); got != tc.toDelete {
				t.Errorf("delete %q, want %q", got, tc.toDelete)
			}
		})
	}
}

func TestPlanNeighbours(t *testing.T) {
	vmac := net.HardwareAddr{0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff}
	want := []netlink.Neigh{*permanentNeigh(7, ip("169.254.0.253"), vmac)}
	stale := *permanentNeigh(7, ip("169.254.0.200"), vmac)
	learned := netlink.Neigh{LinkIndex: 7, IP: ip("10.244.1.5").AsSlice(), State: netlink.NUD_REACHABLE, HardwareAddr: vmac}
	otherMAC := *permanentNeigh(7, ip("169.254.0.253"), net.HardwareAddr{2, 0, 0, 0, 0, 1})

	p := planNeighbours(append([]netlink.Neigh{stale, learned}, want...), want)
	if len(p.set) != 0 || len(p.del) != 1 || p.del[0].IP.String() != "169.254.0.200" {
		t.Errorf("stale entry: %+v (a learned entry must be left alone)", p)
	}
	p = planNeighbours([]netlink.Neigh{otherMAC}, want)
	if len(p.set) != 1 || len(p.del) != 0 {
		t.Errorf("changed MAC: %+v", p)
	}
}

func TestRouteHelpers(t *testing.T) {
	if got := routeDst(netlink.Route{Family: netlink.FAMILY_V4}); got != pfx("0.0.0.0/0") {
		t.Errorf("IPv4 default: %v", got)
	}
	if got := routeDst(netlink.Route{Family: netlink.FAMILY_V6}); got != pfx("::/0") {
		t.Errorf("IPv6 default: %v", got)
	}
	if got := routeDst(netlink.Route{Gw: ip("fe80::1").AsSlice()}); got != pfx("::/0") {
		t.Errorf("default via an IPv6 gateway: %v", got)
	}
	for _, tc := range []struct {
		r    netlink.Route
		want bool
	}{
		{netlink.Route{Type: unix.RTN_UNICAST, Protocol: unix.RTPROT_BOOT, Gw: ip("192.168.1.1").AsSlice()}, true},
		{netlink.Route{Type: unix.RTN_UNICAST, Protocol: unix.RTPROT_STATIC, Dst: ipNet(pfx("10.99.0.0/16"))}, true},
		{netlink.Route{Type: unix.RTN_UNICAST, Protocol: unix.RTPROT_KERNEL, Dst: ipNet(pfx("192.168.1.0/24"))}, false},
		{netlink.Route{Type: unix.RTN_UNICAST, Protocol: unix.RTPROT_BOOT, Dst: ipNet(pfx("fe80::/64"))}, false},
		{netlink.Route{Type: unix.RTN_MULTICAST, Protocol: unix.RTPROT_BOOT, Dst: ipNet(pfx("ff00::/8"))}, false},
		{netlink.Route{Type: unix.RTN_UNICAST, Protocol: unix.RTPROT_BOOT, MultiPath: []*netlink.NexthopInfo{{}}}, false},
	} {
		if got := movableRoute(tc.r); got != tc.want {
			t.Errorf("movableRoute(%s proto %d) = %v", routeText(tc.r), tc.r.Protocol, got)
		}
	}
	if got := sysctlPath("net/ipv4/conf/eth0.100/rp_filter"); got != "/proc/sys/net/ipv4/conf/eth0.100/rp_filter" {
		t.Errorf("sysctlPath keeps dotted names: %s", got)
	}
	if got := sysctlPath("../../etc/passwd"); got != "/proc/sys/etc/passwd" {
		t.Errorf("sysctlPath escapes /proc/sys: %s", got)
	}
	if got := prefixOf(ipNet(pfx("10.244.1.5/24"))); got != pfx("10.244.1.5/24") {
		t.Errorf("prefix round trip: %v", got)
	}
}
