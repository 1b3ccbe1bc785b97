package e2e

import (
	"context"
	"os"
	"os/exec"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/seine-cni/seine/test/lab"
	"github.com/seine-cni/seine/test/lab/labtest"
	"github.com/seine-cni/seine/test/ovsdaemon"
)

func TestMain(m *testing.M) {
	code := m.Run()
	labtest.RemoveBinaries()
	os.Exit(code)
}

// env is one running lab.
type env struct {
	t   *testing.T
	c   *lab.Config
	cs  kubernetes.Interface
	ctx context.Context
}

// upLab brings a 3-node lab up with seine-agent in the given traffic mode and
// tunnel type, and takes it down in t's cleanup.
func upLab(t *testing.T, mode, tunnel string) *env {
	t.Helper()
	return upLabWith(t, labtest.Options{TrafficMode: mode, TunnelType: tunnel})
}

// upLabWith brings a 3-node lab up with o's Seine settings (name, size and
// ports are the e2e suite's).
func upLabWith(t *testing.T, o labtest.Options) *env {
	t.Helper()
	o.Name, o.Nodes, o.APIPort, o.EtcdPort = "e2e", 3, 18443, 18379
	c, cs := labtest.Up(t, o)
	// A guard against a hang, not a time target: the encap-geneve case
	// runs every check (matrix, Services, tiers, Traceflow) in about 5
	// minutes on a quiet machine, and at load 60-95 it hit 15.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	t.Cleanup(cancel)
	return &env{t: t, c: c, cs: cs, ctx: ctx}
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

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// nodeIP is the lab node's IP on the fabric.
func (e *env) nodeIP(name string) string {
	e.t.Helper()
	for _, n := range e.c.NodeList() {
		if n.Name == name {
			return n.IP
		}
	}
	e.t.Fatalf("no lab node %s", name)
	return ""
}
