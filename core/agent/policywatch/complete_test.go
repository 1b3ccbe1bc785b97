package policywatch

import (
	"context"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	k8stesting "k8s.io/client-go/testing"

	"github.com/seine-cni/seine/core/agent/policy"
	cp "github.com/seine-cni/seine/core/apis/controlplane/v1beta1"
	"github.com/seine-cni/seine/core/client/clientset/versioned/fake"
)

// fakeAPI is the controlplane API of one node as the test scripts it: each
// list returns what the test set last, and each watch is a fake watcher the
// test gets from watches (one per watch call, in order).
type fakeAPI struct {
	cs      *fake.Clientset
	mu      sync.Mutex
	lists   map[string]runtime.Object
	watches map[string]chan *watch.FakeWatcher
	listed  map[string]int
	// selectors are the field selectors of every list and watch, in order
	// ("list networkpolicies nodeName=n1,tiered=true").
	selectors []string
	// refuse, when set, answers a field selector with an error, as a
	// server that does not know one of its fields.
	refuse func(fields string) error
}

// seen records a request's field selector and returns the error refuse
// has for it.
func (f *fakeAPI) seen(a k8stesting.Action) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	var sel string
	switch a := a.(type) {
	case k8stesting.ListAction:
		sel = a.GetListRestrictions().Fields.String()
	case k8stesting.WatchAction:
		sel = a.GetWatchRestrictions().Fields.String()
	}
	f.selectors = append(f.selectors, a.GetVerb()+" "+a.GetResource().Resource+" "+sel)
	if f.refuse != nil {
		return f.refuse(sel)
	}
	return nil
}

func newFakeAPI() *fakeAPI {
	f := &fakeAPI{cs: fake.NewSimpleClientset(), lists: map[string]runtime.Object{}, listed: map[string]int{},
		watches: map[string]chan *watch.FakeWatcher{}}
	for _, res := range []string{NetworkPolicies, AppliedToGroups, AddressGroups} {
		f.watches[res] = make(chan *watch.FakeWatcher, 16)
		f.cs.PrependReactor("list", res, func(a k8stesting.Action) (bool, runtime.Object, error) {
			if err := f.seen(a); err != nil {
				return true, nil, err
			}
			f.mu.Lock()
			defer f.mu.Unlock()
			f.listed[res]++
			return true, f.lists[res].DeepCopyObject(), nil
		})
		f.cs.PrependWatchReactor(res, func(a k8stesting.Action) (bool, watch.Interface, error) {
			if err := f.seen(a); err != nil {
				return true, nil, err
			}
			w := watch.NewFakeWithChanSize(16, false)
			f.watches[res] <- w
			return true, w, nil
		})
	}
	return f
}

// set makes the next lists return these objects.
func (f *fakeAPI) set(nps []cp.NetworkPolicy, atgs []cp.AppliedToGroup, ags []cp.AddressGroup) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.lists[NetworkPolicies] = &cp.NetworkPolicyList{Items: nps}
	f.lists[AppliedToGroups] = &cp.AppliedToGroupList{Items: atgs}
	f.lists[AddressGroups] = &cp.AddressGroupList{Items: ags}
}

func (f *fakeAPI) listCount(res string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.listed[res]
}

// watcher returns the next watch the agent opened on res.
func (f *fakeAPI) watcher(t *testing.T, res string) *watch.FakeWatcher {
	t.Helper()
	select {
	case w := <-f.watches[res]:
		return w
	case <-time.After(10 * time.Second):
		t.Fatalf("no watch of %s", res)
		return nil
	}
}

// syncRecorder keeps every state synced.
type syncRecorder struct {
	mu     sync.Mutex
	states []policy.State
}

func (r *syncRecorder) Sync(_ context.Context, s policy.State) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.states = append(r.states, s)
	return nil
}

func (r *syncRecorder) got() []policy.State {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]policy.State(nil), r.states...)
}

// incomplete lists what a synced state lacks.
func incomplete(s policy.State) []string {
	st := &state{nps: s.NetworkPolicies, atgs: s.AppliedToGroups, ags: s.AddressGroups}
	return st.missing(10)
}

func npRefs(name, atg string, ags ...string) cp.NetworkPolicy {
	np := cp.NetworkPolicy{AppliedToGroups: []string{atg}, PolicyTypes: []cp.PolicyType{cp.PolicyTypeIngress}}
	np.Name = name
	if len(ags) > 0 {
		np.Rules = []cp.NetworkPolicyRule{{Direction: cp.DirectionIn, From: cp.NetworkPolicyPeer{AddressGroups: ags}}}
	}
	return np
}

func atgOf(name string, pods ...string) cp.AppliedToGroup {
	g := cp.AppliedToGroup{}
	g.Name = name
	for _, p := range pods {
		g.Members = append(g.Members, member(p, "\x0a\x00\x00\x01"))
	}
	return g
}

