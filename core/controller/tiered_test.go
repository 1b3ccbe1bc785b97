package controller

import (
	"context"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/dynamic/dynamicinformer"
	dynamicfake "k8s.io/client-go/dynamic/fake"

	crdv1 "github.com/seine-cni/seine/core/apis/crd/v1beta1"
)

type tieredEnv struct {
	*testEnv
	dyn *dynamicfake.FakeDynamicClient
}

// startTiered runs a controller over fake clients: kube holds pods,
// namespaces and NetworkPolicies, crd the crd.seine.io objects.
func startTiered(t *testing.T, crd []runtime.Object, kube ...runtime.Object) *tieredEnv {
	t.Helper()
	var us []runtime.Object
	for _, o := range crd {
		us = append(us, toUnstructured(t, o))
	}
	dyn := dynamicfake.NewSimpleDynamicClientWithCustomListKinds(runtime.NewScheme(), map[schema.GroupVersionResource]string{
		crdv1.ClusterNetworkPoliciesResource: "ClusterNetworkPolicyList",
		crdv1.TiersResource:                  "TierList",
		crdv1.ClusterGroupsResource:          "ClusterGroupList",
		crdv1.NetworkPoliciesResource:        "NetworkPolicyList",
	}, us...)
	e := startWith(t, func(ctx context.Context, c *Controller) {
		f := dynamicinformer.NewDynamicSharedInformerFactory(dyn, 0)
		if err := c.AddTiered(f); err != nil {
			t.Fatal(err)
		}
		if err := c.AddClusterGroups(f); err != nil {
			t.Fatal(err)
		}
		if err := c.AddNamespacedTiered(f); err != nil {
			t.Fatal(err)
		}
		f.Start(ctx.Done())
		t.Cleanup(f.Shutdown)
	}, kube...)
	return &tieredEnv{testEnv: e, dyn: dyn}
}

func toUnstructured(t *testing.T, o runtime.Object) *unstructured.Unstructured {
	t.Helper()
	m, err := runtime.DefaultUnstructuredConverter.ToUnstructured(o)
	if err != nil {
		t.Fatal(err)
	}
	u := &unstructured.Unstructured{Object: m}
	switch o.(type) {
	case *crdv1.ClusterNetworkPolicy:
		u.SetGroupVersionKind(crdv1.SchemeGroupVersion.WithKind("ClusterNetworkPolicy"))
	case *crdv1.Tier:
		u.SetGroupVersionKind(crdv1.SchemeGroupVersion.WithKind("Tier"))
	case *crdv1.ClusterGroup:
		u.SetGroupVersionKind(crdv1.SchemeGroupVersion.WithKind("ClusterGroup"))
	case *crdv1.NetworkPolicy:
		u.SetGroupVersionKind(crdv1.SchemeGroupVersion.WithKind("NetworkPolicy"))
	}
	return u
}

func (e *tieredEnv) apply(o runtime.Object) {
	e.t.Helper()
	u := toUnstructured(e.t, o)
	gvr := crdv1.ClusterNetworkPoliciesResource
	switch o.(type) {
	case *crdv1.Tier:
		gvr = crdv1.TiersResource
	case *crdv1.ClusterGroup:
		gvr = crdv1.ClusterGroupsResource
	case *crdv1.NetworkPolicy:
		gvr = crdv1.NetworkPoliciesResource
	}
	ctx := context.Background()
	r := e.dyn.Resource(gvr).Namespace(u.GetNamespace())
	if _, err := r.Update(ctx, u, metav1.UpdateOptions{}); err != nil {
		if _, err := r.Create(ctx, u, metav1.CreateOptions{}); err != nil {
			e.t.Fatal(err)
		}
	}
}

func cnp(name, tier string, prio float64, appliedTo []crdv1.AppliedTo, ingress, egress []crdv1.Rule) *crdv1.ClusterNetworkPolicy {
	return &crdv1.ClusterNetworkPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: name, UID: types.UID("cnp-" + name), Generation: 1},
		Spec:       crdv1.ClusterNetworkPolicySpec{Tier: tier, Priority: prio, AppliedTo: appliedTo, Ingress: ingress, Egress: egress},
	}
}

func tier(name string, prio int32) *crdv1.Tier {
	return &crdv1.Tier{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: crdv1.TierSpec{Priority: prio}}
}

func tcpPort(p int32, end *int32) crdv1.NetworkPolicyPort {
	proto := corev1.ProtocolTCP
	port := intstr.FromInt32(p)
	return crdv1.NetworkPolicyPort{Protocol: &proto, Port: &port, EndPort: end}
}

