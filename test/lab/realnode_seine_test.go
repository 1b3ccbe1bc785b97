//go:build linux

package lab

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/seine-cni/seine/test/lab/images"
)

// TestSeineOnRealNodes installs Seine as users do, `kubectl apply -f
// installer/kubernetes/seine.yml` (with the lab's documented patches:
// LabPatches), on two real nodes that have no network plugin: the nodes go
// from NotReady to Ready, the seine-ovs and seine-agent DaemonSets and the
// seine-controller Deployment become ready and the controlplane.seine.io
// APIService Available; then containers on both nodes reach each other
// through Seine (real packets over Geneve, probed with `kubectl exec`),
// `kubectl logs` reads the agent's log, and `lab down` leaves nothing.
func TestSeineOnRealNodes(t *testing.T) {
	runtimeBin, imagesDir := realNodeInputs(t)
	manifest, err := os.ReadFile("../../installer/kubernetes/seine.yml")
	if err != nil {
		t.Fatal(err)
	}
	c := testConfig(t)
	c.Nodes, c.WindowsNodes = 2, 0
	c.Kubelet, c.CNI, c.RuntimeBin, c.ImagesDir = KubeletReal, CNINone, runtimeBin, imagesDir
	idx, err := images.ReadIndex(imagesDir)
	if err != nil {
		t.Fatal(err)
	}
	before, beforeReal := snapshotHost(t), snapshotRealHost(t)
	log := testLogger(t)
	ctx, cancel := context.WithTimeout(context.Background(), 12*time.Minute)
	defer cancel()
	t.Cleanup(func() { Down(context.Background(), log, c.StateDir) })
	if err := Up(ctx, log, c); err != nil {
		t.Fatalf("lab up: %v", err)
	}
	cs, err := c.Client("admin")
	if err != nil {
		t.Fatal(err)
	}
	nodes, err := cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range nodes.Items {
		if NodeReady(&n) {
			t.Errorf("node %s is Ready before any network plugin is installed", n.Name)
		}
	}

	start := time.Now()
	if err := c.InstallSeine(ctx, log, manifest); err != nil {
		t.Fatalf("install seine.yml: %v\n%s", err, c.realNodeLogs(ctx))
	}
	t.Logf("kubectl apply -f seine.yml to everything ready: %s", time.Since(start).Round(time.Millisecond))

	var pods = mustPods(t, ctx, c, idx)
	t.Run("pod to pod", func(t *testing.T) {
		for i, p := range pods {
			other := pods[(i+1)%len(pods)]
			out, err := c.Kubectl(ctx, "exec", p.Name, "--", "nc", "-w", "3", other.Status.PodIP, "8080")
			if err != nil || out != other.Name {
				t.Errorf("from %s (%s) to %s (%s, node %s): %q, %v", p.Name, p.Spec.NodeName, other.Name, other.Status.PodIP, other.Spec.NodeName, out, err)
			}
		}
	})
	t.Run("agent logs", func(t *testing.T) {
		out, err := c.Kubectl(ctx, "logs", "-n", "kube-system", "ds/seine-agent", "-c", "seine-agent", "--tail", "200")
		if err != nil || !strings.Contains(out, "msg=") {
			t.Errorf("kubectl logs -n kube-system ds/seine-agent -c seine-agent: %v\n%s", err, out)
		}
	})

	components := c.runningComponents()
	if err := Down(ctx, log, c.StateDir); err != nil {
		t.Fatalf("lab down: %v", err)
	}
	checkLeftovers(t, c, before, beforeReal, components, runtimeBin)
}

// mustPods runs nameServer's Deployment "web" of two pods, one per node,
// and returns its pods once ready.
func mustPods(t *testing.T, ctx context.Context, c *Config, idx *images.Index) []corev1.Pod {
	t.Helper()
	cs, err := c.Client("admin")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cs.AppsV1().Deployments("default").Create(ctx, nameServer("web", idx.Names.Seine, 2), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	pods, err := WaitDeploymentReady(ctx, cs, "default", "web", 3*time.Minute)
	if err != nil {
		t.Fatalf("%v\n%s", err, c.realNodeLogs(ctx))
	}
	if len(pods) != 2 || pods[0].Spec.NodeName == pods[1].Spec.NodeName {
		t.Fatalf("want one pod on each node, got %d pods on %s", len(pods), pods[0].Spec.NodeName)
	}
	return pods
}

// realNodeLogs is the end of every node's kubelet and containerd log, for
// a failure's report.
func (c *Config) realNodeLogs(ctx context.Context) string {
	var b strings.Builder
	for _, n := range c.NodeList() {
		for _, comp := range []string{"kubelet-" + n.Name, "containerd-" + n.Name} {
			b.WriteString("== " + comp + "\n" + c.logTail(comp, 15) + "\n")
		}
	}
	return b.String()
}
