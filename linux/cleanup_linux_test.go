package linux

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/seine-cni/seine/ovs/ovsdb"
	"github.com/seine-cni/seine/platform"
)

// TestRemoveHostRules: after Sync and SyncNodePorts installed chains, jumps
// and routes in both families, RemoveHostRules leaves no SEINE- chain or
// jump and no route of Seine's, keeps what is not Seine's (the static route,
// the foreign MASQUERADE rule), and a second call finds nothing to do.
func TestRemoveHostRules(t *testing.T) {
	requirePrivileges(t, "iptables", "iptables-save", "ip6tables-save")
	ctx := testCtx(t)
	node := rulesNode(t)
	b := newBackend(t, node, nil, ovsdb.DatapathSystem, "")
	state := platform.HostState{
		Gateway:      "seine-gw0",
		PodCIDRs:     []netip.Prefix{pfx("10.244.1.0/24"), pfx("fd00:10:244:1::/64")},
		ClusterCIDRs: []netip.Prefix{pfx("10.244.0.0/16"), pfx("fd00:10:244::/48")},
		SNATIPs:      []netip.Addr{ip("192.168.1.11")},
		PeerRoutes: []platform.PeerRoute{
			{PodCIDR: pfx("10.244.2.0/24"), NodeIP: ip("192.168.1.12")},
			{PodCIDR: pfx("fd00:10:244:2::/64"), NodeIP: ip("fd00:1::12")},
		},
		ServiceRoutes: []platform.ServiceRoute{{CIDR: pfx("10.96.0.0/12")}},
		NoHostIngress: []string{"eth0"},
	}
	if err := b.Sync(ctx, state); err != nil {
		t.Fatal(err)
	}
	if err := b.SyncNodePorts(ctx, platform.NodePortState{Target: ip("10.244.1.1"), Ports: []platform.NodePort{{Protocol: 6, Port: 30080}}}); err != nil {
		t.Fatal(err)
	}
	all := func() string {
		return sh(t, node, "iptables-save") + sh(t, node, "ip6tables-save") +
			sh(t, node, "ip", "-4", "route", "show", "table", "main") + sh(t, node, "ip", "-6", "route", "show", "table", "main")
	}
	before := all()
	for _, want := range []string{"SEINE-POSTROUTING", "SEINE-FORWARD", "SEINE-PREROUTING", "SEINE-NODEPORTS", "SEINE-NODEPORTS-MASQ", "10.244.2.0/24", "fd00:10:244:2::/64", "10.96.0.0/12"} {
		if !strings.Contains(before, want) {
			t.Fatalf("setup: %s not installed:\n%s", want, before)
		}
	}
	for i := range 2 {
		if err := b.RemoveHostRules(ctx); err != nil {
			t.Fatalf("RemoveHostRules #%d: %v", i+1, err)
		}
		after := all()
		for _, gone := range []string{"SEINE-", "seine:", "10.244.2.0/24", "fd00:10:244:2::/64", "10.96.0.0/12", "proto 83"} {
			if strings.Contains(after, gone) {
				t.Errorf("after RemoveHostRules #%d %q is still there:\n%s", i+1, gone, after)
			}
		}
		for _, kept := range []string{"10.50.0.0/16 via 192.168.1.1", "-A POSTROUTING -s 172.17.0.0/16 -j MASQUERADE"} {
			if !strings.Contains(after, kept) {
				t.Errorf("after RemoveHostRules #%d %q (not Seine's) is gone:\n%s", i+1, kept, after)
			}
		}
	}
}

// TestRemoveInput: the restore input deletes every jump, duplicates
// included, before the chains; nothing for a host without Seine's rules.
func TestRemoveInput(t *testing.T) {
	saved := lines(
		"*nat",
		":POSTROUTING ACCEPT [0:0]",
		":SEINE-POSTROUTING - [0:0]",
		`-A POSTROUTING -m comment --comment "seine: SNAT pod traffic leaving the cluster" -j SEINE-POSTROUTING`,
		`-A POSTROUTING -m comment --comment "old comment" -j SEINE-POSTROUTING`,
		`-A SEINE-POSTROUTING -s 10.244.1.0/24 -j MASQUERADE`,
		"COMMIT",
		"*filter",
		":FORWARD ACCEPT [0:0]",
		"-A FORWARD -j ACCEPT",
		"COMMIT")
	want := lines(
		"*nat",
		`-D POSTROUTING -m comment --comment "seine: SNAT pod traffic leaving the cluster" -j SEINE-POSTROUTING`,
		`-D POSTROUTING -m comment --comment "old comment" -j SEINE-POSTROUTING`,
		"-F SEINE-POSTROUTING",
		"-X SEINE-POSTROUTING",
		"COMMIT")
	if got := removeInput(saved); got != want {
		t.Errorf("removeInput:\n%s\nwant:\n%s", got, want)
	}
	if got := removeInput(lines("*filter", ":FORWARD ACCEPT [0:0]", "-A FORWARD -j ACCEPT", "COMMIT")); got != "" {
		t.Errorf("removeInput of a host without Seine's rules: %q, want nothing", got)
	}
}
