package lab

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"
)

// What a real kubelet changes on the machine, and how the lab puts it back.

// kubeletSysctls are the kernel settings a kubelet writes at start unless
// protectKernelDefaults is set (pkg/kubelet/cm setupKernelTunables), and
// with it refuses to start unless they already hold those values. They are
// machine-wide; the first real-node lab records their values and the last
// one down writes them back (hostshare_linux.go).
var kubeletSysctls = []string{
	"vm/overcommit_memory", "vm/panic_on_oom", "kernel/panic", "kernel/panic_on_oops",
	"kernel/keys/root_maxkeys", "kernel/keys/root_maxbytes",
}

const cgroupFS = "/sys/fs/cgroup"

// kubeletControllers are the cgroup v1 hierarchies in which the kubelet
// checks that its cgroupRoot exists (pkg/kubelet/cm cgroup_v1_manager_linux.go);
// hugetlb only when it is mounted as v1, which it is not on this machine.
var kubeletControllers = []string{"cpu", "cpuacct", "cpuset", "memory", "pids", "systemd", "hugetlb"}

// NodeCgroupRoot is a real node's cgroupRoot: the same path in every
// hierarchy, named after the node's namespace so labs never share one.
func (c *Config) NodeCgroupRoot(node string) string { return "/" + c.NetNS(node) }

// createCgroupRoot makes the node's cgroupRoot in each v1 hierarchy the
// kubelet checks (copying cpuset's cpus and mems from the parent, as a new
// cpuset is empty).
func (c *Config) createCgroupRoot(node string) error {
	root := c.NodeCgroupRoot(node)
	for _, ctrl := range kubeletControllers {
		base := filepath.Join(cgroupFS, ctrl)
		if !isCgroupV1(base) {
			continue
		}
		dir := filepath.Join(base, root)
		if err := os.Mkdir(dir, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
			return fmt.Errorf("cgroup %s: %w", dir, err)
		}
		if ctrl == "cpuset" {
			for _, f := range []string{"cpuset.cpus", "cpuset.mems"} {
				b, err := os.ReadFile(filepath.Join(base, f))
				if err != nil {
					return err
				}
				if err := os.WriteFile(filepath.Join(dir, f), b, 0o644); err != nil {
					return fmt.Errorf("cgroup %s: %w", filepath.Join(dir, f), err)
				}
			}
		}
	}
	return nil
}

// isCgroupV1 reports whether dir is a cgroup v1 hierarchy (it has tasks).
func isCgroupV1(dir string) bool {
	_, err := os.Stat(filepath.Join(dir, "tasks"))
	return err == nil
}

// removeCgroupRoot kills every process left in the node's cgroups (its
// containers) and removes the node's cgroup tree from every hierarchy the
// kubelet or runc created it in, deepest first.
func (c *Config) removeCgroupRoot(node string) error {
	root := c.NodeCgroupRoot(node)
	var dirs []string
	hierarchies, _ := os.ReadDir(cgroupFS)
	for _, h := range hierarchies {
		top := filepath.Join(cgroupFS, h.Name(), root)
		if _, err := os.Stat(top); err != nil {
			continue
		}
		filepath.WalkDir(top, func(p string, d os.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				dirs = append(dirs, p)
			}
			return nil
		})
	}
	if len(dirs) == 0 {
		return nil
	}
	// Kill first, in every hierarchy: a process is in one cgroup of each.
	for range 50 {
		pids := cgroupPids(dirs)
		if len(pids) == 0 {
			break
		}
		for _, pid := range pids {
			syscall.Kill(pid, syscall.SIGKILL)
		}
		time.Sleep(100 * time.Millisecond)
	}
	sort.Slice(dirs, func(i, j int) bool { return strings.Count(dirs[i], "/") > strings.Count(dirs[j], "/") })
	var errs []error
	for _, d := range dirs {
		var err error
		for range 50 { // a cgroup is busy for a moment after its last process exits
			if err = syscall.Rmdir(d); err == nil || errors.Is(err, os.ErrNotExist) {
				err = nil
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("remove cgroup %s: %w", d, err))
		}
	}
	return errors.Join(errs...)
}

// cgroupPids lists the processes in the given cgroup directories.
func cgroupPids(dirs []string) []int {
	seen := map[int]bool{}
	var pids []int
	for _, d := range dirs {
		b, err := os.ReadFile(filepath.Join(d, "cgroup.procs"))
		if err != nil {
			continue
		}
		for _, f := range strings.Fields(string(b)) {
			var pid int
			if _, err := fmt.Sscan(f, &pid); err == nil && !seen[pid] {
				seen[pid] = true
				pids = append(pids, pid)
			}
		}
	}
	return pids
}
