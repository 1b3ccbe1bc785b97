package platformtest

import (
	"bytes"
	"context"
	"errors"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/seine-cni/seine/ovs/ovsdb"
	"github.com/seine-cni/seine/platform"
)

var ctx = context.Background()

func pfx(s string) netip.Prefix { return netip.MustParsePrefix(s) }
func ip(s string) netip.Addr    { return netip.MustParseAddr(s) }

func text(lines ...string) string { return strings.Join(lines, "\n") }

func equal(t *testing.T, what, got, want string) {
	t.Helper()
	if got != want {
		t.Errorf("%s:\n--- got\n%s\n--- want\n%s", what, got, want)
	}
}

func TestFakeOVSDB(t *testing.T) {
	db := NewFakeOVSDB()
	steps := []func() error{
		func() error {
			return db.EnsureBridge(ctx, ovsdb.BridgeConfig{Name: "br-int", DatapathType: ovsdb.DatapathNetdev})
		},
		func() error {
			return db.EnsureBridge(ctx, ovsdb.BridgeConfig{Name: "br-int", DatapathType: ovsdb.DatapathNetdev})
		},
		func() error {
			return db.EnsurePort(ctx, "br-int", ovsdb.PortConfig{Name: "seine-gw0", Type: ovsdb.TypeInternal, MTURequest: 1450})
		},
		func() error { return db.EnsurePort(ctx, "br-int", ovsdb.PortConfig{Name: "eth0", OFPortRequest: 7}) },
		func() error { return db.EnsurePort(ctx, "br-int", ovsdb.PortConfig{Name: "eth0", OFPortRequest: 7}) },
		func() error {
			return db.EnsurePort(ctx, "br-int", ovsdb.PortConfig{Name: "vethpod", ExternalIDs: map[string]string{"pod": "a/b"}})
		},
		func() error { return db.EnsurePort(ctx, "br-missing", ovsdb.PortConfig{Name: "x"}) },
		func() error { return db.DeletePort(ctx, "vethpod") },
		func() error { return db.DeletePort(ctx, "vethpod") },
	}
	var errs []error
	for _, step := range steps {
		errs = append(errs, step())
	}
	if !errors.Is(errs[6], ovsdb.ErrBridgeNotFound) {
		t.Errorf("port on a missing bridge: %v, want ErrBridgeNotFound", errs[6])
	}
	equal(t, "log", db.Log(), text(
		"EnsureBridge br-int datapath=netdev (created)",
		"EnsureBridge br-int datapath=netdev (no change)",
		"EnsurePort br-int seine-gw0 type=internal mtu_request=1450 (created ofport 1)",
		"EnsurePort br-int eth0 type=system ofport_request=7 (created ofport 7)",
		"EnsurePort br-int eth0 type=system ofport_request=7 (no change)",
		"EnsurePort br-int vethpod type=system external_ids={pod=a/b} (created ofport 2)",
		"EnsurePort br-missing x type=system: error: no bridge",
		"DeletePort vethpod",
		"DeletePort vethpod (no change)",
	))
	equal(t, "dump", db.Dump(), text(
		"bridge br-int datapath=netdev",
		"  port br-int ofport=65534 type=internal",
		"  port eth0 ofport=7 type=system ofport_request=7",
		"  port seine-gw0 ofport=1 type=internal mtu_request=1450",
		""))
	info, err := db.GetPort(ctx, "seine-gw0")
	if err != nil || info.Bridge != "br-int" || info.OFPort != 1 || info.MAC == "" {
		t.Errorf("GetPort = %+v, %v", info, err)
	}
	if _, err := db.GetPort(ctx, "vethpod"); !errors.Is(err, ovsdb.ErrPortNotFound) {
		t.Errorf("GetPort of a deleted port: %v, want ErrPortNotFound", err)
	}
	ifErr := &ovsdb.InterfaceError{Interface: "eth0", Text: "could not open network device eth0 (No such device)"}
	db.FailNext("PortOfport", ifErr)
	if _, err := db.PortOfport(ctx, "eth0"); !errors.As(err, new(*ovsdb.InterfaceError)) {
		t.Errorf("injected PortOfport error: %v", err)
	}
	if n, err := db.PortOfport(ctx, "eth0"); n != 7 || err != nil {
		t.Errorf("PortOfport after the fault = %d, %v; want 7", n, err)
	}
}

