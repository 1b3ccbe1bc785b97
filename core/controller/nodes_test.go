package controller

import (
	"context"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"

	crdv1 "github.com/seine-cni/seine/core/apis/crd/v1beta1"
)

func node(name string, labels map[string]string, addrs ...corev1.NodeAddress) *corev1.Node {
	return &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}, Status: corev1.NodeStatus{Addresses: addrs}}
}

func internalIP(a string) corev1.NodeAddress {
	return corev1.NodeAddress{Type: corev1.NodeInternalIP, Address: a}
}

// A peer's nodeSelector is an AddressGroup of Nodes: every InternalIP and
// ExternalIP (not the Hostname), each once. It follows Nodes as they are
// labelled, change addresses, come and go, with no policy translated
// again; a Node without an address is no member. A nodeSelector beside
// another selector in one entry is a peer that does not parse (a Drop of
// every address: fails closed). A namespaced policy takes it too.
func TestTieredNodeSelectorPeer(t *testing.T) {
	infra := []crdv1.Peer{{NodeSelector: sel("role", "infra")}}
	p := cnp("to-infra", "", 1, []crdv1.AppliedTo{{PodSelector: sel("app", "web")}}, nil,
		[]crdv1.Rule{
			{Action: crdv1.RuleActionDrop, To: infra},
			{Action: crdv1.RuleActionReject, To: []crdv1.Peer{{NodeSelector: sel("role", "infra"), PodSelector: sel("app", "db")}}},
		})
	np := snp("x", "from-infra", "", 1, []crdv1.AppliedTo{{PodSelector: sel("app", "web")}},
		[]crdv1.Rule{{Action: crdv1.RuleActionAllow, From: infra}}, nil)
	e := startTiered(t, []runtime.Object{p, np},
		ns("x", nil), pod("x", "web", "n1", "10.0.1.1", map[string]string{"app": "web"}),
		node("n1", map[string]string{"role": "infra"}, internalIP("192.168.0.1"),
			corev1.NodeAddress{Type: corev1.NodeExternalIP, Address: "203.0.113.1"},
			corev1.NodeAddress{Type: corev1.NodeHostName, Address: "n1"}, internalIP("192.168.0.1")),
		node("n2", map[string]string{"role": "worker"}, internalIP("192.168.0.2")),
		node("n3", map[string]string{"role": "infra"}))
	const rest = `
atg {namespace=x podSelector=app=web} members=[x/web@n1,10.0.1.1] span=[n1]
atg {namespaceSelector= podSelector=app=web} members=[x/web@n1,10.0.1.1] span=[n1]
cnp to-infra types=[] atg=[{namespaceSelector= podSelector=app=web}] span=[n1] tier=application/250 priority=1 error=egress rule 1: peer 0: nodeSelector with a selector, ipBlock or group beside it (a nodeSelector stands alone in its entry): Reject of every address (fails closed)
  Out peers=[{nodeSelector=role=infra}] services=[] priority=0 action=Drop
  Out peers=[0.0.0.0/0 ::/0] services=[] priority=1 action=Reject
snp x/from-infra types=[] atg=[{namespace=x podSelector=app=web}] span=[n1] tier=application/250 priority=1
  In peers=[{nodeSelector=role=infra}] services=[] priority=0 action=Allow`
	e.waitFor(`
ag {nodeSelector=role=infra} members=[node:n1,192.168.0.1,203.0.113.1] span=[n1]` + rest)

	nodes := e.client.CoreV1().Nodes()
	ctx := context.Background()
	update := func(n *corev1.Node) {
		t.Helper()
		if _, err := nodes.Update(ctx, n, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	// n2 is labelled infra, n3 gets an address: both join.
	update(node("n2", map[string]string{"role": "infra"}, internalIP("192.168.0.2")))
	update(node("n3", map[string]string{"role": "infra"}, internalIP("192.168.0.3")))
	e.waitFor(`
ag {nodeSelector=role=infra} members=[node:n1,192.168.0.1,203.0.113.1 node:n2,192.168.0.2 node:n3,192.168.0.3] span=[n1]` + rest)
	// n1 changes its address, n2 loses the label, n3 goes.
	update(node("n1", map[string]string{"role": "infra"}, internalIP("192.168.0.11")))
	update(node("n2", nil, internalIP("192.168.0.2")))
	if err := nodes.Delete(ctx, "n3", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	e.waitFor(`
ag {nodeSelector=role=infra} members=[node:n1,192.168.0.11] span=[n1]` + rest)
}

// The controller's Node informer also answers seine-controller's report
// checks (one Node watch for both): whether a Node exists, and each
// Node deleted, after its groups let it go.
func TestNodeExistsAndOnNodeDelete(t *testing.T) {
	deleted := make(chan string, 1)
	var c *Controller
	e := startWith(t, func(_ context.Context, ctrl *Controller) {
		c = ctrl
		c.OnNodeDelete(func(name string) { deleted <- name })
	}, node("n1", nil, internalIP("192.168.0.1")))
	if exists, synced := c.NodeExists("n1"); !exists || !synced {
		t.Fatalf("n1: exists %v, synced %v", exists, synced)
	}
	if exists, synced := c.NodeExists("n9"); exists || !synced {
		t.Fatalf("n9: exists %v, synced %v", exists, synced)
	}
	if err := e.client.CoreV1().Nodes().Delete(context.Background(), "n1", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	select {
	case name := <-deleted:
		if name != "n1" {
			t.Fatalf("deleted %q", name)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no deletion reported")
	}
	if exists, _ := c.NodeExists("n1"); exists {
		t.Error("n1 exists after its deletion")
	}
}
