package linux

import (
	"context"
	"net/netip"
	"testing"

	"github.com/seine-cni/seine/ovs/ovsdb"
	"github.com/seine-cni/seine/platform"
	"github.com/seine-cni/seine/test/ci"
	"github.com/seine-cni/seine/test/ovsdaemon"
)

func benchBackend(b *testing.B, nodeNS string) *Backend {
	b.Helper()
	ci.RequireRoot(b, "the backend benchmark")
	be, err := New(platform.Config{HostNetNS: nodeNS, Datapath: ovsdb.DatapathNetdev})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = be.Close() })
	return be
}

// BenchmarkAttachDetach is the OS part of a CNI ADD + DEL: a dual-stack veth
// pair with addresses, routes, neighbours and tx offload off, then its removal.
func BenchmarkAttachDetach(b *testing.B) {
	node, podNS := ovsdaemon.NewNetNS(b), ovsdaemon.NewNetNS(b)
	be := benchBackend(b, node)
	pod := testPod(podNS)
	ctx := context.Background()
	for b.Loop() {
		if _, err := be.Attach(ctx, pod); err != nil {
			b.Fatal(err)
		}
		if err := be.Detach(ctx, pod.PodRef); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkAttachAgain is a retried ADD: the pair exists and is checked.
func BenchmarkAttachAgain(b *testing.B) {
	node, podNS := ovsdaemon.NewNetNS(b), ovsdaemon.NewNetNS(b)
	be := benchBackend(b, node)
	pod := testPod(podNS)
	ctx := context.Background()
	if _, err := be.Attach(ctx, pod); err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if _, err := be.Attach(ctx, pod); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkSync is a HostRules.Sync with 100 peer routes and SNAT when
// nothing changed (an iptables-save and an iptables-restore exec per IP
// family dominate).
func BenchmarkSync(b *testing.B) {
	be := benchBackend(b, rulesNode(b))
	s := platform.HostState{
		Gateway:      "seine-gw0",
		SNATIPs:      []netip.Addr{ip("192.168.1.11")},
		PodCIDRs:     []netip.Prefix{pfx("10.244.1.0/24")},
		ClusterCIDRs: []netip.Prefix{pfx("10.244.0.0/16")},
	}
	for i := range 100 {
		s.PeerRoutes = append(s.PeerRoutes, platform.PeerRoute{
			PodCIDR: netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 245, byte(i), 0}), 24),
			NodeIP:  netip.AddrFrom4([4]byte{192, 168, 1, byte(100 + i)}),
		})
	}
	ctx := context.Background()
	if err := be.Sync(ctx, s); err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if err := be.Sync(ctx, s); err != nil {
			b.Fatal(err)
		}
	}
}
