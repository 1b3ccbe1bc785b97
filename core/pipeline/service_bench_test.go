package pipeline

import (
	"fmt"
	"net/netip"
	"testing"

	"github.com/seine-cni/seine/core/proxy"
)

// BenchmarkServiceFlows: the flows and group of one Service of 10
// endpoints (ns/op is per Service).
func BenchmarkServiceFlows(b *testing.B) {
	st := serviceState()
	var svcs []*proxy.Service
	for i := 0; i < 1000; i++ {
		p := proxy.Port{Protocol: proxy.ProtoTCP, Port: 80, ClusterIP: netip.AddrFrom4([4]byte{10, 96, byte(i >> 8), byte(i)}), HasEndpoints: true}
		for j := 0; j < 10; j++ {
			p.ClusterEndpoints = append(p.ClusterEndpoints, ep(netip.AddrFrom4([4]byte{10, byte(1 + j), byte(i >> 8), byte(i)}), 8080, false))
		}
		svcs = append(svcs, &proxy.Service{Namespace: "bench", Name: fmt.Sprint(i), Ports: []proxy.Port{p}})
	}
	ids := map[string]uint32{"/TCP": 7}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := ServiceFlows(st.Node, svcs[i%len(svcs)], ids, 1); err != nil {
			b.Fatal(err)
		}
	}
}
