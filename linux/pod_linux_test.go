package linux

import (
	"errors"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"

	"github.com/seine-cni/seine/ovs/ovsdb"
	"github.com/seine-cni/seine/platform"
	"github.com/seine-cni/seine/test/ovsdaemon"
)

var gwMAC = net.HardwareAddr{0x02, 0, 0, 0, 0, 0x01}

func testPod(netns string) platform.PodNetwork {
	return platform.PodNetwork{
		PodRef: platform.PodRef{Namespace: "default", Name: "web-0",
			ContainerID: "4f2d8c1e9a7b6c5d4e3f2a1b0c9d8e7f", IfName: "eth0", NetNS: netns},
		IPs:        []netip.Prefix{pfx("10.244.1.5/24"), pfx("fd00:10:244:1::5/64")},
		Gateways:   []netip.Addr{ip("10.244.1.1"), ip("fd00:10:244:1::1")},
		GatewayMAC: gwMAC,
		Routes:     nil, // default routes via the gateways
		MTU:        1450,
	}
}

func TestAttachConfiguresBothEnds(t *testing.T) {
	requirePrivileges(t, "ethtool")
	ctx := testCtx(t)
	node, podNS := ovsdaemon.NewNetNS(t), ovsdaemon.NewNetNS(t)
	b := newBackend(t, node, nil, ovsdb.DatapathNetdev, "")
	pod := testPod(podNS)
	pod.Routes = []platform.Route{{Dst: pfx("0.0.0.0/0")}, {Dst: pfx("::/0")}, {Dst: pfx("172.30.0.0/16"), Via: ip("10.244.1.254")}}

	iface, err := b.Attach(ctx, pod)
	if err != nil {
		t.Fatal(err)
	}
	host := HostInterfaceName(pod.PodRef)
	if iface.HostName != host || iface.PortType != ovsdb.TypeSystem || len(iface.MAC) != 6 || len(iface.HostMAC) != 6 {
		t.Errorf("Attach returned %+v; want host %s, type system, both MACs", iface, host)
	}

	// The host end, as iproute2 sees it in the node's namespace.
	hostLink := sh(t, node, "ip", "-o", "link", "show", host)
	mustContain(t, "host end", hostLink, "NOARP", "mtu 1450", "LOWER_UP")
	mustContain(t, "host end link-netns", hostLink, host+"@if")
	if v := strings.TrimSpace(sh(t, node, "cat", "/proc/sys/net/ipv6/conf/"+host+"/disable_ipv6")); v != "1" {
		t.Errorf("disable_ipv6 of %s = %s, want 1", host, v)
	}
	mustNotContain(t, "host end addresses", sh(t, node, "ip", "-o", "addr", "show", "dev", host), "inet")

	// The pod end.
	mustContain(t, "pod link", sh(t, podNS, "ip", "-o", "link", "show", "eth0"), "mtu 1450", "UP", "link/ether "+iface.MAC.String())
	mustContain(t, "pod addresses", sh(t, podNS, "ip", "-o", "addr", "show", "dev", "eth0"),
		"inet 10.244.1.5/24", "inet6 fd00:10:244:1::5/64")
	mustContain(t, "pod IPv4 routes", sh(t, podNS, "ip", "-4", "route", "show"),
		"default via 10.244.1.1 dev eth0", "10.244.1.0/24 dev eth0", "172.30.0.0/16 via 10.244.1.254 dev eth0")
	mustContain(t, "pod IPv6 routes", sh(t, podNS, "ip", "-6", "route", "show"), "default via fd00:10:244:1::1 dev eth0")
	mustContain(t, "pod neighbours", sh(t, podNS, "ip", "neigh", "show", "nud", "permanent"),
		"10.244.1.1 dev eth0 lladdr 02:00:00:00:00:01 PERMANENT",
		"fd00:10:244:1::1 dev eth0 lladdr 02:00:00:00:00:01 PERMANENT")
	mustContain(t, "pod offloads", sh(t, podNS, "ethtool", "-k", "eth0"), "tx-checksumming: off")

	if err := b.Check(ctx, pod); err != nil {
		t.Errorf("Check after Attach: %v", err)
	}

	// Attach again: nothing is recreated.
	before := sh(t, node, "ip", "-o", "link", "show", host)
	again, err := b.Attach(ctx, pod)
	if err != nil {
		t.Fatal(err)
	}
	if again.MAC.String() != iface.MAC.String() || again.HostMAC.String() != iface.HostMAC.String() {
		t.Errorf("second Attach returned MACs %s/%s, first %s/%s", again.MAC, again.HostMAC, iface.MAC, iface.HostMAC)
	}
	if after := sh(t, node, "ip", "-o", "link", "show", host); after != before {
		t.Errorf("second Attach changed the host end:\n%s\n%s", before, after)
	}

	// Drift is reported by Check and repaired by Attach.
	sh(t, podNS, "ip", "route", "del", "default")
	sh(t, podNS, "ip", "link", "set", "eth0", "mtu", "1400")
	err = b.Check(ctx, pod)
	if err == nil {
		t.Fatal("Check passed with the default route gone and the MTU changed")
	}
	mustContain(t, "Check error", err.Error(), "no route 0.0.0.0/0 via 10.244.1.1", "eth0 has MTU 1400, want 1450")
	if _, err := b.Attach(ctx, pod); err != nil {
		t.Fatal(err)
	}
	if err := b.Check(ctx, pod); err != nil {
		t.Errorf("Check after the repairing Attach: %v", err)
	}

	// Detach removes both ends; again is no error.
	if err := b.Detach(ctx, pod.PodRef); err != nil {
		t.Fatal(err)
	}
	if got := linkNamesIn(t, node); got != "lo" {
		t.Errorf("node links after Detach: %s, want lo", got)
	}
	if got := linkNamesIn(t, podNS); got != "lo" {
		t.Errorf("pod links after Detach: %s, want lo", got)
	}
	if err := b.Detach(ctx, pod.PodRef); err != nil {
		t.Errorf("second Detach: %v", err)
	}
	if err := b.Check(ctx, pod); err == nil || !strings.Contains(err.Error(), "host interface "+host+": Link not found") {
		t.Errorf("Check after Detach: %v, want a not-found error", err)
	}
}