func TestFakeNodeNetwork(t *testing.T) {
	gwIPs := []netip.Prefix{pfx("10.244.1.1/24")}
	for _, tc := range []struct {
		name     string
		cfg      platform.NodeConfig
		wantLog  string
		wantDump string
		wantOVS  string
	}{{
		name: "routed host finds the uplink by node IP",
		cfg: platform.NodeConfig{Topology: platform.RoutedHost, NodeIPs: []netip.Addr{ip("192.168.1.11")},
			GatewayIPs: gwIPs, EncapOverhead: 50},
		wantLog: text(
			"Setup RoutedHost bridge=br-int gateway=seine-gw0[10.244.1.1/24] uplink= mtu=0 overhead=50",
			"Setup RoutedHost bridge=br-int gateway=seine-gw0[10.244.1.1/24] uplink= mtu=0 overhead=50 (no change)"),
		wantDump: text(
			"RoutedHost bridge=br-int mtu=1450 uplink_mtu=1500 node_ips=192.168.1.11/24",
			"gateway seine-gw0 ofport=1 mac=02:00:00:00:00:01 ips=10.244.1.1/24",
			"uplink eth0 ofport=0 mac=02:00:00:00:e0:00 ips=192.168.1.11/24",
			""),
		wantOVS: text(
			"bridge br-int",
			"  port br-int ofport=65534 type=internal",
			"  port seine-gw0 ofport=1 type=internal mtu_request=1450 external_ids={seine-type=gateway}",
			""),
	}, {
		name: "bridged uplink moves the node IP to the bridge port",
		cfg: platform.NodeConfig{Topology: platform.BridgedUplink, Uplink: "eth0", GatewayIPs: gwIPs,
			GatewayMAC: net.HardwareAddr{2, 0, 0, 0, 0, 1}},
		wantLog: text(
			"Setup BridgedUplink bridge=br-int gateway=seine-gw0[10.244.1.1/24] uplink=eth0 mtu=0 overhead=0",
			"Setup BridgedUplink bridge=br-int gateway=seine-gw0[10.244.1.1/24] uplink=eth0 mtu=0 overhead=0 (no change)"),
		wantDump: text(
			"BridgedUplink bridge=br-int mtu=1500 uplink_mtu=1500 node_ips=192.168.1.11/24",
			"gateway seine-gw0 ofport=1 mac=02:00:00:00:00:01 ips=10.244.1.1/24",
			"uplink eth0 ofport=2 mac=02:00:00:00:e0:00 ips=",
			"host br-int ofport=65534 mac=02:00:00:00:e0:00 ips=192.168.1.11/24",
			""),
		wantOVS: text(
			"bridge br-int other_config={hwaddr=02:00:00:00:e0:00}",
			"  port br-int ofport=65534 type=internal",
			"  port eth0 ofport=2 type=system external_ids={seine-type=uplink}",
			"  port seine-gw0 ofport=1 type=internal mtu_request=1500 external_ids={seine-type=gateway}",
			""),
	}} {
		t.Run(tc.name, func(t *testing.T) {
			db := NewFakeOVSDB()
			n := NewFakeNodeNetwork(db, pfx("192.168.1.11/24"))
			for range 2 {
				if _, err := n.Setup(ctx, tc.cfg); err != nil {
					t.Fatal(err)
				}
			}
			equal(t, "log", n.Log(), tc.wantLog)
			equal(t, "dump", n.Dump(), tc.wantDump)
			equal(t, "ovsdb", db.Dump(), tc.wantOVS)
			if strings.Count(db.Log(), "(no change)") < 2 {
				t.Errorf("second Setup changed the database:\n%s", db.Log())
			}
		})
	}
}

func TestFakeNodeNetworkErrors(t *testing.T) {
	n := NewFakeNodeNetwork(nil)
	_, err := n.Setup(ctx, platform.NodeConfig{Topology: platform.BridgedUplink, Uplink: "eth9",
		GatewayIPs: []netip.Prefix{pfx("10.244.1.1/24")}})
	if err == nil || !strings.Contains(err.Error(), `uplink "eth9" not found`) {
		t.Errorf("missing uplink: %v", err)
	}
	_, err = n.Setup(ctx, platform.NodeConfig{Topology: platform.BridgedUplink, Uplink: "eth0"})
	if err == nil || !strings.Contains(err.Error(), "no gateway IP") {
		t.Errorf("invalid config: %v", err)
	}
	if n.Dump() != "" {
		t.Errorf("failed setups left state:\n%s", n.Dump())
	}
}

