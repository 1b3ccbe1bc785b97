package pipeline

import (
	"fmt"
	"net"
	"net/netip"
	"testing"
)

// bigState is a node with 250 pods and 500 peers (a /16 cluster of /24s).
func bigState() State {
	s := baseState(OSLinux, RoutedHost, Encap, Geneve)
	s.Node.ClusterPodCIDRs = []netip.Prefix{pfx("10.0.0.0/8")}
	s.Pods, s.Peers = nil, nil
	for i := 0; i < 250; i++ {
		s.Pods = append(s.Pods, Pod{Namespace: "ns", Name: fmt.Sprintf("pod-%d", i), Port: uint32(100 + i),
			IPs: []netip.Addr{netip.AddrFrom4([4]byte{10, 244, 1, byte(2 + i)})},
			MAC: net.HardwareAddr{0x0a, 0, 0, 0, byte(i >> 8), byte(i)}})
	}
	for i := 0; i < 500; i++ {
		s.Peers = append(s.Peers, Peer{Name: fmt.Sprintf("node-%d", i),
			NodeIP:   netip.AddrFrom4([4]byte{192, 168, byte(i >> 8), byte(i)}),
			PodCIDRs: []netip.Prefix{netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(1 + i/256), byte(i), 0}), 24)}})
	}
	return s
}

func BenchmarkBuild(b *testing.B) {
	s := bigState()
	var n int
	for b.Loop() {
		flows, err := Build(s, 1)
		if err != nil {
			b.Fatal(err)
		}
		n = len(flows)
	}
	b.ReportMetric(float64(n), "flows")
}

func BenchmarkTrace(b *testing.B) {
	flows, err := Build(bigState(), 1)
	if err != nil {
		b.Fatal(err)
	}
	tr, err := NewTracer(flows)
	if err != nil {
		b.Fatal(err)
	}
	p := TCPPacket(100, net.HardwareAddr{0x0a, 0, 0, 0, 0, 0}, gatewayMAC, netip.MustParseAddr("10.244.1.2"),
		netip.MustParseAddr("10.1.250.7"), 40000, 80)
	for b.Loop() {
		res, err := tr.Trace(p)
		if err != nil || len(res.Outputs) != 1 {
			b.Fatalf("%v\n%s", err, res)
		}
	}
}
