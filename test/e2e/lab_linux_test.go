package e2e

import (
	"context"
	"crypto/rand"
	"encoding/hex"
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

	"github.com/seine-cni/seine/test/lab"
	"github.com/seine-cni/seine/test/ovsdaemon"
)

// binaries are built once per test binary into a directory TestMain removes.
var (
	binOnce sync.Once
	binDir  string
	labBin  string
	binErr  error
)

func TestMain(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

// buildBinaries builds seine-agent and seine-cni (also installed as "seine",
// the name the runtime looks up from the network configuration's type) and,
// unless SEINE_LAB_BIN names it, the lab CLI.
func buildBinaries() (seineBin, labCLI string, err error) {
	binOnce.Do(func() {
		binDir, binErr = os.MkdirTemp("", "seine-e2e-bin-")
		if binErr != nil {
			return
		}
		root, err := filepath.Abs("../..")
		if err != nil {
			binErr = err
			return
		}
		build := func(out, pkg string) error {
			cmd := exec.Command("go", "build", "-o", out, pkg)
			cmd.Dir = root
			if b, err := cmd.CombinedOutput(); err != nil {
				return fmt.Errorf("go build %s: %v\n%s", pkg, err, b)
			}
			return nil
		}
		seine := filepath.Join(binDir, "seine")
		for _, b := range []struct{ out, pkg string }{
			{filepath.Join(seine, "seine-agent"), "./services/seine-agent"},
			{filepath.Join(seine, "seine-cni"), "./services/seine-cni"},
		} {
			if binErr = build(b.out, b.pkg); binErr != nil {
				return
			}
		}
		if binErr = os.Symlink("seine-cni", filepath.Join(seine, "seine")); binErr != nil {
			return
		}
		labBin = os.Getenv("SEINE_LAB_BIN")
		if labBin == "" {
			labBin = filepath.Join(binDir, "lab")
			binErr = build(labBin, "./test/lab/cmd/lab")
		}
	})
	return filepath.Join(binDir, "seine"), labBin, binErr
}

// env is one running lab.
type env struct {
	t   *testing.T
	c   *lab.Config
	cs  kubernetes.Interface
	ctx context.Context
}

// skipUnlessLab skips with the precise reason the lab cannot run here.
func skipUnlessLab(t *testing.T) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("end-to-end tests need root: the lab creates network namespaces and starts OVS")
	}
	for _, cmd := range []string{"ovs-vswitchd", "ovsdb-server", "ip", "nsenter", "go"} {
		if _, err := exec.LookPath(cmd); err != nil {
			t.Skipf("end-to-end tests need %s in PATH", cmd)
		}
	}
	kube := os.Getenv("SEINE_LAB_KUBE_BIN")
	if kube == "" {
		t.Skip("SEINE_LAB_KUBE_BIN is not set: build the control plane with `make kube-binaries` (make test does this and sets it)")
	}
	return kube
}

// upLab brings a 3-node lab up with seine-agent in the given traffic mode and
// tunnel type, and takes it down in t's cleanup.
func upLab(t *testing.T, mode, tunnel string) *env {
	t.Helper()
	kube := skipUnlessLab(t)
	seineBin, labCLI, err := buildBinaries()
	if err != nil {
		t.Fatal(err)
	}
	id := randomHex(3)
	c := &lab.Config{
		Nodes:    3,
		StateDir: "/run/seine-e2e-" + id,
		NSPrefix: "seine-e2e-",
		APIPort:  36443, EtcdPort: 32379,
		CNI: lab.CNISeine, TrafficMode: mode, TunnelType: tunnel,
		KubeBin: kube, LabBin: labCLI, SeineBin: seineBin,
	}
	log := slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	t.Cleanup(cancel)
	t.Cleanup(func() {
		if t.Failed() {
			for _, n := range c.NodeList() {
				dumpLog(t, c, "agent-"+n.Name, 40)
			}
		}
		if err := lab.Down(context.Background(), log, c.StateDir); err != nil {
			t.Errorf("lab down: %v", err)
		}
	})
	start := time.Now()
	if err := lab.Up(ctx, log, c); err != nil {
		t.Fatalf("lab up: %v", err)
	}
	t.Logf("lab up (%s, %s) in %s", mode, tunnel, time.Since(start).Round(time.Millisecond))
	cs, err := c.Client("admin")
	if err != nil {
		t.Fatal(err)
	}
	return &env{t: t, c: c, cs: cs, ctx: ctx}
}

func dumpLog(t *testing.T, c *lab.Config, comp string, n int) {
	p, err := c.LogPath(comp)
	if err != nil {
		return
	}
	b, err := os.ReadFile(p)
	if err != nil {
		return
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	t.Logf("last lines of %s:\n%s", comp, strings.Join(lines, "\n"))
}

// deploy creates the lab's probe Deployment and waits for its pods.
func (e *env) deploy(name string, replicas int32) []corev1.Pod {
	e.t.Helper()
	if _, err := e.cs.AppsV1().Deployments("default").Create(e.ctx, lab.DemoDeployment(name, replicas), metav1.CreateOptions{}); err != nil {
		e.t.Fatal(err)
	}
	pods, err := lab.WaitDeploymentReady(e.ctx, e.cs, "default", name, 4*time.Minute)
	if err != nil {
		e.t.Fatal(err)
	}
	return pods
}

// podNS is the pod's network namespace path.
func (e *env) podNS(p *corev1.Pod) string {
	e.t.Helper()
	ns, err := e.c.PodNetNS(p)
	if err != nil {
		e.t.Fatal(err)
	}
	return ns
}

// inNS runs a command in a network namespace and returns its combined output.
func inNS(ctx context.Context, netns string, argv ...string) (string, error) {
	out, err := exec.CommandContext(ctx, "nsenter", append([]string{"--net=" + netns, "--"}, argv...)...).CombinedOutput()
	return string(out), err
}

// node returns the node's OVS instance.
func (e *env) ovs(node string) *ovsdaemon.Daemon {
	e.t.Helper()
	d, err := ovsdaemon.Attach(e.c.NodeOVSDir(node))
	if err != nil {
		e.t.Fatal(err)
	}
	return d
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
