package nodecheck

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/seine-cni/seine/core/agent"
)

// prepNode is a node's file system under a temporary root.
type prepNode struct {
	root, template, config, cniBin, plugin string
}

func newPrepNode(t *testing.T, uplink string) *prepNode {
	t.Helper()
	root := t.TempDir()
	n := &prepNode{
		root:     root,
		template: filepath.Join(root, "configmap", "seine-agent.yaml"),
		config:   filepath.Join(root, "run", "seine", "seine-agent.yaml"),
		cniBin:   filepath.Join(root, "opt", "cni", "bin"),
		plugin:   filepath.Join(root, "image", "seine-cni"),
	}
	ovsRun := filepath.Join(root, "run", "openvswitch")
	write(t, n.template, fmt.Sprintf(`# a comment
nodeName: ""
ovs:
  dbEndpoint: unix:%[1]s/db.sock
  runDir: %[1]s
  bridge: br-int
topology: routedHost
uplink: %[3]q
trafficMode: encap
tunnelType: geneve
cniSocket: %[2]s/run/seine/cni.sock
cniConfDir: %[2]s/etc/cni/net.d
stateDir: %[2]s/var/lib/seine
`, ovsRun, root, uplink), 0o644)
	write(t, n.plugin, "#!/bin/sh\necho seine-cni\n", 0o755)
	if err := os.MkdirAll(ovsRun, 0o755); err != nil {
		t.Fatal(err)
	}
	return n
}

func write(t *testing.T, path, content string, mode os.FileMode) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), mode); err != nil {
		t.Fatal(err)
	}
}

func (n *prepNode) opts(checkOnly bool) PrepOptions {
	return PrepOptions{ConfigPath: n.config, TemplatePath: n.template, NodeName: "node-7",
		CNIBinDir: n.cniBin, InstallCNI: n.plugin, CheckOnly: checkOnly, Host: testHost()}
}

// testHost is the Host of the OS the test runs on (the tests also run
// under Wine).
func testHost() Host {
	if runtime.GOOS == "windows" {
		return WindowsHost{}
	}
	return UnixHost{}
}

// loopback is an interface every test machine has.
func loopback(t *testing.T) string {
	ifs, err := net.Interfaces()
	if err != nil {
		t.Fatal(err)
	}
	for _, i := range ifs {
		if i.Flags&net.FlagLoopback != 0 {
			return i.Name
		}
	}
	t.Skip("no loopback interface")
	return ""
}

func results(r *Report) map[string]Result {
	m := map[string]Result{}
	for _, res := range r.Results {
		m[res.Name] = res
	}
	return m
}

func TestPrepPreparesAndIsIdempotent(t *testing.T) {
	n := newPrepNode(t, loopback(t))
	unixModes := runtime.GOOS != "windows"
	// Checking an unprepared node fails and changes nothing.
	if r := Prep(n.opts(true)); !r.Failed() {
		t.Fatalf("check of an unprepared node passed: %+v", r.Results)
	}
	if _, err := os.Stat(n.config); err == nil {
		t.Fatal("the check wrote the config")
	}

	r := Prep(n.opts(false))
	if r.Failed() {
		t.Fatalf("prep failed: %+v", r.Results)
	}
	got := results(r)
	if _, ok := got["cni socket dir"]; ok {
		t.Error("the socket's directory, the config's, was handled twice")
	}
	for _, name := range []string{"agent config", "state dir", "cni conf dir", "cni bin dir", "cni plugin"} {
		if !got[name].Changed {
			t.Errorf("%s: not reported as changed: %+v", name, got[name])
		}
	}
	if !got["uplink"].OK || !got["ovs run dir"].OK {
		t.Errorf("uplink %+v, ovs run dir %+v", got["uplink"], got["ovs run dir"])
	}
	cfg, err := agent.LoadConfig(n.config)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.NodeName != "node-7" {
		t.Errorf("nodeName %q", cfg.NodeName)
	}
	for dir, mode := range map[string]os.FileMode{
		cfg.StateDir: 0o700, filepath.Dir(cfg.CNISocket): 0o755, cfg.CNIConfDir: 0o755, n.cniBin: 0o755,
	} {
		fi, err := os.Stat(dir)
		if err != nil || !fi.IsDir() || (unixModes && fi.Mode().Perm() != mode) {
			t.Errorf("%s: %v, %v, want a directory with mode %04o", dir, err, fi.Mode(), mode)
		}
	}
	installed := filepath.Join(n.cniBin, testHost().PluginFile("seine"))
	if b, err := os.ReadFile(installed); err != nil || string(b) != "#!/bin/sh\necho seine-cni\n" {
		t.Errorf("installed plugin: %q, %v", b, err)
	}
	if fi, _ := os.Stat(installed); unixModes && fi.Mode().Perm() != 0o755 {
		t.Errorf("plugin mode %04o", fi.Mode().Perm())
	}

	// A second run changes nothing; a check passes.
	r = Prep(n.opts(false))
	for _, res := range r.Results {
		if !res.OK || res.Changed {
			t.Errorf("second run: %+v", res)
		}
	}
	if r := Prep(n.opts(true)); r.Failed() {
		t.Errorf("check after prep: %+v", r.Results)
	}

	// Drift is found by the check and repaired by a run.
	if unixModes {
		if err := os.Chmod(cfg.StateDir, 0o755); err != nil {
			t.Fatal(err)
		}
	} else if err := os.Remove(cfg.StateDir); err != nil {
		t.Fatal(err)
	}
	write(t, n.plugin, "#!/bin/sh\necho seine-cni v2\n", 0o755)
	got = results(Prep(n.opts(true)))
	if r := got["state dir"]; r.OK || (unixModes && !strings.Contains(r.Detail, "has mode 0755, want 0700")) {
		t.Errorf("state dir check: %+v", r)
	}
	if r := got["cni plugin"]; r.OK || !strings.Contains(r.Detail, "differs from") {
		t.Errorf("cni plugin check: %+v", r)
	}
	got = results(Prep(n.opts(false)))
	if !got["state dir"].Changed || !got["cni plugin"].Changed {
		t.Errorf("repair: %+v", got)
	}
	if r := Prep(n.opts(true)); r.Failed() {
		t.Errorf("check after repair: %+v", r.Results)
	}
}

