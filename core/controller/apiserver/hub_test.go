package apiserver

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/dynamic/dynamicinformer"
	dynamicfake "k8s.io/client-go/dynamic/fake"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes/fake"

	cp "github.com/seine-cni/seine/core/apis/controlplane/v1beta1"
	"github.com/seine-cni/seine/core/controller"
)

type env struct {
	t      *testing.T
	client *fake.Clientset
	np     *hub[*cp.NetworkPolicy]
	atg    *hub[*cp.AppliedToGroup]
	ag     *hub[*cp.AddressGroup]
}

// startHubs runs a controller over a fake clientset and the three hubs over
// its stores, once it has computed the initial state.
func startHubs(t *testing.T) *env { t.Helper(); return startHubsWith(t, nil) }

// startHubsWith is startHubs with tiered policy on, when crd is not nil:
// crd holds the crd.seine.io objects (unstructured) of a fake dynamic
// client the controller follows.
func startHubsWith(t *testing.T, crd *dynamicfake.FakeDynamicClient) *env {
	t.Helper()
	client := fake.NewClientset(
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "default"}},
		testPod("web-1", "node-a", "10.0.0.1", "web"),
		testPod("client-1", "node-b", "10.0.1.1", "client"),
		&networkingv1.NetworkPolicy{
			ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "allow-client", UID: types.UID("uid-allow-client")},
			Spec: networkingv1.NetworkPolicySpec{
				PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}},
				Ingress: []networkingv1.NetworkPolicyIngressRule{{From: []networkingv1.NetworkPolicyPeer{{
					PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "client"}},
				}}}},
			},
		},
	)
	log := slog.New(slog.NewTextHandler(testWriter{t}, nil))
	factory := informers.NewSharedInformerFactory(client, 0)
	c, err := controller.New(factory, log)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	factory.Start(ctx.Done())
	if crd != nil {
		f := dynamicinformer.NewDynamicSharedInformerFactory(crd, 0)
		if err := c.AddTiered(f); err != nil {
			t.Fatal(err)
		}
		f.Start(ctx.Done())
		t.Cleanup(f.Shutdown)
	}
	go func() { defer close(done); c.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done; factory.Shutdown() })
	poll(t, "controller idle", c.Idle)
	e := &env{t: t, client: client,
		np:  newHub(networkPolicyKind, c.NetworkPolicies, log),
		atg: newHub(appliedToGroupKind, c.AppliedToGroups, log),
		ag:  newHub(addressGroupKind, c.AddressGroups, log),
	}
	go e.np.run(ctx)
	go e.atg.run(ctx)
	go e.ag.run(ctx)
	for _, ch := range []chan struct{}{e.np.ready, e.atg.ready, e.ag.ready} {
		<-ch
	}
	return e
}

// agent is the view of an agent of node that asked for tiered policies (a
// node of "": everything).
func agent(node string) view { return view{node: node, tiered: true} }

type testWriter struct{ t *testing.T }

func (w testWriter) Write(b []byte) (int, error) {
	w.t.Logf("%s", strings.TrimSpace(string(b)))
	return len(b), nil
}

func poll(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not after 10s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func testPod(name, node, ip, app string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name, Labels: map[string]string{"app": app}},
		Spec:       corev1.PodSpec{NodeName: node, Containers: []corev1.Container{{Name: "c"}}},
		Status:     corev1.PodStatus{Phase: corev1.PodRunning, PodIP: ip, PodIPs: []corev1.PodIP{{IP: ip}}},
	}
}

// render describes an event: type, kind and the member pods it carries.
func render(ev watch.Event) string {
	pods := func(ms []cp.GroupMember) string {
		var s []string
		for _, m := range ms {
			s = append(s, m.Pod.Name+"@"+m.NodeName)
		}
		slices.Sort(s)
		return "[" + strings.Join(s, " ") + "]"
	}
	switch o := ev.Object.(type) {
	case *cp.NetworkPolicy:
		return fmt.Sprintf("%s NetworkPolicy %s", ev.Type, o.SourceRef.Name)
	case *cp.AppliedToGroup:
		return fmt.Sprintf("%s AppliedToGroup %s", ev.Type, pods(o.Members))
	case *cp.AddressGroup:
		return fmt.Sprintf("%s AddressGroup %s", ev.Type, pods(o.Members))
	case *cp.AppliedToGroupPatch:
		return fmt.Sprintf("%s AppliedToGroupPatch +%s -%s", ev.Type, pods(o.AddedMembers), pods(o.RemovedMembers))
	case *cp.AddressGroupPatch:
		return fmt.Sprintf("%s AddressGroupPatch +%s -%s", ev.Type, pods(o.AddedMembers), pods(o.RemovedMembers))
	}
	return fmt.Sprintf("%s %T", ev.Type, ev.Object)
}

