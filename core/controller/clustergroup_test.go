package controller

import (
	"context"
	"encoding/json"
	"sync"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/wait"

	crdv1 "github.com/seine-cni/seine/core/apis/crd/v1beta1"
)

func clusterGroup(name string, spec crdv1.ClusterGroupSpec) *crdv1.ClusterGroup {
	return &crdv1.ClusterGroup{ObjectMeta: metav1.ObjectMeta{Name: name, Generation: 1}, Spec: spec}
}

// A ClusterGroup named in appliedTo selects the policy's pods; named as a
// peer it brings its pods (as the AddressGroup of its selection, shared
// with any policy selecting the same) and its IP blocks; a parent brings
// its children's; a group that does not exist yet selects nothing, and
// its creation reaches the policy.
func TestClusterGroupPeersAndAppliedTo(t *testing.T) {
	p := cnp("g", "securityops", 1, []crdv1.AppliedTo{{Group: "web"}},
		[]crdv1.Rule{
			{Action: crdv1.RuleActionDrop, Name: "parent", From: []crdv1.Peer{{Group: "parent"}}},
			{Action: crdv1.RuleActionAllow, Name: "later", From: []crdv1.Peer{{Group: "later"}}},
		},
		[]crdv1.Rule{{Action: crdv1.RuleActionReject, To: []crdv1.Peer{{Group: "nets"}, {PodSelector: sel("app", "db")}}}})
	e := startTiered(t, []runtime.Object{p,
		clusterGroup("web", crdv1.ClusterGroupSpec{PodSelector: sel("app", "web")}),
		clusterGroup("db", crdv1.ClusterGroupSpec{PodSelector: sel("app", "db"), NamespaceSelector: sel("team", "db")}),
		clusterGroup("nets", crdv1.ClusterGroupSpec{IPBlocks: []crdv1.IPBlock{{CIDR: "192.168.0.0/16", Except: []string{"192.168.1.0/24"}}}}),
		clusterGroup("parent", crdv1.ClusterGroupSpec{ChildGroups: []string{"db", "nets", "missing"}}),
	},
		ns("x", nil), ns("y", map[string]string{"team": "db"}),
		pod("x", "web", "n1", "10.0.1.1", map[string]string{"app": "web"}),
		pod("x", "db", "n1", "10.0.1.2", map[string]string{"app": "db"}),
		pod("y", "db", "n2", "10.0.2.1", map[string]string{"app": "db"}))
	e.waitFor(`
ag {namespaceSelector= podSelector=app=db} members=[x/db@n1,10.0.1.2 y/db@n2,10.0.2.1] span=[n1]
ag {namespaceSelector=team=db podSelector=app=db} members=[y/db@n2,10.0.2.1] span=[n1]
atg {namespaceSelector= podSelector=app=web} members=[x/web@n1,10.0.1.1] span=[n1]
cnp g types=[] atg=[{namespaceSelector= podSelector=app=web}] span=[n1] tier=securityops/100 priority=1
  In peers=[{namespaceSelector=team=db podSelector=app=db} 192.168.0.0/16 except:192.168.1.0/24] services=[] priority=0 action=Drop name=parent
  In peers=[] services=[] priority=1 action=Allow name=later
  Out peers=[{namespaceSelector= podSelector=app=db} 192.168.0.0/16 except:192.168.1.0/24] services=[] priority=0 action=Reject`)
	e.apply(clusterGroup("later", crdv1.ClusterGroupSpec{NamespaceSelector: sel("team", "db")}))
	e.waitFor(`
ag {namespaceSelector= podSelector=app=db} members=[x/db@n1,10.0.1.2 y/db@n2,10.0.2.1] span=[n1]
ag {namespaceSelector=team=db podSelector=app=db} members=[y/db@n2,10.0.2.1] span=[n1]
ag {namespaceSelector=team=db podSelector=} members=[y/db@n2,10.0.2.1] span=[n1]
atg {namespaceSelector= podSelector=app=web} members=[x/web@n1,10.0.1.1] span=[n1]
cnp g types=[] atg=[{namespaceSelector= podSelector=app=web}] span=[n1] tier=securityops/100 priority=1
  In peers=[{namespaceSelector=team=db podSelector=app=db} 192.168.0.0/16 except:192.168.1.0/24] services=[] priority=0 action=Drop name=parent
  In peers=[{namespaceSelector=team=db podSelector=}] services=[] priority=1 action=Allow name=later
  Out peers=[{namespaceSelector= podSelector=app=db} 192.168.0.0/16 except:192.168.1.0/24] services=[] priority=0 action=Reject`)
}