func pod(name, cid string) platform.PodNetwork {
	return platform.PodNetwork{
		PodRef: platform.PodRef{Namespace: "default", Name: name, ContainerID: cid, IfName: "eth0", NetNS: "/run/netns/" + name},
		IPs:    []netip.Prefix{pfx("10.244.1.5/24")}, Gateways: []netip.Addr{ip("10.244.1.1")}, MTU: 1450,
	}
}

func TestFakePodAttacher(t *testing.T) {
	a := NewFakePodAttacher()
	web := pod("web", "c1")
	moved := web
	moved.IPs = []netip.Prefix{pfx("10.244.1.6/24")}
	boom := errors.New("boom")
	for _, step := range []struct {
		do      func() error
		wantErr error // nil: success; matched with errors.Is
	}{
		{func() error { _, err := a.Attach(ctx, web); return err }, nil},
		{func() error { _, err := a.Attach(ctx, web); return err }, nil},
		{func() error { return a.Check(ctx, web) }, nil},
		{func() error { return a.Check(ctx, pod("db", "c2")) }, ErrPodNotAttached},
		{func() error { a.FailNext("Attach", boom); _, err := a.Attach(ctx, pod("db", "c2")); return err }, boom},
		{func() error { _, err := a.Attach(ctx, pod("db", "c2")); return err }, nil},
		{func() error { return a.Detach(ctx, web.PodRef) }, nil},
		{func() error { return a.Detach(ctx, web.PodRef) }, nil},
	} {
		if err := step.do(); !errors.Is(err, step.wantErr) {
			t.Errorf("error %v, want %v", err, step.wantErr)
		}
	}
	if err := a.Check(ctx, moved); err == nil {
		t.Error("Check of a detached pod succeeded")
	}
	hweb, hdb := HostName(web.PodRef), HostName(pod("db", "c2").PodRef)
	if len(hweb) > 15 || hweb == hdb {
		t.Errorf("host names %q %q: want distinct, at most 15 bytes", hweb, hdb)
	}
	webText := "default/web (container c1, eth0) netns=/run/netns/web ips=10.244.1.5/24 gw=10.244.1.1 routes=[0.0.0.0/0 via 10.244.1.1] mtu=1450"
	dbText := "default/db (container c2, eth0) netns=/run/netns/db ips=10.244.1.5/24 gw=10.244.1.1 routes=[0.0.0.0/0 via 10.244.1.1] mtu=1450"
	equal(t, "log", a.Log(), text(
		"Attach "+webText+" -> "+hweb,
		"Attach "+webText+" (no change)",
		"Check default/web (container c1, eth0): ok",
		"Check default/db (container c2, eth0): error: check default/db (container c2, eth0): pod not attached",
		"Attach "+dbText+": error: boom",
		"Attach "+dbText+" -> "+hdb,
		"Detach default/web (container c1, eth0)",
		"Detach default/web (container c1, eth0) (no change)",
		"Check default/web (container c1, eth0): error: check default/web (container c1, eth0): pod not attached",
	))
	equal(t, "dump", a.Dump(), dbText+" host="+hdb+" mac="+fakeMAC(hdb+"/eth0").String()+"\n")
}

