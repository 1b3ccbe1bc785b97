package inventory

import (
	"context"
	"encoding/json"
	"slices"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
	"k8s.io/client-go/tools/cache"

	crd "github.com/seine-cni/seine/core/apis/crd/v1beta1"
)

type fakeController struct{ agents int }

func (f *fakeController) ConnectedAgents() int { return f.agents }
func (*fakeController) Policy() crd.PolicyInfo {
	return crd.PolicyInfo{NetworkPolicies: 5, AppliedToGroups: 4, AddressGroups: 3}
}

func node(name, uid string) *corev1.Node {
	return &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, UID: types.UID(uid)}}
}

func agentInfo(name, ownerUID string) *unstructured.Unstructured {
	u := agentInfoFor(node(name, ownerUID))
	u.SetUID(types.UID("info-" + name + "-" + ownerUID))
	return u
}

// TestSyncAgents: a node without an object gets one owned by it; an
// object without a node goes; an object owned by an earlier node of the
// same name is replaced; the next pass changes nothing.
func TestSyncAgents(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cs := fake.NewClientset(node("node-1", "uid-1"), node("node-2", "uid-2"), node("node-3", "uid-3"))
	f := informers.NewSharedInformerFactory(cs, 0)
	dyn := newDynamic()
	for _, u := range []*unstructured.Unstructured{agentInfo("node-1", "uid-1"), agentInfo("node-2", "uid-old"), agentInfo("gone", "uid-gone")} {
		if _, err := dyn.Resource(crd.SeineAgentInfosResource).Create(ctx, u, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	c, err := NewController(dyn, f.Core().V1().Nodes(), &fakeController{}, quiet(), ControllerOptions{})
	if err != nil {
		t.Fatal(err)
	}
	f.Start(ctx.Done())
	if !cache.WaitForCacheSync(ctx.Done(), c.synced) {
		t.Fatal("node informer not synced")
	}
	dyn.ClearActions()
	if err := c.SyncAgents(ctx); err != nil {
		t.Fatal(err)
	}
	var did []string
	for _, a := range dyn.Actions() {
		switch a := a.(type) {
		case k8stesting.CreateAction:
			did = append(did, "create "+a.GetObject().(*unstructured.Unstructured).GetName())
		case k8stesting.DeleteAction:
			did = append(did, "delete "+a.GetName())
		}
	}
	slices.Sort(did)
	// node-2's stale object is deleted and made again in the same pass.
	if want := []string{"create node-2", "create node-3", "delete gone", "delete node-2"}; !slices.Equal(did, want) {
		t.Errorf("first pass: %v, want %v", did, want)
	}
	l, err := dyn.Resource(crd.SeineAgentInfosResource).List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	owners := map[string]types.UID{}
	for _, u := range l.Items {
		refs := u.GetOwnerReferences()
		if len(refs) != 1 || refs[0].Kind != "Node" || refs[0].APIVersion != "v1" || refs[0].Name != u.GetName() {
			t.Errorf("%s: owners %+v", u.GetName(), refs)
			continue
		}
		owners[u.GetName()] = refs[0].UID
	}
	if want := map[string]types.UID{"node-1": "uid-1", "node-2": "uid-2", "node-3": "uid-3"}; !equalMaps(owners, want) {
		t.Errorf("after the pass: owners %v, want %v", owners, want)
	}
	dyn.ClearActions()
	if err := c.SyncAgents(ctx); err != nil {
		t.Fatal(err)
	}
	for _, a := range dyn.Actions() {
		if a.GetVerb() != "list" {
			t.Errorf("a pass with nothing to do did %s %s", a.GetVerb(), a.GetResource().Resource)
		}
	}
}

func equalMaps[K, V comparable](a, b map[K]V) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

// TestControllerReport creates the SeineControllerInfo once and writes its
// status with the controller's counts: at once when they change, else at
// the heartbeat.
func TestControllerReport(t *testing.T) {
	ctx := context.Background()
	cs := fake.NewClientset()
	f := informers.NewSharedInformerFactory(cs, 0)
	dyn := newDynamic()
	var applied []crd.SeineControllerInfoStatus
	dyn.PrependReactor("patch", "seinecontrollerinfos", func(a k8stesting.Action) (bool, runtime.Object, error) {
		p := a.(k8stesting.PatchAction)
		var obj crd.SeineControllerInfo
		if p.GetPatchType() != types.ApplyPatchType || p.GetSubresource() != "status" || p.GetName() != crd.ControllerInfoName {
			t.Errorf("%s patch of %s/%s", p.GetPatchType(), p.GetName(), p.GetSubresource())
		}
		if err := json.Unmarshal(p.GetPatch(), &obj); err != nil {
			t.Fatal(err)
		}
		applied = append(applied, obj.Status)
		return true, &unstructured.Unstructured{}, nil
	})
	src := &fakeController{agents: 1}
	c, err := NewController(dyn, f.Core().V1().Nodes(), src, quiet(), ControllerOptions{Pod: "kube-system/seine-controller-x", NodeName: "node-1", Version: "v0.1.0"})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Date(2026, 12, 7, 6, 0, 0, 0, time.UTC)
	c.now = func() time.Time { return now }
	report := func(want int) {
		t.Helper()
		if err := c.Report(ctx); err != nil {
			t.Fatal(err)
		}
		if len(applied) != want {
			t.Fatalf("%d status writes, want %d", len(applied), want)
		}
	}
	report(1)
	now = now.Add(DefaultCheck)
	report(1) // nothing changed
	src.agents = 2
	now = now.Add(DefaultCheck)
	report(2) // an agent connected
	now = now.Add(DefaultHeartbeat)
	report(3) // the heartbeat
	creates := 0
	for _, a := range dyn.Actions() {
		if a.GetVerb() == "create" {
			creates++
		}
	}
	if creates != 1 {
		t.Errorf("%d creates, want 1", creates)
	}
	st := applied[2]
	if st.Version != "v0.1.0" || st.Pod != "kube-system/seine-controller-x" || st.NodeName != "node-1" || st.ConnectedAgents != 2 ||
		st.Policy.NetworkPolicies != 5 || st.Policy.AddressGroups != 3 || !st.LastHeartbeatTime.Time.Equal(now) {
		t.Errorf("status %+v", st)
	}
}
