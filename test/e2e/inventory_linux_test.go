package e2e

import (
	"errors"
	"fmt"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"

	crdv1 "github.com/seine-cni/seine/core/apis/crd/v1beta1"
	"github.com/seine-cni/seine/core/inventory"
)

// checkInventory shows the inventory (core/inventory/README.md) on the
// lab's real kube-apiserver, agents and switches: every node's
// SeineAgentInfo says what its agent and the node are (the node's pod
// CIDRs and address as the Node object has them, its pods, flows that sum
// up, every connection up, a fresh heartbeat), the SeineControllerInfo
// counts the three agents, `kubectl get` prints the columns, and a Node
// added and deleted gets its object and loses it.
func (e *env) checkInventory(pods []corev1.Pod) {
	e.t.Helper()
	start := time.Now()
	dc := e.dynamic()
	perNode := map[string]int{}
	for _, p := range pods {
		perNode[p.Spec.NodeName]++
	}
	nodes, err := e.cs.CoreV1().Nodes().List(e.ctx, metav1.ListOptions{})
	if err != nil {
		e.t.Fatal(err)
	}
	var version string
	e.waitFor("every node's SeineAgentInfo to report its agent", 45*time.Second, func() error {
		return problems(func() (bad []string) {
			for _, n := range nodes.Items {
				u, err := dc.Resource(crdv1.SeineAgentInfosResource).Get(e.ctx, n.Name, metav1.GetOptions{})
				if err != nil {
					bad = append(bad, fmt.Sprintf("%s: %v", n.Name, err))
					continue
				}
				var info crdv1.SeineAgentInfo
				if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, &info); err != nil {
					e.t.Fatal(err)
				}
				st := info.Status
				var sum int64
				for _, c := range st.OVS.FlowsPerTable {
					sum += c
				}
				var ip string
				for _, a := range n.Status.Addresses {
					if a.Type == corev1.NodeInternalIP {
						ip = a.Address
					}
				}
				for _, p := range []struct {
					ok   bool
					what string
				}{
					{st.Ready == "True", fmt.Sprintf("ready %q, conditions %+v", st.Ready, st.Conditions)},
					{len(st.Conditions) == 4, fmt.Sprintf("%d conditions, want Ready and three connections", len(st.Conditions))},
					{slices.Equal(st.PodCIDRs, n.Spec.PodCIDRs), fmt.Sprintf("pod CIDRs %v, the Node's %v", st.PodCIDRs, n.Spec.PodCIDRs)},
					{st.NodeIP == ip, fmt.Sprintf("node IP %q, the Node's %q", st.NodeIP, ip)},
					{int(st.LocalPods) >= perNode[n.Name], fmt.Sprintf("%d local pods, the test alone runs %d there", st.LocalPods, perNode[n.Name])},
					{st.OVS.Version != "" && st.OVS.Bridge == "br-int" && st.OVS.DatapathType == "netdev", fmt.Sprintf("ovs %+v", st.OVS)},
					{st.OVS.Flows > 100 && st.OVS.Flows == sum, fmt.Sprintf("%d flows, %d in the tables", st.OVS.Flows, sum)},
					{time.Since(st.LastHeartbeatTime.Time) < 2*inventory.DefaultHeartbeat, fmt.Sprintf("heartbeat %s", st.LastHeartbeatTime)},
					{strings.HasPrefix(st.Version, "devel") || strings.HasPrefix(st.Version, "v"), fmt.Sprintf("version %q", st.Version)},
					{len(info.OwnerReferences) == 1 && info.OwnerReferences[0].UID == n.UID, fmt.Sprintf("owners %+v, the Node's UID %s", info.OwnerReferences, n.UID)},
				} {
					if !p.ok {
						bad = append(bad, n.Name+": "+p.what)
					}
				}
				version = st.Version
			}
			u, err := dc.Resource(crdv1.SeineControllerInfosResource).Get(e.ctx, crdv1.ControllerInfoName, metav1.GetOptions{})
			if err != nil {
				return append(bad, fmt.Sprintf("controller info: %v", err))
			}
			var ci crdv1.SeineControllerInfo
			if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, &ci); err != nil {
				e.t.Fatal(err)
			}
			if ci.Status.ConnectedAgents != int32(len(nodes.Items)) || ci.Status.Version == "" {
				bad = append(bad, fmt.Sprintf("controller info %+v, want %d connected agents", ci.Status, len(nodes.Items)))
			}
			return bad
		}())
	})

	out, err := e.c.Kubectl(e.ctx, "get", "seineagentinfos")
	if err != nil {
		e.t.Fatalf("kubectl get seineagentinfos: %v\n%s", err, out)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if hdr := strings.Fields(lines[0]); !slices.Equal(hdr, []string{"NAME", "READY", "VERSION", "PODS", "POLICIES", "FLOWS", "HEARTBEAT", "AGE"}) || len(lines) != len(nodes.Items)+1 {
		e.t.Errorf("kubectl get seineagentinfos printed:\n%s", out)
	} else if !strings.Contains(out, version) {
		e.t.Errorf("kubectl get seineagentinfos shows no version %q:\n%s", version, out)
	}
	e.t.Logf("kubectl get seineagentinfos:\n%s", out)
	e.checkSeinectlGet(out, len(nodes.Items))

	// A Node without an agent: its object is created (no status: no agent
	// writes it) and goes with the Node.
	ghost := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "inventory-ghost", Labels: map[string]string{"seine.io/e2e": "ghost"}}}
	if _, err := e.cs.CoreV1().Nodes().Create(e.ctx, ghost, metav1.CreateOptions{}); err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { _ = e.cs.CoreV1().Nodes().Delete(e.ctx, ghost.Name, metav1.DeleteOptions{}) })
	infos := dc.Resource(crdv1.SeineAgentInfosResource)
	e.waitFor("a new Node's SeineAgentInfo", 30*time.Second, func() error {
		_, err := infos.Get(e.ctx, ghost.Name, metav1.GetOptions{})
		return err
	})
	if err := e.cs.CoreV1().Nodes().Delete(e.ctx, ghost.Name, metav1.DeleteOptions{}); err != nil {
		e.t.Fatal(err)
	}
	e.waitFor("a deleted Node's SeineAgentInfo to go", 30*time.Second, func() error {
		if _, err := infos.Get(e.ctx, ghost.Name, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
			return fmt.Errorf("still there (%v)", err)
		}
		return nil
	})
	e.t.Logf("inventory checks took %s", time.Since(start).Round(time.Millisecond))
}

