//go:build linux

package lab

import (
	"context"
	"net"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/seine-cni/seine/test/lab/images"
)

// hostPort runs a pod with hostPort 31234 (every address of its node) on
// the first web pod's node: containerd passes the mapping to Seine through
// the portMappings capability of Seine's conflist. The external host
// reaches it through the node's IP (real packets in on the node's uplink,
// DNATed by the bridge), and so does the node itself, through its IP and
// 127.0.0.1 (the host's DNAT); a pod on the other node too. Once the pod
// is deleted the port answers no more.
func hostPort(t *testing.T, ctx context.Context, c *Config, idx *images.Index, pods []corev1.Pod) {
	cs, err := c.Client("admin")
	if err != nil {
		t.Fatal(err)
	}
	node, other := pods[0].Spec.NodeName, pods[1]
	var nodeIP string
	for _, n := range c.NodeList() {
		if n.Name == node {
			nodeIP = n.IP
		}
	}
	d := nameServer("hostport", idx.Names.Seine, 1)
	spec := &d.Spec.Template.Spec
	spec.TopologySpreadConstraints = nil
	spec.NodeSelector = map[string]string{"kubernetes.io/hostname": node}
	spec.Containers[0].Ports[0].HostPort = 31234
	grace := int64(1) // nc ignores SIGTERM: do not wait 30 s for it
	spec.TerminationGracePeriodSeconds = &grace
	if _, err := cs.AppsV1().Deployments("default").Create(ctx, d, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	hp, err := WaitDeploymentReady(ctx, cs, "default", "hostport", 2*time.Minute)
	if err != nil || len(hp) != 1 {
		t.Fatalf("host port pod: %v %v\n%s", hp, err, c.realNodeLogs(ctx))
	}
	want := hp[0].Name
	for _, from := range []struct{ ns, addr string }{
		{"ext", nodeIP}, {node, nodeIP}, {node, "127.0.0.1"},
	} {
		got, err := readFrom(ctx, c.NetNSPath(from.ns), net.JoinHostPort(from.addr, "31234"))
		if err != nil || got != want {
			t.Errorf("from %s to %s:31234: %q, %v; want %q", from.ns, from.addr, got, err, want)
		}
	}
	if out, err := c.Kubectl(ctx, "exec", other.Name, "--", "nc", "-w", "3", nodeIP, "31234"); err != nil || out != want {
		t.Errorf("from pod %s on %s to %s:31234: %q, %v; want %q", other.Name, other.Spec.NodeName, nodeIP, out, err, want)
	}

	if err := cs.AppsV1().Deployments("default").Delete(ctx, "hostport", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(time.Minute)
	for {
		l, err := cs.CoreV1().Pods("default").List(ctx, metav1.ListOptions{LabelSelector: "app=hostport"})
		if err == nil && len(l.Items) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("host port pod still there after a minute: %v", err)
		}
		time.Sleep(500 * time.Millisecond)
	}
	// The kubelet deletes the pod from the API once its sandbox is gone
	// (CNI DEL done).
	for _, from := range []struct{ ns, addr string }{{"ext", nodeIP}, {node, "127.0.0.1"}} {
		if got, err := readFrom(ctx, c.NetNSPath(from.ns), net.JoinHostPort(from.addr, "31234")); err == nil {
			t.Errorf("from %s to %s:31234 after the pod went: %q, want no answer", from.ns, from.addr, got)
		}
	}
}
