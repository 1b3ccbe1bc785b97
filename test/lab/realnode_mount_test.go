//go:build linux

package lab

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestNodeMountNamespace makes a real node's mount namespace without a
// cluster: the node sees its private directories at the paths it owns, a
// mount made inside stays inside (and reaches a later bind of the same
// tree, the propagation containers rely on), the machine sees none of it,
// and the teardown removes the namespace, the mount points it created and
// every mount. Cheap: no control plane, no lab slot.
func TestNodeMountNamespace(t *testing.T) {
	if os.Geteuid() != 0 {
		if os.Getenv("CI") != "" {
			t.Fatal("needs root")
		}
		t.Skip("needs root")
	}
	c := &Config{StateDir: t.TempDir(), NSPrefix: "seine-mnttest-", Nodes: 1}
	c.Defaults()
	before := snapshotRealHost(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cleanup := func() error {
		errs := []error{c.killMountNS("node-1"), c.removeMountNamespaces(), unmountUnder(c.StateDir), machine.leave(c.StateDir)}
		for _, err := range errs {
			if err != nil {
				return err
			}
		}
		return nil
	}
	t.Cleanup(func() { cleanup() })
	if err := machine.join(c.StateDir); err != nil {
		t.Fatal(err)
	}
	if err := c.createMountNS(ctx, "node-1"); err != nil {
		t.Fatal(err)
	}
	// The node's /var/lib/kubelet is its private directory.
	marker := filepath.Join(c.NodeRoot("node-1"), "/var/lib/kubelet/marker")
	if err := os.WriteFile(marker, []byte("node-1"), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := c.inMountNS(ctx, "node-1", "cat", "/var/lib/kubelet/marker"); err != nil || out != "node-1" {
		t.Errorf("node's /var/lib/kubelet/marker: %q, %v", out, err)
	}
	if _, err := os.Stat("/var/lib/kubelet/marker"); err == nil {
		t.Error("the node's directory shows on the machine")
	}
	// A tmpfs the kubelet mounts below its root (a token volume) stays in
	// the node, and reaches a bind of that tree made afterwards the way a
	// container's view does (rshared root).
	steps := [][]string{
		{"mkdir", "-p", "/var/lib/kubelet/pods/x/volumes", "/var/lib/kubelet/view"},
		{"mount", "--rbind", "/var/lib/kubelet/pods", "/var/lib/kubelet/view"},
		{"mount", "-t", "tmpfs", "token", "/var/lib/kubelet/pods/x/volumes"},
		{"sh", "-c", "echo secret > /var/lib/kubelet/pods/x/volumes/token"},
	}
	for _, s := range steps {
		if out, err := c.inMountNS(ctx, "node-1", s...); err != nil {
			t.Fatalf("%v: %v %s", s, err, out)
		}
	}
	if out, err := c.inMountNS(ctx, "node-1", "cat", "/var/lib/kubelet/view/x/volumes/token"); err != nil || strings.TrimSpace(out) != "secret" {
		t.Errorf("a mount below the kubelet's root did not propagate to a bind of it: %q, %v", out, err)
	}
	if b, _ := os.ReadFile("/proc/self/mountinfo"); strings.Contains(string(b), "/var/lib/kubelet") {
		t.Error("a node mount reached the machine's namespace")
	}
	if err := cleanup(); err != nil {
		t.Fatalf("teardown: %v", err)
	}
	// What this test touches (other labs on a shared machine change links,
	// namespaces and mounts of their own meanwhile).
	for _, d := range machineChanges(before, snapshotRealHost(t), c.NSPrefix) {
		t.Error(d)
	}
	b, _ := os.ReadFile("/proc/self/mountinfo")
	for _, l := range strings.Split(string(b), "\n") {
		if strings.Contains(l, c.StateDir) {
			t.Errorf("mount left behind: %s", l)
		}
	}
}

// realHostState is what real nodes could leave behind on the machine
// besides what snapshotHost covers.
type realHostState struct {
	cgroups, sysctls, paths string
	// The record real-node labs up share (hostshare_linux.go): how many
	// were up, and the paths they created.
	sharedLabs    int
	sharedCreated []string
}

// machineChanges is what changed on the machine between two snapshots
// that a lab with nsPrefix is to blame for: its own cgroups; mount points
// and sysctls, unless they belong to real-node labs still up (or up at
// the first snapshot and gone since), since those are theirs together.
func machineChanges(before, after realHostState, nsPrefix string) []string {
	var out []string
	old := strings.Split(before.cgroups, "\n")
	for _, cg := range strings.Split(after.cgroups, "\n") {
		if strings.HasPrefix(filepath.Base(cg), nsPrefix) && !slices.Contains(old, cg) {
			out = append(out, "cgroup left: "+cg)
		}
	}
	if before.sharedLabs == 0 && after.sharedLabs == 0 && after.sysctls != before.sysctls {
		out = append(out, fmt.Sprintf("sysctls changed: before %s, after %s", before.sysctls, after.sysctls))
	}
	was, is := strings.Fields(before.paths), strings.Fields(after.paths)
	for _, p := range is {
		if !slices.Contains(was, p) && !slices.Contains(after.sharedCreated, p) {
			out = append(out, "path left: "+p)
		}
	}
	for _, p := range was {
		if !slices.Contains(is, p) && !slices.Contains(before.sharedCreated, p) {
			out = append(out, "path removed: "+p)
		}
	}
	return out
}

func snapshotRealHost(t *testing.T) realHostState {
	t.Helper()
	var s realHostState
	var cg []string
	tops, _ := filepath.Glob(filepath.Join(cgroupFS, "*", "*"))
	for _, p := range tops {
		if st, err := os.Stat(p); err == nil && st.IsDir() {
			cg = append(cg, p)
		}
	}
	s.cgroups = strings.Join(cg, "\n")
	var sys []string
	for _, k := range kubeletSysctls {
		b, _ := os.ReadFile("/proc/sys/" + k)
		sys = append(sys, k+"="+strings.TrimSpace(string(b)))
	}
	s.sysctls = strings.Join(sys, " ")
	var paths []string
	for _, p := range append(slices.Clone(nodeMounts), nodeFiles...) {
		for d := p; d != "/"; d = filepath.Dir(d) {
			if _, err := os.Lstat(d); err == nil {
				paths = append(paths, d)
			}
		}
	}
	slices.Sort(paths)
	s.paths = strings.Join(slices.Compact(paths), " ")
	if b, err := os.ReadFile(machine.record); err == nil {
		var sh sharedHost
		if err := json.Unmarshal(b, &sh); err != nil {
			t.Fatalf("%s: %v", machine.record, err)
		}
		s.sharedLabs, s.sharedCreated = len(sh.Labs), sh.Created
	}
	return s
}