// A ClusterNetworkPolicy becomes an internal policy with its tier's and
// its own priority, one AppliedToGroup per appliedTo entry (podSelector
// alone: every namespace; namespaceSelector alone: every pod of the
// namespaces), rules in order with their actions and names, cluster-wide
// peers, ipBlocks and port ranges, enableLogging, and no isolation (no
// policyTypes).
// Every node of the policy's span gets both AppliedToGroups, also n1 where
// no pod of the second runs (before, each went only to its members' nodes,
// and the agent of n1 waited for a group it never got and did not enforce
// the policy at all).
func TestTieredClusterPolicyTranslation(t *testing.T) {
	end := int32(8090)
	p := cnp("block", "securityops", 5.5,
		[]crdv1.AppliedTo{{PodSelector: sel("app", "web")}, {NamespaceSelector: sel("team", "db")}},
		[]crdv1.Rule{
			{Action: crdv1.RuleActionDrop, Name: "no-x", From: []crdv1.Peer{{NamespaceSelector: sel("env", "x")}}, EnableLogging: true},
			{Action: crdv1.RuleActionPass, Name: "rest", Ports: []crdv1.NetworkPolicyPort{tcpPort(8080, &end)}},
		},
		[]crdv1.Rule{
			{Action: crdv1.RuleActionReject, To: []crdv1.Peer{
				{PodSelector: sel("app", "db")},
				{IPBlock: &crdv1.IPBlock{CIDR: "10.0.0.0/8", Except: []string{"10.1.0.0/16"}}},
			}},
		})
	e := startTiered(t, []runtime.Object{p},
		ns("x", map[string]string{"env": "x"}), ns("y", map[string]string{"team": "db"}),
		pod("x", "web", "n1", "10.0.1.1", map[string]string{"app": "web"}),
		pod("y", "db", "n2", "10.0.2.1", map[string]string{"app": "db"}),
		pod("y", "other", "n3", "10.0.3.1", nil))
	e.waitFor(`
ag {namespaceSelector= podSelector=app=db} members=[y/db@n2,10.0.2.1] span=[n1 n2 n3]
ag {namespaceSelector=env=x podSelector=} members=[x/web@n1,10.0.1.1] span=[n1 n2 n3]
atg {namespaceSelector= podSelector=app=web} members=[x/web@n1,10.0.1.1] span=[n1 n2 n3]
atg {namespaceSelector=team=db podSelector=} members=[y/db@n2,10.0.2.1 y/other@n3,10.0.3.1] span=[n1 n2 n3]
cnp block types=[] atg=[{namespaceSelector= podSelector=app=web} {namespaceSelector=team=db podSelector=}] span=[n1 n2 n3] tier=securityops/100 priority=5.5
  In peers=[{namespaceSelector=env=x podSelector=}] services=[] priority=0 action=Drop name=no-x log
  In peers=[0.0.0.0/0 ::/0] services=[TCP/8080-8090] priority=1 action=Pass name=rest
  Out peers=[{namespaceSelector= podSelector=app=db} 10.0.0.0/8 except:10.1.0.0/16] services=[] priority=0 action=Reject`)
}

