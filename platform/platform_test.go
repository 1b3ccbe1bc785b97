package platform_test

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/seine-cni/seine/ovs/ovsdb"
	"github.com/seine-cni/seine/platform"
)

// The real OVSDB client is what backends receive.
var _ platform.OVSDB = (*ovsdb.Client)(nil)

func TestErrNotSupported(t *testing.T) {
	err := fmt.Errorf("attach pod: %w", platform.NotSupported("SR-IOV"))
	if !errors.Is(err, platform.ErrNotSupported) {
		t.Errorf("errors.Is(%v, ErrNotSupported) = false", err)
	}
	if !errors.Is(err, errors.ErrUnsupported) {
		t.Errorf("errors.Is(%v, errors.ErrUnsupported) = false", err)
	}
	if want := "attach pod: SR-IOV: not supported on this platform: unsupported operation"; err.Error() != want {
		t.Errorf("text %q, want %q", err, want)
	}
}

var mac = net.HardwareAddr{0x02, 0, 0, 0, 0, 1}

func pfx(s string) netip.Prefix { return netip.MustParsePrefix(s) }
func ip(s string) netip.Addr    { return netip.MustParseAddr(s) }

func TestNodeConfigValidate(t *testing.T) {
	good := platform.NodeConfig{
		Topology:   platform.BridgedUplink,
		Uplink:     "eth0",
		GatewayIPs: []netip.Prefix{pfx("10.244.1.1/24"), pfx("fd00:10:244:1::1/64")},
	}.WithDefaults()
	for _, tc := range []struct {
		name    string
		mutate  func(*platform.NodeConfig)
		wantErr string // substring; "" means valid
	}{
		{"valid", func(*platform.NodeConfig) {}, ""},
		{"routed host with node IPs only", func(c *platform.NodeConfig) {
			c.Topology, c.Uplink, c.NodeIPs = platform.RoutedHost, "", []netip.Addr{ip("192.168.1.10")}
		}, ""},
		{"routed host with nothing to find the MTU", func(c *platform.NodeConfig) {
			c.Topology, c.Uplink = platform.RoutedHost, ""
		}, "need the uplink"},
		{"bridged uplink needs the uplink", func(c *platform.NodeConfig) { c.Uplink = "" }, "uplink is required"},
		{"unknown topology", func(c *platform.NodeConfig) { c.Topology = "Overlay" }, `topology "Overlay"`},
		{"no topology", func(c *platform.NodeConfig) { c.Topology = "" }, "topology is empty"},
		{"same names", func(c *platform.NodeConfig) { c.Gateway = c.Bridge }, "must differ"},
		{"no gateway IP", func(c *platform.NodeConfig) { c.GatewayIPs = nil }, "no gateway IP"},
		{"two IPv4 gateways", func(c *platform.NodeConfig) {
			c.GatewayIPs = []netip.Prefix{pfx("10.0.0.1/24"), pfx("10.1.0.1/24")}
		}, "one per IP family"},
		{"short MAC", func(c *platform.NodeConfig) { c.GatewayMAC = mac[:4] }, "want 6 bytes"},
		{"tiny MTU", func(c *platform.NodeConfig) { c.MTU = 100 }, "MTU 100"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := good
			cfg.GatewayIPs = slices.Clone(good.GatewayIPs)
			tc.mutate(&cfg)
			checkErr(t, cfg.Validate(), tc.wantErr)
		})
	}
}

func TestNodeConfigWithDefaults(t *testing.T) {
	cfg := platform.NodeConfig{}.WithDefaults()
	if cfg.Bridge != "br-int" || cfg.Gateway != "seine-gw0" {
		t.Errorf("defaults: bridge %q gateway %q", cfg.Bridge, cfg.Gateway)
	}
	cfg = platform.NodeConfig{Bridge: "br0", Gateway: "gw"}.WithDefaults()
	if cfg.Bridge != "br0" || cfg.Gateway != "gw" {
		t.Errorf("explicit names replaced: %q %q", cfg.Bridge, cfg.Gateway)
	}
}

func TestNodeStateNodeIP(t *testing.T) {
	s := platform.NodeState{NodeIPs: []netip.Prefix{pfx("fd00::5/64"), pfx("192.168.1.5/24")}}
	if got, ok := s.NodeIP(false); !ok || got != ip("192.168.1.5") {
		t.Errorf("NodeIP(v4) = %v, %v", got, ok)
	}
	if got, ok := s.NodeIP(true); !ok || got != ip("fd00::5") {
		t.Errorf("NodeIP(v6) = %v, %v", got, ok)
	}
	if _, ok := (platform.NodeState{}).NodeIP(false); ok {
		t.Error("NodeIP of an empty state found one")
	}
}

func goodPod() platform.PodNetwork {
	return platform.PodNetwork{
		PodRef: platform.PodRef{
			Namespace: "default", Name: "web-0", ContainerID: "0123456789abcdef0123", IfName: "eth0",
			NetNS: "/var/run/netns/cni-1",
		},
		IPs:        []netip.Prefix{pfx("10.244.1.5/24"), pfx("fd00:10:244:1::5/64")},
		Gateways:   []netip.Addr{ip("10.244.1.1"), ip("fd00:10:244:1::1")},
		GatewayMAC: mac,
		MTU:        1450,
	}
}

