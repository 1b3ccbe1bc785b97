package metrics_test

import (
	"context"
	"errors"
	"flag"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
	dto "github.com/prometheus/client_model/go"

	"github.com/seine-cni/seine/core/agent/proxier"
	"github.com/seine-cni/seine/core/metrics"
	"github.com/seine-cni/seine/core/pipeline"
	"github.com/seine-cni/seine/ovs/openflow"
)

var update = flag.Bool("update", false, "rewrite README.md's list of metrics from the catalog")

// TestDocsMatchCatalog fails when README.md's list of metrics is not the
// catalog's; go generate ./core/metrics rewrites it.
func TestDocsMatchCatalog(t *testing.T) {
	b, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	doc := string(b)
	i, j := strings.Index(doc, metrics.DocBegin), strings.Index(doc, metrics.DocEnd)
	if i < 0 || j < i {
		t.Fatalf("README.md lacks the markers %q and %q", metrics.DocBegin, metrics.DocEnd)
	}
	have := doc[i+len(metrics.DocBegin) : j]
	want := "\n\n" + metrics.Markdown(metrics.Catalog()) + "\n"
	if have == want {
		return
	}
	if *update {
		if err := os.WriteFile("README.md", []byte(doc[:i+len(metrics.DocBegin)]+want+doc[j:]), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	t.Errorf("README.md's list of metrics differs from the catalog; run go generate ./core/metrics.\nwant:\n%s\nhave:\n%s", want, have)
}

// family is a metric family of d with one sample, for the linter.
func family(d metrics.Def) *dto.MetricFamily {
	m := &dto.Metric{}
	for _, l := range d.Labels {
		m.Label = append(m.Label, &dto.LabelPair{Name: ptr(l), Value: ptr("x")})
	}
	mf := &dto.MetricFamily{Name: ptr(d.Name), Help: ptr(d.Help), Metric: []*dto.Metric{m}}
	switch d.Kind {
	case metrics.Counter:
		mf.Type = dto.MetricType_COUNTER.Enum()
		m.Counter = &dto.Counter{Value: ptr(1.0)}
	case metrics.Gauge:
		mf.Type = dto.MetricType_GAUGE.Enum()
		m.Gauge = &dto.Gauge{Value: ptr(1.0)}
	case metrics.Histogram:
		mf.Type = dto.MetricType_HISTOGRAM.Enum()
		h := &dto.Histogram{SampleCount: ptr(uint64(1)), SampleSum: ptr(1.0)}
		for _, b := range d.Buckets {
			h.Bucket = append(h.Bucket, &dto.Bucket{UpperBound: ptr(b), CumulativeCount: ptr(uint64(1))})
		}
		m.Histogram = h
	}
	return mf
}

// lint returns promlint's problems with defs, plus Seine's own rules:
// every name starts with seine_<component>_, a histogram measures
// seconds with buckets, and a metric whose help says it counts is a
// counter.
func lint(defs []metrics.Def) []string {
	var mfs []*dto.MetricFamily
	var out []string
	for _, d := range defs {
		mfs = append(mfs, family(d))
		if !strings.HasPrefix(d.Name, "seine_agent_") && !strings.HasPrefix(d.Name, "seine_controller_") && !strings.HasPrefix(d.Name, "seine_proxy_") {
			out = append(out, d.Name+": not named seine_<component>_...")
		}
		if d.Kind == metrics.Histogram && (!strings.HasSuffix(d.Name, "_seconds") || len(d.Buckets) < 8) {
			out = append(out, d.Name+": a histogram measures seconds, with buckets sized to its range")
		}
		if d.Kind != metrics.Counter && strings.HasSuffix(d.Name, "_total") {
			out = append(out, d.Name+": only counters end in _total")
		}
	}
	problems, err := promlint.NewWithMetricFamilies(mfs).Lint()
	if err != nil {
		out = append(out, err.Error())
	}
	for _, p := range problems {
		out = append(out, p.Metric+": "+p.Text)
	}
	return out
}

// TestCatalogFollowsNamingRules lints every metric Seine defines.
func TestCatalogFollowsNamingRules(t *testing.T) {
	if problems := lint(metrics.Catalog()); len(problems) > 0 {
		t.Errorf("metrics break Prometheus' naming rules:\n%s", strings.Join(problems, "\n"))
	}
}

// TestLintCatchesAntreasMistakes shows the lint fails on the names
// Antrea exposes (a counter ending in _count, milliseconds, a gauge for a
// monotonic count named as a counter).
func TestLintCatchesAntreasMistakes(t *testing.T) {
	for _, d := range []metrics.Def{
		{Name: "seine_agent_ovs_flow_ops_count", Kind: metrics.Counter, Help: "Flow operations."},
		{Name: "seine_agent_ovs_flow_ops_latency_milliseconds", Kind: metrics.Histogram, Help: "Latency.", Buckets: prometheus.DefBuckets},
		{Name: "seine_agent_reconnections_total", Kind: metrics.Gauge, Help: "Reconnections."},
		{Name: "antrea_agent_local_pod_count", Kind: metrics.Gauge, Help: "Pods."},
	} {
		if problems := lint([]metrics.Def{d}); len(problems) == 0 {
			t.Errorf("%s (%s): no problem found", d.Name, d.Kind)
		} else {
			t.Logf("%s: %s", d.Name, strings.Join(problems, "; "))
		}
	}
}

// fakeSource stands for an agent and its switch.
type fakeSource struct {
	err          error
	hang         bool
	noFlowExport bool
}

func (fakeSource) LocalPods() int { return 7 }
func (fakeSource) PolicyCounts() metrics.PolicyCounts {
	return metrics.PolicyCounts{NetworkPolicies: 2, AppliedToGroups: 2, AddressGroups: 3, IngressRules: 4, EgressRules: 1}
}
func (fakeSource) OpenFlowConnected() bool { return true }
func (fakeSource) OVSDBConnected() bool    { return true }
func (s fakeSource) wait(ctx context.Context) error {
	if s.hang {
		<-ctx.Done()
		return ctx.Err()
	}
	return s.err
}
func (s fakeSource) TableStats(ctx context.Context) ([]openflow.TableStats, error) {
	return []openflow.TableStats{{TableID: uint8(pipeline.Classifier), ActiveCount: 10}, {TableID: 99}, {TableID: uint8(pipeline.Output), ActiveCount: 5}}, s.wait(ctx)
}
func (s fakeSource) Interfaces(ctx context.Context) ([]metrics.InterfaceStats, error) {
	return []metrics.InterfaceStats{{Name: "seine-tun0", Kind: "tunnel", Stats: openflow.PortStats{RxPackets: 3, TxBytes: 300, RxDropped: 1}}}, s.wait(ctx)
}
func (s fakeSource) Meters(ctx context.Context) ([]openflow.MeterStats, error) {
	return []openflow.MeterStats{{MeterID: pipeline.ServiceRejectMeter, Bands: []openflow.BucketCounter{{PacketCount: 6}}}}, s.wait(ctx)
}
func (s fakeSource) Conntrack(ctx context.Context) (int, int, error) { return 12, 1000, s.wait(ctx) }
func (s fakeSource) FlowExport() (metrics.FlowExportStats, bool) {
	return metrics.FlowExportStats{RecordsSent: 40, RecordsDropped: 2, UntrackedConnections: 1, PollErrors: 3,
		Connections: 17, QueuedRecords: 5, CollectorConnected: true}, !s.noFlowExport
}

type fakeCtrl struct{}

func (fakeCtrl) QueueDepth() int                   { return 1 }
func (fakeCtrl) Unpublished() metrics.ObjectCounts { return metrics.ObjectCounts{0, 1, 0} }
func (fakeCtrl) Stored() metrics.ObjectCounts      { return metrics.ObjectCounts{4, 5, 6} }
func (fakeCtrl) WatcherCounts() metrics.ObjectCounts {
	return metrics.ObjectCounts{3, 3, 3}
}
func (fakeCtrl) ConnectedAgents() int { return 3 }

// registry registers everything Seine's agent and controller register.
func registry(t *testing.T, src metrics.AgentSource) *prometheus.Registry {
	t.Helper()
	reg := prometheus.NewRegistry()
	if _, err := metrics.NewAgent(reg); err != nil {
		t.Fatal(err)
	}
	if _, err := metrics.NewAgentCollector(reg, src); err != nil {
		t.Fatal(err)
	}
	if _, err := proxier.NewMetrics(reg); err != nil {
		t.Fatal(err)
	}
	if _, err := metrics.NewController(reg); err != nil {
		t.Fatal(err)
	}
	if _, err := metrics.NewControllerCollector(reg, fakeCtrl{}, fakeCtrl{}); err != nil {
		t.Fatal(err)
	}
	return reg
}

// TestEveryDefinedMetricIsRegistered: what the agent and the controller
// register is exactly the catalog (but libovsdb's, registered by the
// library and checked in the lab), with the catalog's type and help.
func TestEveryDefinedMetricIsRegistered(t *testing.T) {
	mfs, err := registry(t, fakeSource{}).Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]*dto.MetricFamily{}
	for _, mf := range mfs {
		got[mf.GetName()] = mf
	}
	for _, d := range metrics.Catalog() {
		mf, ok := got[d.Name]
		delete(got, d.Name)
		if d.From != "" {
			continue
		}
		if !ok {
			t.Errorf("%s is defined but not registered (or has no series)", d.Name)
			continue
		}
		if strings.ToLower(mf.GetType().String()) != string(d.Kind) || mf.GetHelp() != d.Help {
			t.Errorf("%s is registered as a %s (%q), defined as a %s (%q)", d.Name, mf.GetType(), mf.GetHelp(), d.Kind, d.Help)
		}
		for _, m := range mf.GetMetric() {
			var names []string
			for _, l := range m.GetLabel() {
				names = append(names, l.GetName())
			}
			if want := slices.Sorted(slices.Values(d.Labels)); !slices.Equal(names, want) {
				t.Errorf("%s has labels %v, defined %v", d.Name, names, want)
			}
		}
	}
	for name := range got {
		t.Errorf("%s is registered but not in the catalog", name)
	}
}

// TestAgentCollectorReadsSource checks the values a scrape reports.
func TestAgentCollectorReadsSource(t *testing.T) {
	reg := prometheus.NewRegistry()
	if _, err := metrics.NewAgentCollector(reg, fakeSource{}); err != nil {
		t.Fatal(err)
	}
	want := `
# HELP seine_agent_ovs_table_flows Flows in one table of the bridge, by table id and pipeline table name (tables without flows are left out).
# TYPE seine_agent_ovs_table_flows gauge
seine_agent_ovs_table_flows{table="Classifier",table_id="0"} 10
seine_agent_ovs_table_flows{table="Output",table_id="` + itoa(uint8(pipeline.Output)) + `"} 5
# HELP seine_agent_ovs_flows Flows in every table of the bridge (OpenFlow table stats).
# TYPE seine_agent_ovs_flows gauge
seine_agent_ovs_flows 15
# HELP seine_agent_local_pods Pods on this node with an interface on the bridge.
# TYPE seine_agent_local_pods gauge
seine_agent_local_pods 7
# HELP seine_agent_networkpolicy_rules NetworkPolicy rules installed on the bridge, by direction (ingress, egress).
# TYPE seine_agent_networkpolicy_rules gauge
seine_agent_networkpolicy_rules{direction="egress"} 1
seine_agent_networkpolicy_rules{direction="ingress"} 4
# HELP seine_agent_ovs_meter_dropped_packets_total Packets an OpenFlow meter of the bridge dropped (its bands' counts), by meter id and reason (what the meter limits: service_reject and policy_reject, the packet-ins of refused connections; policy_log, those of the policy audit log, whose drops go unlogged; dns_response, the DNS answers domain-name peers learn from, whose drops are lost and asked again).
# TYPE seine_agent_ovs_meter_dropped_packets_total counter
seine_agent_ovs_meter_dropped_packets_total{meter="1",reason="service_reject"} 6
# HELP seine_agent_conntrack_entries Connections in the datapath's connection tracker (dpctl/ct-get-nconns).
# TYPE seine_agent_conntrack_entries gauge
seine_agent_conntrack_entries 12
`
	names := []string{"seine_agent_ovs_table_flows", "seine_agent_ovs_flows", "seine_agent_local_pods", "seine_agent_networkpolicy_rules",
		"seine_agent_ovs_meter_dropped_packets_total", "seine_agent_conntrack_entries"}
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), names...); err != nil {
		t.Error(err)
	}
	if got := testutil.ToFloat64(gatherOne(t, reg, "seine_agent_ovs_interface_packets_total", "receive")); got != 3 {
		t.Errorf("tunnel receive packets %v, want 3", got)
	}
}

