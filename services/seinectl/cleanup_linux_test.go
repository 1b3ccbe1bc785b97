package main

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	"sigs.k8s.io/yaml"

	"github.com/seine-cni/seine/core/agent"
	"github.com/seine-cni/seine/core/nodecheck"
	"github.com/seine-cni/seine/installer/kubernetes/manifest"
	"github.com/seine-cni/seine/linux"
	"github.com/seine-cni/seine/ovs/ovsdb"
	"github.com/seine-cni/seine/platform"
	"github.com/seine-cni/seine/test/agenttest"
	"github.com/seine-cni/seine/test/ovsdaemon"
)

// TestNodeCleanupOnARealNode: a real Seine node (test/agenttest: the agent
// on a private OVS with the userspace datapath and the bridged-uplink
// topology, so the node's address lives on br-int, and a pod added through
// seine-cni). node-cleanup refuses while the agent runs and changes
// nothing; once the agent is stopped it gives eth0 the node's address
// back and leaves no bridge, Seine link, route, iptables rule, pod
// interface, CNI file, socket or configuration; run again, it finds
// nothing to do.
func TestNodeCleanupOnARealNode(t *testing.T) {
	n := agenttest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	podNS := ovsdaemon.NewNetNS(t)
	rt := &libcni.RuntimeConf{
		ContainerID: "c0ffee0123456789", NetNS: podNS, IfName: "eth0",
		Args: [][2]string{{"K8S_POD_NAMESPACE", "shop"}, {"K8S_POD_NAME", "cart-0"}},
	}
	if _, err := n.CNI.AddNetworkList(ctx, n.Config, rt); err != nil {
		t.Fatalf("ADD: %v", err)
	}
	cfg := n.AgentConfig
	b, err := yaml.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	configPath := filepath.Join(dir, "seine-agent.yaml")
	mustWrite(t, configPath, string(b), 0o600)
	cniBin := filepath.Join(dir, "bin")
	mustWrite(t, filepath.Join(cniBin, "seine"), "#!/bin/sh\n", 0o755)
	mustWrite(t, filepath.Join(cniBin, "bridge"), "#!/bin/sh\n", 0o755)
	inNode := func(args ...string) string {
		t.Helper()
		out, err := exec.CommandContext(ctx, "nsenter", append([]string{"--net=" + n.NetNS, "--"}, args...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("%v: %v\n%s", args, err, out)
		}
		return string(out)
	}
	cleanup := func() *nodecheck.Report {
		return nodecheck.Cleanup(ctx, nodecheck.CleanupOptions{
			ConfigPath: configPath, CNIBinDir: cniBin, Logger: testLog(t),
			OpenBackend: func(cfg *agent.Config, db platform.OVSDB) (platform.Backend, error) {
				return linux.New(platform.Config{OVSDB: db, Datapath: ovsdb.DatapathNetdev, OVSRunDir: cfg.OVS.RunDir, HostNetNS: n.NetNS, Logger: testLog(t)})
			},
		})
	}
	bridges := func() []string {
		t.Helper()
		db, err := ovsdb.Connect(ctx, ovsdb.Config{Endpoint: cfg.OVS.DBEndpoint})
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		brs, err := db.Bridges(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, br := range brs {
			names = append(names, br.Name)
		}
		return names
	}
	nodeAddr := agenttest.NodeIP + "/24"

	r := cleanup()
	if !r.Failed() || !strings.Contains(reportText(t, r), "seine-agent still answers") {
		t.Fatalf("node-cleanup with the agent running:\n%s", reportText(t, r))
	}
	if addrs := inNode("ip", "-o", "addr", "show", "dev", "br-int"); !strings.Contains(addrs, nodeAddr) {
		t.Fatalf("refused node-cleanup changed the node: br-int has %s", addrs)
	}

	if err := n.StopAgent(); err != nil {
		t.Fatalf("stop the agent: %v", err)
	}
	r = cleanup()
	if r.Failed() {
		t.Fatalf("node-cleanup failed:\n%s", reportText(t, r))
	}
	t.Logf("node-cleanup:\n%s", reportText(t, r))
	if addrs := inNode("ip", "-o", "-4", "addr", "show", "dev", "eth0"); !strings.Contains(addrs, nodeAddr) {
		t.Errorf("eth0 did not get the node's address back: %s", addrs)
	}
	for _, l := range strings.Split(strings.TrimSpace(inNode("ip", "-o", "link", "show")), "\n") {
		name := strings.TrimSuffix(strings.Fields(l)[1], ":")
		name, _, _ = strings.Cut(name, "@")
		if name != "lo" && name != "eth0" && name != "ovs-netdev" {
			t.Errorf("link %s left in the node's namespace: %s", name, l)
		}
	}
	if out, err := exec.CommandContext(ctx, "nsenter", "--net="+podNS, "--", "ip", "link", "show", "eth0").CombinedOutput(); err == nil {
		t.Errorf("the pod still has its interface:\n%s", out)
	}
	for _, cmd := range [][]string{{"iptables-save"}, {"ip6tables-save"}, {"ip", "route", "show", "table", "all"}} {
		if out := inNode(cmd...); strings.Contains(out, "SEINE") || strings.Contains(out, "proto 83") {
			t.Errorf("%v still has Seine's rules or routes:\n%s", cmd, out)
		}
	}
	if brs := bridges(); len(brs) != 0 {
		t.Errorf("bridges left in OVS: %v", brs)
	}
	// agenttest's state directory is not named for Seine: node-cleanup
	// says so and leaves it (TestCleanupFiles removes a Seine one).
	if !strings.Contains(reportText(t, r), "its name does not say it is Seine's") {
		t.Errorf("the state dir %s is not reported as left", cfg.StateDir)
	}
	for _, p := range []string{configPath, filepath.Join(cniBin, "seine"), cfg.CNISocket, filepath.Join(cfg.CNIConfDir, agent.CNIConfFile)} {
		if _, err := os.Lstat(p); err == nil {
			t.Errorf("%s left", p)
		}
	}
	if _, err := os.Stat(filepath.Join(cniBin, "bridge")); err != nil {
		t.Errorf("another plugin was removed: %v", err)
	}

	r = cleanup()
	if r.Failed() || len(r.Results) != 1 || !strings.Contains(r.Results[0].Detail, "absent") {
		t.Errorf("node-cleanup of a clean node:\n%s", reportText(t, r))
	}
}

func reportText(t *testing.T, r *nodecheck.Report) string {
	t.Helper()
	var b bytes.Buffer
	if err := printReport(&b, formatWide, r); err != nil {
		t.Fatal(err)
	}
	return b.String()
}

func testLog(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo}))
}