// checkSeinectlGet reads the inventory and the controller's internal
// policies with seinectl get, as a user would, from the lab's real
// kube-apiserver and seine-controller: the same table kubectl printed
// (the server's columns), the controller's table through the aggregated
// API, and JSONPath and custom columns over the objects.
func (e *env) checkSeinectlGet(kubectlOut string, nodes int) {
	e.t.Helper()
	seinectl := func(args ...string) string {
		e.t.Helper()
		cmd := exec.CommandContext(e.ctx, filepath.Join(e.c.SeineBin, "seinectl"), append(args, "--kubeconfig", e.c.AdminKubeconfig())...)
		out, err := cmd.CombinedOutput()
		if err != nil {
			e.t.Fatalf("seinectl %v: %v\n%s", args, err, out)
		}
		return strings.TrimSpace(string(out))
	}
	firstColumn := func(table string) (hdr []string, names []string) {
		for i, l := range strings.Split(table, "\n") {
			f := strings.Fields(l)
			if i == 0 {
				hdr = f
			} else if len(f) > 0 {
				names = append(names, f[0])
			}
		}
		return hdr, names
	}
	table := seinectl("get", "agentinfo")
	hdr, names := firstColumn(table)
	khdr, knames := firstColumn(kubectlOut)
	if !slices.Equal(hdr, khdr) || !slices.Equal(names, knames) {
		e.t.Errorf("seinectl get agentinfo printed:\n%s\nkubectl get seineagentinfos:\n%s", table, kubectlOut)
	}
	if got := seinectl("get", "controllerinfo", crdv1.ControllerInfoName, "-o", "jsonpath={.status.connectedAgents}"); got != fmt.Sprint(nodes) {
		e.t.Errorf("seinectl get controllerinfo -o jsonpath: %q, want %d connected agents", got, nodes)
	}
	out := seinectl("get", "agentinfo", "-o", "custom-columns=NODE:.metadata.name,BRIDGE:.status.ovs.bridge")
	if lines := strings.Split(out, "\n"); len(lines) != nodes+1 || !strings.Contains(out, "br-int") {
		e.t.Errorf("seinectl get agentinfo -o custom-columns printed:\n%s", out)
	}
	// The controller's internal policies, through the aggregated API: the
	// header even when the list may be empty.
	cmd := exec.CommandContext(e.ctx, filepath.Join(e.c.SeineBin, "seinectl"), "get", "networkpolicy", "--kubeconfig", e.c.AdminKubeconfig())
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		e.t.Fatalf("seinectl get networkpolicy: %v\n%s%s", err, stdout.String(), stderr.String())
	}
	if hdr, _ := firstColumn(stdout.String()); stdout.Len() > 0 && !slices.Equal(hdr, []string{"NAME", "SOURCE", "GENERATION", "DESIRED", "REALIZED", "PHASE"}) ||
		stdout.Len() == 0 && !strings.Contains(stderr.String(), "No resources found") {
		e.t.Errorf("seinectl get networkpolicy printed:\n%s%s", stdout.String(), stderr.String())
	}
	e.t.Logf("seinectl get agentinfo:\n%s", table)
}

// problems is nil without bad, else an error listing them.
func problems(bad []string) error {
	if len(bad) == 0 {
		return nil
	}
	return errors.New(strings.Join(bad, "\n  "))
}