// TestFlowExportMetrics: the flow exporter's counters while it runs, and
// no series while flow export is off.
func TestFlowExportMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	if _, err := metrics.NewAgentCollector(reg, fakeSource{}); err != nil {
		t.Fatal(err)
	}
	want := `
# HELP seine_agent_flow_export_records_sent_total IPFIX flow records sent to the collector (flow export on).
# TYPE seine_agent_flow_export_records_sent_total counter
seine_agent_flow_export_records_sent_total 40
# HELP seine_agent_flow_export_records_dropped_total IPFIX flow records dropped: the queue to the collector was full (the oldest go first, so memory stays bounded while the collector is away).
# TYPE seine_agent_flow_export_records_dropped_total counter
seine_agent_flow_export_records_dropped_total 2
# HELP seine_agent_flow_export_untracked_connections_total Connections the flow exporter did not follow because it already followed maxConnections, and denied connections beyond the 4,096 kept per poll interval.
# TYPE seine_agent_flow_export_untracked_connections_total counter
seine_agent_flow_export_untracked_connections_total 1
# HELP seine_agent_flow_export_queued_records IPFIX flow records waiting for the collector.
# TYPE seine_agent_flow_export_queued_records gauge
seine_agent_flow_export_queued_records 5
# HELP seine_agent_flow_export_collector_connected 1 while the flow exporter is connected to its collector, else 0.
# TYPE seine_agent_flow_export_collector_connected gauge
seine_agent_flow_export_collector_connected 1
`
	names := []string{"seine_agent_flow_export_records_sent_total", "seine_agent_flow_export_records_dropped_total",
		"seine_agent_flow_export_untracked_connections_total", "seine_agent_flow_export_queued_records", "seine_agent_flow_export_collector_connected"}
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), names...); err != nil {
		t.Error(err)
	}
	off := prometheus.NewRegistry()
	if _, err := metrics.NewAgentCollector(off, fakeSource{noFlowExport: true}); err != nil {
		t.Fatal(err)
	}
	mfs, err := off.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if strings.HasPrefix(mf.GetName(), "seine_agent_flow_export_") {
			t.Errorf("%s reported while flow export is off", mf.GetName())
		}
	}
}