func TestPrepFailures(t *testing.T) {
	for _, tc := range []struct {
		name   string
		uplink string
		edit   func(n *prepNode, o *PrepOptions)
		step   string
		reason string
	}{
		{"missing uplink", "nosuchlink0", nil, "uplink", "nosuchlink0"},
		{"no node name", "", func(_ *prepNode, o *PrepOptions) { o.NodeName = "" }, "agent config", "needs the node name"},
		{"invalid template", "", func(n *prepNode, _ *PrepOptions) {
			b, _ := os.ReadFile(n.template)
			os.WriteFile(n.template, []byte(strings.Replace(string(b), "trafficMode: encap", "trafficMode: teleport", 1)), 0o644)
		}, "agent config", "trafficMode"},
		{"no OVS", "", func(n *prepNode, _ *PrepOptions) { os.Remove(filepath.Join(n.root, "run", "openvswitch")) }, "ovs run dir", "is Open vSwitch installed"},
		{"checked config names another node", "", func(n *prepNode, o *PrepOptions) {
			Prep(*o)
			o.TemplatePath, o.NodeName, o.CheckOnly = "", "node-8", true
		}, "agent config", `nodeName is "node-7", want "node-8"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := newPrepNode(t, tc.uplink)
			o := n.opts(false)
			if tc.edit != nil {
				tc.edit(n, &o)
			}
			r := Prep(o)
			res, ok := results(r)[tc.step]
			if !ok || res.OK || !strings.Contains(res.Detail, tc.reason) {
				t.Errorf("%s: got %+v, want FAIL with %q (all: %+v)", tc.step, res, tc.reason, r.Results)
			}
		})
	}
}

func TestRenderConfig(t *testing.T) {
	out, err := RenderConfig([]byte("# c\nnodeName: \"\"\nmtu: 0\novs:\n  bridge: br-int\n"), "n1")
	if err != nil {
		t.Fatal(err)
	}
	if want := "mtu: 0\nnodeName: n1\novs:\n  bridge: br-int\n"; string(out) != want {
		t.Errorf("got %q, want %q", out, want)
	}
	if _, err := RenderConfig([]byte("# only a comment\n"), "n1"); err == nil {
		t.Error("an empty template rendered")
	}
}

// fakeACL records how directories were made private or public; bad names
// directories whose access is wrong.
type fakeACL struct {
	set map[string]bool // dir -> private
	bad map[string]bool
}

func (f *fakeACL) Ensure(dir string, private bool) (bool, error) {
	if f.set == nil {
		f.set = map[string]bool{}
	}
	changed := f.bad[dir] || f.set[dir] != private
	if p, ok := f.set[dir]; !ok || p != private {
		changed = true
	}
	f.set[dir] = private
	delete(f.bad, dir)
	return changed, nil
}

func (f *fakeACL) Check(dir string, private bool) error {
	if p, ok := f.set[dir]; !ok || p != private || f.bad[dir] {
		return fmt.Errorf("%s: not as it should be (private %v)", dir, private)
	}
	return nil
}

// TestPrepWindowsACL: with an ACL (Windows), node-prep makes the
// configuration's directory, which holds the socket, and the state
// directory private, the CNI directories public; `check` with PrivateDirs
// reports a data directory whose access was changed, and node-prep fixes it.
func TestPrepWindowsACL(t *testing.T) {
	n := newPrepNode(t, loopback(t))
	acl := &fakeACL{bad: map[string]bool{}}
	o := n.opts(false)
	o.Host, o.PrivateConfigDir = WindowsHost{ACL: acl}, true
	if r := Prep(o); r.Failed() {
		t.Fatalf("prep: %+v", r.Results)
	}
	cfg, err := agent.LoadConfig(n.config)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]bool{filepath.Dir(n.config): true, cfg.StateDir: true, cfg.CNIConfDir: false, n.cniBin: false}
	for dir, private := range want {
		if got, ok := acl.set[dir]; !ok || got != private {
			t.Errorf("%s: ACL set %v (private %v), want private %v", dir, ok, got, private)
		}
	}
	if got := results(Prep(o))["config dir"]; !got.OK || got.Changed || got.Detail != "SYSTEM and Administrators only" {
		t.Errorf("second prep, config dir: %+v", got)
	}
	check := func() map[string]Result {
		return results(Check(context.Background(), CheckOptions{ConfigPath: n.config, Host: o.Host, PrivateDirs: true, Timeout: time.Millisecond}))
	}
	if got := check(); !got["config dir access"].OK || !got["state dir access"].OK {
		t.Errorf("check after prep: %+v, %+v", got["config dir access"], got["state dir access"])
	}
	acl.bad[filepath.Dir(n.config)] = true // someone grants Users access again
	if got := check()["config dir access"]; got.OK || !strings.Contains(got.Detail, "not as it should be") {
		t.Errorf("check of a changed data directory: %+v", got)
	}
	if got := results(Prep(o))["config dir"]; !got.OK || !got.Changed {
		t.Errorf("prep of a changed data directory: %+v", got)
	}
}