func TestAttachSystemDatapathKeepsOffload(t *testing.T) {
	requirePrivileges(t, "ethtool")
	ctx := testCtx(t)
	node, podNS := ovsdaemon.NewNetNS(t), ovsdaemon.NewNetNS(t)
	b := newBackend(t, node, nil, ovsdb.DatapathSystem, "")
	pod := testPod(podNS)
	pod.IPs, pod.Gateways, pod.GatewayMAC, pod.MTU = pod.IPs[:1], pod.Gateways[:1], nil, 0
	pod.MAC = net.HardwareAddr{0x02, 0xaa, 0, 0, 0, 0x05}
	iface, err := b.Attach(ctx, pod)
	if err != nil {
		t.Fatal(err)
	}
	if iface.MAC.String() != pod.MAC.String() {
		t.Errorf("pod MAC %s, want %s", iface.MAC, pod.MAC)
	}
	mustContain(t, "pod offloads", sh(t, podNS, "ethtool", "-k", "eth0"), "tx-checksumming: on")
	mustContain(t, "pod link", sh(t, podNS, "ip", "-o", "link", "show", "eth0"), "mtu 1500")
	mustNotContain(t, "pod neighbours", sh(t, podNS, "ip", "neigh", "show", "nud", "permanent"), "10.244.1.1")
	if err := b.Check(ctx, pod); err != nil {
		t.Errorf("Check: %v", err)
	}
}