// TestAgentCollectorBoundsOVSReads: a switch that does not answer costs
// the scrape its OVS metrics, counted as scrape errors, not a hang.
func TestAgentCollectorBoundsOVSReads(t *testing.T) {
	reg := prometheus.NewRegistry()
	c, err := metrics.NewAgentCollector(reg, fakeSource{hang: true})
	if err != nil {
		t.Fatal(err)
	}
	metrics.SetScrapeTimeout(c, 100*time.Millisecond)
	start := time.Now()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("a scrape of a hung switch took %v", d)
	}
	for _, mf := range mfs {
		if mf.GetName() == "seine_agent_ovs_flows" || mf.GetName() == "seine_agent_conntrack_entries" {
			t.Errorf("%s reported although its read failed", mf.GetName())
		}
		if mf.GetName() == "seine_agent_ovs_scrape_errors_total" {
			for _, m := range mf.GetMetric() {
				if m.GetCounter().GetValue() != 1 {
					t.Errorf("scrape errors %v: want 1 per source", m)
				}
			}
		}
		if mf.GetName() == "seine_agent_local_pods" && mf.GetMetric()[0].GetGauge().GetValue() != 7 {
			t.Errorf("local pods not reported while the switch hangs")
		}
	}
	reg2 := prometheus.NewRegistry()
	if _, err := metrics.NewAgentCollector(reg2, fakeSource{err: errors.New("no")}); err != nil {
		t.Fatal(err)
	}
	if n, err := testutil.GatherAndCount(reg2, "seine_agent_ovs_flows", "seine_agent_conntrack_limit"); err != nil || n != 0 {
		t.Errorf("failed reads reported %d series (%v)", n, err)
	}
}

