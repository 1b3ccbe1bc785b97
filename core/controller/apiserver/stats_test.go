package apiserver

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apiserver/pkg/endpoints/request"

	cp "github.com/seine-cni/seine/core/apis/controlplane/v1beta1"
	statsv1 "github.com/seine-cni/seine/core/apis/stats/v1alpha1"
)

func statsReport(node string, since time.Time, policies map[string][]cp.TrafficStats) *cp.NodePolicyStatsReport {
	r := &cp.NodePolicyStatsReport{}
	r.Name = node
	for name, rules := range policies {
		p := cp.PolicyTrafficStats{Name: name, Since: metav1.NewTime(since)}
		for i, t := range rules {
			p.Rules = append(p.Rules, cp.RuleTrafficStats{Index: int32(i), TrafficStats: t})
		}
		r.Policies = append(r.Policies, p)
	}
	return r
}

func renderStats(o *statsv1.NetworkPolicyStats) string {
	s := fmt.Sprintf("%s/%s %+v", o.Namespace, o.Name, o.TrafficStats)
	for _, r := range o.RuleTrafficStats {
		s += fmt.Sprintf(" %s(%s,%s)=%+v", r.Name, r.Direction, r.Action, r.TrafficStats)
	}
	return s
}

// TestPolicyStatsSumNodes: a policy's stats are the sum of the nodes' last
// reports (running totals, so a newer report replaces, never adds); a
// restarted controller, which starts with no report, shows the same totals
// again once every node reported once more.
func TestPolicyStatsSumNodes(t *testing.T) {
	e := startHubs(t)
	st := &statsStorage{k: statsKinds[0], s: newStatsReports(), np: e.np, TableConvertor: statsTable{}}
	reports := &statsReportStorage{s: st.s}
	ctx := request.WithNamespace(context.Background(), "default")
	t0 := time.Date(2026, 12, 7, 9, 0, 0, 0, time.UTC)
	send := func(r *cp.NodePolicyStatsReport) {
		t.Helper()
		if _, err := reports.Create(ctx, r, nil, &metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	get := func() string {
		t.Helper()
		o, err := st.Get(ctx, "allow-client", nil)
		if err != nil {
			t.Fatal(err)
		}
		return renderStats(o.(*statsv1.NetworkPolicyStats))
	}
	if got, want := get(), "default/allow-client {Sessions:0 Packets:0 Bytes:0} ingress-0(Ingress,Allow)={Sessions:0 Packets:0 Bytes:0}"; got != want {
		t.Errorf("before any report: %s, want %s", got, want)
	}
	nodeA := statsReport("node-a", t0.Add(time.Minute), map[string][]cp.TrafficStats{
		"uid-allow-client": {{Sessions: 3, Packets: 30, Bytes: 3000}},
		"uid-gone":         {{Sessions: 100, Packets: 100, Bytes: 100}},
	})
	nodeB := statsReport("node-b", t0, map[string][]cp.TrafficStats{"uid-allow-client": {{Sessions: 2, Packets: 12, Bytes: 1500}}})
	send(nodeA)
	send(nodeB)
	want := "default/allow-client {Sessions:5 Packets:42 Bytes:4500} ingress-0(Ingress,Allow)={Sessions:5 Packets:42 Bytes:4500}"
	if got := get(); got != want {
		t.Errorf("two nodes: %s, want %s", got, want)
	}
	// Running totals: node-a's next report replaces its last.
	for i := range nodeA.Policies {
		if nodeA.Policies[i].Name == "uid-allow-client" {
			nodeA.Policies[i].Rules[0].TrafficStats = cp.TrafficStats{Sessions: 4, Packets: 40, Bytes: 4000}
		}
	}
	send(nodeA)
	o, _ := st.Get(ctx, "allow-client", nil)
	got := o.(*statsv1.NetworkPolicyStats)
	if got.TrafficStats.Sessions != 6 || got.TrafficStats.Packets != 52 || got.TrafficStats.Bytes != 5500 {
		t.Errorf("after node-a's next report: %s", renderStats(got))
	}
	if !got.CreationTimestamp.Time.Equal(t0) || got.UID != "uid-allow-client" {
		t.Errorf("creationTimestamp %v uid %q, want the earliest node's since %v and the policy's uid", got.CreationTimestamp, got.UID, t0)
	}
	before := renderStats(got)

	// A controller restart: nothing until the nodes report again, then
	// everything, since they report their totals, not what changed.
	st.s = newStatsReports()
	reports.s = st.s
	if got := get(); !strings.Contains(got, "{Sessions:0 Packets:0 Bytes:0} ingress-0") {
		t.Errorf("a new controller before any report: %s", got)
	}
	send(nodeB)
	send(nodeA)
	if got := get(); got != before {
		t.Errorf("after the restart and one report per node: %s, want %s", got, before)
	}

	// Scopes: all namespaces, another one, a name that is no policy.
	l, err := st.List(request.WithNamespace(context.Background(), ""), nil)
	if err != nil || len(l.(*statsv1.NetworkPolicyStatsList).Items) != 1 {
		t.Errorf("list in all namespaces: %v, %v", l, err)
	}
	if l, err := st.List(request.WithNamespace(context.Background(), "other"), nil); err != nil || len(l.(*statsv1.NetworkPolicyStatsList).Items) != 0 {
		t.Errorf("list in other: %v, %v", l, err)
	}
	if _, err := st.Get(ctx, "nope", nil); !apierrors.IsNotFound(err) {
		t.Errorf("get nope: %v, want not found", err)
	}
	seine := &statsStorage{k: statsKinds[1], s: st.s, np: e.np}
	if l, err := seine.List(ctx, nil); err != nil || len(l.(*statsv1.SeineNetworkPolicyStatsList).Items) != 0 {
		t.Errorf("a Kubernetes policy among seinenetworkpolicystats: %v, %v", l, err)
	}

	// What kubectl shows.
	tbl, err := st.ConvertToTable(ctx, l, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(tbl.Rows) != 1 || fmt.Sprint(tbl.Rows[0].Cells[:4]) != "[allow-client 6 52 5500]" || len(tbl.ColumnDefinitions) != 5 {
		t.Errorf("table %+v", tbl)
	}

	// A node that left takes its totals along.
	st.s.forget("node-b")
	o, _ = st.Get(ctx, "allow-client", nil)
	if s := o.(*statsv1.NetworkPolicyStats).TrafficStats; s.Sessions != 4 {
		t.Errorf("without node-b: %+v", s)
	}
}

func TestStatsReportValidation(t *testing.T) {
	s := &statsReportStorage{s: newStatsReports()}
	ctx := context.Background()
	dup := statsReport("node-a", time.Now(), map[string][]cp.TrafficStats{"p": nil})
	dup.Policies = append(dup.Policies, dup.Policies[0])
	neg := statsReport("node-a", time.Now(), map[string][]cp.TrafficStats{"p": {{Packets: -1}}})
	for _, bad := range []*cp.NodePolicyStatsReport{statsReport("", time.Now(), nil), dup, neg,
		statsReport("node-a", time.Now(), map[string][]cp.TrafficStats{"": nil})} {
		if _, err := s.Create(ctx, bad, nil, &metav1.CreateOptions{}); !apierrors.IsBadRequest(err) {
			t.Errorf("report %+v: %v, want 400", bad, err)
		}
	}
	if _, err := s.Create(ctx, statsReport("node-a", time.Now(), nil), nil, &metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get(ctx, "node-a", nil); !apierrors.IsNotFound(err) {
		t.Errorf("after a dry run: %v", err)
	}
}
