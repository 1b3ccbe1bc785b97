package main

// Real-path tests of check and bundle on Linux: a private Open vSwitch
// (test/ovsdaemon, netdev bridge with a flow), a temporary agent
// configuration pointing at it, a CNI socket and health endpoints standing
// in for a running agent.

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/seine-cni/seine/core/nodecheck"
	"github.com/seine-cni/seine/test/ovsdaemon"
)

type testNode struct {
	ovs                         *ovsdaemon.Daemon
	dir, config, binDir, cniBin string
	confDir, socket, conflist   string
	ready                       atomic.Bool
	healthAddr                  string
}

func startTestNode(t *testing.T) *testNode {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	d := ovsdaemon.StartForTest(t)
	if out, err := d.Vsctl(ctx, "add-br", "br-int", "--", "set", "bridge", "br-int", "datapath_type=netdev", "protocols=OpenFlow15", "fail_mode=secure"); err != nil {
		t.Fatalf("add-br: %v\n%s", err, out)
	}
	if out, err := d.Ofctl(ctx, "-O", "OpenFlow15", "add-flow", "br-int", "table=0,priority=10,ip,actions=drop"); err != nil {
		t.Fatalf("add-flow: %v\n%s", err, out)
	}
	// A short directory: unix socket paths hold 107 bytes.
	dir, err := os.MkdirTemp("", "seinectl")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	n := &testNode{ovs: d, dir: dir, binDir: filepath.Join(dir, "bin"), cniBin: filepath.Join(dir, "cni-bin"),
		confDir: filepath.Join(dir, "net.d"), socket: filepath.Join(dir, "cni.sock"), config: filepath.Join(dir, "seine-agent.yaml")}
	n.conflist = filepath.Join(n.confDir, "10-seine.conflist")
	for _, p := range []string{filepath.Join(n.binDir, "seine-agent"), filepath.Join(n.binDir, "seinectl"), filepath.Join(n.cniBin, "seine")} {
		mustWrite(t, p, "#!/bin/sh\n", 0o755)
	}
	ln, err := net.Listen("unix", n.socket)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	n.ready.Store(true)
	n.healthAddr = serveHealth(t, &n.ready)
	mustWrite(t, n.conflist, fmt.Sprintf(`{"cniVersion": "1.1.0", "name": "seine", "plugins": [{"type": "seine", "socketPath": %q}]}`, n.socket), 0o644)
	mustWrite(t, n.config, fmt.Sprintf(`nodeName: node-1
ovs:
  dbEndpoint: %s
  runDir: %s
  bridge: br-int
  datapathType: netdev
topology: routedHost
trafficMode: encap
tunnelType: geneve
cniSocket: %s
cniConfDir: %s
stateDir: %s
healthAddress: %s
`, d.DBEndpoint(), d.RunDir(), n.socket, n.confDir, filepath.Join(dir, "state"), n.healthAddr), 0o644)
	return n
}

// serveHealth answers /healthz always and /readyz while ready is set, as
// the agent does.
func serveHealth(t *testing.T, ready *atomic.Bool) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		if !ready.Load() {
			http.Error(w, "not ready: node setup", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	srv := &http.Server{Handler: mux}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String()
}

func mustWrite(t *testing.T, path, content string, mode os.FileMode) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), mode); err != nil {
		t.Fatal(err)
	}
}

// check runs `seinectl check -o json` and returns the results by name.
func (n *testNode) check(t *testing.T) (map[string]nodecheck.Result, error) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	err := run(t.Context(), []string{"check", "--config", n.config, "--bin-dir", n.binDir, "--cni-bin-dir", n.cniBin, "-o", "json"}, &stdout, &stderr, nil)
	var r nodecheck.Report
	if jerr := json.Unmarshal(stdout.Bytes(), &r); jerr != nil {
		t.Fatalf("check output: %v\n%s%s", jerr, stdout.String(), stderr.String())
	}
	byName := map[string]nodecheck.Result{}
	for _, res := range r.Results {
		byName[res.Name] = res
	}
	return byName, err
}

