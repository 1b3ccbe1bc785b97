package linux

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/seine-cni/seine/ovs/ovsdb"
	"github.com/seine-cni/seine/platform"
	"github.com/seine-cni/seine/test/ovsdaemon"
)

// nodeWithUplink starts an OVS in a fresh "node" netns and links it to a
// "peer" netns with a veth: eth0 (192.168.77.1/24, in the node) <->
// eth0 (192.168.77.2/24, in the peer). The node has a default route and a
// static route through the peer.
func nodeWithUplink(t *testing.T) (d *ovsdaemon.Daemon, db *ovsdb.Client, peer string) {
	t.Helper()
	d, db = startOVS(t)
	node := d.NetNS()
	peer = ovsdaemon.NewNetNS(t)
	sh(t, node, "ip", "link", "add", "eth0", "type", "veth", "peer", "name", "peer0")
	sh(t, node, "ip", "link", "set", "peer0", "netns", peer)
	sh(t, peer, "ip", "link", "set", "peer0", "name", "eth0")
	sh(t, node, "ip", "addr", "add", "192.168.77.1/24", "dev", "eth0")
	sh(t, node, "ip", "link", "set", "eth0", "up")
	sh(t, peer, "ip", "addr", "add", "192.168.77.2/24", "dev", "eth0")
	sh(t, peer, "ip", "link", "set", "eth0", "up")
	sh(t, node, "ip", "route", "add", "default", "via", "192.168.77.2", "dev", "eth0")
	sh(t, node, "ip", "route", "add", "10.99.0.0/16", "via", "192.168.77.254", "dev", "eth0", "proto", "static")
	return d, db, peer
}

// linkMAC reads a link's MAC with iproute2 (not /sys, which shows the
// namespace sysfs was mounted in).
func linkMAC(t *testing.T, netns, name string) string {
	t.Helper()
	f := strings.Fields(sh(t, netns, "ip", "-o", "link", "show", name))
	for i, w := range f {
		if w == "link/ether" && i+1 < len(f) {
			return f[i+1]
		}
	}
	t.Fatalf("no MAC for %s in %v", name, f)
	return ""
}

// nextCfg is the database's next_cfg, which every write by the OVSDB client bumps.
func nextCfg(t *testing.T, d *ovsdaemon.Daemon) string {
	t.Helper()
	out, err := d.Vsctl(context.Background(), "get", "Open_vSwitch", ".", "next_cfg")
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(out)
}

func vsctl(t *testing.T, d *ovsdaemon.Daemon, args ...string) string {
	t.Helper()
	out, err := d.Vsctl(context.Background(), args...)
	if err != nil {
		t.Fatalf("ovs-vsctl %s: %v", strings.Join(args, " "), err)
	}
	return strings.TrimSpace(out)
}

