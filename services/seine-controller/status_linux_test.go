package main

import (
	"context"
	"fmt"
	"os/exec"
	"slices"
	"strings"
	"testing"

	networkingv1 "k8s.io/api/networking/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/seine-cni/seine/core/agent/policywatch"
	cp "github.com/seine-cni/seine/core/apis/controlplane/v1beta1"
	"github.com/seine-cni/seine/test/lab"
)

func controlplaneResource(r string) schema.GroupVersionResource {
	return schema.GroupVersionResource{Group: cp.GroupName, Version: cp.Version, Resource: r}
}

// policyStatus renders the status of the internal policy name as an admin
// reads it through the kube-apiserver (API aggregation).
func policyStatus(ctx context.Context, dyn dynamic.Interface, name string) string {
	o, err := dyn.Resource(controlplaneResource("networkpolicies")).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return err.Error()
	}
	st, ok, _ := unstructured.NestedMap(o.Object, "status")
	if !ok {
		return "no status"
	}
	n := func(k string) int64 { v, _, _ := unstructured.NestedInt64(st, k); return v }
	phase, _, _ := unstructured.NestedString(st, "phase")
	return fmt.Sprintf("gen %d %d/%d %s", n("generation"), n("realizedNodes"), n("desiredNodes"), phase)
}

// testStatus: node-y's watcher reports what its recorder realizes through
// the kube-apiserver with the agent's identity; an admin reads the status
// of h6-allow (span: node-y) computed from it, across a spec update the
// node holds back and a controller restart (which forgets every report
// until the agents list again and re-report).
func testStatus(t *testing.T, c *lab.Config, cs kubernetes.Interface, agentCfg *rest.Config, rec *recorder) {
	ctx := context.Background()
	admin, err := c.RESTConfig("admin")
	if err != nil {
		t.Fatal(err)
	}
	dyn, err := dynamic.NewForConfig(admin)
	if err != nil {
		t.Fatal(err)
	}
	np, err := cs.NetworkingV1().NetworkPolicies("default").Get(ctx, "h6-allow", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	name := string(np.UID)
	get := func() string { return policyStatus(ctx, dyn, name) }
	waitFor(t, "status", fmt.Sprintf("gen %d 1/1 Realized", np.Generation), get)

	// A spec update that node-y does not realize yet.
	rec.setHold(true)
	port := intstr.FromInt32(80)
	np.Spec.Ingress[0].Ports = []networkingv1.NetworkPolicyPort{{Port: &port}}
	if np, err = cs.NetworkingV1().NetworkPolicies("default").Update(ctx, np, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "status of the update node-y holds back", fmt.Sprintf("gen %d 0/1 Realizing", np.Generation), get)
	rec.setHold(false)
	waitFor(t, "status once node-y realized it", fmt.Sprintf("gen %d 1/1 Realized", np.Generation), get)

	// A restarted controller knows nothing until the agents re-report
	// after their watch lists again.
	if err := c.StopController(); err != nil {
		t.Fatal(err)
	}
	if err := c.StartController(ctx); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "status after a controller restart", fmt.Sprintf("gen %d 1/1 Realized", np.Generation), get)

	// What each node reported, as an admin sees it.
	l, err := dyn.Resource(controlplaneResource("nodepolicystatuses")).List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var nodes []string
	for _, it := range l.Items {
		nodes = append(nodes, it.GetName())
	}
	if !slices.Contains(nodes, "node-y") || !slices.Contains(nodes, "node-x") {
		t.Errorf("nodepolicystatuses %v, want node-x and node-y among them", nodes)
	}

	// Bad reports, and reports without the agent's RBAC.
	agent, err := policywatch.NewClient(agentCfg, "node-y")
	if err != nil {
		t.Fatal(err)
	}
	dup := &cp.NodePolicyStatus{Policies: []cp.PolicyRealization{{Name: name, Generation: 1}, {Name: name, Generation: 2}}}
	dup.Name = "node-y"
	if err := agent.Report(ctx, dup); !apierrors.IsBadRequest(err) || !strings.Contains(err.Error(), "listed more than once") {
		t.Errorf("a report listing a policy twice: %v, want 400 naming the duplicate", err)
	}
	nodeCfg, err := c.RESTConfig("node-1")
	if err != nil {
		t.Fatal(err)
	}
	other, err := policywatch.NewClient(nodeCfg, "node-1")
	if err != nil {
		t.Fatal(err)
	}
	ok := &cp.NodePolicyStatus{}
	ok.Name = "node-1"
	if err := other.Report(ctx, ok); !apierrors.IsForbidden(err) {
		t.Errorf("a report with the node's identity (no RBAC): %v, want 403", err)
	}
	waitFor(t, "status after the refused reports", fmt.Sprintf("gen %d 1/1 Realized", np.Generation), get)

	if _, err := exec.LookPath("kubectl"); err == nil {
		out, err := exec.CommandContext(ctx, "kubectl", "--kubeconfig", c.AdminKubeconfig(), "get", "networkpolicies.controlplane.seine.io", name).CombinedOutput()
		t.Logf("kubectl get networkpolicies.controlplane.seine.io %s:\n%s", name, out)
		if err != nil {
			t.Fatalf("kubectl: %v", err)
		}
		want := []string{"NAME", "SOURCE", "GENERATION", "DESIRED", "REALIZED", "PHASE", "default/h6-allow", "Realized"}
		for _, w := range want {
			if !strings.Contains(string(out), w) {
				t.Errorf("kubectl get: no %q in the output", w)
			}
		}
	}
}
