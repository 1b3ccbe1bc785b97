//go:build !linux

package kubelet

import "runtime"

// machineCapacity reports the CPUs and a nominal 4 GiB off Linux, where the lab does not run.
func machineCapacity() (cpus int, memBytes int64) { return runtime.NumCPU(), 4 << 30 }

func kernelVersion() string { return "" }