// nodeWatch is one node's three watches, rendered.
type nodeWatch struct {
	t  *testing.T
	ws []*watcher
}

func (e *env) watchNode(node string) *nodeWatch {
	e.t.Helper()
	nw := &nodeWatch{t: e.t}
	for _, start := range []func() (*watcher, error){
		func() (*watcher, error) { return e.np.watchFrom(agent(node), true, 0, false) },
		func() (*watcher, error) { return e.atg.watchFrom(agent(node), true, 0, false) },
		func() (*watcher, error) { return e.ag.watchFrom(agent(node), true, 0, false) },
	} {
		w, err := start()
		if err != nil {
			e.t.Fatal(err)
		}
		e.t.Cleanup(w.Stop)
		nw.ws = append(nw.ws, w)
	}
	return nw
}

// expect reads events until it has len(want), then checks that nothing
// else arrives for a moment.
func (nw *nodeWatch) expect(want ...string) {
	nw.t.Helper()
	var got []string
	deadline := time.After(5 * time.Second)
	var quiet <-chan time.Time
	for {
		if len(got) >= len(want) && quiet == nil {
			quiet = time.After(200 * time.Millisecond)
		}
		select {
		case ev := <-nw.ws[0].ResultChan():
			got = append(got, render(ev))
		case ev := <-nw.ws[1].ResultChan():
			got = append(got, render(ev))
		case ev := <-nw.ws[2].ResultChan():
			got = append(got, render(ev))
		case <-deadline:
			nw.t.Fatalf("events:\n got %q\nwant %q", got, want)
		case <-quiet:
			slices.Sort(got)
			slices.Sort(want)
			if !slices.Equal(got, want) {
				nw.t.Fatalf("events:\n got %q\nwant %q", got, want)
			}
			return
		}
	}
}