func TestSetupRoutedHost(t *testing.T) {
	requirePrivileges(t)
	ctx := testCtx(t)
	d, db, _ := nodeWithUplink(t)
	node := d.NetNS()
	b := newBackend(t, node, db, ovsdb.DatapathNetdev, d.RunDir())
	cfg := platform.NodeConfig{
		Topology:      platform.RoutedHost,
		NodeIPs:       []netip.Addr{ip("192.168.77.1")}, // finds eth0
		GatewayIPs:    []netip.Prefix{pfx("10.244.1.1/24"), pfx("fd00:10:244:1::1/64")},
		GatewayMAC:    net.HardwareAddr{0x02, 0x5e, 0, 0, 0, 0x01},
		EncapOverhead: 50,
	}
	st, err := b.Setup(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if st.Gateway.Name != "seine-gw0" || st.Gateway.OFPort <= 0 || st.Gateway.MAC.String() != "02:5e:00:00:00:01" ||
		!samePrefixes(st.Gateway.IPs, cfg.GatewayIPs) {
		t.Errorf("gateway state %+v", st.Gateway)
	}
	if st.Uplink.Name != "eth0" || st.Uplink.OFPort != 0 || !samePrefixes(st.NodeIPs, []netip.Prefix{pfx("192.168.77.1/24")}) {
		t.Errorf("uplink state %+v, node IPs %v", st.Uplink, st.NodeIPs)
	}
	if st.MTU != 1450 || st.UplinkMTU != 1500 || st.Host.Name != "" {
		t.Errorf("MTU %d, uplink MTU %d, host port %+v", st.MTU, st.UplinkMTU, st.Host)
	}
	gw := sh(t, node, "ip", "-o", "addr", "show", "dev", "seine-gw0")
	mustContain(t, "gateway addresses", gw, "inet 10.244.1.1/24", "inet6 fd00:10:244:1::1/64")
	mustContain(t, "gateway link", sh(t, node, "ip", "-o", "link", "show", "seine-gw0"), "mtu 1450", ",UP", "02:5e:00:00:00:01")
	mustContain(t, "uplink untouched", sh(t, node, "ip", "-o", "addr", "show", "dev", "eth0"), "inet 192.168.77.1/24")
	if got := vsctl(t, d, "get", "Interface", "seine-gw0", "mtu_request", "type"); got != "1450\ninternal" {
		t.Errorf("gateway interface mtu_request and type: %q", got)
	}
	if got := vsctl(t, d, "get", "Port", "seine-gw0", "external_ids:seine-type"); got != `"gateway"` && got != "gateway" {
		t.Errorf("gateway external_ids: %q", got)
	}
	if got := vsctl(t, d, "list-ports", "br-int"); got != "seine-gw0" {
		t.Errorf("ports of br-int: %q, want the gateway only", got)
	}
	// Every internal port is up (a down netdev tap makes ovs-vswitchd spin).
	mustContain(t, "bridge port", sh(t, node, "ip", "-o", "link", "show", "br-int"), "NOARP", ",UP")
	for key, want := range map[string]string{
		"net/ipv4/ip_forward":                    "1",
		"net/ipv6/conf/all/forwarding":           "1",
		"net/ipv4/conf/seine-gw0/rp_filter":      "2",
		"net/ipv4/conf/seine-gw0/route_localnet": "1",
		"net/ipv4/conf/eth0/rp_filter":           "0",
		"net/ipv4/conf/all/send_redirects":       "0",
		"net/ipv4/conf/seine-gw0/send_redirects": "0",
		"net/ipv6/conf/seine-gw0/forwarding":     "1",
	} {
		if got := strings.TrimSpace(sh(t, node, "cat", "/proc/sys/"+key)); got != want {
			t.Errorf("%s = %s, want %s", key, got, want)
		}
	}

	// Again: same state, no database write, no address change.
	cfgBefore, addrsBefore := nextCfg(t, d), sh(t, node, "ip", "-o", "addr")
	st2, err := b.Setup(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(st, st2) {
		t.Errorf("second Setup returned\n%+v\nfirst\n%+v", st2, st)
	}
	if got := nextCfg(t, d); got != cfgBefore {
		t.Errorf("second Setup wrote to the database (next_cfg %s -> %s)", cfgBefore, got)
	}
	if got := sh(t, node, "ip", "-o", "addr"); got != addrsBefore {
		t.Errorf("second Setup changed addresses:\n%s\n%s", addrsBefore, got)
	}

	// A changed gateway IP replaces the old one (whole desired state).
	cfg.GatewayIPs = []netip.Prefix{pfx("10.244.9.1/24")}
	if _, err := b.Setup(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	gw = sh(t, node, "ip", "-o", "addr", "show", "dev", "seine-gw0")
	mustContain(t, "new gateway address", gw, "inet 10.244.9.1/24")
	mustNotContain(t, "old gateway addresses", gw, "10.244.1.1", "fd00:10:244:1::1")
}

func TestSetupBridgedUplink(t *testing.T) {
	requirePrivileges(t)
	ctx := testCtx(t)
	d, db, peer := nodeWithUplink(t)
	node := d.NetNS()
	b := newBackend(t, node, db, ovsdb.DatapathNetdev, d.RunDir())
	uplinkMAC := linkMAC(t, node, "eth0")
	cfg := platform.NodeConfig{
		Topology:   platform.BridgedUplink,
		Uplink:     "eth0",
		GatewayIPs: []netip.Prefix{pfx("10.244.1.1/24")},
	}
	st, err := b.Setup(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if st.Uplink.Name != "eth0" || st.Uplink.OFPort <= 0 || st.Uplink.MAC.String() != uplinkMAC {
		t.Errorf("uplink state %+v (MAC want %s)", st.Uplink, uplinkMAC)
	}
	if st.Host.Name != "br-int" || st.Host.OFPort != platform.OFPortLocal || st.Host.MAC.String() != uplinkMAC {
		t.Errorf("host port state %+v (MAC want %s)", st.Host, uplinkMAC)
	}
	if !samePrefixes(st.NodeIPs, []netip.Prefix{pfx("192.168.77.1/24")}) || st.MTU != 1500 || st.Gateway.OFPort <= 0 {
		t.Errorf("node IPs %v, MTU %d, gateway %+v", st.NodeIPs, st.MTU, st.Gateway)
	}

	// The node's layer 3 is on br-int now, with the uplink's MAC.
	mustContain(t, "br-int", sh(t, node, "ip", "-o", "addr", "show", "dev", "br-int"), "inet 192.168.77.1/24")
	mustContain(t, "br-int link", sh(t, node, "ip", "-o", "link", "show", "br-int"), ",UP", "link/ether "+uplinkMAC, "mtu 1500")
	mustNotContain(t, "uplink addresses", sh(t, node, "ip", "-o", "addr", "show", "dev", "eth0"), "inet")
	mustContain(t, "uplink link", sh(t, node, "ip", "-o", "link", "show", "eth0"), "NOARP", ",UP")
	routes := sh(t, node, "ip", "route", "show")
	mustContain(t, "routes", routes, "default via 192.168.77.2 dev br-int", "10.99.0.0/16 via 192.168.77.254 dev br-int proto static",
		"192.168.77.0/24 dev br-int proto kernel scope link src 192.168.77.1")
	mustNotContain(t, "routes", routes, "dev eth0")
	ports := vsctl(t, d, "list-ports", "br-int")
	if ports != "eth0\nseine-gw0" {
		t.Errorf("ports of br-int: %q", ports)
	}

	// With a NORMAL flow, the node reaches the peer through OVS.
	if out, err := d.Ofctl(ctx, "-O", "OpenFlow15", "add-flow", "br-int", "actions=NORMAL"); err != nil {
		t.Fatalf("add flow: %v\n%s", err, out)
	}
	// The peer sends into OVS's AF_PACKET socket: checksums must be complete.
	doIn(t, peer, func() error { return setTxChecksum("eth0", false) })
	tcpRoundTrip(t, node, peer, "192.168.77.2:7777")
	flows, err := d.Ofctl(ctx, "-O", "OpenFlow15", "dump-flows", "br-int")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(flows, "n_packets=0,") || !strings.Contains(flows, "actions=NORMAL") {
		t.Errorf("the round trip did not go through the bridge:\n%s", flows)
	}

	// Again: nothing left to move, nothing written.
	before := nextCfg(t, d)
	st2, err := b.Setup(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(st, st2) {
		t.Errorf("second Setup returned\n%+v\nfirst\n%+v", st2, st)
	}
	if got := nextCfg(t, d); got != before {
		t.Errorf("second Setup wrote to the database (next_cfg %s -> %s)", before, got)
	}
	if got := sh(t, node, "ip", "route", "show"); got != routes {
		t.Errorf("second Setup changed routes:\n%s\n%s", routes, got)
	}

	// Teardown gives the uplink its layer 3 back.
	if err := b.Teardown(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	mustContain(t, "uplink after teardown", sh(t, node, "ip", "-o", "addr", "show", "dev", "eth0"), "inet 192.168.77.1/24")
	mustNotContain(t, "uplink after teardown", sh(t, node, "ip", "-o", "link", "show", "eth0"), "NOARP")
	routes = sh(t, node, "ip", "route", "show")
	mustContain(t, "routes after teardown", routes, "default via 192.168.77.2 dev eth0", "10.99.0.0/16 via 192.168.77.254 dev eth0")
	mustNotContain(t, "routes after teardown", routes, "br-int")
	if got := vsctl(t, d, "list-ports", "br-int"); got != "" {
		t.Errorf("ports of br-int after teardown: %q", got)
	}
	tcpRoundTrip(t, node, peer, "192.168.77.2:7778") // straight over the veth again
}

// tcpRoundTrip listens on addr in the netns listenNS, dials it from dialNS
// and checks that a message comes back.
func tcpRoundTrip(t *testing.T, dialNS, listenNS, addr string) {
	t.Helper()
	var ln net.Listener
	doIn(t, listenNS, func() (err error) { ln, err = net.Listen("tcp", addr); return err })
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		_, _ = io.Copy(c, io.LimitReader(c, 5))
	}()
	var conn net.Conn
	doIn(t, dialNS, func() (err error) {
		conn, err = (&net.Dialer{Timeout: 10 * time.Second}).Dial("tcp", addr)
		return err
	})
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := conn.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 5)
	if _, err := io.ReadFull(conn, got); err != nil || !bytes.Equal(got, []byte("hello")) {
		t.Fatalf("echo over %s: got %q, %v", addr, got, err)
	}
}

func TestSetupErrors(t *testing.T) {
	requirePrivileges(t)
	ctx := testCtx(t)
	node := ovsdaemon.NewNetNS(t)
	for _, tc := range []struct {
		name    string
		db      platform.OVSDB
		cfg     platform.NodeConfig
		wantErr string
	}{
		{"invalid config", nil, platform.NodeConfig{Topology: platform.BridgedUplink}, "uplink is required"},
		{"no OVSDB", nil, platform.NodeConfig{Topology: platform.RoutedHost, Uplink: "lo",
			GatewayIPs: []netip.Prefix{pfx("10.244.1.1/24")}}, "no OVSDB client"},
		{"missing uplink", fakeDB{}, platform.NodeConfig{Topology: platform.BridgedUplink, Uplink: "eth9",
			GatewayIPs: []netip.Prefix{pfx("10.244.1.1/24")}}, "uplink eth9 in netns"},
		{"no interface with the node IP", fakeDB{}, platform.NodeConfig{Topology: platform.RoutedHost,
			NodeIPs: []netip.Addr{ip("192.0.2.1")}, GatewayIPs: []netip.Prefix{pfx("10.244.1.1/24")}}, "holds a node IP"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := newBackend(t, node, tc.db, ovsdb.DatapathNetdev, "")
			_, err := b.Setup(ctx, tc.cfg)
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("Setup error %v, want one containing %q", err, tc.wantErr)
			}
		})
	}
}

// fakeDB fails every call: Setup must not get that far in TestSetupErrors.
type fakeDB struct{ platform.OVSDB }

func (fakeDB) EnsureBridge(context.Context, ovsdb.BridgeConfig) error {
	return fmt.Errorf("unexpected EnsureBridge")
}