// TestEventMetrics checks what the agent's and controller's events count.
func TestEventMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	a, err := metrics.NewAgent(reg)
	if err != nil {
		t.Fatal(err)
	}
	a.CNIRequest("ADD", 20*time.Millisecond, nil)
	a.CNIRequest("ADD", time.Millisecond, errors.New("no"))
	a.FlowOperation("add", 100, time.Millisecond, nil)
	a.FlowOperation("bundle", 5, time.Millisecond, errors.New("refused"))
	a.PacketIn("service_reject")
	for _, c := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{"seine_agent_cni_requests_total", []string{"ADD", "success"}, 1},
		{"seine_agent_cni_requests_total", []string{"ADD", "error"}, 1},
		{"seine_agent_cni_requests_total", []string{"DEL", "success"}, 0},
		{"seine_agent_ovs_flow_mods_total", []string{"add"}, 100},
		{"seine_agent_ovs_flow_mods_total", []string{"bundle"}, 0},
		{"seine_agent_ovs_flow_operation_errors_total", []string{"bundle"}, 1},
		{"seine_agent_ovs_flow_operations_total", []string{"bundle"}, 1},
		{"seine_agent_packet_ins_total", []string{"service_reject"}, 1},
	} {
		if got := testutil.ToFloat64(gatherOne(t, reg, c.name, c.labels...)); got != c.want {
			t.Errorf("%s%v = %v, want %v", c.name, c.labels, got, c.want)
		}
	}
	// 20 ms lands in the 32 ms bucket, not in +Inf (Antrea's
	// milliseconds in default buckets did).
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, mf := range mfs {
		if mf.GetName() != "seine_agent_cni_request_duration_seconds" {
			continue
		}
		for _, m := range mf.GetMetric() {
			if !slices.ContainsFunc(m.GetLabel(), func(l *dto.LabelPair) bool { return l.GetValue() == "success" }) ||
				!slices.ContainsFunc(m.GetLabel(), func(l *dto.LabelPair) bool { return l.GetValue() == "ADD" }) {
				continue
			}
			for _, b := range m.GetHistogram().GetBucket() {
				want := uint64(0)
				if b.GetUpperBound() >= 0.02 {
					want = 1
				}
				if b.GetCumulativeCount() != want {
					t.Errorf("ADD success bucket le=%g holds %d, want %d", b.GetUpperBound(), b.GetCumulativeCount(), want)
				}
				found = true
			}
		}
	}
	if !found {
		t.Error("no buckets of seine_agent_cni_request_duration_seconds{ADD,success}")
	}
	var nilCtrl *metrics.Controller
	nilCtrl.Realized(time.Second) // a controller without metrics
}

// gatherOne returns the series of name whose label values are values
// (in label name order), as a collector for testutil.ToFloat64.
func gatherOne(t *testing.T, g prometheus.Gatherer, name string, values ...string) prometheus.Collector {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			for _, v := range values {
				if !slices.ContainsFunc(m.GetLabel(), func(l *dto.LabelPair) bool { return l.GetValue() == v }) {
					continue next
				}
			}
			v := m.GetCounter().GetValue() + m.GetGauge().GetValue()
			return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "x", Help: "x"}, func() float64 { return v })
		}
	}
	t.Fatalf("no series %s%v", name, values)
	return nil
}

func itoa(n uint8) string { return strconv.Itoa(int(n)) }

func ptr[T any](v T) *T { return &v }
