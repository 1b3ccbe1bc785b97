package controller

import (
	"context"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"

	crdv1 "github.com/seine-cni/seine/core/apis/crd/v1beta1"
)

func snp(namespace, name, tier string, prio float64, appliedTo []crdv1.AppliedTo, ingress, egress []crdv1.Rule) *crdv1.NetworkPolicy {
	return &crdv1.NetworkPolicy{
		ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name, UID: types.UID("snp-" + namespace + "-" + name), Generation: 1},
		Spec:       crdv1.ClusterNetworkPolicySpec{Tier: tier, Priority: prio, AppliedTo: appliedTo, Ingress: ingress, Egress: egress},
	}
}

// A namespaced Seine NetworkPolicy takes the ClusterNetworkPolicy path,
// confined to its namespace: appliedTo selects pods of its namespace only
// (a namespaceSelector or a ClusterGroup there is refused and left out),
// a peer's podSelector alone selects in its namespace, with a
// namespaceSelector in the selected namespaces; actions, tier and
// priority as a ClusterNetworkPolicy's. Its tier's move reaches it, and
// it goes with its object.
func TestNamespacedTieredPolicy(t *testing.T) {
	p := snp("x", "guard", "mine", 3, []crdv1.AppliedTo{
		{PodSelector: sel("app", "web")}, {NamespaceSelector: sel("team", "db")}, {Group: "g"},
	},
		[]crdv1.Rule{
			{Action: crdv1.RuleActionDrop, Name: "same-ns-db", From: []crdv1.Peer{{PodSelector: sel("app", "db")}}},
			{Action: crdv1.RuleActionAllow, From: []crdv1.Peer{{NamespaceSelector: sel("team", "db"), PodSelector: sel("app", "db")}, {Group: "g"}}},
			{Action: crdv1.RuleActionReject, From: []crdv1.Peer{{Group: "g"}}},
		},
		[]crdv1.Rule{{Action: crdv1.RuleActionPass, To: []crdv1.Peer{{IPBlock: &crdv1.IPBlock{CIDR: "10.9.0.0/16"}}}}})
	e := startTiered(t, []runtime.Object{p, tier("mine", 120), clusterGroup("g", crdv1.ClusterGroupSpec{PodSelector: sel("app", "db")})},
		ns("x", nil), ns("y", map[string]string{"team": "db"}),
		pod("x", "web", "n1", "10.0.1.1", map[string]string{"app": "web"}),
		pod("x", "db", "n1", "10.0.1.2", map[string]string{"app": "db"}),
		pod("y", "web", "n2", "10.0.2.1", map[string]string{"app": "web"}),
		pod("y", "db", "n2", "10.0.2.2", map[string]string{"app": "db"}))
	refused := `appliedTo 1: namespaceSelector: a NetworkPolicy applies to pods of its own namespace (x) only: left out; ` +
		`appliedTo 2: group g: ClusterGroups are for cluster-wide policies: left out; ` +
		`ingress rule 1: peer 1: group g: ClusterGroups are for cluster-wide policies: peer left out; ` +
		`ingress rule 2: peer 0: group g: ClusterGroups are for cluster-wide policies: Reject of every address (fails closed)`
	e.waitFor(`
ag {namespace=x podSelector=app=db} members=[x/db@n1,10.0.1.2] span=[n1]
ag {namespaceSelector=team=db podSelector=app=db} members=[y/db@n2,10.0.2.2] span=[n1]
atg {namespace=x podSelector=app=web} members=[x/web@n1,10.0.1.1] span=[n1]
snp x/guard types=[] atg=[{namespace=x podSelector=app=web}] span=[n1] tier=mine/120 priority=3 error=` + refused + `
  In peers=[{namespace=x podSelector=app=db}] services=[] priority=0 action=Drop name=same-ns-db
  In peers=[{namespaceSelector=team=db podSelector=app=db}] services=[] priority=1 action=Allow
  In peers=[0.0.0.0/0 ::/0] services=[] priority=2 action=Reject
  Out peers=[10.9.0.0/16] services=[] priority=0 action=Pass`)
	e.c.mu.Lock()
	np := e.c.policies[snpKeyPrefix+"x/guard"]
	ns := ""
	if np != nil {
		ns = np.obj.Namespace
	}
	e.c.mu.Unlock()
	if ns != "x" {
		t.Errorf("internal policy's namespace %q, want x", ns)
	}

	// Its tier moves: the policy follows.
	e.apply(tier("mine", 30))
	e.waitFor(`
ag {namespace=x podSelector=app=db} members=[x/db@n1,10.0.1.2] span=[n1]
ag {namespaceSelector=team=db podSelector=app=db} members=[y/db@n2,10.0.2.2] span=[n1]
atg {namespace=x podSelector=app=web} members=[x/web@n1,10.0.1.1] span=[n1]
snp x/guard types=[] atg=[{namespace=x podSelector=app=web}] span=[n1] tier=mine/30 priority=3 error=` + refused + `
  In peers=[{namespace=x podSelector=app=db}] services=[] priority=0 action=Drop name=same-ns-db
  In peers=[{namespaceSelector=team=db podSelector=app=db}] services=[] priority=1 action=Allow
  In peers=[0.0.0.0/0 ::/0] services=[] priority=2 action=Reject
  Out peers=[10.9.0.0/16] services=[] priority=0 action=Pass`)

	// The same name in another namespace is another policy.
	e.apply(snp("y", "guard", "", 1, []crdv1.AppliedTo{{PodSelector: &metav1.LabelSelector{}}}, []crdv1.Rule{{Action: crdv1.RuleActionDrop}}, nil))
	if err := e.dyn.Resource(crdv1.NetworkPoliciesResource).Namespace("x").Delete(context.Background(), "guard", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	e.waitFor(`
atg {namespace=y podSelector=} members=[y/db@n2,10.0.2.2 y/web@n2,10.0.2.1] span=[n2]
snp y/guard types=[] atg=[{namespace=y podSelector=}] span=[n2] tier=application/250 priority=1
  In peers=[0.0.0.0/0 ::/0] services=[] priority=0 action=Drop`)
}