func TestCheckOnANode(t *testing.T) {
	ovsdaemon.SkipUnlessCanRun(t)
	n := startTestNode(t)
	start := time.Now()
	got, err := n.check(t)
	t.Logf("check in %s", time.Since(start).Round(time.Millisecond))
	if err != nil {
		t.Errorf("check: %v", err)
	}
	want := map[string]string{
		"binary seine-agent": "bytes", "binary seinectl": "bytes", "binary seine": "bytes",
		"agent config": "node node-1, bridge br-int", "cni conflist": "network seine",
		"cni socket": "exists (S", "ovsdb": "bridge br-int (netdev, 1 ports)", "openflow": "br-int: 1 flows",
		"agent /healthz": "ok", "agent /readyz": "ok",
	}
	for name, detail := range want {
		if r, ok := got[name]; !ok || !r.OK || !strings.Contains(r.Detail, detail) {
			t.Errorf("%s: got %+v, want OK with %q", name, r, detail)
		}
	}
	if len(got) != len(want) {
		t.Errorf("got %d checks, want %d: %v", len(got), len(want), got)
	}

	// Each broken part fails its own check with the reason, and the command
	// exits 1.
	for _, tc := range []struct {
		name, check, reason string
		breakIt             func(t *testing.T)
	}{
		{"agent not ready", "agent /readyz", "503 Service Unavailable: not ready: node setup", func(t *testing.T) {
			n.ready.Store(false)
			t.Cleanup(func() { n.ready.Store(true) })
		}},
		{"plugin not executable", "binary seine", "is not executable", func(t *testing.T) {
			p := filepath.Join(n.cniBin, "seine")
			os.Chmod(p, 0o644)
			t.Cleanup(func() { os.Chmod(p, 0o755) })
		}},
		{"conflist for another socket", "cni conflist", "but the agent listens on " + n.socket, func(t *testing.T) {
			old, _ := os.ReadFile(n.conflist)
			mustWrite(t, n.conflist, `{"cniVersion": "1.1.0", "name": "seine", "plugins": [{"type": "seine", "socketPath": "/elsewhere.sock"}]}`, 0o644)
			t.Cleanup(func() { os.WriteFile(n.conflist, old, 0o644) })
		}},
		{"another conflist first", "cni conflist", "05-other.conflist sorts first", func(t *testing.T) {
			p := filepath.Join(n.confDir, "05-other.conflist")
			mustWrite(t, p, `{"cniVersion": "1.1.0", "name": "other", "plugins": [{"type": "bridge"}]}`, 0o644)
			t.Cleanup(func() { os.Remove(p) })
		}},
		{"vswitchd down", "openflow", "br-int.mgmt", func(t *testing.T) {
			if err := n.ovs.StopVswitchd(t.Context()); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() {
				if err := n.ovs.StartVswitchd(context.Background()); err != nil {
					t.Errorf("restart vswitchd: %v", err)
				}
			})
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.breakIt(t)
			got, err := n.check(t)
			var ee *exitError
			if !errors.As(err, &ee) || ee.code != 1 {
				t.Errorf("exit: got %v, want code 1", err)
			}
			for name, r := range got {
				if name == tc.check {
					if r.OK || !strings.Contains(r.Detail, tc.reason) {
						t.Errorf("%s: got %+v, want FAIL with %q", name, r, tc.reason)
					}
				} else if !r.OK {
					t.Errorf("%s failed too: %s", name, r.Detail)
				}
			}
		})
	}
}

func TestCheckWithoutConfig(t *testing.T) {
	got, err := (&testNode{config: filepath.Join(t.TempDir(), "missing.yaml"), binDir: t.TempDir(), cniBin: t.TempDir()}).check(t)
	if err == nil {
		t.Error("check passed without a config")
	}
	if r := got["agent config"]; r.OK || !strings.Contains(r.Detail, "no such file") {
		t.Errorf("agent config: %+v", r)
	}
	if r := got["ovsdb"]; r.OK || r.Detail != "skipped: no agent config" {
		t.Errorf("ovsdb: %+v", r)
	}
}

func TestBundleOfANode(t *testing.T) {
	ovsdaemon.SkipUnlessCanRun(t)
	n := startTestNode(t)
	logPath := filepath.Join(n.dir, "agent.log")
	mustWrite(t, logPath, "level=INFO msg=\"node ready\"\n", 0o644)
	out := filepath.Join(n.dir, "bundle.tar.gz")
	var stdout, stderr bytes.Buffer
	start := time.Now()
	if err := run(t.Context(), []string{"bundle", "-o", out, "--config", n.config, "--agent-log", logPath}, &stdout, &stderr, nil); err != nil {
		t.Fatalf("bundle: %v\n%s", err, stderr.String())
	}
	t.Logf("bundle in %s: %s", time.Since(start).Round(time.Millisecond), strings.TrimSpace(stdout.String()))
	files := readBundle(t, out)
	want := map[string]string{
		"summary.txt":            "OK    ovs/flows.txt",
		"agent/seine-agent.yaml": "nodeName: node-1",
		"agent/seine-agent.log":  `msg="node ready"`,
		"ovs/ovsdb.txt":          "Bridge br-int\n    datapath_type: netdev",
		"ovs/flows.txt":          "priority=10,ip actions=drop",
		"host/diagnostics.txt":   "== ovs dpif/show ==",
		"check.txt":              "ovsdb",
	}
	for name, s := range want {
		if !strings.Contains(files[name], s) {
			t.Errorf("%s lacks %q:\n%s", name, s, files[name])
		}
	}
	if names := fileOrder(t, out); len(names) == 0 || names[0] != "summary.txt" {
		t.Errorf("bundle files %v: summary.txt must come first", names)
	}
	// The check inside the bundle looked at the default binaries, which are
	// not installed here: the summary still says the source was collected.
	if strings.Contains(files["summary.txt"], "FAIL") {
		t.Errorf("summary has failures:\n%s", files["summary.txt"])
	}
}

func readBundle(t *testing.T, path string) map[string]string {
	t.Helper()
	files := map[string]string{}
	walkBundle(t, path, func(name string, body []byte) { files[name] = string(body) })
	return files
}

func fileOrder(t *testing.T, path string) []string {
	var names []string
	walkBundle(t, path, func(name string, _ []byte) { names = append(names, name) })
	return names
}

func walkBundle(t *testing.T, path string, fn func(string, []byte)) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	gz, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(gz)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return
		}
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		fn(h.Name, b)
	}
}
