package proxy

import (
	"fmt"
	"testing"

	discoveryv1 "k8s.io/api/discovery/v1"
)

// BenchmarkOneEndpointChange: 10,000 Services of 10 endpoints each; one
// op is an update of one slice and the recomputation of what changed.
func BenchmarkOneEndpointChange(b *testing.B) {
	tr, _ := New(Config{NodeName: "node-1"})
	for i := 0; i < 10000; i++ {
		name := fmt.Sprintf("s%d", i)
		tr.UpdateService(svc("ns", name, fmt.Sprintf("10.96.%d.%d", i/256, i%256), "http:80"))
		var eps []ep
		for j := 0; j < 10; j++ {
			eps = append(eps, ep{addr: fmt.Sprintf("10.%d.%d.%d", 100+j, i/256, i%256), node: fmt.Sprintf("node-%d", j)})
		}
		tr.UpdateSlice(slice("ns", name, name+"-1", []string{"http:8080"}, eps...))
	}
	tr.Changed()
	slices := make([]any, 2)
	for k := range slices {
		var eps []ep
		for j := 0; j < 10-k; j++ {
			eps = append(eps, ep{addr: fmt.Sprintf("10.%d.0.5", 100+j), node: fmt.Sprintf("node-%d", j)})
		}
		slices[k] = slice("ns", "s5", "s5-1", []string{"http:8080"}, eps...)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		tr.UpdateSlice(slices[i%2].(*discoveryv1.EndpointSlice))
		for _, k := range tr.Changed() {
			if tr.Service(k) == nil {
				b.Fatal("service gone")
			}
		}
	}
}
