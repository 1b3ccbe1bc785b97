//go:build linux

package lab

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/seine-cni/seine/test/lab/images"
)

// uninstall removes Seine as the installer's README says (UninstallSeine:
// agents deleted, seine-cleanup.yml's node-cleanup on every node while
// Open vSwitch runs, then kubectl delete of both manifests) while the "web"
// pods still run, and checks every node: its address is back on eth0, and
// its namespaces hold no bridge, link, route, iptables rule, CNI
// configuration or plugin, state or run file of Seine's; the nodes go
// NotReady (no network plugin any more).
func uninstall(t *testing.T, ctx context.Context, c *Config) {
	cleanupManifest, err := os.ReadFile("../../installer/kubernetes/seine-cleanup.yml")
	if err != nil {
		t.Fatal(err)
	}
	cs, err := c.Client("admin")
	if err != nil {
		t.Fatal(err)
	}
	// Pods the subtests before deleted must be gone first: a kubelet still
	// tearing one down calls the CNI DEL during the uninstall, and with the
	// agent gone the plugin spools it (/var/run/seine/pending-del);
	// node-cleanup removes what was spooled, and a plugin that spools
	// after it finds itself removed and drops its DEL (cni/README.md); but
	// once the plugin is gone a pod still terminating cannot be torn down
	// (installer/kubernetes/README.md, "Uninstall", says to uninstall once
	// no pod is terminating). A dead sandbox the kubelet tears down again
	// is not a pod terminating: the 18:52 make test met one.
	waitNoTerminatingPods(t, ctx, cs)
	start := time.Now()
	if err := c.UninstallSeine(ctx, testLogger(t), cleanupManifest); err != nil {
		t.Fatalf("uninstall: %v\n%s", err, c.realNodeLogs(ctx))
	}
	t.Logf("uninstall (agents, node cleanup, kubectl delete) took %s", time.Since(start).Round(time.Millisecond))
	for _, n := range c.NodeList() {
		for _, l := range seineLeftovers(ctx, c, n) {
			t.Errorf("%s after uninstall: %s", n.Name, l)
		}
	}
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(time.Second) {
		nodes, err := cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
		var ready []string
		for _, n := range nodes.Items {
			if NodeReady(&n) {
				ready = append(ready, n.Name)
			}
		}
		if err == nil && len(ready) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Errorf("nodes still Ready a minute after Seine was removed: %v (%v)", ready, err)
			break
		}
	}
}