func agOf(name string, pods ...string) cp.AddressGroup {
	g := cp.AddressGroup{}
	g.Name = name
	for _, p := range pods {
		g.Members = append(g.Members, member(p, "\x0a\x00\x00\x02"))
	}
	return g
}

func runWatcher(t *testing.T, f *fakeAPI, rec *syncRecorder, o Options) *Watcher {
	t.Helper()
	w := newWatcher(newClientFor(f.cs.ControlplaneV1beta1(), "n1"), rec, slog.New(slog.NewTextHandler(io.Discard, nil)), o)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); w.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return w
}

func checkComplete(t *testing.T, rec *syncRecorder) {
	t.Helper()
	for i, s := range rec.got() {
		if m := incomplete(s); len(m) > 0 {
			t.Errorf("sync %d got a policy without its groups (its pods lose isolation): %v", i, m)
		}
	}
}

// The three lists are taken one after another: a policy listed may refer
// to an AppliedToGroup created after the groups were listed. Syncing that
// state would leave the policy's pods unisolated until the group arrives.
func TestListedStateLackingAGroupIsNotSynced(t *testing.T) {
	f := newFakeAPI()
	f.set([]cp.NetworkPolicy{npRefs("p", "g2")}, nil, nil)
	rec := &syncRecorder{}
	runWatcher(t, f, rec, Options{})
	atgw := f.watcher(t, AppliedToGroups)
	f.watcher(t, NetworkPolicies)
	f.watcher(t, AddressGroups)
	time.Sleep(100 * time.Millisecond) // a sync of the listed state would be in by now
	g2 := atgOf("g2", "a")
	atgw.Add(&g2)
	waitUntil(t, "a sync with g2", func() bool {
		got := rec.got()
		return len(got) > 0 && got[len(got)-1].AppliedToGroups["g2"] != nil
	})
	checkComplete(t, rec)
}

// A policy whose podSelector changed refers to a new AppliedToGroup; the
// old one may be deleted, and the new one arrive, on the group watch at any
// time relative to the policy's update on its own watch. However long the
// group takes, no sync may hold the policy without it.
func TestWatchNeverSyncsAPolicyWithoutItsGroups(t *testing.T) {
	f := newFakeAPI()
	f.set([]cp.NetworkPolicy{npRefs("p", "g1", "peers")}, []cp.AppliedToGroup{atgOf("g1", "a")}, []cp.AddressGroup{agOf("peers", "b")})
	rec := &syncRecorder{}
	runWatcher(t, f, rec, Options{})
	atgw := f.watcher(t, AppliedToGroups)
	npw := f.watcher(t, NetworkPolicies)
	agw := f.watcher(t, AddressGroups)
	waitUntil(t, "the listed state synced", func() bool { return len(rec.got()) == 1 })

	p := npRefs("p", "g2", "peers2")
	npw.Modify(&p)
	g1 := atgOf("g1", "a")
	atgw.Delete(&g1)
	peers := agOf("peers", "b")
	agw.Delete(&peers)
	time.Sleep(700 * time.Millisecond) // longer than the watcher ever waited before syncing anyway
	g2 := atgOf("g2", "a")
	atgw.Add(&g2)
	time.Sleep(50 * time.Millisecond)
	peers2 := agOf("peers2", "b")
	agw.Add(&peers2)
	waitUntil(t, "a sync with the updated policy and its groups", func() bool {
		got := rec.got()
		last := got[len(got)-1]
		return last.AppliedToGroups["g2"] != nil && last.AddressGroups["peers2"] != nil
	})
	checkComplete(t, rec)
}

// A group that never comes ends the session after Options.Incomplete: the
// watcher lists again, and syncs once the lists are complete.
func TestMissingGroupListsAgain(t *testing.T) {
	f := newFakeAPI()
	f.set([]cp.NetworkPolicy{npRefs("p", "g1")}, []cp.AppliedToGroup{atgOf("g1", "a")}, nil)
	rec := &syncRecorder{}
	w := runWatcher(t, f, rec, Options{Incomplete: 100 * time.Millisecond, MaxBackoff: 10 * time.Millisecond})
	f.watcher(t, AppliedToGroups)
	npw := f.watcher(t, NetworkPolicies)
	f.watcher(t, AddressGroups)
	waitUntil(t, "the listed state synced", func() bool { return len(rec.got()) == 1 })

	f.set([]cp.NetworkPolicy{npRefs("p", "g2")}, []cp.AppliedToGroup{atgOf("g2", "a")}, nil)
	p := npRefs("p", "g2")
	npw.Modify(&p) // g2 never comes on this session's watch
	waitUntil(t, "a relist", func() bool { return w.Relists() == 2 })
	waitUntil(t, "the relisted state synced", func() bool {
		got := rec.got()
		return len(got) == 2 && got[1].AppliedToGroups["g2"] != nil
	})
	if n := f.listCount(AppliedToGroups); n != 2 {
		t.Errorf("AppliedToGroups listed %d times, want 2", n)
	}
	checkComplete(t, rec)
}
