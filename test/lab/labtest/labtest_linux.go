package labtest

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/seine-cni/seine/test/ci"
	"github.com/seine-cni/seine/test/lab"
)

// Require returns the control-plane binary, or skips (fails under CI) with
// the reason the lab cannot run here.
func Require(tb testing.TB) (kubeBin string) {
	tb.Helper()
	ci.RequireRoot(tb, "the lab (it creates network namespaces and starts OVS)")
	ci.RequireCommands(tb, "ovs-vswitchd", "ovsdb-server", "ip", "nsenter", "iptables-restore", "go")
	kubeBin = os.Getenv("SEINE_LAB_KUBE_BIN")
	if kubeBin == "" {
		ci.Skipf(tb, "SEINE_LAB_KUBE_BIN is not set: build the control plane with `make kube-binaries` (make test does this and sets it)")
	}
	return kubeBin
}

// Kubectl returns a kubectl of the lab's Kubernetes release: a link named
// kubectl to the control-plane binary (the lab's multi-call binary runs
// kubectl when invoked by that name, as `make` links bin/kubectl). It skips
// (fails under CI) when the control plane cannot be found.
func Kubectl(tb testing.TB) string {
	tb.Helper()
	kube := Require(tb)
	link := filepath.Join(tb.TempDir(), "kubectl")
	if err := os.Symlink(kube, link); err != nil {
		tb.Fatal(err)
	}
	return link
}

var (
	binOnce  sync.Once
	binDir   string
	seineBin string
	labBin   string
	binErr   error
)

// Binaries builds seine-agent, seine-cni, seine-controller and seinectl (into one directory, as
// lab.Config.SeineBin wants) unless SEINE_LAB_SEINE_BIN names a directory holding
// them, and the lab CLI unless SEINE_LAB_BIN names it, once per test binary.
// make test builds both before the tests and sets the variables, so that the
// packages that bring up a lab do not each link the same programs again.
// RemoveBinaries, from TestMain, deletes what was built.
func Binaries(tb testing.TB) (seine, labCLI string) {
	tb.Helper()
	binOnce.Do(func() {
		var root []byte
		if root, binErr = exec.Command("go", "env", "GOMOD").Output(); binErr != nil {
			return
		}
		dir := filepath.Dir(strings.TrimSpace(string(root)))
		if binDir, binErr = os.MkdirTemp("", "seine-labtest-bin-"); binErr != nil {
			return
		}
		build := func(out, pkg string) error {
			cmd := exec.Command("go", "build", "-o", out, pkg)
			cmd.Dir = dir
			if b, err := cmd.CombinedOutput(); err != nil {
				return fmt.Errorf("go build %s: %w\n%s", pkg, err, b)
			}
			return nil
		}
		programs := []string{"seine-agent", "seine-cni", "seine-controller", "seinectl"}
		if seineBin = os.Getenv("SEINE_LAB_SEINE_BIN"); seineBin != "" {
			for _, p := range programs {
				if _, err := os.Stat(filepath.Join(seineBin, p)); err != nil {
					binErr = fmt.Errorf("SEINE_LAB_SEINE_BIN: %w", err)
					return
				}
			}
		} else {
			seineBin = filepath.Join(binDir, "seine")
			for _, pkg := range programs {
				if binErr = build(filepath.Join(seineBin, pkg), "./services/"+pkg); binErr != nil {
					return
				}
			}
		}
		if labBin = os.Getenv("SEINE_LAB_BIN"); labBin == "" {
			labBin = filepath.Join(binDir, "lab")
			binErr = build(labBin, "./test/lab/cmd/lab")
		}
	})
	if binErr != nil {
		tb.Fatal(binErr)
	}
	return seineBin, labBin
}

// RemoveBinaries deletes what Binaries built; call it from TestMain.
func RemoveBinaries() {
	if binDir != "" {
		os.RemoveAll(binDir)
	}
}

// Options shape a test lab. Name keeps labs of different packages apart
// (state directory, namespace prefix); the ports must differ too when two
// packages' labs may run at once.
type Options struct {
	Name              string // e.g. "e2e": /run/seine-e2e-<random>, namespaces seine-e2e-*
	Nodes             int
	APIPort, EtcdPort int
	TrafficMode       string // default encap
	TunnelType        string // default geneve
	// WindowsNodes poses the last N nodes as Windows nodes: labelled
	// kubernetes.io/os=windows, their agents build the Windows flow set.
	WindowsNodes int
	// UpstreamExperimental installs the upstream API's experimental CRD.
	UpstreamExperimental bool
	// KubeProxy runs kube-proxy on every node in this mode (iptables,
	// nftables) with seine-agent in its kube-proxy mode.
	KubeProxy string
}