type tWriter struct{ t *testing.T }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// TestNodeCleanupAsTheDaemonSetRunsIt runs the cleanup DaemonSet's exact
// command line with the node's root at a temporary directory: it reads the
// configuration node-prep renders, finds every path under the root (Open
// vSwitch's socket too) and, with no Open vSwitch there, refuses with the
// reason and exit status 1, changing nothing.
func TestNodeCleanupAsTheDaemonSetRunsIt(t *testing.T) {
	root := t.TempDir()
	rendered, err := nodecheck.RenderConfig([]byte(manifest.AgentConfigTemplate), "node-1")
	if err != nil {
		t.Fatal(err)
	}
	files := map[string]string{
		"var/run/seine/seine-agent.yaml":  string(rendered),
		"var/lib/seine/ipam/10.244.1.2":   "pod",
		"opt/cni/bin/seine":               "plugin",
		"etc/cni/net.d/10-seine.conflist": "{}",
	}
	for p, content := range files {
		mustWrite(t, filepath.Join(root, p), content, 0o600)
	}
	if filepath.Base(manifest.NodeCleanupArgs[0]) != "seinectl" {
		t.Fatalf("the init container runs %s", manifest.NodeCleanupArgs[0])
	}
	var args []string
	for _, a := range manifest.NodeCleanupArgs[1:] {
		if strings.HasPrefix(a, "--host-root=") {
			a = "--host-root=" + root
		}
		args = append(args, a)
	}
	var stdout, stderr bytes.Buffer
	err = run(t.Context(), args, &stdout, &stderr, nil)
	if ee := (*exitError)(nil); !errors.As(err, &ee) || ee.code != 1 {
		t.Fatalf("node-cleanup %v: %v, want exit status 1\n%s%s", args, err, stdout.String(), stderr.String())
	}
	for _, want := range []string{"unix:" + root + "/var/run/openvswitch/db.sock", "Open vSwitch must still run", "nothing was changed"} {
		if !strings.Contains(stdout.String(), want) {
			t.Errorf("the report does not say %q:\n%s", want, stdout.String())
		}
	}
	for p := range files {
		if _, err := os.Stat(filepath.Join(root, p)); err != nil {
			t.Errorf("%s: %v", p, err)
		}
	}
}
