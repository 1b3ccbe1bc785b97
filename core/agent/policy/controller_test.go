package policy

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	controlplane "github.com/seine-cni/seine/core/apis/controlplane/v1beta1"
	"github.com/seine-cni/seine/core/pipeline"
	"github.com/seine-cni/seine/ovs/openflow"
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
	n.mu.Lock()
	got := n.table()
	n.mu.Unlock()
	if got != want {
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
	waits    int
	narrowed [][]Narrowed
}

func (n *settlingNode) SettleDatapath(_ context.Context, narrowed []Narrowed) error {
	n.waits++
	n.narrowed = append(n.narrowed, narrowed)
	return nil
}

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
	// A member leaves: what it was allowed must be gone from the datapath,
	// and only that.
	if err := c.Sync(ctx, s); err != nil {
		t.Fatal(err)
	}
	if n.waits != 1 {
		t.Fatalf("%d waits after a change that denies, want 1", n.waits)
	}
	if got, want := fmt.Sprint(n.narrowed[0]), "[ingress targets=[10.244.1.11] peers=[10.244.2.5/32] services=[{6 5432 0}]]"; got != want {
		t.Errorf("narrowed %s, want %s", got, want)
	}
}

func TestNarrowedTraffic(t *testing.T) {
	ips := map[uint32][]netip.Addr{10: {netip.MustParseAddr("10.244.1.10")}, 11: {netip.MustParseAddr("10.244.1.11")}}
	peer := func(s string) pipeline.PolicyPeer { return pipeline.PolicyPeer{CIDR: netip.MustParsePrefix(s)} }
	tcp80 := pipeline.PolicyService{Protocol: pipeline.ProtoTCP, Port: 80}
	udp53 := pipeline.PolicyService{Protocol: pipeline.ProtoUDP, Port: 53}
	rule := func(key string, dir pipeline.PolicyDirection, targets []uint32, peers []pipeline.PolicyPeer, svcs ...pipeline.PolicyService) pipeline.PolicyRule {
		return pipeline.PolicyRule{Policy: "p", Key: key, Direction: dir, Targets: targets, Peers: peers, Services: svcs}
	}
	in, eg := pipeline.PolicyIngress, pipeline.PolicyEgress
	base := pipeline.PolicySet{IngressIsolated: []uint32{11}, NodeSources: []netip.Addr{netip.MustParseAddr("10.244.1.1")}, Rules: []pipeline.PolicyRule{
		rule("0", in, []uint32{11}, []pipeline.PolicyPeer{peer("10.244.2.0/24"), peer("10.244.3.5/32")}, tcp80, udp53),
		rule("1", eg, []uint32{10}, []pipeline.PolicyPeer{peer("0.0.0.0/0")}),
	}}
	with := func(f func(s *pipeline.PolicySet)) pipeline.PolicySet {
		s := base
		s.Rules = slices.Clone(base.Rules)
		for i := range s.Rules {
			s.Rules[i].Peers = slices.Clone(s.Rules[i].Peers)
			s.Rules[i].Services = slices.Clone(s.Rules[i].Services)
		}
		f(&s)
		return s
	}
	for _, c := range []struct {
		name string
		cur  pipeline.PolicySet
		want string
	}{
		{"nothing changed", base, "[]"},
		{"more allowed", with(func(s *pipeline.PolicySet) { s.Rules[0].Peers = append(s.Rules[0].Peers, peer("10.9.0.0/16")) }), "[]"},
		{"a peer left", with(func(s *pipeline.PolicySet) { s.Rules[0].Peers = s.Rules[0].Peers[:1] }),
			"[ingress targets=[10.244.1.11] peers=[10.244.3.5/32] services=[{6 80 0} {17 53 0}]]"},
		{"a service left", with(func(s *pipeline.PolicySet) { s.Rules[0].Services = s.Rules[0].Services[1:] }),
			"[ingress targets=[10.244.1.11] peers=[10.244.2.0/24 10.244.3.5/32] services=[{6 80 0}]]"},
		{"all ports, then one", with(func(s *pipeline.PolicySet) { s.Rules[1].Services = []pipeline.PolicyService{tcp80} }),
			"[egress targets=[10.244.1.10] peers=[0.0.0.0/0] services=[]]"},
		{"a rule went", with(func(s *pipeline.PolicySet) { s.Rules = s.Rules[1:] }),
			"[ingress targets=[10.244.1.11] peers=[10.244.2.0/24 10.244.3.5/32] services=[{6 80 0} {17 53 0}]]"},
		{"newly isolated", with(func(s *pipeline.PolicySet) { s.EgressIsolated = []uint32{10, 12} }),
			"[egress targets=[10.244.1.10] peers=[] services=[]]"},
		{"a node source went", with(func(s *pipeline.PolicySet) { s.NodeSources = nil }), "[everything]"},
		{"a target that went has no traffic", with(func(s *pipeline.PolicySet) { s.Rules[1].Targets = nil; s.Rules[0].Targets = []uint32{12} }),
			"[ingress targets=[10.244.1.11] peers=[10.244.2.0/24 10.244.3.5/32] services=[{6 80 0} {17 53 0}] egress targets=[10.244.1.10] peers=[0.0.0.0/0] services=[]]"},
		// Tiered rules narrow by coming too: a new Drop (or Reject, or
		// Pass) takes its traffic, a new Allow nothing.
		{"a tiered Drop came", with(func(s *pipeline.PolicySet) { s.Rules = append(s.Rules, tierRule("2", pipeline.ActionDrop, 30000)) }),
			"[ingress targets=[10.244.1.10] peers=[10.244.9.0/24] services=[{6 80 0}]]"},
		{"a tiered Pass came", with(func(s *pipeline.PolicySet) { s.Rules = append(s.Rules, tierRule("2", pipeline.ActionPass, 30000)) }),
			"[ingress targets=[10.244.1.10] peers=[10.244.9.0/24] services=[{6 80 0}]]"},
		{"a tiered Allow came", with(func(s *pipeline.PolicySet) { s.Rules = append(s.Rules, tierRule("2", pipeline.ActionAllow, 30000)) }), "[]"},
	} {
		if got := fmt.Sprint(narrowedTraffic(base, c.cur, ips)); got != c.want {
			t.Errorf("%s:\n got %s\nwant %s", c.name, got, c.want)
		}
	}
	// From a set with a tiered Allow and a tiered Drop.
	tbase := with(func(s *pipeline.PolicySet) {
		s.Rules = append(s.Rules, tierRule("2", pipeline.ActionDrop, 30000), tierRule("3", pipeline.ActionAllow, 40000))
	})
	for _, c := range []struct {
		name string
		cur  func(s *pipeline.PolicySet)
		want string
	}{
		{"nothing changed", func(*pipeline.PolicySet) {}, "[]"},
		// (The service it no longer names is taken too, as for any rule:
		// more than needed, never less.)
		{"the Drop widened", func(s *pipeline.PolicySet) { s.Rules[2].Services = nil },
			"[ingress targets=[10.244.1.10] peers=[10.244.9.0/24] services=[{6 80 0}] ingress targets=[10.244.1.10] peers=[10.244.9.0/24] services=[]]"},
		{"the Allow became a Drop", func(s *pipeline.PolicySet) { s.Rules[3].Action = pipeline.ActionDrop },
			"[ingress targets=[10.244.1.10] peers=[10.244.9.0/24] services=[{6 80 0}]]"},
		{"the Allow moved below the Drop", func(s *pipeline.PolicySet) { s.Rules[3].Priority = 20000 },
			"[ingress targets=[10.244.1.10] peers=[10.244.9.0/24] services=[{6 80 0}]]"},
	} {
		cur := tbase
		cur.Rules = slices.Clone(tbase.Rules)
		c.cur(&cur)
		if got := fmt.Sprint(narrowedTraffic(tbase, cur, ips)); got != c.want {
			t.Errorf("%s:\n got %s\nwant %s", c.name, got, c.want)
		}
	}
}