// A change of a ClusterGroup recomputes the policies that read it (as a
// peer, an appliedTo or through a parent) and no other; a pod joining the
// group's selection is a member change of the shared group, with no
// policy recomputed at all.
func TestClusterGroupChangeRecomputesOnlyItsUsers(t *testing.T) {
	var mu sync.Mutex
	synced := map[string]int{}
	pols := []runtime.Object{
		cnp("uses-peer", "", 1, []crdv1.AppliedTo{{PodSelector: sel("app", "web")}},
			[]crdv1.Rule{{Action: crdv1.RuleActionDrop, From: []crdv1.Peer{{Group: "clients"}}}}, nil),
		cnp("uses-parent", "", 2, []crdv1.AppliedTo{{Group: "parent"}}, []crdv1.Rule{{Action: crdv1.RuleActionDrop}}, nil),
		cnp("unrelated", "", 3, []crdv1.AppliedTo{{PodSelector: sel("app", "web")}},
			[]crdv1.Rule{{Action: crdv1.RuleActionDrop, From: []crdv1.Peer{{Group: "other"}}}}, nil),
		clusterGroup("clients", crdv1.ClusterGroupSpec{PodSelector: sel("role", "client")}),
		clusterGroup("parent", crdv1.ClusterGroupSpec{ChildGroups: []string{"clients"}}),
		clusterGroup("other", crdv1.ClusterGroupSpec{PodSelector: sel("role", "other")}),
	}
	var us []runtime.Object
	for _, o := range pols {
		us = append(us, o)
	}
	e := startTiered(t, us, ns("x", nil),
		pod("x", "web", "n1", "10.0.1.1", map[string]string{"app": "web"}),
		pod("x", "c1", "n2", "10.0.2.1", map[string]string{"role": "client"}),
		pod("x", "c2", "n3", "10.0.3.1", nil))
	e.c.mu.Lock()
	e.c.afterSync = func(key string) {
		mu.Lock()
		synced[key]++
		mu.Unlock()
	}
	e.c.mu.Unlock()
	take := func() map[string]int {
		mu.Lock()
		defer mu.Unlock()
		out := synced
		synced = map[string]int{}
		return out
	}

	// A pod joins the selection: the group's members change, no policy
	// is translated again.
	if _, err := e.client.CoreV1().Pods("x").Update(context.Background(),
		pod("x", "c2", "n3", "10.0.3.1", map[string]string{"role": "client"}), metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	e.waitFor(`
ag {namespaceSelector= podSelector=role=client} members=[x/c1@n2,10.0.2.1 x/c2@n3,10.0.3.1] span=[n1]
ag {namespaceSelector= podSelector=role=other} members=[] span=[n1]
atg {namespaceSelector= podSelector=app=web} members=[x/web@n1,10.0.1.1] span=[n1]
atg {namespaceSelector= podSelector=role=client} members=[x/c1@n2,10.0.2.1 x/c2@n3,10.0.3.1] span=[n2 n3]
cnp unrelated types=[] atg=[{namespaceSelector= podSelector=app=web}] span=[n1] tier=application/250 priority=3
  In peers=[{namespaceSelector= podSelector=role=other}] services=[] priority=0 action=Drop
cnp uses-parent types=[] atg=[{namespaceSelector= podSelector=role=client}] span=[n2 n3] tier=application/250 priority=2
  In peers=[0.0.0.0/0 ::/0] services=[] priority=0 action=Drop
cnp uses-peer types=[] atg=[{namespaceSelector= podSelector=app=web}] span=[n1] tier=application/250 priority=1
  In peers=[{namespaceSelector= podSelector=role=client}] services=[] priority=0 action=Drop`)
	if got := take(); len(got) != 0 {
		t.Errorf("a member change translated policies %v, want none", got)
	}

	// The group itself changes: its two users are translated again, the
	// unrelated policy is not.
	e.apply(clusterGroup("clients", crdv1.ClusterGroupSpec{PodSelector: sel("role", "client"), NamespaceSelector: sel("kubernetes.io/metadata.name", "x")}))
	e.waitFor(`
ag {namespaceSelector= podSelector=role=other} members=[] span=[n1]
ag {namespaceSelector=kubernetes.io/metadata.name=x podSelector=role=client} members=[] span=[n1]
atg {namespaceSelector= podSelector=app=web} members=[x/web@n1,10.0.1.1] span=[n1]
atg {namespaceSelector=kubernetes.io/metadata.name=x podSelector=role=client} members=[] span=[]
cnp unrelated types=[] atg=[{namespaceSelector= podSelector=app=web}] span=[n1] tier=application/250 priority=3
  In peers=[{namespaceSelector= podSelector=role=other}] services=[] priority=0 action=Drop
cnp uses-parent types=[] atg=[{namespaceSelector=kubernetes.io/metadata.name=x podSelector=role=client}] span=[] tier=application/250 priority=2
  In peers=[0.0.0.0/0 ::/0] services=[] priority=0 action=Drop
cnp uses-peer types=[] atg=[{namespaceSelector= podSelector=app=web}] span=[n1] tier=application/250 priority=1
  In peers=[{namespaceSelector=kubernetes.io/metadata.name=x podSelector=role=client}] services=[] priority=0 action=Drop`)
	got := take()
	if got[cnpKeyPrefix+"uses-peer"] == 0 || got[cnpKeyPrefix+"uses-parent"] == 0 || got[cnpKeyPrefix+"unrelated"] != 0 || len(got) != 2 {
		t.Errorf("a group change translated %v, want uses-peer and uses-parent only", got)
	}

	// A deleted group selects nothing; its users follow, the other not.
	if err := e.dyn.Resource(crdv1.ClusterGroupsResource).Delete(context.Background(), "clients", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	e.waitFor(`
ag {namespaceSelector= podSelector=role=other} members=[] span=[n1]
atg {namespaceSelector= podSelector=app=web} members=[x/web@n1,10.0.1.1] span=[n1]
cnp unrelated types=[] atg=[{namespaceSelector= podSelector=app=web}] span=[n1] tier=application/250 priority=3
  In peers=[{namespaceSelector= podSelector=role=other}] services=[] priority=0 action=Drop
cnp uses-parent types=[] atg=[] span=[] tier=application/250 priority=2
  In peers=[0.0.0.0/0 ::/0] services=[] priority=0 action=Drop
cnp uses-peer types=[] atg=[{namespaceSelector= podSelector=app=web}] span=[n1] tier=application/250 priority=1
  In peers=[] services=[] priority=0 action=Drop`)
	if got := take(); got[cnpKeyPrefix+"unrelated"] != 0 || len(got) != 2 {
		t.Errorf("a group deletion translated %v, want uses-peer and uses-parent only", got)
	}
}

// Groups that cannot be resolved (a cycle, children nested two levels,
// several kinds of member stored before the CRD refused them, IP blocks
// applied to) are named in the policy's error; a deny rule whose group
// cannot be resolved fails closed (every address), an Allow loses it.
// Their status is Failed with the same reason.
func TestClusterGroupRefusals(t *testing.T) {
	objs := []runtime.Object{
		cnp("p", "", 1, []crdv1.AppliedTo{{PodSelector: sel("app", "web")}, {Group: "nets"}, {Group: "web", PodSelector: sel("a", "b")}},
			[]crdv1.Rule{
				{Action: crdv1.RuleActionDrop, From: []crdv1.Peer{{Group: "a"}}},
				{Action: crdv1.RuleActionAllow, From: []crdv1.Peer{{Group: "nested"}, {Group: "web"}}},
				{Action: crdv1.RuleActionReject, From: []crdv1.Peer{{Group: "mixed"}}},
			}, nil),
		clusterGroup("a", crdv1.ClusterGroupSpec{ChildGroups: []string{"b"}}),
		clusterGroup("b", crdv1.ClusterGroupSpec{ChildGroups: []string{"a"}}),
		clusterGroup("nested", crdv1.ClusterGroupSpec{ChildGroups: []string{"a"}}),
		clusterGroup("mixed", crdv1.ClusterGroupSpec{PodSelector: sel("app", "web"), IPBlocks: []crdv1.IPBlock{{CIDR: "10.0.0.0/8"}}}),
		clusterGroup("nets", crdv1.ClusterGroupSpec{IPBlocks: []crdv1.IPBlock{{CIDR: "10.0.0.0/8"}}}),
		clusterGroup("web", crdv1.ClusterGroupSpec{PodSelector: sel("app", "web")}),
		clusterGroup("self", crdv1.ClusterGroupSpec{ChildGroups: []string{"self"}}),
	}
	e := startTiered(t, objs, ns("x", nil), pod("x", "web", "n1", "10.0.1.1", map[string]string{"app": "web"}))
	e.waitFor(`
ag {namespaceSelector= podSelector=app=web} members=[x/web@n1,10.0.1.1] span=[n1]
atg {namespaceSelector= podSelector=app=web} members=[x/web@n1,10.0.1.1] span=[n1]
cnp p types=[] atg=[{namespaceSelector= podSelector=app=web}] span=[n1] tier=application/250 priority=1 error=` +
		`appliedTo 1: group nets holds ipBlocks: a policy applies to pods only: left out; ` +
		`appliedTo 2: group web with a selector beside it (a group stands alone in its entry): left out; ` +
		`ingress rule 0: peer 0: group a: a cycle: its child group b has a as a child group: Drop of every address (fails closed); ` +
		`ingress rule 1: peer 0: group nested: child group a has child groups of its own: ClusterGroups nest one level only: peer left out; ` +
		`ingress rule 2: peer 0: group mixed: holds pods (podSelector, namespaceSelector) and ipBlocks: a ClusterGroup holds one kind of member: Reject of every address (fails closed)
  In peers=[0.0.0.0/0 ::/0] services=[] priority=0 action=Drop
  In peers=[{namespaceSelector= podSelector=app=web}] services=[] priority=1 action=Allow
  In peers=[0.0.0.0/0 ::/0] services=[] priority=2 action=Reject`)
	for name, want := range map[string]string{
		"a":     "group a: a cycle: its child group b has a as a child group",
		"self":  "group self: a cycle: it is its own child group",
		"mixed": "group mixed: holds pods (podSelector, namespaceSelector) and ipBlocks: a ClusterGroup holds one kind of member",
	} {
		st, ok := e.c.ClusterGroupStatus(name)
		if !ok || st.Phase != crdv1.ClusterGroupFailed || st.Message != want {
			t.Errorf("status of %s: %+v (exists %v), want Failed: %s", name, st, ok, want)
		}
	}
}

// The status lists a group's pods (sorted, with node and addresses; at
// most MaxStatusPods, podCount counts all) or its blocks, and the writer
// patches it into the ClusterGroup's status only when it changed.
func TestClusterGroupStatus(t *testing.T) {
	kube := []runtime.Object{ns("x", nil), ns("y", nil)}
	for i := range crdv1.MaxStatusPods + 5 {
		kube = append(kube, pod("y", "p"+string(rune('a'+i/26))+string(rune('a'+i%26)), "n2", "", map[string]string{"app": "many"}))
	}
	kube = append(kube, pod("x", "web", "n1", "10.0.1.1", map[string]string{"app": "web"}), pod("x", "idle", "", "", map[string]string{"app": "web"}))
	e := startTiered(t, []runtime.Object{
		clusterGroup("web", crdv1.ClusterGroupSpec{PodSelector: sel("app", "web")}),
		clusterGroup("many", crdv1.ClusterGroupSpec{PodSelector: sel("app", "many")}),
		clusterGroup("both", crdv1.ClusterGroupSpec{ChildGroups: []string{"web", "nets"}}),
		clusterGroup("nets", crdv1.ClusterGroupSpec{IPBlocks: []crdv1.IPBlock{{CIDR: "10.1.0.0/16", Except: []string{"10.1.2.0/24"}}}}),
	}, kube...)
	st, ok := e.c.ClusterGroupStatus("both")
	got, _ := json.Marshal(st)
	want := `{"observedGeneration":1,"phase":"Computed","podCount":1,"pods":[{"namespace":"x","name":"web","node":"n1","ips":["10.0.1.1"]}],"ipBlocks":[{"cidr":"10.1.0.0/16","except":["10.1.2.0/24"]}]}`
	if !ok || string(got) != want {
		t.Errorf("status of both:\n%s\nwant\n%s", got, want)
	}
	st, _ = e.c.ClusterGroupStatus("many")
	if st.PodCount != crdv1.MaxStatusPods+5 || len(st.Pods) != crdv1.MaxStatusPods || st.Pods[0].Name != "paa" {
		t.Errorf("status of many: %d pods, %d listed, first %+v", st.PodCount, len(st.Pods), st.Pods[0])
	}
	if _, ok := e.c.ClusterGroupStatus("missing"); ok {
		t.Error("a group that does not exist has a status")
	}

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); e.c.WriteClusterGroupStatus(ctx, e.dyn, 10*time.Millisecond) }()
	defer func() { cancel(); <-done }()
	readStatus := func(name string) (crdv1.ClusterGroupStatus, error) {
		u, err := e.dyn.Resource(crdv1.ClusterGroupsResource).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return crdv1.ClusterGroupStatus{}, err
		}
		var g crdv1.ClusterGroup
		err = runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, &g)
		return g.Status, err
	}
	var last crdv1.ClusterGroupStatus
	if err := wait.PollUntilContextTimeout(ctx, 10*time.Millisecond, 10*time.Second, true, func(context.Context) (bool, error) {
		var err error
		last, err = readStatus("web")
		return err == nil && last.PodCount == 1 && len(last.Pods) == 1 && last.Pods[0].Name == "web", err
	}); err != nil {
		t.Fatalf("status of web not written: %+v", last)
	}
	// A pod leaves: the status follows.
	if err := e.client.CoreV1().Pods("x").Delete(ctx, "web", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := wait.PollUntilContextTimeout(ctx, 10*time.Millisecond, 10*time.Second, true, func(context.Context) (bool, error) {
		var err error
		last, err = readStatus("web")
		return err == nil && last.PodCount == 0 && len(last.Pods) == 0 && last.Phase == crdv1.ClusterGroupComputed, err
	}); err != nil {
		t.Fatalf("status of web after its pod left: %+v", last)
	}
	// Nothing changed: no more patches.
	patches := func() int {
		n := 0
		for _, a := range e.dyn.Actions() {
			if a.GetVerb() == "patch" {
				n++
			}
		}
		return n
	}
	before := patches()
	time.Sleep(100 * time.Millisecond)
	if after := patches(); after != before {
		t.Errorf("%d patches without a change", after-before)
	}
}