// Up brings up a lab running Seine and takes it down in tb's cleanup (with
// the agents' logs in the test log when the test failed).
func Up(tb testing.TB, o Options) (*lab.Config, kubernetes.Interface) {
	tb.Helper()
	kube := Require(tb)
	seine, labCLI := Binaries(tb)
	off, suffix := lab.Slot()
	o.Name += suffix
	if o.APIPort != 0 {
		o.APIPort += off
	}
	if o.EtcdPort != 0 {
		o.EtcdPort += off
	}
	c := &lab.Config{
		Nodes: o.Nodes, WindowsNodes: o.WindowsNodes, KubeProxy: o.KubeProxy, UpstreamExperimental: o.UpstreamExperimental,
		StateDir: fmt.Sprintf("/run/seine-%s-%d", o.Name, time.Now().UnixNano()%1e6),
		NSPrefix: "seine-" + o.Name + "-",
		APIPort:  o.APIPort, EtcdPort: o.EtcdPort,
		CNI: lab.CNISeine, TrafficMode: o.TrafficMode, TunnelType: o.TunnelType,
		KubeBin: kube, LabBin: labCLI, SeineBin: seine,
	}
	log := Logger(tb)
	tb.Cleanup(func() {
		if tb.Failed() {
			for _, n := range c.NodeList() {
				if p, err := c.LogPath("agent-" + n.Name); err == nil {
					b, _ := os.ReadFile(p)
					tb.Logf("agent-%s log:\n%s", n.Name, tail(string(b), 40))
				}
			}
		}
		if err := lab.Down(context.Background(), log, c.StateDir); err != nil {
			tb.Errorf("lab down: %v", err)
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	start := time.Now()
	if err := lab.Up(ctx, log, c); err != nil {
		tb.Fatalf("lab up: %v", err)
	}
	tb.Logf("lab up (%d nodes, %s %s) in %s", c.Nodes, c.TrafficMode, c.TunnelType, time.Since(start).Round(time.Millisecond))
	cs, err := c.Client("admin")
	if err != nil {
		tb.Fatal(err)
	}
	return c, cs
}

// Logger logs warnings and errors into the test log.
func Logger(tb testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(writer{tb}, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

type writer struct{ tb testing.TB }

func (w writer) Write(p []byte) (int, error) {
	w.tb.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// PinnedPod is a lab probe-server pod bound to node (no scheduler involved).
func PinnedPod(name, node string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"app": "labtest"}},
		Spec: corev1.PodSpec{
			NodeName:   node,
			Containers: []corev1.Container{{Name: "server", Image: "lab/probe-server"}},
		},
	}
}

// WaitPodReady polls a pod of the default namespace until it is Ready with
// an IP and returns it.
func WaitPodReady(ctx context.Context, cs kubernetes.Interface, name string, timeout time.Duration) (*corev1.Pod, error) {
	deadline := time.Now().Add(timeout)
	for {
		p, err := cs.CoreV1().Pods("default").Get(ctx, name, metav1.GetOptions{})
		if err == nil && lab.PodReady(p) && p.Status.PodIP != "" {
			return p, nil
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("pod %s not ready after %s (last error: %v)", name, timeout, err)
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// PodPair is a server pod and a client pod of the default namespace, each
// pinned to its node, Ready, with the paths of their network namespaces.
type PodPair struct {
	Server, Client     *corev1.Pod
	ServerNS, ClientNS string
}

// StartPodPair creates pod server on serverNode and pod client on
// clientNode (PinnedPod), waits until both are Ready and finds their
// network namespaces; it fails tb otherwise.
func StartPodPair(ctx context.Context, tb testing.TB, c *lab.Config, cs kubernetes.Interface, server, serverNode, client, clientNode string) PodPair {
	tb.Helper()
	for _, p := range []struct{ name, node string }{{server, serverNode}, {client, clientNode}} {
		if _, err := cs.CoreV1().Pods("default").Create(ctx, PinnedPod(p.name, p.node), metav1.CreateOptions{}); err != nil {
			tb.Fatal(err)
		}
	}
	var pp PodPair
	var err error
	if pp.Server, err = WaitPodReady(ctx, cs, server, 2*time.Minute); err != nil {
		tb.Fatal(err)
	}
	if pp.Client, err = WaitPodReady(ctx, cs, client, 2*time.Minute); err != nil {
		tb.Fatal(err)
	}
	if pp.ServerNS, err = c.PodNetNS(pp.Server); err != nil {
		tb.Fatal(err)
	}
	if pp.ClientNS, err = c.PodNetNS(pp.Client); err != nil {
		tb.Fatal(err)
	}
	return pp
}