// tierRule is a securityops rule of policy p on web-0's ingress from
// 10.244.9.0/24, TCP 80.
func tierRule(key string, a pipeline.PolicyAction, prio uint16) pipeline.PolicyRule {
	return pipeline.PolicyRule{Policy: "p", Key: key, Direction: pipeline.PolicyIngress, Targets: []uint32{10},
		Peers:    []pipeline.PolicyPeer{{CIDR: netip.MustParsePrefix("10.244.9.0/24")}},
		Services: []pipeline.PolicyService{{Protocol: pipeline.ProtoTCP, Port: 80}}, Tier: pipeline.TierMain, Action: a, Priority: prio}
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

// runController runs c's retry loop until the test ends.
func runController(t *testing.T, c *Controller) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); c.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
}

// eventually polls cond for up to 10 s.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("not within 10 s: %s", what)
		}
	}
}

// A writer that fails once: nothing calls Sync or PodsChanged again, and
// the flows are installed anyway, by the retry loop.
func TestFailedInstallRetriedWithBackoff(t *testing.T) {
	ctx := context.Background()
	n := newFakeNode(webPod, dbPod)
	c := newController(t, n, "")
	runController(t, c)
	s := dbPolicyState(member("default", "web-0", "10.244.1.10"))
	for _, fail := range []error{
		&openflow.Error{Msg: &openflow.ErrorMsg{Type: openflow.ErrTypeBundleFailed}}, // refused: nothing changed
		errors.New("connection reset"), // unknown outcome: read back
	} {
		n.mu.Lock()
		n.fail, n.failOnce = fail, true
		n.mu.Unlock()
		if err := c.Sync(ctx, s); err == nil {
			t.Fatal("sync succeeded with a failing switch")
		}
		eventually(t, "the failed install retried", func() bool { return c.Realized()["db"] == s.NetworkPolicies["db"].Generation })
		wantTable(t, n, s)
		s = dbPolicyState(member("default", "web-0", "10.244.1.10"), member("default", "web-1", "10.244.2.11"))
		s.NetworkPolicies["db"].Generation = 2
	}
	if n.dumps != 1 {
		t.Errorf("%d dumps; want 1 (after the unknown outcome only)", n.dumps)
	}
}

