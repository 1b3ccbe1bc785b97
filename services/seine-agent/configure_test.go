package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/seine-cni/seine/core/agent"
)

func TestConfigure(t *testing.T) {
	dir := t.TempDir()
	base := validConfig(dir) + "mtu: 0\n"
	for _, tt := range []struct {
		name  string
		base  string
		sets  []string
		check func(t *testing.T, c *agent.Config)
		fails bool
	}{
		{
			name: "properties",
			base: base,
			sets: []string{"nodeName=Win-1", "uplink=Ethernet 2", "trafficMode=noEncap", "ovs.bridge=br-x", "mtu=1400", "topology=bridgedUplink"},
			check: func(t *testing.T, c *agent.Config) {
				if c.NodeName != "Win-1" || c.Uplink != "Ethernet 2" || c.TrafficMode != "noEncap" || c.OVS.Bridge != "br-x" || c.MTU != 1400 {
					t.Errorf("configured %+v", c)
				}
			},
		},
		{
			name: "empty values keep the file's",
			base: base,
			sets: []string{"uplink=", "trafficMode= "},
			check: func(t *testing.T, c *agent.Config) {
				if c.TrafficMode != "encap" || c.NodeName != "node-a" {
					t.Errorf("configured %+v", c)
				}
			},
		},
		{
			name: "empty node name becomes the host name",
			base: strings.Replace(base, "nodeName: node-a", `nodeName: ""`, 1),
			sets: []string{"nodeName= "},
			check: func(t *testing.T, c *agent.Config) {
				if c.NodeName != "host-7" {
					t.Errorf("nodeName %q, want host-7", c.NodeName)
				}
			},
		},
		{name: "unknown key", base: base, sets: []string{"nodename=x"}, fails: true},
		{name: "invalid value", base: base, sets: []string{"trafficMode=carrier-pigeon"}, fails: true},
		{name: "not a number", base: base, sets: []string{"mtu=big"}, fails: true},
		{name: "no equals", base: base, sets: []string{"uplink"}, fails: true},
		{name: "through a string", base: base, sets: []string{"uplink.x=1"}, fails: true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			out, err := configure([]byte(tt.base), tt.sets, "HOST-7")
			if (err != nil) != tt.fails {
				t.Fatalf("configure = %v, want failure %v", err, tt.fails)
			}
			if tt.fails {
				return
			}
			c, err := agent.ParseConfig(out)
			if err != nil {
				t.Fatalf("configured file does not load: %v\n%s", err, out)
			}
			tt.check(t, c)
		})
	}
}

// TestConfigureCmd: the file is rewritten in place, and left alone when the
// result would be invalid.
func TestConfigureCmd(t *testing.T) {
	dir := t.TempDir()
	path := writeConfig(t, dir)
	tc := newTestCLI(t)
	if err := tc.run([]string{"configure", "--config", path, "--set", "nodeName=win-9", "--set", "kubeconfig=" + filepath.Join(dir, "kc")}); err != nil {
		t.Fatal(err)
	}
	c, err := agent.LoadConfig(path)
	if err != nil {
		t.Fatal(err)
	}
	if c.NodeName != "win-9" || c.Kubeconfig != filepath.Join(dir, "kc") {
		t.Errorf("configured %+v", c)
	}
	before, _ := os.ReadFile(path)
	if err := tc.run([]string{"configure", "--config", path, "--set", "kubeconfig=relative/kc"}); err == nil {
		t.Fatal("configure accepted a relative kubeconfig")
	}
	after, _ := os.ReadFile(path)
	if string(before) != string(after) {
		t.Errorf("a failed configure changed the file")
	}
}

func TestPurge(t *testing.T) {
	dir := t.TempDir()
	path := writeConfig(t, dir)
	logFile := filepath.Join(dir, "agent.log")
	made := []string{
		filepath.Join(dir, "state", "ipam", "lease"),
		filepath.Join(dir, "net.d", agent.CNIConfFile),
		filepath.Join(dir, "cni.sock"),
		logFile,
	}
	keep := filepath.Join(dir, "net.d", "99-other.conflist")
	for _, f := range append(made, keep) {
		if err := os.MkdirAll(filepath.Dir(f), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(f, []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	tc := newTestCLI(t)
	for range 2 { // the second run finds nothing to remove, and that is fine
		if err := tc.run([]string{"purge", "--config", path, "--log-file", logFile}); err != nil {
			t.Fatal(err)
		}
	}
	for _, f := range append(made, filepath.Join(dir, "state")) {
		if _, err := os.Stat(f); !os.IsNotExist(err) {
			t.Errorf("%s still there after purge (%v)", f, err)
		}
	}
	if _, err := os.Stat(keep); err != nil {
		t.Errorf("purge removed another plugin's config: %v", err)
	}
}

func TestRemoveDirRefusesRoots(t *testing.T) {
	for _, d := range []string{"/", "/var", "/var/"} {
		if err := removeDir(d); err == nil {
			t.Errorf("removeDir(%q) was allowed", d)
		}
	}
}
