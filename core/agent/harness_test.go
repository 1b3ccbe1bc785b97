package agent

import (
	"context"
	"errors"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/types"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	k8sruntime "k8s.io/apimachinery/pkg/runtime"
	fakediscovery "k8s.io/client-go/discovery/fake"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/seine-cni/seine/cni"
	"github.com/seine-cni/seine/platform"
	"github.com/seine-cni/seine/platform/platformtest"
)

// world is what outlives one agent: OVSDB, the switch's flows, the host
// (backend fakes), the API server, the state directory.
type world struct {
	t       *testing.T
	db      *fakeDB
	sw      *fakeSwitch
	backend *platformtest.FakeBackend
	kube    *fake.Clientset
	cfg     *Config
	netns   string // a file standing for a pod network namespace
	// hostResync, when set, replaces the host rules' resync period of the
	// agents start makes (the configuration refuses less than a second).
	hostResync time.Duration
	// vfs, when set, gives the backend SR-IOV VFs (vf_test.go).
	vfs *platformtest.FakeVFs
	// vswitchd, when set, is ovs-vswitchd's unixctl server for the agents
	// start makes (a fakeVswitchd's dial).
	vswitchd func(context.Context) (vswitchdControl, error)
}

func newWorld(t *testing.T, nodes ...*corev1.Node) *world {
	t.Helper()
	db := newFakeDB()
	dir := testDir(t)
	netns := filepath.Join(dir, "netns-pod")
	if err := os.WriteFile(netns, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	objs := make([]runtimeObject, 0, len(nodes))
	for _, n := range nodes {
		objs = append(objs, n)
	}
	kube := fake.NewClientset(objs...)
	serveResources(kube, "networking.k8s.io/v1", "networkpolicies", "servicecidrs")
	return &world{
		t: t, db: db, sw: newFakeSwitch(),
		backend: &platformtest.FakeBackend{
			FakeNodeNetwork: platformtest.NewFakeNodeNetwork(db, netip.MustParsePrefix("172.30.0.11/24")),
			FakePodAttacher: platformtest.NewFakePodAttacher(),
			FakeHostRules:   platformtest.NewFakeHostRules(),
			FakeDiagnostics: &platformtest.FakeDiagnostics{},
			FakeNodePorts:   &platformtest.FakeNodePorts{},
		},
		kube:  kube,
		netns: netns,
		cfg: &Config{
			NodeName: "node-1",
			OVS:      OVSConfig{DBEndpoint: "unix:/nonexistent/db.sock", RunDir: dir, Bridge: "br-int", DatapathType: "netdev"},
			Topology: "bridgedUplink", Uplink: "eth0", TrafficMode: "encap", TunnelType: "geneve",
			CNISocket: filepath.Join(dir, "cni.sock"), CNIConfDir: filepath.Join(dir, "net.d"), StateDir: filepath.Join(dir, "state"),
		},
	}
}

// serveResources makes the fake apiserver's discovery list resources
// under groupVersion (and nothing else there).
func serveResources(cs *fake.Clientset, groupVersion string, resources ...string) {
	d := cs.Discovery().(*fakediscovery.FakeDiscovery)
	l := &metav1.APIResourceList{GroupVersion: groupVersion}
	for _, r := range resources {
		l.APIResources = append(l.APIResources, metav1.APIResource{Name: r, Namespaced: r != "servicecidrs"})
	}
	d.Resources = slices.DeleteFunc(d.Resources, func(x *metav1.APIResourceList) bool { return x.GroupVersion == groupVersion })
	d.Resources = append(d.Resources, l)
}

// testDir is t.TempDir, except that under Wine, whose file deletion Go's
// os.RemoveAll cannot use (test/windows/README.md), a failed clean-up is
// only logged: winetest empties the prefix's temp directory afterwards.
func testDir(t *testing.T) string {
	t.Helper()
	if runtime.GOOS != "windows" {
		return t.TempDir()
	}
	dir, err := os.MkdirTemp("", "seine-agent-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := os.RemoveAll(dir); err != nil {
			t.Logf("clean up %s: %v", dir, err)
		}
	})
	return dir
}

func node(name, ip, podCIDR string) *corev1.Node {
	n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}}
	if podCIDR != "" {
		n.Spec.PodCIDR, n.Spec.PodCIDRs = podCIDR, []string{podCIDR}
	}
	if ip != "" {
		n.Status.Addresses = []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: ip}}
	}
	return n
}

// start runs an agent in the world; it is stopped in t's cleanup (or by
// the returned stop).
func (w *world) start() (*Agent, func()) {
	w.t.Helper()
	var backend platform.Backend = w.backend
	if w.vfs != nil {
		backend = vfBackend{w.backend, w.vfs}
	}
	a, err := New(Options{Config: w.cfg, Logger: testLogger(w.t), Kube: w.kube, OVSDB: w.db, Backend: backend, NewSwitch: w.sw.factory})
	if err != nil {
		w.t.Fatal(err)
	}
	if w.hostResync > 0 {
		a.hostResync = w.hostResync
	}
	if w.vswitchd != nil {
		a.vswitchd = w.vswitchd
	}
	noCNISocketUnderWine(a)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	stopped := false
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		if err := <-done; err != nil {
			w.t.Errorf("agent Run: %v", err)
		}
	}
	w.t.Cleanup(stop)
	return a, stop
}

// noCNISocketUnderWine: Wine has no AF_UNIX sockets
// (test/windows/README.md), so on Windows the tests call the agent's CNI
// handler directly instead of serving the socket; cni/server tests that.
func noCNISocketUnderWine(a *Agent) {
	if runtime.GOOS == "windows" {
		a.serveCNI = func() (func(), error) { return func() {}, nil }
	}
}

// run runs a in the background until t's cleanup, which fails t if Run
// returned an error, and waits until it is ready.
func run(t *testing.T, a *Agent) {
	t.Helper()
	noCNISocketUnderWine(a)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("agent Run: %v", err)
		}
	})
	waitReady(t, a)
}

// waitReady polls until the agent is ready.
func waitReady(t *testing.T, a *Agent) {
	t.Helper()
	poll(t, "agent ready", func() (bool, string) { return a.Ready() })
}

func poll(t *testing.T, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		ok, why := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("waiting for %s: %s", what, why)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// addReq is a CNI request for pod default/<name> in container <id>.
func (w *world) req(cmd cni.Command, id, name string) *cni.Request {
	return &cni.Request{
		Command: cmd, ContainerID: id, IfName: "eth0", Netns: w.netns,
		K8s: cni.K8sArgs{PodNamespace: "default", PodName: name},
	}
}

// cniCode returns the CNI error code of err (0 for nil, 999 for a plain error).
func cniCode(err error) uint {
	if err == nil {
		return 0
	}
	var e *types.Error
	if ok := asTypesError(err, &e); ok {
		return e.Code
	}
	return types.ErrInternal
}

// testLogger logs warnings and errors through t.
func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

type runtimeObject = k8sruntime.Object

func asTypesError(err error, target **types.Error) bool { return errors.As(err, target) }
