package inventory

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"slices"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	dynfake "k8s.io/client-go/dynamic/fake"
	k8stesting "k8s.io/client-go/testing"

	crd "github.com/seine-cni/seine/core/apis/crd/v1beta1"
	"github.com/seine-cni/seine/ovs/openflow"
)

type fakeAgent struct {
	ready     bool
	pods      int
	ovsdbUp   bool
	tables    []openflow.TableStats
	tablesErr error
	asked     int // TableStats calls: the switch's round trips
}

func (f *fakeAgent) Ready() (bool, string) {
	if f.ready {
		return true, ""
	}
	return false, "node setup not done"
}
func (f *fakeAgent) NodeIP() string       { return "172.30.0.11" }
func (f *fakeAgent) PodCIDRs() []string   { return []string{"10.244.2.0/24"} }
func (f *fakeAgent) LocalPods() int       { return f.pods }
func (f *fakeAgent) Bridge() string       { return "br-int" }
func (f *fakeAgent) DatapathType() string { return "netdev" }
func (f *fakeAgent) Policy() crd.PolicyInfo {
	return crd.PolicyInfo{NetworkPolicies: 2, AppliedToGroups: 2, AddressGroups: 1, IngressRules: 3}
}
func (f *fakeAgent) Connections() []Connection {
	return []Connection{
		{Type: ConditionControllerConnected, Up: true},
		{Type: ConditionOVSDBConnected, Up: f.ovsdbUp, Reason: "Disconnected", Message: "no connection to ovsdb-server"},
		{Type: ConditionOpenFlowConnected, Up: true},
	}
}
func (f *fakeAgent) OVSVersion(context.Context) (string, error) { return "3.1.0", nil }
func (f *fakeAgent) TableStats(context.Context) ([]openflow.TableStats, error) {
	f.asked++
	return f.tables, f.tablesErr
}

// statusWrites records the server-side applies of status a fake dynamic
// client receives; notFound makes them fail as for an object that does
// not exist.
type statusWrites struct {
	got      []crd.SeineAgentInfoStatus
	names    []string
	notFound bool
}

func (w *statusWrites) react(t *testing.T) k8stesting.ReactionFunc {
	return func(a k8stesting.Action) (bool, runtime.Object, error) {
		p := a.(k8stesting.PatchAction)
		if p.GetPatchType() != types.ApplyPatchType || p.GetSubresource() != "status" {
			t.Errorf("a %s patch of %s/%s, want a server-side apply of the status", p.GetPatchType(), p.GetResource().Resource, p.GetSubresource())
		}
		if w.notFound {
			return true, nil, apierrors.NewNotFound(p.GetResource().GroupResource(), p.GetName())
		}
		var obj crd.SeineAgentInfo
		if err := json.Unmarshal(p.GetPatch(), &obj); err != nil {
			t.Fatal(err)
		}
		w.got = append(w.got, obj.Status)
		w.names = append(w.names, p.GetName())
		return true, &unstructured.Unstructured{Object: map[string]any{"apiVersion": "crd.seine.io/v1beta1", "kind": "SeineAgentInfo"}}, nil
	}
}