// A writer that commits and then reports an error (the context ended
// while the commit's reply was on its way): the controller cannot know
// what the switch holds, so the next install reads it back. Diffing from
// the state before would leave the failed change's allows in and miss the
// ones it removed.
func TestUnknownOutcomeResyncsFromTheSwitch(t *testing.T) {
	ctx := context.Background()
	n := newFakeNode(webPod, dbPod)
	c := newController(t, n, "")
	w, x, y := member("default", "w", "10.244.2.1"), member("default", "x", "10.244.2.2"), member("default", "y", "10.244.2.3")
	if err := c.Sync(ctx, dbPolicyState(w)); err != nil {
		t.Fatal(err)
	}
	n.commitThenFail = context.DeadlineExceeded
	if err := c.Sync(ctx, dbPolicyState(x)); err == nil { // w out, x in: committed
		t.Fatal("sync reported success")
	}
	if !strings.Contains(n.table(), "nw_src=10.244.2.2") {
		t.Fatalf("the fake did not commit:\n%s", n.table())
	}
	s := dbPolicyState(w, y)
	if err := c.Sync(ctx, s); err != nil {
		t.Fatal(err)
	}
	wantTable(t, n, s) // x gone, w back, y in
	if n.dumps != 1 {
		t.Errorf("%d dumps, want 1", n.dumps)
	}
	// Known again: the next change is a plain diff.
	if err := c.Sync(ctx, dbPolicyState(y)); err != nil {
		t.Fatal(err)
	}
	wantTable(t, n, dbPolicyState(y))
	if n.dumps != 1 {
		t.Errorf("%d dumps, want still 1", n.dumps)
	}
}

