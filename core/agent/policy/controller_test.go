package policy

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	controlplane "github.com/seine-cni/seine/core/apis/controlplane/v1beta1"
	"github.com/seine-cni/seine/core/pipeline"
)

// dbPolicyState: db-0 accepts TCP 5432 from the clients group only.
func dbPolicyState(clients ...controlplane.GroupMember) State {
	return State{
		AppliedToGroups: map[string]*controlplane.AppliedToGroup{"db": atg("db", member("default", "db-0", "10.244.1.11"))},
		AddressGroups:   map[string]*controlplane.AddressGroup{"clients": ag("clients", clients...)},
		NetworkPolicies: map[string]*controlplane.NetworkPolicy{"db": netpol("db", 1, []string{"db"}, ingressOnly,
			controlplane.NetworkPolicyRule{Direction: controlplane.DirectionIn,
				From: controlplane.NetworkPolicyPeer{AddressGroups: []string{"clients"}}, Services: []controlplane.Service{tcp(5432)}})},
	}
}

func newController(t *testing.T, n *fakeNode, file string) *Controller {
	t.Helper()
	c, err := New(Config{Node: n, Logger: quietLogger(t), StateFile: file})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// wantTable checks that the fake switch holds exactly the flows of s.
func wantTable(t *testing.T, n *fakeNode, s State) {
	t.Helper()
	want := ""
	r := resolve(s, n.LocalPods(), n.NodeSources())
	if !emptySet(r.set) {
		flows, err := pipeline.PolicyFlows(r.set, n.round)
		if err != nil {
			t.Fatal(err)
		}
		want = pipeline.Text(flows)
	}
	if got := n.table(); got != want {
		t.Errorf("switch holds:\n%s\nwant:\n%s", got, want)
	}
}

func TestSyncInstallsOnlyTheDifference(t *testing.T) {
	ctx := context.Background()
	n := newFakeNode(webPod, dbPod)
	c := newController(t, n, "")
	web := member("default", "web-0", "10.244.1.10")
	s1 := dbPolicyState(web)
	if err := c.Sync(ctx, s1); err != nil {
		t.Fatal(err)
	}
	wantTable(t, n, s1)
	if len(n.bundles) != 1 {
		t.Fatalf("%d bundles for the first sync", len(n.bundles))
	}
	// The same state again changes nothing and sends nothing.
	if err := c.Sync(ctx, dbPolicyState(web)); err != nil {
		t.Fatal(err)
	}
	if len(n.bundles) != 1 {
		t.Errorf("a re-sync of the same state sent a bundle: %v", n.bundles[len(n.bundles)-1])
	}
	// A member joins: one bundle adding exactly its peer flow.
	s2 := dbPolicyState(web, member("default", "c-1", "10.244.2.5"))
	if err := c.Sync(ctx, s2); err != nil {
		t.Fatal(err)
	}
	wantTable(t, n, s2)
	last := n.bundles[len(n.bundles)-1]
	if len(last) != 1 || !strings.HasPrefix(last[0], "add ") || !strings.Contains(last[0], "nw_src=10.244.2.5") {
		t.Errorf("member added: bundle %q", last)
	}
	// The member leaves again: one strict delete.
	if err := c.Sync(ctx, s1); err != nil {
		t.Fatal(err)
	}
	wantTable(t, n, s1)
	last = n.bundles[len(n.bundles)-1]
	if len(last) != 1 || !strings.HasPrefix(last[0], "delete_strict ") || !strings.Contains(last[0], "nw_src=10.244.2.5") {
		t.Errorf("member removed: bundle %q", last)
	}
	if got := c.Realized(); len(got) != 1 || got["db"] != 1 {
		t.Errorf("realized %v", got)
	}
	// The policy goes: every policy flow goes, in one bundle.
	if err := c.Sync(ctx, State{}); err != nil {
		t.Fatal(err)
	}
	if got := n.table(); got != "" {
		t.Errorf("flows left after the last policy went:\n%s", got)
	}
	if got := c.Realized(); len(got) != 0 {
		t.Errorf("realized %v after delete", got)
	}
}

// A policy update that isolates a pod adds its drop before removing any
// allow, and a policy that stops isolating removes the drop last.
func TestDiffOrder(t *testing.T) {
	ctx := context.Background()
	n := newFakeNode(webPod, dbPod)
	c := newController(t, n, "")
	s := dbPolicyState(member("default", "web-0", "10.244.1.10"))
	if err := c.Sync(ctx, s); err != nil {
		t.Fatal(err)
	}
	first := n.bundles[0]
	if !strings.Contains(first[0], "actions=drop") {
		t.Errorf("first flow-mod of the first bundle is not the isolation drop: %q", first)
	}
	if err := c.Sync(ctx, State{}); err != nil {
		t.Fatal(err)
	}
	last := n.bundles[len(n.bundles)-1]
	if !strings.HasPrefix(last[len(last)-1], "delete_strict table=80 priority=190") {
		t.Errorf("last flow-mod of the removal is not the isolation drop: %q", last)
	}
}

func TestPodsChanged(t *testing.T) {
	ctx := context.Background()
	n := newFakeNode(webPod)
	c := newController(t, n, "")
	c.PodsChanged(ctx) // no state yet: nothing
	if len(n.bundles) != 0 {
		t.Fatalf("bundle before any state")
	}
	s := dbPolicyState(member("default", "web-0", "10.244.1.10"))
	if err := c.Sync(ctx, s); err != nil {
		t.Fatal(err)
	}
	// db-0 is not local yet: the policy has nothing to do here.
	if got := n.table(); got != "" {
		t.Errorf("flows without a local target:\n%s", got)
	}
	n.pods = append(n.pods, dbPod)
	c.PodsChanged(ctx)
	wantTable(t, n, s)
	if !strings.Contains(n.table(), "reg1=0xb actions=drop") {
		t.Errorf("db-0 not isolated once it is local:\n%s", n.table())
	}
	n.pods = n.pods[:1]
	c.PodsChanged(ctx)
	if got := n.table(); got != "" {
		t.Errorf("flows left after the target pod went:\n%s", got)
	}
}

// A failed bundle changes nothing; the next call installs the whole
// difference.
func TestFailedInstallIsRetried(t *testing.T) {
	ctx := context.Background()
	n := newFakeNode(webPod, dbPod)
	c := newController(t, n, "")
	n.fail = errors.New("switch gone")
	s := dbPolicyState(member("default", "web-0", "10.244.1.10"))
	if err := c.Sync(ctx, s); err == nil {
		t.Fatal("sync succeeded with a failing switch")
	}
	if len(c.Realized()) != 0 {
		t.Errorf("realized after a failure: %v", c.Realized())
	}
	n.fail = nil
	c.PodsChanged(ctx)
	wantTable(t, n, s)
	if c.Realized()["db"] != 1 {
		t.Errorf("realized %v", c.Realized())
	}
}

// A restarted controller loads the last state and hands its flows to the
// agent's replay, before it has talked to the switch.
func TestLoadFromDisk(t *testing.T) {
	ctx := context.Background()
	file := filepath.Join(t.TempDir(), "policy", "state.json")
	n := newFakeNode(webPod, dbPod)
	c := newController(t, n, file)
	s := dbPolicyState(member("default", "web-0", "10.244.1.10"))
	if err := c.Sync(ctx, s); err != nil {
		t.Fatal(err)
	}
	want := n.table()

	n2 := newFakeNode(webPod, dbPod)
	c2 := newController(t, n2, file)
	if err := c2.Load(); err != nil {
		t.Fatal(err)
	}
	flows, err := c2.Flows(n2.round)
	if err != nil {
		t.Fatal(err)
	}
	if got := pipeline.Text(flows); got != want {
		t.Errorf("loaded flows:\n%s\nwant:\n%s", got, want)
	}
	if c2.Realized()["db"] != 1 {
		t.Errorf("realized after load: %v", c2.Realized())
	}
	// The replay installed them: a sync of the same state sends nothing.
	for _, f := range flows {
		n2.flows[f.Key()] = f
	}
	if err := c2.Sync(ctx, dbPolicyState(member("default", "web-0", "10.244.1.10"))); err != nil {
		t.Fatal(err)
	}
	if len(n2.bundles) != 0 {
		t.Errorf("sync after load sent %v", n2.bundles)
	}
	// Without a file, Load is a no-op.
	c3 := newController(t, newFakeNode(), filepath.Join(t.TempDir(), "none.json"))
	if err := c3.Load(); err != nil {
		t.Fatal(err)
	}
	if f, _ := c3.Flows(1); len(f) != 0 {
		t.Errorf("flows without state: %d", len(f))
	}
}

func TestStateFile(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "state.json")
	s := dbPolicyState(member("default", "web-0", "10.244.1.10"))
	if err := writeState(file, &s); err != nil {
		t.Fatal(err)
	}
	got, err := readState(file)
	if err != nil {
		t.Fatal(err)
	}
	if renderSet(resolve(*got, []Pod{webPod, dbPod}, nodeSrc).set) != renderSet(resolve(s, []Pod{webPod, dbPod}, nodeSrc).set) {
		t.Errorf("state changed through the file")
	}
	if got.NetworkPolicies["db"].Generation != 1 || string(got.NetworkPolicies["db"].UID) != "uid-db" {
		t.Errorf("policy metadata lost: %+v", got.NetworkPolicies["db"].ObjectMeta)
	}
	// No temporary files are left beside it.
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Errorf("files in the state dir: %v", entries)
	}
	// A torn or foreign file is an error, not an empty state.
	if err := os.WriteFile(file, []byte(`{"version":1,"state":{`), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := readState(file); err == nil {
		t.Error("torn file read without error")
	}
	if err := os.WriteFile(file, []byte(`{"version":9}`), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := readState(file); err == nil {
		t.Error("unknown version read without error")
	}
}

type settlingNode struct {
	*fakeNode
	waits int
}

func (n *settlingNode) WaitDatapath(context.Context) error { n.waits++; return nil }

// Sync waits for the datapath when its change may deny something, and only
// then.
func TestSyncSettlesTheDatapath(t *testing.T) {
	ctx := context.Background()
	n := &settlingNode{fakeNode: newFakeNode(webPod)}
	c, err := New(Config{Node: n, Logger: quietLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	s := dbPolicyState(member("default", "web-0", "10.244.1.10"))
	if err := c.Sync(ctx, s); err != nil { // no local target: no flows
		t.Fatal(err)
	}
	n.pods = append(n.pods, dbPod)
	c.PodsChanged(ctx) // flows, but a pod change does not settle
	if n.waits != 0 {
		t.Errorf("%d waits before any policy change reached the switch through Sync", n.waits)
	}
	s2 := dbPolicyState(member("default", "web-0", "10.244.1.10"), member("default", "c", "10.244.2.5"))
	if err := c.Sync(ctx, s2); err != nil {
		t.Fatal(err)
	}
	if err := c.Sync(ctx, dbPolicyState(member("default", "web-0", "10.244.1.10"), member("default", "c", "10.244.2.5"))); err != nil {
		t.Fatal(err)
	}
	if n.waits != 0 {
		t.Errorf("%d waits after a change that only allows more, want 0", n.waits)
	}
	// A member leaves: what it was allowed must be gone from the datapath.
	if err := c.Sync(ctx, s); err != nil {
		t.Fatal(err)
	}
	if n.waits != 1 {
		t.Errorf("%d waits after a change that denies, want 1", n.waits)
	}
}

// The controller puts a pod in its AppliedToGroups once it is bound to a
// node, before it has an IP (core/controller): the agent isolates it by
// namespace/name as soon as CNI ADD gives it an OVS port, whatever the
// member lacks. Issue 12, item 1.
func TestMemberWithoutIPIsIsolatedWhenItsPortAppears(t *testing.T) {
	ctx := context.Background()
	n := newFakeNode(webPod)
	c := newController(t, n, "")
	noIP := controlplane.GroupMember{Pod: controlplane.PodReference{Namespace: "default", Name: "db-0"}, NodeName: "n1"}
	s := State{
		AppliedToGroups: map[string]*controlplane.AppliedToGroup{"db": atg("db", noIP)},
		NetworkPolicies: map[string]*controlplane.NetworkPolicy{"deny": netpol("deny", 1, []string{"db"}, ingressOnly)},
	}
	if err := c.Sync(ctx, s); err != nil {
		t.Fatal(err)
	}
	if got := n.table(); got != "" {
		t.Errorf("flows before db-0 has a port:\n%s", got)
	}
	n.pods = append(n.pods, dbPod) // CNI ADD plugged it: ofport 11
	c.PodsChanged(ctx)
	if !strings.Contains(n.table(), "reg1=0xb actions=drop") {
		t.Errorf("db-0 not isolated once it has a port:\n%s", n.table())
	}
}