// waitNoTerminatingPods waits up to two minutes until no pod of the
// cluster is being deleted, saying which ones it waited for.
func waitNoTerminatingPods(t *testing.T, ctx context.Context, cs kubernetes.Interface) {
	t.Helper()
	start := time.Now()
	var waited []string
	for deadline := start.Add(2 * time.Minute); ; time.Sleep(500 * time.Millisecond) {
		pods, err := cs.CoreV1().Pods("").List(ctx, metav1.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		var terminating []string
		for _, p := range pods.Items {
			if p.DeletionTimestamp != nil {
				terminating = append(terminating, p.Namespace+"/"+p.Name+" on "+p.Spec.NodeName)
			}
		}
		if len(terminating) == 0 {
			break
		}
		if waited == nil {
			waited = terminating
		}
		if time.Now().After(deadline) {
			t.Fatalf("pods still terminating 2m before the uninstall: %v", terminating)
		}
	}
	if waited != nil {
		t.Logf("waited %s for pods deleted before the uninstall to go: %v", time.Since(start).Round(time.Millisecond), waited)
	}
}

// seineLeftovers lists what of Seine's is left on a real node: in its
// network namespace any link but lo and eth0, eth0 without the node's
// address, a route of Seine's (proto 83) or a SEINE- iptables chain; in its
// mount namespace the CNI configuration or plugin, anything in Seine's state
// and run directories (bound by the lab, so they stay as empty
// directories), and a bridge in Open vSwitch's database.
func seineLeftovers(ctx context.Context, c *Config, n Node) []string {
	var out []string
	run := func(args ...string) string {
		o, err := sh(ctx, "nsenter", append([]string{"--net=" + c.NetNSPath(n.Name), "--mount=" + c.NodeMountNS(n.Name), "--"}, args...)...)
		if err != nil {
			out = append(out, err.Error())
		}
		return o
	}
	for _, l := range strings.Split(strings.TrimSpace(run("ip", "-o", "link", "show")), "\n") {
		f := strings.Fields(l)
		if len(f) < 2 {
			continue
		}
		name, _, _ := strings.Cut(strings.TrimSuffix(f[1], ":"), "@")
		if name != "lo" && name != "eth0" {
			out = append(out, "link "+l)
		}
	}
	if a := run("ip", "-o", "-4", "addr", "show", "dev", "eth0"); !strings.Contains(a, " "+n.IP+"/") {
		out = append(out, "eth0 lacks the node address "+n.IP+": "+a)
	}
	if r := run("ip", "route", "show", "table", "all", "proto", "83"); strings.TrimSpace(r) != "" {
		out = append(out, "routes of Seine's: "+r)
	}
	for _, save := range []string{"iptables-save", "ip6tables-save"} {
		for _, l := range strings.Split(run(save), "\n") {
			if strings.Contains(l, "SEINE") {
				out = append(out, save+": "+l)
			}
		}
	}
	for _, dir := range []string{"/etc/cni/net.d", "/opt/cni/bin", "/var/lib/seine", "/var/run/seine", "/var/log/seine"} {
		for _, f := range strings.Fields(run("ls", "-A", dir)) {
			if strings.Contains(dir, "seine") || strings.Contains(f, "seine") {
				out = append(out, "file "+dir+"/"+f)
			}
			if dir == "/var/run/seine" && f == "pending-del" {
				// Whose DEL was spooled, to tell which pod raced.
				out = append(out, "spooled DELs: "+run("sh", "-c", "head -c 600 /var/run/seine/pending-del/*"))
			}
		}
	}
	db := run("ovsdb-tool", "query", "/var/lib/openvswitch/conf.db",
		`["Open_vSwitch",{"op":"select","table":"Bridge","where":[],"columns":["name"]}]`)
	if !strings.Contains(db, `"rows":[]`) {
		out = append(out, "bridges in Open vSwitch's database: "+db)
	}
	return out
}

// reinstall applies seine.yml again on the cleaned nodes, recreates the
// web pods (their interfaces went with the uninstall) and checks that
// they reach each other through Seine again.
func reinstall(t *testing.T, ctx context.Context, c *Config, idx *images.Index, manifest []byte) {
	if err := c.InstallSeine(ctx, testLogger(t), manifest); err != nil {
		t.Fatalf("install seine.yml again: %v\n%s", err, c.realNodeLogs(ctx))
	}
	if out, err := c.Kubectl(ctx, "delete", "pods", "-l", "app=web", "--wait=true", "--timeout=2m"); err != nil {
		t.Fatalf("recreate the web pods: %v\n%s", err, out)
	}
	cs, err := c.Client("admin")
	if err != nil {
		t.Fatal(err)
	}
	pods, err := WaitDeploymentReady(ctx, cs, "default", "web", 3*time.Minute)
	if err != nil {
		t.Fatalf("%v\n%s", err, c.realNodeLogs(ctx))
	}
	for i, p := range pods {
		other := pods[(i+1)%len(pods)]
		if out, err := c.Kubectl(ctx, "exec", p.Name, "--", "nc", "-w", "3", other.Status.PodIP, "8080"); err != nil || out != other.Name {
			t.Errorf("after reinstalling, from %s (%s) to %s (%s, node %s): %q, %v", p.Name, p.Spec.NodeName, other.Name, other.Status.PodIP, other.Spec.NodeName, out, err)
		}
	}
}