// A policy of a tier that does not exist is not enforced (no rules) and
// says why; once the tier is created the policy takes its priority, and a
// change of the tier's priority reaches the policy.
func TestTieredUnknownTierThenCreated(t *testing.T) {
	p := cnp("p", "mine", 1, []crdv1.AppliedTo{{PodSelector: sel("app", "web")}},
		[]crdv1.Rule{{Action: crdv1.RuleActionDrop}}, nil)
	e := startTiered(t, []runtime.Object{p},
		ns("x", nil), pod("x", "web", "n1", "10.0.1.1", map[string]string{"app": "web"}))
	e.waitFor(`
atg {namespaceSelector= podSelector=app=web} members=[x/web@n1,10.0.1.1] span=[n1]
cnp p types=[] atg=[{namespaceSelector= podSelector=app=web}] span=[n1] priority=1 error=tier "mine" does not exist: the policy is not enforced`)
	e.apply(tier("mine", 120))
	e.waitFor(`
atg {namespaceSelector= podSelector=app=web} members=[x/web@n1,10.0.1.1] span=[n1]
cnp p types=[] atg=[{namespaceSelector= podSelector=app=web}] span=[n1] tier=mine/120 priority=1
  In peers=[0.0.0.0/0 ::/0] services=[] priority=0 action=Drop`)
	e.apply(tier("mine", 30))
	e.waitFor(`
atg {namespaceSelector= podSelector=app=web} members=[x/web@n1,10.0.1.1] span=[n1]
cnp p types=[] atg=[{namespaceSelector= podSelector=app=web}] span=[n1] tier=mine/30 priority=1
  In peers=[0.0.0.0/0 ::/0] services=[] priority=0 action=Drop`)
	// Deleted: the policy and its groups go.
	if err := e.dyn.Resource(crdv1.ClusterNetworkPoliciesResource).Delete(context.Background(), "p", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	e.waitFor(``)
}

// What cannot be translated is named; what can is kept.
func TestTieredUntranslatableParts(t *testing.T) {
	p := cnp("bad", "", 1, []crdv1.AppliedTo{{}, {PodSelector: sel("app", "web")}},
		nil, []crdv1.Rule{{Action: crdv1.RuleActionAllow, To: []crdv1.Peer{
			{IPBlock: &crdv1.IPBlock{CIDR: "10.0.0.0/33"}}, {PodSelector: sel("app", "db")},
		}}})
	e := startTiered(t, []runtime.Object{p},
		ns("x", nil), pod("x", "web", "n1", "10.0.1.1", map[string]string{"app": "web"}))
	e.waitFor(`
ag {namespaceSelector= podSelector=app=db} members=[] span=[n1]
atg {namespaceSelector= podSelector=app=web} members=[x/web@n1,10.0.1.1] span=[n1]
cnp bad types=[] atg=[{namespaceSelector= podSelector=app=web}] span=[n1] tier=application/250 priority=1 error=appliedTo 0: neither podSelector nor namespaceSelector: left out; egress rule 0: peer 0: ipBlock: parse cidr "10.0.0.0/33": netip.ParsePrefix("10.0.0.0/33"): prefix length out of range: peer left out
  Out peers=[{namespaceSelector= podSelector=app=db}] services=[] priority=0 action=Allow`)
}

// A peer the controller cannot translate never makes a deny rule deny
// less: a Drop or Reject takes every address, a Pass becomes a Drop of
// every address, an unknown action a Drop; an Allow only loses the peer.
func TestTieredDenyRulesFailClosed(t *testing.T) {
	bad := crdv1.Peer{IPBlock: &crdv1.IPBlock{CIDR: "10.0.0.0/33"}}
	db := crdv1.Peer{PodSelector: sel("app", "db")}
	p := cnp("bad", "", 1, []crdv1.AppliedTo{{PodSelector: sel("app", "web")}},
		[]crdv1.Rule{
			{Action: crdv1.RuleActionDrop, From: []crdv1.Peer{bad, db}},
			{Action: crdv1.RuleActionReject, From: []crdv1.Peer{db, bad}},
			{Action: crdv1.RuleActionPass, From: []crdv1.Peer{bad}, Ports: []crdv1.NetworkPolicyPort{tcpPort(80, nil)}},
			{Action: crdv1.RuleActionAllow, From: []crdv1.Peer{bad, db}},
			{Action: "Log", From: []crdv1.Peer{db}},
		}, nil)
	e := startTiered(t, []runtime.Object{p},
		ns("x", nil), pod("x", "web", "n1", "10.0.1.1", map[string]string{"app": "web"}))
	parse := `parse cidr "10.0.0.0/33": netip.ParsePrefix("10.0.0.0/33"): prefix length out of range`
	e.waitFor(`
ag {namespaceSelector= podSelector=app=db} members=[] span=[n1]
atg {namespaceSelector= podSelector=app=web} members=[x/web@n1,10.0.1.1] span=[n1]
cnp bad types=[] atg=[{namespaceSelector= podSelector=app=web}] span=[n1] tier=application/250 priority=1 error=` +
		`ingress rule 0: peer 0: ipBlock: ` + parse + `: Drop of every address (fails closed); ` +
		`ingress rule 1: peer 1: ipBlock: ` + parse + `: Reject of every address (fails closed); ` +
		`ingress rule 2: peer 0: ipBlock: ` + parse + `: installed as Drop of every address (fails closed); ` +
		`ingress rule 3: peer 0: ipBlock: ` + parse + `: peer left out; ` +
		`ingress rule 4: unknown action "Log": installed as Drop (fails closed)
  In peers=[0.0.0.0/0 ::/0] services=[] priority=0 action=Drop
  In peers=[0.0.0.0/0 ::/0] services=[] priority=1 action=Reject
  In peers=[0.0.0.0/0 ::/0] services=[TCP/80] priority=2 action=Drop
  In peers=[{namespaceSelector= podSelector=app=db}] services=[] priority=3 action=Allow
  In peers=[{namespaceSelector= podSelector=app=db}] services=[] priority=4 action=Drop`)
}

// The built-in tiers are created once; those that exist are left alone.
func TestEnsureBuiltInTiers(t *testing.T) {
	dyn := dynamicfake.NewSimpleDynamicClientWithCustomListKinds(runtime.NewScheme(), map[schema.GroupVersionResource]string{
		crdv1.TiersResource: "TierList",
	}, toUnstructured(t, tier("baseline", 253)))
	for range 2 {
		if err := EnsureBuiltInTiers(context.Background(), dyn); err != nil {
			t.Fatal(err)
		}
	}
	l, err := dyn.Resource(crdv1.TiersResource).List(context.Background(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]int64{}
	for _, u := range l.Items {
		got[u.GetName()], _, _ = unstructured.NestedInt64(u.Object, "spec", "priority")
	}
	want := map[string]int64{"emergency": 50, "securityops": 100, "networkops": 150, "platform": 200, "application": 250, "baseline": 253}
	if len(got) != len(want) {
		t.Fatalf("tiers %v, want %v", got, want)
	}
	for n, p := range want {
		if got[n] != p {
			t.Errorf("tier %s priority %d, want %d", n, got[n], p)
		}
	}
}
