package main

import (
	"context"
	"fmt"
	"os/exec"
	"slices"
	"strings"
	"testing"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	rbacv1 "k8s.io/api/rbac/v1"
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
	"github.com/seine-cni/seine/core/client/clientset/versioned"
	"github.com/seine-cni/seine/test/lab"
	"github.com/seine-cni/seine/test/lab/labtest"
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
	admin := adminConfig(t, c)
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

	// What each node reported, as an admin sees it. node-x re-reports
	// after its own watch lists again, which may come after node-y's.
	waitFor(t, "node-x's and node-y's reports after the restart", "both", func() string {
		l, err := dyn.Resource(controlplaneResource("nodepolicystatuses")).List(ctx, metav1.ListOptions{})
		if err != nil {
			return err.Error()
		}
		var nodes []string
		for _, it := range l.Items {
			nodes = append(nodes, it.GetName())
		}
		if slices.Contains(nodes, "node-y") && slices.Contains(nodes, "node-x") {
			return "both"
		}
		return fmt.Sprint(nodes)
	})

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

	// The same status as a person sees it, with the lab's kubectl.
	out, err := exec.CommandContext(ctx, labtest.Kubectl(t), "--kubeconfig", c.AdminKubeconfig(), "get", "networkpolicies.controlplane.seine.io", name).CombinedOutput()
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

// testNodeBoundReports: an agent whose ServiceAccount token is bound to a
// pod on node-x (as a DaemonSet pod's token is) reports for node-x, and is
// refused for node-y although RBAC lets its ServiceAccount report: the
// node comes from the token, through the aggregator's identity headers.
func testNodeBoundReports(ctx context.Context, t *testing.T, c *lab.Config, cs kubernetes.Interface) {
	sa, err := cs.CoreV1().ServiceAccounts("default").Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "h6-agent"}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cs.RbacV1().ClusterRoleBindings().Create(ctx, &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "h6-agent"},
		Subjects:   []rbacv1.Subject{{Kind: "ServiceAccount", Name: sa.Name, Namespace: "default"}},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "seine-agent"},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	pod, err := cs.CoreV1().Pods("default").Create(ctx, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "agent-x"},
		Spec: corev1.PodSpec{NodeName: "node-x", ServiceAccountName: sa.Name, AutomountServiceAccountToken: new(bool),
			Containers: []corev1.Container{{Name: "c", Image: "none"}}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	tr, err := cs.CoreV1().ServiceAccounts("default").CreateToken(ctx, sa.Name, &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{
		BoundObjectRef: &authenticationv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: pod.Name, UID: pod.UID},
	}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	admin := adminConfig(t, c)
	agent := rest.AnonymousClientConfig(admin)
	agent.BearerToken = tr.Status.Token
	client, err := versioned.NewForConfig(agent)
	if err != nil {
		t.Fatal(err)
	}
	reportFor := func(node string) error {
		_, err := client.ControlplaneV1beta1().NodePolicyStatuses().Create(ctx, &cp.NodePolicyStatus{ObjectMeta: metav1.ObjectMeta{Name: node}}, metav1.CreateOptions{})
		return err
	}
	if err := reportFor("node-x"); err != nil {
		t.Errorf("the agent of node-x reporting for node-x: %v", err)
	}
	if err := reportFor("node-y"); !apierrors.IsForbidden(err) || !strings.Contains(err.Error(), "node-x") {
		t.Errorf("the agent of node-x reporting for node-y: %v, want 403 naming node-x", err)
	}
}

// testDepartedNode: the report of a node that is deleted goes with it, and
// a late report for it is refused.
func testDepartedNode(ctx context.Context, t *testing.T, c *lab.Config, cs kubernetes.Interface, agentCfg *rest.Config) {
	if _, err := cs.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node-z"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	agent, err := versioned.NewForConfig(agentCfg)
	if err != nil {
		t.Fatal(err)
	}
	admin := adminConfig(t, c)
	viewer, err := versioned.NewForConfig(admin)
	if err != nil {
		t.Fatal(err)
	}
	report := func() error {
		_, err := agent.ControlplaneV1beta1().NodePolicyStatuses().Create(ctx, &cp.NodePolicyStatus{ObjectMeta: metav1.ObjectMeta{Name: "node-z"}}, metav1.CreateOptions{})
		return err
	}
	state := func() string {
		_, err := viewer.ControlplaneV1beta1().NodePolicyStatuses().Get(ctx, "node-z", metav1.GetOptions{})
		switch {
		case err == nil:
			return "kept"
		case apierrors.IsNotFound(err):
			return "gone"
		}
		return err.Error()
	}
	// The controller's node informer may not have seen node-z yet.
	waitFor(t, "node-z's report accepted", "kept", func() string {
		if err := report(); err != nil {
			return err.Error()
		}
		return state()
	})
	if err := cs.CoreV1().Nodes().Delete(ctx, "node-z", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "node-z's report after the node was deleted", "gone", state)
	if err := report(); !apierrors.IsNotFound(err) {
		t.Errorf("a report for the deleted node-z: %v, want 404", err)
	}
}