func TestWatchBySpanWithPatches(t *testing.T) {
	e := startHubs(t)
	ctx := context.Background()
	a, b, c := e.watchNode("node-a"), e.watchNode("node-b"), e.watchNode("node-c")
	all := e.watchNode("")
	a.expect("ADDED NetworkPolicy allow-client", "ADDED AppliedToGroup [web-1@node-a]", "ADDED AddressGroup [client-1@node-b]")
	b.expect()
	c.expect()
	all.expect("ADDED NetworkPolicy allow-client", "ADDED AppliedToGroup [web-1@node-a]", "ADDED AddressGroup [client-1@node-b]")

	// A new peer pod: node-a gets the member as a patch, nobody else hears of it.
	if _, err := e.client.CoreV1().Pods("default").Create(ctx, testPod("client-2", "node-c", "10.0.2.1", "client"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	a.expect("MODIFIED AddressGroupPatch +[client-2@node-c] -[]")
	b.expect()
	c.expect()
	all.expect("MODIFIED AddressGroup [client-1@node-b client-2@node-c]")

	// A policy target on node-b: node-b gets the policy and both groups
	// whole, node-a the new member of the AppliedToGroup.
	if _, err := e.client.CoreV1().Pods("default").Create(ctx, testPod("web-2", "node-b", "10.0.1.2", "web"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	a.expect("MODIFIED AppliedToGroupPatch +[web-2@node-b] -[]")
	b.expect("ADDED NetworkPolicy allow-client", "ADDED AppliedToGroup [web-1@node-a web-2@node-b]", "ADDED AddressGroup [client-1@node-b client-2@node-c]")
	c.expect()
	all.expect("MODIFIED AppliedToGroup [web-1@node-a web-2@node-b]")

	// The last target on node-a goes: node-a loses everything.
	if err := e.client.CoreV1().Pods("default").Delete(ctx, "web-1", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	a.expect("DELETED NetworkPolicy allow-client", "DELETED AppliedToGroup [web-1@node-a web-2@node-b]", "DELETED AddressGroup [client-1@node-b client-2@node-c]")
	b.expect("MODIFIED AppliedToGroupPatch +[] -[web-1@node-a]")
	c.expect()
	all.expect("MODIFIED AppliedToGroup [web-2@node-b]")

	// Lists agree with what the watches built.
	l := e.atg.list(agent("node-b")).(*cp.AppliedToGroupList)
	if len(l.Items) != 1 || len(l.Items[0].Members) != 1 || l.Items[0].Members[0].Pod.Name != "web-2" {
		t.Errorf("node-b AppliedToGroups: %+v", l.Items)
	}
	if l := e.np.list(agent("node-a")).(*cp.NetworkPolicyList); len(l.Items) != 0 {
		t.Errorf("node-a NetworkPolicies: %d, want none", len(l.Items))
	}
}

func TestWatchResumesFromHistory(t *testing.T) {
	e := startHubs(t)
	ctx := context.Background()
	rv := e.ag.list(agent("node-a")).(*cp.AddressGroupList).ResourceVersion
	if _, err := e.client.CoreV1().Pods("default").Create(ctx, testPod("client-2", "node-c", "10.0.2.1", "client"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	poll(t, "address group change", func() bool { return e.ag.list(agent("node-a")).(*cp.AddressGroupList).ResourceVersion != rv })
	var n uint64
	fmt.Sscan(rv, &n)
	w, err := e.ag.watchFrom(agent("node-a"), false, n, false)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(w.Stop)
	(&nodeWatch{t: t, ws: []*watcher{w, w, w}}).expect("MODIFIED AddressGroupPatch +[client-2@node-c] -[]")

	// A version from before the history (a restarted controller) is gone.
	if _, err := e.ag.watchFrom(agent("node-a"), false, 1, false); !apierrors.IsResourceExpired(err) {
		t.Errorf("watch from version 1: %v, want 410 Gone", err)
	}
}

func TestDiffMembers(t *testing.T) {
	m := func(name, ip string) cp.GroupMember {
		return cp.GroupMember{Pod: cp.PodReference{Namespace: "ns", Name: name}, IPs: []cp.IPAddress{[]byte(ip)}}
	}
	old := []cp.GroupMember{m("a", "1111"), m("b", "2222"), m("c", "3333")}
	new := []cp.GroupMember{m("a", "1111"), m("b", "2223"), m("d", "4444")}
	added, removed := diffMembers(old, new)
	names := func(ms []cp.GroupMember) (s []string) {
		for _, x := range ms {
			s = append(s, x.Pod.Name+string(x.IPs[0]))
		}
		return s
	}
	if got, want := names(added), []string{"b2223", "d4444"}; !slices.Equal(got, want) {
		t.Errorf("added %v, want %v", got, want)
	}
	if got, want := names(removed), []string{"b2222", "c3333"}; !slices.Equal(got, want) {
		t.Errorf("removed %v, want %v", got, want)
	}
}

// TestWatchersGetTheirOwnObjects: the apiserver's encoder writes the kind
// into the object it encodes, so watchers must not share one object.
func TestWatchersGetTheirOwnObjects(t *testing.T) {
	e := startHubs(t)
	var rv uint64
	fmt.Sscan(e.ag.list(agent("node-a")).(*cp.AddressGroupList).ResourceVersion, &rv)
	var ws []*watcher
	for range 2 {
		w, err := e.ag.watchFrom(agent("node-a"), false, rv, false)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(w.Stop)
		ws = append(ws, w)
	}
	if _, err := e.client.CoreV1().Pods("default").Create(context.Background(), testPod("client-2", "node-c", "10.0.2.1", "client"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	var objs []*cp.AddressGroupPatch
	for _, w := range ws {
		select {
		case ev := <-w.ResultChan():
			p, ok := ev.Object.(*cp.AddressGroupPatch)
			if !ok {
				t.Fatalf("event %s %T, want an AddressGroupPatch", ev.Type, ev.Object)
			}
			objs = append(objs, p)
		case <-time.After(5 * time.Second):
			t.Fatal("no event")
		}
	}
	if objs[0] == objs[1] {
		t.Error("two watchers received the same object")
	}
}