// TestFakeLatePodInterface: a late attachment's device is absent until its
// sandbox starts, so its port has ofport -1 and OVS's error; the device
// appearing changes nothing until the port's interface row changes.
func TestFakeLatePodInterface(t *testing.T) {
	db := NewFakeOVSDB()
	a := NewFakePodAttacher()
	a.Late, a.PortType, a.Devices = true, ovsdb.TypeInternal, db
	if err := db.EnsureBridge(ctx, ovsdb.BridgeConfig{Name: "br-int"}); err != nil {
		t.Fatal(err)
	}
	pod := pod("web", "c1")
	pod.NetNS = "8d9a3c2e-1111-4e5f-9a0b-0123456789ab"
	iface, err := a.Attach(ctx, pod)
	if err != nil || !iface.Late {
		t.Fatalf("Attach = %+v, %v; want a late interface", iface, err)
	}
	if ready, err := a.PodInterfaceReady(ctx, pod.PodRef, iface); ready || err != nil {
		t.Errorf("ready before the sandbox started: %v, %v", ready, err)
	}
	if err := db.EnsurePort(ctx, "br-int", ovsdb.PortConfig{Name: iface.HostName}); err != nil {
		t.Fatal(err)
	}
	var ie *ovsdb.InterfaceError
	if _, err := db.PortOfport(ctx, iface.HostName); !errors.As(err, &ie) || !strings.Contains(err.Error(), "No such device") {
		t.Errorf("PortOfport of an absent device: %v, want an InterfaceError", err)
	}
	a.StartSandbox(pod.PodRef)
	if ready, err := a.PodInterfaceReady(ctx, pod.PodRef, iface); !ready || err != nil {
		t.Errorf("ready after the sandbox started: %v, %v", ready, err)
	}
	if info, _ := db.GetPort(ctx, iface.HostName); info.OFPort != -1 || info.Error == "" {
		t.Errorf("port after the device appeared, its row unchanged: ofport %d error %q; want -1 and the error", info.OFPort, info.Error)
	}
	if err := db.EnsurePort(ctx, "br-int", ovsdb.PortConfig{Name: iface.HostName, Type: ovsdb.TypeInternal}); err != nil {
		t.Fatal(err)
	}
	if n, err := db.PortOfport(ctx, iface.HostName); n <= 0 || err != nil {
		t.Errorf("PortOfport once the row changed: %d, %v", n, err)
	}
	a.RemoveNetNS(pod.NetNS)
	if err := a.Check(ctx, pod); !errors.Is(err, platform.ErrNoNetNS) {
		t.Errorf("Check with the namespace gone: %v, want ErrNoNetNS", err)
	}
	other := pod
	other.ContainerID = "c2"
	if _, err := a.Attach(ctx, other); !errors.Is(err, platform.ErrNoNetNS) {
		t.Errorf("Attach into a namespace that is gone: %v, want ErrNoNetNS", err)
	}
	if err := a.Detach(ctx, pod.PodRef); err != nil {
		t.Fatal(err)
	}
	if _, err := a.PodInterfaceReady(ctx, pod.PodRef, iface); !errors.Is(err, ErrPodNotAttached) {
		t.Errorf("PodInterfaceReady after Detach: %v, want ErrPodNotAttached", err)
	}
}

func TestFakeHostRules(t *testing.T) {
	mac := net.HardwareAddr{0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff}
	base := platform.HostState{
		Gateway:      "seine-gw0",
		PodCIDRs:     []netip.Prefix{pfx("10.244.1.0/24")},
		ClusterCIDRs: []netip.Prefix{pfx("10.244.0.0/16")},
		SNATIPs:      []netip.Addr{ip("192.168.1.11")},
		PeerRoutes: []platform.PeerRoute{
			{PodCIDR: pfx("10.244.2.0/24"), NodeIP: ip("192.168.1.12")},
			{PodCIDR: pfx("10.244.3.0/24"), NodeIP: ip("192.168.2.13"), GatewayIP: ip("10.244.3.1")},
		},
		ServiceRoutes:     []platform.ServiceRoute{{CIDR: pfx("10.96.0.0/12"), NextHop: ip("169.254.0.253")}},
		ServiceNextHopMAC: mac,
	}
	changed := base
	changed.PeerRoutes = base.PeerRoutes[1:]
	changed.SNATIPs = nil
	h := NewFakeHostRules()
	for _, s := range []platform.HostState{base, base, changed} {
		if err := h.Sync(ctx, s); err != nil {
			t.Fatal(err)
		}
	}
	if err := h.Sync(ctx, platform.HostState{PodCIDRs: []netip.Prefix{pfx("10.244.1.1/24")}}); err == nil {
		t.Error("invalid state accepted")
	}
	equal(t, "log", h.Log(), text(
		"Sync: +neigh 169.254.0.253 lladdr aa:bb:cc:dd:ee:ff dev seine-gw0; +route 10.244.2.0/24 via 192.168.1.12; "+
			"+route 10.244.3.0/24 via 10.244.3.1 dev seine-gw0 onlink; +route 10.96.0.0/12 via 169.254.0.253 dev seine-gw0 onlink; "+
			"+snat 10.244.1.0/24 to 192.168.1.11 except 10.244.0.0/16 and out seine-gw0",
		"Sync (no change)",
		"Sync: -route 10.244.2.0/24 via 192.168.1.12; -snat 10.244.1.0/24 to 192.168.1.11 except 10.244.0.0/16 and out seine-gw0; "+
			"+snat 10.244.1.0/24 masquerade except 10.244.0.0/16 and out seine-gw0",
		"Sync: error: host state: pod CIDR 10.244.1.1/24: want a network prefix",
	))
	equal(t, "dump", h.Dump(), text(
		"neigh 169.254.0.253 lladdr aa:bb:cc:dd:ee:ff dev seine-gw0",
		"route 10.244.3.0/24 via 10.244.3.1 dev seine-gw0 onlink",
		"route 10.96.0.0/12 via 169.254.0.253 dev seine-gw0 onlink",
		"snat 10.244.1.0/24 masquerade except 10.244.0.0/16 and out seine-gw0",
		""))
}