func TestFailedAttachLeavesNothing(t *testing.T) {
	requirePrivileges(t)
	for _, tc := range []struct {
		name    string
		prepare func(t *testing.T, podNS string) (netns string)
		wantErr string
	}{
		{"netns path does not exist", func(t *testing.T, podNS string) string {
			return podNS + "-missing"
		}, "open netns"},
		{"netns path is not a netns", func(t *testing.T, podNS string) string {
			return "/proc/self/cmdline"
		}, "netns /proc/self/cmdline"},
		{"interface name taken in the pod", func(t *testing.T, podNS string) string {
			sh(t, podNS, "ip", "link", "add", "eth0", "type", "veth", "peer", "name", "other0")
			return podNS
		}, "create veth"},
		{"failure after the veth exists (IPv6 off in the pod)", func(t *testing.T, podNS string) string {
			sh(t, podNS, "sysctl", "-q", "-w", "net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1")
			return podNS
		}, "add address fd00:10:244:1::5/64 to eth0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := testCtx(t)
			node, podNS := ovsdaemon.NewNetNS(t), ovsdaemon.NewNetNS(t)
			b := newBackend(t, node, nil, ovsdb.DatapathNetdev, "")
			pod := testPod(tc.prepare(t, podNS))
			podBefore := linkNamesIn(t, podNS)
			_, err := b.Attach(ctx, pod)
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("Attach error %v, want one containing %q", err, tc.wantErr)
			}
			t.Logf("Attach failed as expected: %v", err)
			if got := linkNamesIn(t, node); got != "lo" {
				t.Errorf("node links after the failed Attach: %s, want lo", got)
			}
			if got := linkNamesIn(t, podNS); got != podBefore {
				t.Errorf("pod links after the failed Attach: %s, want %s", got, podBefore)
			}
		})
	}
}

func TestDetachAfterNetNSGone(t *testing.T) {
	requirePrivileges(t)
	ctx := testCtx(t)
	node, podNS := ovsdaemon.NewNetNS(t), ovsdaemon.NewNetNS(t)
	b := newBackend(t, node, nil, ovsdb.DatapathNetdev, "")
	pod := testPod(podNS)
	if _, err := b.Attach(ctx, pod); err != nil {
		t.Fatal(err)
	}
	if err := ovsdaemon.DeleteNetNS(podNS); err != nil {
		t.Fatal(err)
	}
	if err := b.Check(ctx, pod); err == nil {
		t.Error("Check passed with the pod's netns gone")
	}
	if err := b.Detach(ctx, pod.PodRef); err != nil {
		t.Fatalf("Detach with the netns gone: %v", err)
	}
	if _, err := b.host.nl.LinkByName(HostInterfaceName(pod.PodRef)); !isNotFound(err) {
		t.Errorf("host end after Detach: %v, want not found", err)
	}
	if err := b.Detach(ctx, pod.PodRef); err != nil {
		t.Errorf("second Detach: %v", err)
	}
}

func TestDetachRefusesForeignDevice(t *testing.T) {
	requirePrivileges(t)
	node := ovsdaemon.NewNetNS(t)
	b := newBackend(t, node, nil, ovsdb.DatapathSystem, "")
	ref := testPod("/nonexistent").PodRef
	// A device of another kind under the name Seine would use is left alone.
	if err := b.host.nl.LinkAdd(&netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: HostInterfaceName(ref)}}); err != nil {
		t.Fatal(err)
	}
	err := b.Detach(testCtx(t), ref)
	if err == nil || !strings.Contains(err.Error(), "not a veth") {
		t.Errorf("Detach of a bridge: %v, want a refusal", err)
	}
	if got := linkNamesIn(t, node); got != "lo "+HostInterfaceName(ref) {
		t.Errorf("links: %s", got)
	}
}

// TestAttachWithoutNetNS: a pod namespace that does not exist, or a path
// that is not a namespace, is ErrNoNetNS for Attach and Check, and Attach
// leaves nothing behind.
func TestAttachWithoutNetNS(t *testing.T) {
	requirePrivileges(t)
	node := ovsdaemon.NewNetNS(t)
	b := newBackend(t, node, nil, ovsdb.DatapathSystem, "")
	ctx := testCtx(t)
	notNS := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(notNS, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{"/nonexistent/netns", notNS} {
		pod := testPod(path)
		if _, err := b.Attach(ctx, pod); !errors.Is(err, platform.ErrNoNetNS) {
			t.Errorf("Attach in %s: %v, want ErrNoNetNS", path, err)
		}
		if err := b.Check(ctx, pod); !errors.Is(err, platform.ErrNoNetNS) {
			t.Errorf("Check in %s: %v, want ErrNoNetNS", path, err)
		}
	}
	if got := linkNamesIn(t, node); got != "lo" {
		t.Errorf("links after the failed Attach: %s", got)
	}
}
