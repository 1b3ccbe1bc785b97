package apiserver

import (
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	cp "github.com/seine-cni/seine/core/apis/controlplane/v1beta1"
	"github.com/seine-cni/seine/core/metrics"
)

// TestRealizationLag: a node's report observes the lag of each policy it
// shows realized at a generation its last report did not (never again for
// the same generation, never for a failed one, never for a policy outside
// its span), measured from when the hub stored the policy.
func TestRealizationLag(t *testing.T) {
	e := startHubs(t)
	var name string
	var gen int64
	for k, it := range e.np.store.List("") {
		name, gen = k, it.Object.Generation
	}
	if name == "" {
		t.Fatal("no policy in the hub")
	}
	reg := prometheus.NewRegistry()
	m, err := metrics.NewController(reg)
	if err != nil {
		t.Fatal(err)
	}
	s := &Server{np: e.np, atg: e.atg, ag: e.ag, reports: newReports()}
	s.SetMetrics(m)
	stored, ok := e.np.since(name, gen, "node-a")
	if !ok {
		t.Fatalf("policy %s generation %d not in node-a's span", name, gen)
	}
	at := stored.Add(1500 * time.Millisecond)
	send := func(node string, ps ...cp.PolicyRealization) {
		t.Helper()
		if _, err := s.reports.set(report(node, ps...), at, false); err != nil {
			t.Fatal(err)
		}
	}
	send("node-a", cp.PolicyRealization{Name: name, Generation: gen})
	send("node-a", cp.PolicyRealization{Name: name, Generation: gen})                    // the same again
	send("node-b", cp.PolicyRealization{Name: name, Generation: gen})                    // not in its span
	send("node-c", cp.PolicyRealization{Name: name, Generation: gen, Error: "bad port"}) // failed
	if _, err := s.reports.set(report("node-a"), at, true); err != nil {                 // dry run
		t.Fatal(err)
	}
	want := `
# HELP seine_controller_node_reports_total Realization reports (NodePolicyStatus) the controller accepted from agents.
# TYPE seine_controller_node_reports_total counter
seine_controller_node_reports_total 4
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "seine_controller_node_reports_total"); err != nil {
		t.Error(err)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "seine_controller_realization_lag_seconds" {
			continue
		}
		h := mf.GetMetric()[0].GetHistogram()
		if h.GetSampleCount() != 1 || h.GetSampleSum() != 1.5 {
			t.Errorf("realization lag: %d samples, sum %v; want one of 1.5 s", h.GetSampleCount(), h.GetSampleSum())
		}
	}
}
