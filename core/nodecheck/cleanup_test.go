package nodecheck

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/seine-cni/seine/cni"
	"github.com/seine-cni/seine/core/agent"
	"github.com/seine-cni/seine/ovs/ovsdb"
	"github.com/seine-cni/seine/platform"
)

// cleanupNode is a node's files as node-prep and the agent leave them,
// under a temporary root.
type cleanupNode struct {
	root, config, stateDir, cniBin, cniConf string
}

func newCleanupNode(t *testing.T) cleanupNode {
	t.Helper()
	n := cleanupNode{root: t.TempDir()}
	// As on Debian, /var/run is an absolute link to /run: under the node's
	// root it must lead to the root's /run, not this process's.
	if err := os.MkdirAll(filepath.Join(n.root, "run"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(n.root, "var"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("/run", filepath.Join(n.root, "var", "run")); err != nil {
		t.Fatal(err)
	}
	n.config = "/var/run/seine/seine-agent.yaml"
	n.stateDir = "/var/lib/seine"
	n.cniBin = "/opt/cni/bin"
	n.cniConf = "/etc/cni/net.d"
	write := func(p, content string) {
		t.Helper()
		p = filepath.Join(n.root, strings.Replace(p, "/var/run", "/run", 1))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write(n.config, `nodeName: node-1
ovs: {dbEndpoint: "unix:/var/run/openvswitch/db.sock", runDir: /var/run/openvswitch, bridge: br-int, datapathType: netdev}
topology: bridgedUplink
uplink: eth0
trafficMode: encap
tunnelType: geneve
cniSocket: /var/run/seine/cni.sock
cniConfDir: /host/etc/cni/net.d
stateDir: /var/lib/seine
policyAuditLogFile: /var/log/seine/networkpolicy/np.log
`)
	write(n.stateDir+"/ipam/10.244.1.2", "pod")
	write(n.cniBin+"/seine", "plugin")
	write(n.cniBin+"/bridge", "another plugin")
	write(n.cniConf+"/"+agent.CNIConfFile, "{}")
	write(n.cniConf+"/99-other.conflist", "{}")
	write("/var/log/seine/networkpolicy/np.log", "a line")
	write("/var/log/seine/networkpolicy/np-2026-12-07T06-13-26.797.log", "a rotated line")
	write("/var/log/syslog", "not Seine's")
	return n
}

func (n cleanupNode) exists(p string) bool {
	_, err := os.Lstat(filepath.Join(n.root, strings.Replace(p, "/var/run", "/run", 1)))
	return err == nil
}

// fakeCleanupDB stands for Open vSwitch: one pod port on br-int.
type fakeCleanupDB struct {
	platform.OVSDB
	calls *[]string
}

func (f fakeCleanupDB) ListPorts(_ context.Context, match map[string]string) ([]ovsdb.PortInfo, error) {
	*f.calls = append(*f.calls, "list ports")
	return []ovsdb.PortInfo{{Name: "web-0-abc", ExternalIDs: map[string]string{
		"seine-type": "pod", "k8s-pod-namespace": "default", "k8s-pod-name": "web-0",
		"container-id": "c0ffee", "ifname": "eth0", "netns": "/var/run/netns/cni-1"}}}, nil
}

func (f fakeCleanupDB) DeleteBridge(_ context.Context, name string) error {
	*f.calls = append(*f.calls, "delete bridge "+name)
	return nil
}

func (f fakeCleanupDB) Close() {}

// fakeCleanupBackend records what the cleanup asks of the OS.
type fakeCleanupBackend struct {
	platform.Backend
	calls       *[]string
	teardownErr error
}

func (f fakeCleanupBackend) Detach(_ context.Context, ref platform.PodRef) error {
	*f.calls = append(*f.calls, "detach "+ref.Namespace+"/"+ref.Name)
	return nil
}

func (f fakeCleanupBackend) Teardown(_ context.Context, cfg platform.NodeConfig) error {
	*f.calls = append(*f.calls, "teardown "+string(cfg.Topology)+" "+cfg.Uplink)
	return f.teardownErr
}

func (f fakeCleanupBackend) RemoveHostRules(context.Context) error {
	*f.calls = append(*f.calls, "remove host rules")
	return nil
}

func (f fakeCleanupBackend) Close() error { return nil }

func fakeOVS(t *testing.T, calls *[]string) {
	old := connectOVSDB
	connectOVSDB = func(_ context.Context, endpoint string, _ *slog.Logger) (cleanupOVSDB, error) {
		*calls = append(*calls, "connect "+endpoint)
		return fakeCleanupDB{calls: calls}, nil
	}
	t.Cleanup(func() { connectOVSDB = old })
}

// TestCleanupFiles: with the node's root under HostRoot, the cleanup goes
// through OVS and the backend in the order that keeps the node reachable
// (pods, topology, bridge, rules), then removes Seine's files and
// directories and nothing else; run again, it finds nothing to do.
func TestCleanupFiles(t *testing.T) {
	n := newCleanupNode(t)
	var calls []string
	fakeOVS(t, &calls)
	o := CleanupOptions{
		ConfigPath: n.config, HostRoot: n.root, CNIBinDir: n.cniBin, CNIConfDir: n.cniConf,
		OpenBackend: func(*agent.Config, platform.OVSDB) (platform.Backend, error) {
			return fakeCleanupBackend{calls: &calls}, nil
		},
	}
	r := Cleanup(context.Background(), o)
	if r.Failed() {
		t.Fatalf("cleanup failed: %+v", r.Results)
	}
	want := []string{
		"connect unix:" + filepath.Join(n.root, "/run/openvswitch/db.sock"), "list ports", "detach default/web-0",
		"teardown BridgedUplink eth0", "delete bridge br-int", "remove host rules",
	}
	if strings.Join(calls, "\n") != strings.Join(want, "\n") {
		t.Errorf("calls:\n%s\nwant:\n%s", strings.Join(calls, "\n"), strings.Join(want, "\n"))
	}
	for _, gone := range []string{n.config, "/var/run/seine", n.stateDir, n.cniBin + "/seine", n.cniConf + "/" + agent.CNIConfFile, "/var/log/seine"} {
		if n.exists(gone) {
			t.Errorf("%s left", gone)
		}
	}
	for _, kept := range []string{n.cniBin + "/bridge", n.cniConf + "/99-other.conflist", "/var/run", "/var/lib", "/var/log/syslog"} {
		if !n.exists(kept) {
			t.Errorf("%s (not Seine's) removed", kept)
		}
	}
	calls = nil
	if r := Cleanup(context.Background(), o); r.Failed() || len(r.Results) != 1 || len(calls) != 0 {
		t.Errorf("cleanup of a clean node: %+v, calls %v", r.Results, calls)
	}
}

// TestCleanupRemovesSpooledDels: a DEL the plugin spooled while the agent
// was already stopped (a pod deleted during the uninstall) is for an agent
// that will not come back, and the private directory of a socket an agent
// was killed while binding is no one's; the cleanup removes them with the
// run directory instead of leaving them behind.
func TestCleanupRemovesSpooledDels(t *testing.T) {
	n := newCleanupNode(t)
	var calls []string
	fakeOVS(t, &calls)
	spool := cni.PendingDelDir(filepath.Join(n.root, "/run/seine/cni.sock")) // /var/run links to the machine's /run
	if _, err := cni.SpoolDel(spool, &cni.Request{Command: cni.CmdDel, ContainerID: "c0ffee", IfName: "eth0"}); err != nil {
		t.Fatal(err)
	}
	// An agent killed while it bound its socket leaves its private
	// directory (cni/server listen): Seine's too.
	if err := os.MkdirAll(filepath.Join(filepath.Dir(spool), ".cni-sock-3832359234"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(filepath.Dir(spool), ".cni-sock-3832359234", "sock"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	r := Cleanup(context.Background(), CleanupOptions{
		ConfigPath: n.config, HostRoot: n.root, CNIBinDir: n.cniBin, CNIConfDir: n.cniConf,
		OpenBackend: func(*agent.Config, platform.OVSDB) (platform.Backend, error) {
			return fakeCleanupBackend{calls: &calls}, nil
		},
	})
	if r.Failed() {
		t.Fatalf("cleanup failed: %+v", r.Results)
	}
	if n.exists("/var/run/seine") {
		t.Errorf("/var/run/seine left (the spooled DEL in it): %+v", r.Results)
	}
}

// TestCleanupKeepsWhatARerunNeeds: when undoing the topology fails, the
// bridge (which may hold the node's address) and the files (the
// configuration a rerun reads) stay, and the report says why.
func TestCleanupKeepsWhatARerunNeeds(t *testing.T) {
	n := newCleanupNode(t)
	var calls []string
	fakeOVS(t, &calls)
	r := Cleanup(context.Background(), CleanupOptions{
		ConfigPath: n.config, HostRoot: n.root, CNIBinDir: n.cniBin, CNIConfDir: n.cniConf,
		OpenBackend: func(*agent.Config, platform.OVSDB) (platform.Backend, error) {
			return fakeCleanupBackend{calls: &calls, teardownErr: errors.New("uplink eth0: no such device")}, nil
		},
	})
	if !r.Failed() {
		t.Fatal("cleanup succeeded with a failing teardown")
	}
	for _, c := range calls {
		if strings.HasPrefix(c, "delete bridge") {
			t.Errorf("the bridge was deleted although the topology was not undone")
		}
	}
	for _, kept := range []string{n.config, n.stateDir + "/ipam/10.244.1.2", n.cniBin + "/seine", n.cniConf + "/" + agent.CNIConfFile} {
		if !n.exists(kept) {
			t.Errorf("%s removed after a failed step", kept)
		}
	}
	var text strings.Builder
	for _, res := range r.Results {
		text.WriteString(res.Name + ": " + res.Detail + "\n")
	}
	for _, want := range []string{"no such device", "run node-cleanup again"} {
		if !strings.Contains(text.String(), want) {
			t.Errorf("report does not say %q:\n%s", want, text.String())
		}
	}
}

func (n cleanupNode) untouched(t *testing.T) {
	t.Helper()
	for _, p := range []string{n.config, n.stateDir + "/ipam/10.244.1.2", n.cniBin + "/seine", n.cniConf + "/" + agent.CNIConfFile} {
		if !n.exists(p) {
			t.Errorf("%s removed", p)
		}
	}
}

func noBackend(*agent.Config, platform.OVSDB) (platform.Backend, error) {
	return nil, errors.New("the backend must not be opened")
}

// TestCleanupRefusesAndChangesNothing: a configuration that does not parse
// or Open vSwitch not answering stop the cleanup before anything is
// changed (TestCleanupRefusesWhileTheAgentRuns: the agent still answering).
func TestCleanupRefusesAndChangesNothing(t *testing.T) {
	t.Run("bad config", func(t *testing.T) {
		n := newCleanupNode(t)
		if err := os.WriteFile(filepath.Join(n.root, "/run/seine/seine-agent.yaml"), []byte("nodeName: node-1\nbogusKey: 1\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		r := Cleanup(context.Background(), CleanupOptions{ConfigPath: n.config, HostRoot: n.root, CNIBinDir: n.cniBin, OpenBackend: noBackend})
		if !r.Failed() || !strings.Contains(r.Results[0].Detail, "bogusKey") || !strings.Contains(r.Results[0].Detail, "nothing was changed") {
			t.Errorf("report: %+v", r.Results)
		}
		n.untouched(t)
	})
	t.Run("ovs down", func(t *testing.T) {
		n := newCleanupNode(t)
		r := Cleanup(context.Background(), CleanupOptions{ConfigPath: n.config, HostRoot: n.root, CNIBinDir: n.cniBin,
			OpenBackend: noBackend, Timeout: time.Second})
		last := r.Results[len(r.Results)-1]
		if !r.Failed() || last.Name != "ovsdb" || !strings.Contains(last.Detail, "Open vSwitch must still run") {
			t.Errorf("report: %+v", r.Results)
		}
		n.untouched(t)
	})
}
