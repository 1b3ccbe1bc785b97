package controller

import (
	"context"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"

	crdv1 "github.com/seine-cni/seine/core/apis/crd/v1beta1"
)

// A policy without appliedTo of its own whose rules each have one: every
// rule names its AppliedToGroups, the policy holds their union and spans
// the nodes of all of them, and every node of that span gets every group
// (n1 runs no db pod and still gets db's group: the agent waits for every
// group a policy names). A pod joining one rule's appliedTo on a new node
// grows the span; a namespaced policy's per-rule appliedTo is confined to
// its namespace like its policy-wide one.
func TestTieredPerRuleAppliedTo(t *testing.T) {
	web := []crdv1.AppliedTo{{PodSelector: sel("app", "web")}}
	db := []crdv1.AppliedTo{{PodSelector: sel("app", "db")}}
	p := cnp("per-rule", "securityops", 1, nil,
		[]crdv1.Rule{
			{Action: crdv1.RuleActionDrop, Name: "no-x-to-web", AppliedTo: web, From: []crdv1.Peer{{NamespaceSelector: sel("env", "x")}}},
			{Action: crdv1.RuleActionReject, Name: "db-80", AppliedTo: db, Ports: []crdv1.NetworkPolicyPort{tcpPort(80, nil)}},
		},
		[]crdv1.Rule{{Action: crdv1.RuleActionAllow, AppliedTo: web, To: []crdv1.Peer{{IPBlock: &crdv1.IPBlock{CIDR: "10.0.0.0/8"}}}}})
	e := startTiered(t, []runtime.Object{p},
		ns("x", map[string]string{"env": "x"}), ns("y", nil),
		pod("x", "web", "n1", "10.0.1.1", map[string]string{"app": "web"}),
		pod("y", "db", "n2", "10.0.2.1", map[string]string{"app": "db"}),
		pod("y", "other", "n3", "10.0.3.1", nil))
	e.waitFor(`
ag {namespaceSelector=env=x podSelector=} members=[x/web@n1,10.0.1.1] span=[n1 n2]
atg {namespaceSelector= podSelector=app=db} members=[y/db@n2,10.0.2.1] span=[n1 n2]
atg {namespaceSelector= podSelector=app=web} members=[x/web@n1,10.0.1.1] span=[n1 n2]
cnp per-rule types=[] atg=[{namespaceSelector= podSelector=app=web} {namespaceSelector= podSelector=app=db}] span=[n1 n2] tier=securityops/100 priority=1
  In peers=[{namespaceSelector=env=x podSelector=}] services=[] priority=0 action=Drop name=no-x-to-web appliedTo=[{namespaceSelector= podSelector=app=web}]
  In peers=[0.0.0.0/0 ::/0] services=[TCP/80] priority=1 action=Reject name=db-80 appliedTo=[{namespaceSelector= podSelector=app=db}]
  Out peers=[10.0.0.0/8] services=[] priority=0 action=Allow appliedTo=[{namespaceSelector= podSelector=app=web}]`)

	// y/other becomes a web pod: n3 joins the span and gets both groups.
	other := pod("y", "other", "n3", "10.0.3.1", map[string]string{"app": "web"})
	if _, err := e.client.CoreV1().Pods("y").Update(context.Background(), other, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	e.waitFor(`
ag {namespaceSelector=env=x podSelector=} members=[x/web@n1,10.0.1.1] span=[n1 n2 n3]
atg {namespaceSelector= podSelector=app=db} members=[y/db@n2,10.0.2.1] span=[n1 n2 n3]
atg {namespaceSelector= podSelector=app=web} members=[x/web@n1,10.0.1.1 y/other@n3,10.0.3.1] span=[n1 n2 n3]
cnp per-rule types=[] atg=[{namespaceSelector= podSelector=app=web} {namespaceSelector= podSelector=app=db}] span=[n1 n2 n3] tier=securityops/100 priority=1
  In peers=[{namespaceSelector=env=x podSelector=}] services=[] priority=0 action=Drop name=no-x-to-web appliedTo=[{namespaceSelector= podSelector=app=web}]
  In peers=[0.0.0.0/0 ::/0] services=[TCP/80] priority=1 action=Reject name=db-80 appliedTo=[{namespaceSelector= podSelector=app=db}]
  Out peers=[10.0.0.0/8] services=[] priority=0 action=Allow appliedTo=[{namespaceSelector= podSelector=app=web}]`)

	// The db pod goes: n2 leaves the span, and db's group (now empty)
	// still reaches the policy's other nodes.
	if err := e.client.CoreV1().Pods("y").Delete(context.Background(), "db", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	e.waitFor(`
ag {namespaceSelector=env=x podSelector=} members=[x/web@n1,10.0.1.1] span=[n1 n3]
atg {namespaceSelector= podSelector=app=db} members=[] span=[n1 n3]
atg {namespaceSelector= podSelector=app=web} members=[x/web@n1,10.0.1.1 y/other@n3,10.0.3.1] span=[n1 n3]
cnp per-rule types=[] atg=[{namespaceSelector= podSelector=app=web} {namespaceSelector= podSelector=app=db}] span=[n1 n3] tier=securityops/100 priority=1
  In peers=[{namespaceSelector=env=x podSelector=}] services=[] priority=0 action=Drop name=no-x-to-web appliedTo=[{namespaceSelector= podSelector=app=web}]
  In peers=[0.0.0.0/0 ::/0] services=[TCP/80] priority=1 action=Reject name=db-80 appliedTo=[{namespaceSelector= podSelector=app=db}]
  Out peers=[10.0.0.0/8] services=[] priority=0 action=Allow appliedTo=[{namespaceSelector= podSelector=app=web}]`)
}

// appliedTo on the policy and on a rule (refused by the CRD's validation;
// one stored before it) is Failed, saying so, and enforced with each
// rule's own appliedTo or the policy's; a rule with none where the policy
// has none is left out, as is one whose appliedTo is all left out (an
// empty list would mean the policy's, the union of every rule's).
func TestTieredAppliedToMix(t *testing.T) {
	web := []crdv1.AppliedTo{{PodSelector: sel("app", "web")}}
	db := []crdv1.AppliedTo{{PodSelector: sel("app", "db")}}
	mixed := cnp("mixed", "", 1, web,
		[]crdv1.Rule{
			{Action: crdv1.RuleActionDrop, AppliedTo: db},
			{Action: crdv1.RuleActionDrop, Name: "policy-wide"},
		}, nil)
	partial := cnp("partial", "", 2, nil,
		[]crdv1.Rule{
			{Action: crdv1.RuleActionDrop, AppliedTo: db},
			{Action: crdv1.RuleActionDrop, Name: "none"},
			{Action: crdv1.RuleActionDrop, Name: "bad", AppliedTo: []crdv1.AppliedTo{{}}},
		}, nil)
	e := startTiered(t, []runtime.Object{mixed, partial},
		ns("x", nil),
		pod("x", "web", "n1", "10.0.1.1", map[string]string{"app": "web"}),
		pod("x", "db", "n2", "10.0.2.1", map[string]string{"app": "db"}))
	e.waitFor(`
atg {namespaceSelector= podSelector=app=db} members=[x/db@n2,10.0.2.1] span=[n1 n2]
atg {namespaceSelector= podSelector=app=web} members=[x/web@n1,10.0.1.1] span=[n1 n2]
cnp mixed types=[] atg=[{namespaceSelector= podSelector=app=web} {namespaceSelector= podSelector=app=db}] span=[n1 n2] tier=application/250 priority=1 error=appliedTo is set on the policy and on rules, not on one or the other: each rule applies to its own appliedTo, a rule without one to the policy's
  In peers=[0.0.0.0/0 ::/0] services=[] priority=0 action=Drop appliedTo=[{namespaceSelector= podSelector=app=db}]
  In peers=[0.0.0.0/0 ::/0] services=[] priority=1 action=Drop name=policy-wide appliedTo=[{namespaceSelector= podSelector=app=web}]
cnp partial types=[] atg=[{namespaceSelector= podSelector=app=db}] span=[n2] tier=application/250 priority=2 error=ingress rule 1: no appliedTo (nor on the policy): left out; ingress rule 2: appliedTo 0: neither podSelector nor namespaceSelector: left out
  In peers=[0.0.0.0/0 ::/0] services=[] priority=0 action=Drop appliedTo=[{namespaceSelector= podSelector=app=db}]`)
}

// A namespaced policy's per-rule appliedTo selects pods of its namespace
// only, as its policy-wide one does.
func TestNamespacedPerRuleAppliedTo(t *testing.T) {
	p := snp("x", "guard", "", 1, nil,
		[]crdv1.Rule{
			{Action: crdv1.RuleActionDrop, AppliedTo: []crdv1.AppliedTo{{PodSelector: sel("app", "db")}}},
			{Action: crdv1.RuleActionDrop, AppliedTo: []crdv1.AppliedTo{{NamespaceSelector: sel("team", "db")}}},
		}, nil)
	e := startTiered(t, []runtime.Object{p},
		ns("x", nil), ns("y", map[string]string{"team": "db"}),
		pod("x", "db", "n1", "10.0.1.2", map[string]string{"app": "db"}),
		pod("y", "db", "n2", "10.0.2.2", map[string]string{"app": "db"}))
	e.waitFor(`
atg {namespace=x podSelector=app=db} members=[x/db@n1,10.0.1.2] span=[n1]
snp x/guard types=[] atg=[{namespace=x podSelector=app=db}] span=[n1] tier=application/250 priority=1 error=ingress rule 1: appliedTo 0: namespaceSelector: a NetworkPolicy applies to pods of its own namespace (x) only: left out
  In peers=[0.0.0.0/0 ::/0] services=[] priority=0 action=Drop appliedTo=[{namespace=x podSelector=app=db}]`)
}
