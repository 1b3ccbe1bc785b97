package lab

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
)

// MemoryUse is what the processes of one component of a lab hold.
type MemoryUse struct {
	Component string
	Processes int
	RSS, PSS  uint64 // bytes
}

// Memory measures what the lab's processes hold, by component: every
// process whose command line names the lab's state directory (the control
// plane, kubelets, containerds, agents and OVS of stand-in nodes, the API
// proxy), every process in a real node's mount namespace (containerd's
// shims) and every container (the shims' descendants, "pod:" and their
// program). PSS splits each shared page between the processes sharing it,
// so the PSS total is what the lab costs the machine; RSS counts shared
// pages once per process. Page cache and files on /run are not counted.
func (c *Config) Memory() ([]MemoryUse, error) {
	nodeNS := map[string]bool{}
	for _, n := range c.NodeList() {
		var st syscall.Stat_t
		if err := syscall.Stat(c.NodeMountNS(n.Name), &st); err == nil {
			nodeNS[fmt.Sprintf("mnt:[%d]", st.Ino)] = true
		}
	}
	return memoryOf("/proc", c.StateDir, nodeNS)
}

type procInfo struct {
	ppid     int
	argv     []string
	mntNS    string
	rss, pss uint64
}

// memoryOf reads the processes under procRoot and sums those of the lab in
// stateDir whose real nodes have the mount namespaces nodeNS.
func memoryOf(procRoot, stateDir string, nodeNS map[string]bool) ([]MemoryUse, error) {
	dirs, err := filepath.Glob(filepath.Join(procRoot, "[0-9]*"))
	if err != nil {
		return nil, err
	}
	procs := map[int]*procInfo{}
	for _, d := range dirs {
		pid, err := strconv.Atoi(filepath.Base(d))
		if err != nil {
			continue
		}
		if p, ok := readProc(d); ok {
			procs[pid] = p
		}
	}
	// component names a process of the lab's own, "" for any other.
	component := func(p *procInfo) string {
		cmd := strings.Join(p.argv, " ")
		prog := filepath.Base(p.argv[0])
		switch {
		case strings.Contains(cmd, stateDir) && strings.HasPrefix(prog, "labkube") && len(p.argv) > 1:
			return p.argv[1]
		case strings.Contains(cmd, stateDir) || nodeNS[p.mntNS]:
			return prog
		}
		return ""
	}
	use := map[string]*MemoryUse{}
	for _, p := range procs {
		name := component(p)
		if name == "" {
			// A container: a descendant of a shim in a node.
			for a, depth := procs[p.ppid], 0; a != nil && depth < 64; a, depth = procs[a.ppid], depth+1 {
				if strings.HasPrefix(filepath.Base(a.argv[0]), "containerd-shim") && component(a) != "" {
					name = "pod: " + filepath.Base(p.argv[0])
					break
				}
			}
		}
		if name == "" {
			continue
		}
		u := use[name]
		if u == nil {
			u = &MemoryUse{Component: name}
			use[name] = u
		}
		u.Processes++
		u.RSS += p.rss
		u.PSS += p.pss
	}
	out := make([]MemoryUse, 0, len(use))
	for _, u := range use {
		out = append(out, *u)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].PSS != out[j].PSS {
			return out[i].PSS > out[j].PSS
		}
		return out[i].Component < out[j].Component
	})
	return out, nil
}

// readProc reads one process's parent, command line, mount namespace and
// memory; false for a kernel thread, a zombie or a process gone meanwhile.
func readProc(dir string) (*procInfo, bool) {
	cmdline, err := os.ReadFile(filepath.Join(dir, "cmdline"))
	if err != nil || len(cmdline) == 0 {
		return nil, false
	}
	stat, err := os.ReadFile(filepath.Join(dir, "stat"))
	if err != nil {
		return nil, false
	}
	// The fields after the command name, which may hold spaces: state, ppid.
	f := strings.Fields(string(stat[bytes.LastIndexByte(stat, ')')+1:]))
	if len(f) < 2 {
		return nil, false
	}
	p := &procInfo{argv: strings.Split(strings.TrimRight(string(cmdline), "\x00"), "\x00")}
	p.ppid, _ = strconv.Atoi(f[1])
	p.mntNS, _ = os.Readlink(filepath.Join(dir, "ns", "mnt"))
	sm, err := os.Open(filepath.Join(dir, "smaps_rollup"))
	if err != nil {
		return nil, false
	}
	defer sm.Close()
	sc := bufio.NewScanner(sm)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		kb, err := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		if err != nil {
			continue
		}
		switch k {
		case "Rss":
			p.rss = kb << 10
		case "Pss":
			p.pss = kb << 10
		}
	}
	return p, true
}

// WriteMemory prints uses as a table, largest first, with their total.
func WriteMemory(w io.Writer, uses []MemoryUse) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "COMPONENT\tPROCESSES\tPSS MiB\tRSS MiB\t")
	var total MemoryUse
	for _, u := range uses {
		fmt.Fprintf(tw, "%s\t%d\t%.1f\t%.1f\t\n", u.Component, u.Processes, mib(u.PSS), mib(u.RSS))
		total.Processes += u.Processes
		total.PSS += u.PSS
		total.RSS += u.RSS
	}
	fmt.Fprintf(tw, "total\t%d\t%.1f\t%.1f\t\n", total.Processes, mib(total.PSS), mib(total.RSS))
	return tw.Flush()
}

func mib(b uint64) float64 { return float64(b) / (1 << 20) }