// TestFakeHostRulesTamper: a rule removed behind the fake's back comes back
// with the next Sync of the same state; watchers hear of it only when asked.
func TestFakeHostRulesTamper(t *testing.T) {
	s := platform.HostState{Gateway: "seine-gw0", PodCIDRs: []netip.Prefix{pfx("10.244.1.0/24")},
		PeerRoutes: []platform.PeerRoute{{PodCIDR: pfx("10.244.2.0/24"), NodeIP: ip("192.168.1.12")}}}
	h := NewFakeHostRules()
	if err := h.Sync(ctx, s); err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithCancel(ctx)
	notified := make(chan struct{}, 10)
	done := make(chan error, 1)
	go func() { done <- h.WatchHostRules(wctx, func() { notified <- struct{}{} }) }()
	for {
		h.mu.Lock()
		n := len(h.watchers)
		h.mu.Unlock()
		if n == 1 {
			break
		}
		time.Sleep(time.Millisecond)
	}
	const route = "route 10.244.2.0/24 via 192.168.1.12"
	if !h.Tamper(route, false) || h.Tamper(route, false) {
		t.Error("Tamper: want true for a rule the host has, then false")
	}
	if len(notified) != 0 {
		t.Error("a quiet Tamper notified the watcher")
	}
	if !h.Tamper("snat 10.244.1.0/24 masquerade except out seine-gw0", true) || len(notified) != 1 {
		t.Errorf("Tamper with notify: %d notifications, want 1", len(notified))
	}
	if err := h.Sync(ctx, s); err != nil {
		t.Fatal(err)
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("WatchHostRules after its context ended: %v", err)
	}
	equal(t, "log", h.Log(), text(
		"Sync: +route 10.244.2.0/24 via 192.168.1.12; +snat 10.244.1.0/24 masquerade except out seine-gw0",
		"Sync: +route 10.244.2.0/24 via 192.168.1.12; +snat 10.244.1.0/24 masquerade except out seine-gw0"))
	h.NoWatch = true
	if err := h.WatchHostRules(ctx, func() {}); !errors.Is(err, platform.ErrNotSupported) {
		t.Errorf("WatchHostRules with NoWatch: %v, want ErrNotSupported", err)
	}
}

func TestFakeBackend(t *testing.T) {
	b := NewFakeBackend(pfx("192.168.1.11/24"))
	var be platform.Backend = b
	b.Text = "links: ...\n"
	var buf bytes.Buffer
	if err := be.Collect(ctx, &buf); err != nil || buf.String() != "links: ...\n" {
		t.Errorf("Collect wrote %q, %v", buf.String(), err)
	}
	b.FakeDiagnostics.FailNext("Collect", platform.NotSupported("OVS state"))
	if err := be.Collect(ctx, &buf); !errors.Is(err, platform.ErrNotSupported) {
		t.Errorf("injected Collect error: %v", err)
	}
	equal(t, "diagnostics log", b.FakeDiagnostics.Log(), text("Collect",
		"Collect: error: OVS state: not supported on this platform: unsupported operation"))
	if err := be.Close(); err != nil || !b.Closed {
		t.Errorf("Close: %v, closed %v", err, b.Closed)
	}
}