func TestPodNetworkValidate(t *testing.T) {
	for _, tc := range []struct {
		name    string
		mutate  func(*platform.PodNetwork)
		wantErr string
	}{
		{"valid", func(*platform.PodNetwork) {}, ""},
		{"missing identity", func(p *platform.PodNetwork) { p.Name, p.ContainerID = "", "" },
			"name, container ID empty"},
		{"no netns", func(p *platform.PodNetwork) { p.NetNS = "" }, "network namespace is empty"},
		{"no IP", func(p *platform.PodNetwork) { p.IPs = nil }, "no IP address"},
		{"no IPv6 gateway", func(p *platform.PodNetwork) { p.Gateways = p.Gateways[:1] }, "no gateway for fd00:10:244:1::5/64"},
		{"gateway outside", func(p *platform.PodNetwork) { p.Gateways[0] = ip("10.9.9.1") }, "outside 10.244.1.0/24"},
		{"pod IP is gateway", func(p *platform.PodNetwork) { p.IPs[0] = pfx("10.244.1.1/24") }, "is the gateway"},
		{"route not a network", func(p *platform.PodNetwork) {
			p.Routes = []platform.Route{{Dst: pfx("10.96.0.1/12")}}
		}, "must be a network prefix"},
		{"route next hop family", func(p *platform.PodNetwork) {
			p.Routes = []platform.Route{{Dst: pfx("10.96.0.0/12"), Via: ip("fd00::1")}}
		}, "next hop of another family"},
		{"tiny MTU", func(p *platform.PodNetwork) { p.MTU = 68 }, "MTU 68"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := goodPod()
			tc.mutate(&p)
			checkErr(t, p.Validate(), tc.wantErr)
		})
	}
}

func TestPodNetworkEffectiveRoutes(t *testing.T) {
	p := goodPod()
	if got, want := fmt.Sprint(p.EffectiveRoutes()), "[0.0.0.0/0 via 10.244.1.1 ::/0 via fd00:10:244:1::1]"; got != want {
		t.Errorf("nil routes: %s, want %s", got, want)
	}
	p.Routes = []platform.Route{}
	if got := p.EffectiveRoutes(); len(got) != 0 {
		t.Errorf("empty routes: %v, want none", got)
	}
	p.Routes = []platform.Route{{Dst: pfx("10.96.0.0/12")}, {Dst: pfx("172.16.0.0/16"), Via: ip("10.244.1.254")}}
	if got, want := fmt.Sprint(p.EffectiveRoutes()), "[10.96.0.0/12 via 10.244.1.1 172.16.0.0/16 via 10.244.1.254]"; got != want {
		t.Errorf("explicit routes: %s, want %s", got, want)
	}
}

func TestPodRefString(t *testing.T) {
	r := goodPod().PodRef
	if got, want := r.String(), "default/web-0 (container 0123456789ab, eth0)"; got != want {
		t.Errorf("String() = %q, want %q", got, want)
	}
}

func TestHostStateValidate(t *testing.T) {
	good := platform.HostState{
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
	for _, tc := range []struct {
		name    string
		mutate  func(*platform.HostState)
		wantErr string
	}{
		{"valid", func(*platform.HostState) {}, ""},
		{"empty is valid", func(s *platform.HostState) { *s = platform.HostState{} }, ""},
		{"host bits in CIDR", func(s *platform.HostState) { s.PodCIDRs[0] = pfx("10.244.1.1/24") }, "want a network prefix"},
		{"two IPv4 SNAT IPs", func(s *platform.HostState) { s.SNATIPs = append(s.SNATIPs, ip("192.168.1.12")) }, "one per family"},
		{"peer without node IP", func(s *platform.HostState) { s.PeerRoutes[0].NodeIP = netip.Addr{} }, "no node IP"},
		{"peer node IP family", func(s *platform.HostState) { s.PeerRoutes[0].NodeIP = ip("fd00::12") }, "node IP of another family"},
		{"no gateway", func(s *platform.HostState) { s.Gateway = "" }, "no gateway interface"},
		{"no next hop MAC", func(s *platform.HostState) { s.ServiceNextHopMAC = nil }, "service next hop MAC"},
		{"next hop family", func(s *platform.HostState) { s.ServiceRoutes[0].NextHop = ip("fd00::253") }, "next hop of another family"},
		{"kube-proxy CIDR host bits", func(s *platform.HostState) { s.KubeProxyCIDRs = []netip.Prefix{pfx("10.96.0.1/16")} }, "kube-proxy service CIDR"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := good
			s.PodCIDRs = slices.Clone(good.PodCIDRs)
			s.PeerRoutes = slices.Clone(good.PeerRoutes)
			s.ServiceRoutes = slices.Clone(good.ServiceRoutes)
			tc.mutate(&s)
			checkErr(t, s.Validate(), tc.wantErr)
		})
	}
	if got := good.SNATIP(false); got != ip("192.168.1.11") {
		t.Errorf("SNATIP(v4) = %v", got)
	}
	if got := good.SNATIP(true); got.IsValid() {
		t.Errorf("SNATIP(v6) = %v, want none", got)
	}
}

func checkErr(t *testing.T, err error, want string) {
	t.Helper()
	switch {
	case want == "" && err != nil:
		t.Errorf("unexpected error: %v", err)
	case want != "" && err == nil:
		t.Errorf("no error, want one containing %q", want)
	case want != "" && !strings.Contains(err.Error(), want):
		t.Errorf("error %q does not contain %q", err, want)
	}
}
