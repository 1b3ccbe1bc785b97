package kubelet

import (
	"runtime"

	"golang.org/x/sys/unix"
)

// machineCapacity returns the CPUs and bytes of memory the node reports. Every lab node
// shares the one machine, so each reports all of it, as VMs on an overcommitted host do.
func machineCapacity() (cpus int, memBytes int64) {
	var si unix.Sysinfo_t
	if err := unix.Sysinfo(&si); err != nil {
		return runtime.NumCPU(), 4 << 30
	}
	return runtime.NumCPU(), int64(si.Totalram) * int64(si.Unit)
}

func kernelVersion() string {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return ""
	}
	return unix.ByteSliceToString(u.Release[:])
}
