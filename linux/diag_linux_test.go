package linux

import (
	"bytes"
	"net/netip"
	"strings"
	"testing"

	"github.com/seine-cni/seine/ovs/ovsdb"
	"github.com/seine-cni/seine/platform"
)

func TestCollect(t *testing.T) {
	requirePrivileges(t, "iptables-save")
	ctx := testCtx(t)
	d, db, _ := nodeWithUplink(t)
	node := d.NetNS()
	b := newBackend(t, node, db, ovsdb.DatapathNetdev, d.RunDir())
	st, err := b.Setup(ctx, platform.NodeConfig{Topology: platform.RoutedHost, Uplink: "eth0",
		GatewayIPs: []netip.Prefix{pfx("10.244.1.1/24")}})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Sync(ctx, platform.HostState{Gateway: st.Gateway.Name, PodCIDRs: []netip.Prefix{pfx("10.244.1.0/24")},
		PeerRoutes: []platform.PeerRoute{{PodCIDR: pfx("10.244.2.0/24"), NodeIP: ip("192.168.77.2")}}}); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := b.Collect(ctx, &buf); err != nil {
		t.Fatalf("Collect: %v\n%s", err, buf.String())
	}
	out := buf.String()
	mustContain(t, "diagnostics", out,
		"== links ==", "seine-gw0 tuntap mtu 1500 <UP>", "br-int tuntap mtu 1500 <UP,NOARP>", "inet 10.244.1.1/24 scope universe",
		"== routes (every table but local; proto 83 is Seine's) ==", "10.244.2.0/24 via 192.168.77.2 dev eth0 proto 83",
		"== rules ==", "32766: from all lookup 254",
		"== sysctls ==", "net.ipv4.ip_forward = 1",
		"== iptables-save -c (Seine's chains, [packets:bytes]) ==", "*nat", "] -A SEINE-POSTROUTING -s 10.244.1.0/24 ! -o seine-gw0",
		"== ovs-vswitchd ==", "ovs-vswitchd (Open vSwitch) 3.",
		"== ovs dpif/show ==", "netdev@ovs-netdev", "seine-gw0 1/",
		"== ovs ovs/route/show ==", "10.244.1.0/24 dev seine-gw0",
	)
	mustNotContain(t, "diagnostics", out, "error:")

	// Without ovs-vswitchd the rest is still collected and the error says what failed.
	b2 := newBackend(t, node, nil, ovsdb.DatapathNetdev, t.TempDir())
	buf.Reset()
	err = b2.Collect(ctx, &buf)
	if err == nil || !strings.Contains(err.Error(), "ovs-vswitchd") {
		t.Errorf("Collect without OVS: %v, want an ovs-vswitchd error", err)
	}
	mustContain(t, "diagnostics without OVS", buf.String(), "== links ==", "== iptables-save -c (Seine's chains, [packets:bytes]) ==", "error: ")
	mustNotContain(t, "diagnostics without OVS", buf.String(), "== ovs dpif/show ==")
}
