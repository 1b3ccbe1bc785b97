package metrics

import (
	"context"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/seine-cni/seine/core/pipeline"
)

// ScrapeTimeout bounds the OVS reads of one scrape: a hung ovs-vswitchd
// costs a scrape its OVS metrics (counted in seine_agent_ovs_scrape_errors_total),
// never a scrape that hangs.
const ScrapeTimeout = 3 * time.Second

// AgentCollector reads the agent's state and the switch's counters on
// every scrape.
type AgentCollector struct {
	src     AgentSource
	timeout time.Duration
	errs    *prometheus.CounterVec

	localPods, policies, rules, atgs, ags    *prometheus.Desc
	flows, tableFlows, ofUp, dbUp, meterDrop *prometheus.Desc
	ctEntries, ctLimit                       *prometheus.Desc
	ifPackets, ifBytes, ifDrops, ifErrors    *prometheus.Desc
	fe                                       []*prometheus.Desc
}

// ScrapeSources are the OVS reads AgentCollector makes.
var ScrapeSources = []string{"tables", "ports", "meters", "conntrack"}

// NewAgentCollector returns the collector of src's state and registers it
// with reg.
func NewAgentCollector(reg prometheus.Registerer, src AgentSource) (*AgentCollector, error) {
	c := &AgentCollector{
		src: src, timeout: ScrapeTimeout, errs: AgentScrapeErrors.CounterVec(),
		localPods: AgentLocalPods.Desc(), policies: AgentNetworkPolicies.Desc(), rules: AgentPolicyRules.Desc(),
		atgs: AgentAppliedToGroups.Desc(), ags: AgentAddressGroups.Desc(),
		flows: AgentFlows.Desc(), tableFlows: AgentTableFlows.Desc(),
		ofUp: AgentOpenFlowConnected.Desc(), dbUp: AgentOVSDBConnected.Desc(), meterDrop: AgentMeterDrops.Desc(),
		ctEntries: AgentConntrackEntries.Desc(), ctLimit: AgentConntrackLimit.Desc(),
		ifPackets: AgentIfacePackets.Desc(), ifBytes: AgentIfaceBytes.Desc(), ifDrops: AgentIfaceDrops.Desc(), ifErrors: AgentIfaceErrors.Desc(),
	}
	for _, d := range []Def{AgentFlowExportSent, AgentFlowExportDropped, AgentFlowExportUntracked, AgentFlowExportPollErrors,
		AgentFlowExportConnections, AgentFlowExportQueued, AgentFlowExportConnected} {
		c.fe = append(c.fe, d.Desc())
	}
	for _, s := range ScrapeSources {
		c.errs.WithLabelValues(s)
	}
	if err := register(reg, c); err != nil {
		return nil, err
	}
	return c, nil
}

// Describe implements prometheus.Collector.
func (c *AgentCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.localPods, c.policies, c.rules, c.atgs, c.ags, c.flows, c.tableFlows, c.ofUp, c.dbUp,
		c.meterDrop, c.ctEntries, c.ctLimit, c.ifPackets, c.ifBytes, c.ifDrops, c.ifErrors} {
		ch <- d
	}
	for _, d := range c.fe {
		ch <- d
	}
	c.errs.Describe(ch)
}

func boolValue(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// Collect implements prometheus.Collector.
func (c *AgentCollector) Collect(ch chan<- prometheus.Metric) {
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	gauge(c.localPods, float64(c.src.LocalPods()))
	if fe, ok := c.src.FlowExport(); ok {
		counter(c.fe[0], fe.RecordsSent)
		counter(c.fe[1], fe.RecordsDropped)
		counter(c.fe[2], fe.UntrackedConnections)
		counter(c.fe[3], fe.PollErrors)
		gauge(c.fe[4], float64(fe.Connections))
		gauge(c.fe[5], float64(fe.QueuedRecords))
		gauge(c.fe[6], boolValue(fe.CollectorConnected))
	}
	pc := c.src.PolicyCounts()
	gauge(c.policies, float64(pc.NetworkPolicies))
	gauge(c.atgs, float64(pc.AppliedToGroups))
	gauge(c.ags, float64(pc.AddressGroups))
	gauge(c.rules, float64(pc.IngressRules), "ingress")
	gauge(c.rules, float64(pc.EgressRules), "egress")
	ofUp := c.src.OpenFlowConnected()
	gauge(c.ofUp, boolValue(ofUp))
	gauge(c.dbUp, boolValue(c.src.OVSDBConnected()))

	ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
	defer cancel()
	failed := func(source string, err error) bool {
		if err != nil {
			c.errs.WithLabelValues(source).Inc()
			return true
		}
		return false
	}
	if ofUp {
		if tables, err := c.src.TableStats(ctx); !failed("tables", err) {
			var total uint64
			for _, t := range tables {
				total += uint64(t.ActiveCount)
				if t.ActiveCount > 0 {
					gauge(c.tableFlows, float64(t.ActiveCount), strconv.Itoa(int(t.TableID)), pipeline.Table(t.TableID).String())
				}
			}
			gauge(c.flows, float64(total))
		}
		if ifaces, err := c.src.Interfaces(ctx); !failed("ports", err) {
			for _, i := range ifaces {
				s := i.Stats
				counter(c.ifPackets, s.RxPackets, i.Name, i.Kind, "receive")
				counter(c.ifPackets, s.TxPackets, i.Name, i.Kind, "transmit")
				counter(c.ifBytes, s.RxBytes, i.Name, i.Kind, "receive")
				counter(c.ifBytes, s.TxBytes, i.Name, i.Kind, "transmit")
				counter(c.ifDrops, s.RxDropped, i.Name, i.Kind, "receive")
				counter(c.ifDrops, s.TxDropped, i.Name, i.Kind, "transmit")
				counter(c.ifErrors, s.RxErrors, i.Name, i.Kind, "receive")
				counter(c.ifErrors, s.TxErrors, i.Name, i.Kind, "transmit")
			}
		}
		if meters, err := c.src.Meters(ctx); !failed("meters", err) {
			for _, m := range meters {
				var dropped uint64
				for _, b := range m.Bands {
					dropped += b.PacketCount
				}
				counter(c.meterDrop, dropped, strconv.FormatUint(uint64(m.MeterID), 10), MeterReason(m.MeterID))
			}
		}
	}
	if n, limit, err := c.src.Conntrack(ctx); !failed("conntrack", err) {
		gauge(c.ctEntries, float64(n))
		gauge(c.ctLimit, float64(limit))
	}
	c.errs.Collect(ch)
}

// MeterReason is what the pipeline's meter id limits.
func MeterReason(id uint32) string {
	switch id {
	case pipeline.ServiceRejectMeter:
		return "service_reject"
	case pipeline.PolicyRejectMeter:
		return "policy_reject"
	case pipeline.PolicyLogMeter:
		return "policy_log"
	case pipeline.DNSResponseMeter:
		return "dns_response"
	}
	return "unknown"
}
