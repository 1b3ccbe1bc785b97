package ipam

import (
	"fmt"
	"testing"
)

// BenchmarkAllocateRelease measures one pod's Allocate plus Release, each
// durable (temp file, fsync, rename, directory fsync), with a node already
// holding `pods` allocations. The directory is b.TempDir(): set TMPDIR to
// measure on the disk the agent will use.
func BenchmarkAllocateRelease(b *testing.B) {
	for _, pods := range []int{0, 110, 1000} {
		b.Run(fmt.Sprintf("pods=%d", pods), func(b *testing.B) {
			a := open(b, b.TempDir(), "10.0.0.0/21", "fd00::/64")
			for i := range pods {
				mustAllocate(b, a, fmt.Sprintf("existing-%d", i))
			}
			b.ResetTimer()
			for i := 0; b.Loop(); i++ {
				o := owner(fmt.Sprintf("pod-%d", i))
				if _, err := a.Allocate(o); err != nil {
					b.Fatal(err)
				}
				if err := a.Release(o.Key); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkAllocateIdempotent is a retried ADD: no write at all.
func BenchmarkAllocateIdempotent(b *testing.B) {
	a := open(b, b.TempDir(), "10.0.0.0/24")
	o := owner("retry")
	if _, err := a.Allocate(o); err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if _, err := a.Allocate(o); err != nil {
			b.Fatal(err)
		}
	}
}
