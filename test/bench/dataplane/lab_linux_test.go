package dataplanebench

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/seine-cni/seine/test/lab"
)

// upLab brings up an n-node lab with seine-agent (encap, geneve) and takes it
// down in b's cleanup. It skips with the precise reason when it cannot run.
func upLab(b *testing.B, nodes int) (*lab.Config, kubernetes.Interface) {
	b.Helper()
	if os.Geteuid() != 0 {
		b.Skip("the benchmark needs root: the lab creates network namespaces and starts OVS")
	}
	for _, cmd := range []string{"ovs-vswitchd", "ovsdb-server", "ip", "nsenter", "iperf3", "ethtool", "go"} {
		if _, err := exec.LookPath(cmd); err != nil {
			b.Skipf("the benchmark needs %s in PATH", cmd)
		}
	}
	kube := os.Getenv("SEINE_LAB_KUBE_BIN")
	if kube == "" {
		b.Skip("SEINE_LAB_KUBE_BIN is not set: build the control plane with `make kube-binaries` (make test does this and sets it)")
	}
	bin := b.TempDir()
	root, err := filepath.Abs("../../..")
	if err != nil {
		b.Fatal(err)
	}
	for _, x := range []struct{ out, pkg string }{
		{filepath.Join(bin, "seine", "seine-agent"), "./services/seine-agent"},
		{filepath.Join(bin, "seine", "seine-cni"), "./services/seine-cni"},
		{filepath.Join(bin, "lab"), "./test/lab/cmd/lab"},
	} {
		cmd := exec.Command("go", "build", "-o", x.out, x.pkg)
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			b.Fatalf("go build %s: %v\n%s", x.pkg, err, out)
		}
	}
	if err := os.Symlink("seine-cni", filepath.Join(bin, "seine", "seine")); err != nil {
		b.Fatal(err)
	}
	c := &lab.Config{
		Nodes:    nodes,
		StateDir: fmt.Sprintf("/run/seine-bench-%d", os.Getpid()),
		NSPrefix: "seine-bench-",
		APIPort:  46443, EtcdPort: 42379,
		CNI: lab.CNISeine, TrafficMode: "encap", TunnelType: "geneve",
		KubeBin: kube, LabBin: filepath.Join(bin, "lab"), SeineBin: filepath.Join(bin, "seine"),
	}
	log := slog.New(slog.NewTextHandler(logWriter{b}, &slog.HandlerOptions{Level: slog.LevelWarn}))
	b.Cleanup(func() {
		if err := lab.Down(context.Background(), log, c.StateDir); err != nil {
			b.Errorf("lab down: %v", err)
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	if err := lab.Up(ctx, log, c); err != nil {
		b.Fatalf("lab up: %v", err)
	}
	cs, err := c.Client("admin")
	if err != nil {
		b.Fatal(err)
	}
	return c, cs
}

// probePod is a lab probe-server pod bound to node.
func probePod(name, node string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"app": "bench"}},
		Spec: corev1.PodSpec{
			NodeName:   node,
			Containers: []corev1.Container{{Name: "server", Image: "lab/probe-server"}},
		},
	}
}

// waitPodReady polls the pod until it is Ready and returns it.
func waitPodReady(ctx context.Context, cs kubernetes.Interface, name string, timeout time.Duration) (*corev1.Pod, error) {
	deadline := time.Now().Add(timeout)
	for {
		p, err := cs.CoreV1().Pods("default").Get(ctx, name, metav1.GetOptions{})
		if err == nil && lab.PodReady(p) && p.Status.PodIP != "" {
			return p, nil
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("pod %s not ready after %s (last error: %v)", name, timeout, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

type logWriter struct{ t testing.TB }

func (w logWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}
