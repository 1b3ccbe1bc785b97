package apiserver

import (
	"fmt"
	"runtime"
	"testing"
	"time"

	cp "github.com/seine-cni/seine/core/apis/controlplane/v1beta1"
)

// BenchmarkReports measures what the controller keeps per (node, policy)
// pair reported, and the cost of one report of 1,000 policies.
func BenchmarkReports(b *testing.B) {
	const nodes, policies = 100, 1000
	// Measured from before the reports are decoded: each request brings its
	// own copies of the policy names, and the controller keeps them.
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	r := newReports()
	for n := range nodes {
		rep := report(fmt.Sprintf("node-%03d", n))
		for i := range policies {
			rep.Policies = append(rep.Policies, cp.PolicyRealization{Name: fmt.Sprintf("%08x-0000-4000-8000-%012x", i, i), Generation: 1})
		}
		r.set(rep, time.Now(), false)
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	perPair := float64(after.HeapAlloc-before.HeapAlloc) / (nodes * policies)
	runtime.KeepAlive(r)

	one := report("node-000")
	for i := range policies {
		one.Policies = append(one.Policies, cp.PolicyRealization{Name: fmt.Sprintf("%08x-0000-4000-8000-%012x", i, i), Generation: 2})
	}
	b.ResetTimer()
	for range b.N {
		r.set(one, time.Now(), false)
	}
	b.ReportMetric(perPair, "heap-bytes/pair")
}
