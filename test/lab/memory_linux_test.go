package lab

import (
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// TestMemoryOf sums a lab's processes by component from a /proc tree: the
// control plane and node programs that name the lab's state directory, the
// shims in a node's mount namespace, and the containers below the shims,
// however deep; never another lab's processes, the machine's, or kernel
// threads.
func TestMemoryOf(t *testing.T) {
	proc := t.TempDir()
	add := func(pid, ppid int, mnt string, pssKB, rssKB int, argv ...string) {
		d := filepath.Join(proc, fmt.Sprint(pid))
		os.MkdirAll(filepath.Join(d, "ns"), 0o755)
		os.WriteFile(filepath.Join(d, "cmdline"), []byte(strings.Join(argv, "\x00")+"\x00"), 0o644)
		if len(argv) == 0 {
			os.WriteFile(filepath.Join(d, "cmdline"), nil, 0o644)
		}
		os.WriteFile(filepath.Join(d, "stat"), []byte(fmt.Sprintf("%d (a name (with) spaces) S %d 1 1 0", pid, ppid)), 0o644)
		os.Symlink(mnt, filepath.Join(d, "ns", "mnt"))
		os.WriteFile(filepath.Join(d, "smaps_rollup"), []byte(fmt.Sprintf(
			"00400000-7ffd [rollup]\nRss:            %d kB\nPss:            %d kB\nPss_Anon:        1 kB\n", rssKB, pssKB)), 0o644)
	}
	const state = "/run/seine-lab"
	add(10, 1, "mnt:[1]", 300, 400, "/root/.cache/seine-lab/labkube-1", "kube-apiserver", "--etcd-servers=x", "--cert-dir="+state+"/pki")
	add(11, 1, "mnt:[1]", 100, 150, "/root/.cache/seine-lab/labkube-1", "etcd", "--data-dir="+state+"/etcd")
	add(12, 1, "mnt:[100]", 50, 80, "/root/.cache/seine-lab/labkube-1", "kubelet", "--config="+state+"/nodes/node-1/kubelet.yaml")
	add(13, 1, "mnt:[101]", 60, 90, "/root/.cache/seine-lab/labkube-1", "kubelet", "--config="+state+"/nodes/node-2/kubelet.yaml")
	add(20, 1, "mnt:[100]", 40, 60, "/root/.cache/seine-lab/runtime-1/containerd", "--config", state+"/nodes/node-1/containerd.toml")
	add(21, 1, "mnt:[100]", 5, 9, "/root/.cache/seine-lab/runtime-1/containerd-shim-runc-v2", "-namespace", "k8s.io", "-id", "abc")
	add(22, 21, "mnt:[200]", 20, 30, "/usr/bin/seine-agent", "--config", "/etc/seine/agent.conf")
	add(23, 22, "mnt:[201]", 70, 75, "/usr/sbin/ovs-vswitchd", "unix:/run/openvswitch/db.sock")
	add(24, 23, "mnt:[201]", 1, 2, "/bin/sh", "-c", "sleep 1")
	add(30, 1, "mnt:[1]", 999, 999, "/usr/sbin/sshd", "-D")
	add(31, 1, "mnt:[300]", 999, 999, "/root/.cache/seine-lab/runtime-1/containerd", "--config", "/run/seine-e2e-2/nodes/node-1/containerd.toml")
	add(32, 31, "mnt:[300]", 999, 999, "/root/.cache/seine-lab/runtime-1/containerd-shim-runc-v2", "-namespace", "k8s.io")
	add(33, 32, "mnt:[301]", 999, 999, "/coredns")
	add(34, 2, "", 0, 0)

	uses, err := memoryOf(proc, state, map[string]bool{"mnt:[100]": true, "mnt:[101]": true})
	if err != nil {
		t.Fatal(err)
	}
	kib := func(n uint64) uint64 { return n << 10 }
	want := []MemoryUse{
		{"kube-apiserver", 1, kib(400), kib(300)},
		{"kubelet", 2, kib(170), kib(110)},
		{"etcd", 1, kib(150), kib(100)},
		{"pod: ovs-vswitchd", 1, kib(75), kib(70)},
		{"containerd", 1, kib(60), kib(40)},
		{"pod: seine-agent", 1, kib(30), kib(20)},
		{"containerd-shim-runc-v2", 1, kib(9), kib(5)},
		{"pod: sh", 1, kib(2), kib(1)},
	}
	if !reflect.DeepEqual(uses, want) {
		t.Errorf("memoryOf =\n%+v\nwant\n%+v", uses, want)
	}
	var out strings.Builder
	if err := WriteMemory(&out, uses); err != nil {
		t.Fatal(err)
	}
	if total := strings.Fields(lastLine(out.String())); !reflect.DeepEqual(total, []string{"total", "9", "0.6", "0.9"}) {
		t.Errorf("total line %q, want total 9 processes, 646 KiB PSS, 896 KiB RSS:\n%s", total, out.String())
	}
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}