// Pod changes that come together share installs: 50 ADDs waiting on
// PodsChanged cost at most two recomputations.
func TestPodsChangedCoalesces(t *testing.T) {
	ctx := context.Background()
	n := &gatedNode{fakeNode: newFakeNode(webPod), gate: make(chan struct{})}
	c, err := New(Config{Node: n, Logger: quietLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	s := dbPolicyState(member("default", "web-0", "10.244.1.10"))
	close(n.gate)
	if err := c.Sync(ctx, s); err != nil {
		t.Fatal(err)
	}
	n.gate = make(chan struct{})
	n.installs.Store(0)
	n.mu.Lock()
	n.pods = append(n.pods, dbPod)
	n.mu.Unlock()
	errs := make(chan error, 50)
	for range 50 {
		go func() { errs <- c.PodsChanged(ctx) }()
	}
	eventually(t, "50 tickets taken", func() bool {
		c.reqMu.Lock()
		defer c.reqMu.Unlock()
		return c.ticket == 50
	})
	close(n.gate)
	for range 50 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	if got := n.installs.Load(); got < 1 || got > 2 {
		t.Errorf("50 pod changes took %d installs, want 1 or 2", got)
	}
	wantTable(t, n.fakeNode, s)
}

// PodsChangedLater does not wait; Run installs the change.
func TestPodsChangedLater(t *testing.T) {
	ctx := context.Background()
	n := newFakeNode(webPod)
	c := newController(t, n, "")
	runController(t, c)
	s := dbPolicyState(member("default", "web-0", "10.244.1.10"))
	if err := c.Sync(ctx, s); err != nil {
		t.Fatal(err)
	}
	n.mu.Lock()
	n.pods = append(n.pods, dbPod)
	n.mu.Unlock()
	c.PodsChangedLater()
	eventually(t, "db-0 isolated", func() bool {
		n.mu.Lock()
		defer n.mu.Unlock()
		return strings.Contains(n.table(), "reg1=0xb actions=drop")
	})
}

// gatedNode holds every install until gate is closed, and counts them.
type gatedNode struct {
	*fakeNode
	gate     chan struct{}
	installs atomic.Int64
}

func (n *gatedNode) Install(ctx context.Context, fn func(Writer, pipeline.Round) error) error {
	<-n.gate
	n.installs.Add(1)
	return n.fakeNode.Install(ctx, fn)
}

// blockingSettler holds every datapath settle until release is closed,
// once block is set.
type blockingSettler struct {
	*fakeNode
	block   atomic.Bool
	started chan struct{}
	release chan struct{}
}

func (n *blockingSettler) SettleDatapath(context.Context, []Narrowed) error {
	if n.block.Load() {
		n.started <- struct{}{}
		<-n.release
	}
	return nil
}

// Settling the datapath after a Sync (deleting cached flows, waiting for
// the revalidators) is not on the CNI path: a pod change while it runs
// does not wait for it. It used to run under the lock PodsChanged takes.
func TestSettleDoesNotBlockPodChanges(t *testing.T) {
	ctx := context.Background()
	n := &blockingSettler{fakeNode: newFakeNode(webPod, dbPod), started: make(chan struct{}, 1), release: make(chan struct{})}
	c, err := New(Config{Node: n, Logger: quietLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	web, other := member("default", "web-0", "10.244.1.10"), member("default", "c", "10.244.2.5")
	if err := c.Sync(ctx, dbPolicyState(web, other)); err != nil {
		t.Fatal(err)
	}
	n.block.Store(true)
	synced := make(chan error, 1)
	s2 := dbPolicyState(web)
	s2.NetworkPolicies["db"].Generation = 2
	go func() { synced <- c.Sync(ctx, s2) }() // a member leaves: settles
	<-n.started
	n.mu.Lock()
	n.pods = append(n.pods, Pod{Namespace: "default", Name: "new-0", OFPort: 12, IPs: []netip.Addr{netip.MustParseAddr("10.244.1.12")}})
	n.mu.Unlock()
	pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := c.PodsChanged(pctx); err != nil {
		t.Errorf("a pod change while the datapath settles: %v", err)
	}
	select {
	case err := <-synced:
		t.Errorf("Sync returned (%v) before the datapath settled", err)
	default:
	}
	if got := c.Realized()["db"]; got != 1 {
		t.Errorf("realized generation %d while the datapath settles, want still 1", got)
	}
	close(n.release)
	if err := <-synced; err != nil {
		t.Fatal(err)
	}
	if got := c.Realized()["db"]; got != 2 {
		t.Errorf("realized generation %d once the datapath settled, want 2", got)
	}
}