func newDynamic() *dynfake.FakeDynamicClient {
	return dynfake.NewSimpleDynamicClientWithCustomListKinds(runtime.NewScheme(), map[schema.GroupVersionResource]string{
		crd.SeineAgentInfosResource: "SeineAgentInfoList", crd.SeineControllerInfosResource: "SeineControllerInfoList",
	})
}

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// TestAgentReport: the first report says everything (empty tables left
// out, flows summed, every condition true); counts that move wait for the
// heartbeat (the switch is not asked before), which carries them and
// keeps the conditions' transition times; a connection that goes down is written at once, with its reason,
// and only its transition time moves.
func TestAgentReport(t *testing.T) {
	src := &fakeAgent{ready: true, pods: 3, ovsdbUp: true, tables: []openflow.TableStats{
		{TableID: 0, ActiveCount: 12}, {TableID: 10, ActiveCount: 0}, {TableID: 50, ActiveCount: 30},
	}}
	dyn := newDynamic()
	w := &statusWrites{}
	dyn.PrependReactor("patch", "seineagentinfos", w.react(t))
	a := NewAgent("node-1", dyn, src, quiet(), AgentOptions{Version: "devel+abc"})
	now := time.Date(2026, 12, 7, 6, 0, 0, 0, time.UTC)
	a.now = func() time.Time { return now }
	ctx := context.Background()
	report := func() {
		t.Helper()
		if err := a.Report(ctx); err != nil {
			t.Fatal(err)
		}
	}

	report()
	if len(w.got) != 1 || w.names[0] != "node-1" {
		t.Fatalf("%d writes (%v), want node-1's", len(w.got), w.names)
	}
	st := w.got[0]
	if st.Ready != "True" || st.Version != "devel+abc" || st.NodeIP != "172.30.0.11" || !slices.Equal(st.PodCIDRs, []string{"10.244.2.0/24"}) ||
		st.LocalPods != 3 || st.Policy.NetworkPolicies != 2 || st.Policy.IngressRules != 3 {
		t.Errorf("first report %+v", st)
	}
	if st.OVS.Version != "3.1.0" || st.OVS.Bridge != "br-int" || st.OVS.DatapathType != "netdev" || st.OVS.Flows != 42 ||
		len(st.OVS.FlowsPerTable) != 2 || st.OVS.FlowsPerTable["0"] != 12 || st.OVS.FlowsPerTable["50"] != 30 {
		t.Errorf("first report's OVS %+v", st.OVS)
	}
	if !st.LastHeartbeatTime.Time.Equal(now) {
		t.Errorf("heartbeat %s, want %s", st.LastHeartbeatTime, now)
	}
	want := []string{ConditionReady, ConditionControllerConnected, ConditionOVSDBConnected, ConditionOpenFlowConnected}
	for i, c := range st.Conditions {
		if c.Type != want[i] || c.Status != metav1.ConditionTrue || !c.LastTransitionTime.Time.Equal(now) {
			t.Errorf("condition %d: %+v, want %s True since %s", i, c, want[i], now)
		}
	}
	first := now

	// Counts move: no write before the heartbeat.
	src.pods = 4
	src.tables[0].ActiveCount = 13
	now = now.Add(30 * time.Second)
	report()
	if len(w.got) != 1 {
		t.Fatalf("%d writes after counts moved within the heartbeat, want still 1", len(w.got))
	}
	if src.asked != 1 {
		t.Errorf("the switch was asked %d times for one write, want once: a check that writes nothing asks it nothing", src.asked)
	}
	now = now.Add(DefaultHeartbeat)
	report()
	if len(w.got) != 2 {
		t.Fatalf("%d writes after the heartbeat, want 2", len(w.got))
	}
	st = w.got[1]
	if st.LocalPods != 4 || st.OVS.Flows != 43 || !st.LastHeartbeatTime.Time.Equal(now) {
		t.Errorf("heartbeat report: %d pods, %d flows, heartbeat %s", st.LocalPods, st.OVS.Flows, st.LastHeartbeatTime)
	}
	for _, c := range st.Conditions {
		if !c.LastTransitionTime.Time.Equal(first) {
			t.Errorf("%s moved its transition time to %s with no change", c.Type, c.LastTransitionTime)
		}
	}

	// OVSDB goes down: written at once.
	src.ovsdbUp = false
	now = now.Add(5 * time.Second)
	report()
	if len(w.got) != 3 {
		t.Fatalf("%d writes after OVSDB went down, want 3", len(w.got))
	}
	st = w.got[2]
	if st.Ready != "False" {
		t.Errorf("ready %q with OVSDB down", st.Ready)
	}
	for _, c := range st.Conditions {
		switch {
		case c.Type == ConditionOVSDBConnected:
			if c.Status != metav1.ConditionFalse || c.Reason != "Disconnected" || c.Message == "" || !c.LastTransitionTime.Time.Equal(now) {
				t.Errorf("OVSDB condition %+v", c)
			}
		case !c.LastTransitionTime.Time.Equal(first) || c.Status != metav1.ConditionTrue:
			// Ready stays true: the agent serves CNI; the column says False.
			t.Errorf("%+v changed with only OVSDB down", c)
		}
	}
}

// TestAgentReportSwitchAway: a switch that does not answer its table
// stats leaves the flows out; the report still goes.
func TestAgentReportSwitchAway(t *testing.T) {
	src := &fakeAgent{ready: false, ovsdbUp: true, tablesErr: context.DeadlineExceeded}
	dyn := newDynamic()
	w := &statusWrites{}
	dyn.PrependReactor("patch", "seineagentinfos", w.react(t))
	if err := NewAgent("node-1", dyn, src, quiet(), AgentOptions{}).Report(context.Background()); err != nil {
		t.Fatal(err)
	}
	st := w.got[0]
	if st.OVS.Flows != 0 || st.OVS.FlowsPerTable != nil || st.Ready != "False" || st.Conditions[0].Reason != "NotReady" ||
		st.Conditions[0].Message != "node setup not done" || st.Version == "" {
		t.Errorf("report %+v", st)
	}
}

// TestAgentReportBeforeCreated: until the controller creates the object
// the write fails NotFound and is tried again at the next check.
func TestAgentReportBeforeCreated(t *testing.T) {
	src := &fakeAgent{ready: true, ovsdbUp: true}
	dyn := newDynamic()
	w := &statusWrites{notFound: true}
	dyn.PrependReactor("patch", "seineagentinfos", w.react(t))
	a := NewAgent("node-1", dyn, src, quiet(), AgentOptions{})
	if err := a.Report(context.Background()); !apierrors.IsNotFound(err) {
		t.Fatalf("report before the object exists: %v, want NotFound", err)
	}
	w.notFound = false
	if err := a.Report(context.Background()); err != nil || len(w.got) != 1 {
		t.Fatalf("report once it exists: %v, %d writes", err, len(w.got))
	}
}
