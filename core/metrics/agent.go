package metrics

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// The agent's metrics that count events as they happen.
var (
	AgentCNIRequests = Def{Name: "seine_agent_cni_requests_total", Kind: Counter, Component: "agent",
		Help:   "CNI requests the agent answered, by command (ADD, DEL, CHECK, STATUS, GC) and result (success, error).",
		Labels: []string{"command", "result"}}
	AgentCNIDuration = Def{Name: "seine_agent_cni_request_duration_seconds", Kind: Histogram, Component: "agent",
		Help:   "Time the agent took to answer a CNI request, by command and result.",
		Labels: []string{"command", "result"},
		// 1 ms (a DEL of nothing) to 32 s (an ADD waiting behind a replay).
		Buckets: expBuckets(0.001, 16)}
	AgentFlowOps = Def{Name: "seine_agent_ovs_flow_operations_total", Kind: Counter, Component: "agent",
		Help: "OpenFlow operations the agent sent to its bridge, by operation: add, modify, delete (bundles of flow-mods of one command), " +
			"bundle (a bundle of mixed flow, group and meter mods), delete_cookie (a delete of every flow of a cookie).",
		Labels: []string{"operation"}}
	AgentFlowOpErrors = Def{Name: "seine_agent_ovs_flow_operation_errors_total", Kind: Counter, Component: "agent",
		Help:   "OpenFlow operations of the agent that failed (refused by the switch, or the connection broke), by operation.",
		Labels: []string{"operation"}}
	AgentFlowOpDuration = Def{Name: "seine_agent_ovs_flow_operation_duration_seconds", Kind: Histogram, Component: "agent",
		Help:   "Time of one OpenFlow operation from its first message to the switch's answer, by operation.",
		Labels: []string{"operation"},
		// 100 µs (one flow) to 13 s (a replay of 100k flows).
		Buckets: expBuckets(0.0001, 18)}
	AgentFlowMods = Def{Name: "seine_agent_ovs_flow_mods_total", Kind: Counter, Component: "agent",
		Help:   "Messages (flow, group and meter mods) in the agent's OpenFlow operations that succeeded, by operation.",
		Labels: []string{"operation"}}
	AgentOpenFlowReconnects = Def{Name: "seine_agent_openflow_reconnects_total", Kind: Counter, Component: "agent",
		Help: "Connections to ovs-vswitchd the agent made after its first (each replays the flow set)."}
	AgentPacketIns = Def{Name: "seine_agent_packet_ins_total", Kind: Counter, Component: "agent",
		Help:   "Packet-ins the agent received from its bridge, by reason: service_reject (a Service port without endpoints), policy_reject (a connection a tiered policy rule rejects), policy_log (a connection a rule with enableLogging decides, for the policy audit log; a denied one goes to flow export too), policy_denied (a connection policy denied, for flow export), traceflow (a Traceflow's tagged copy), dns_response (a DNS answer to a local pod, while rules name domain names), unknown.",
		Labels: []string{"reason"}}
	AgentPolicySessions = Def{Name: "seine_agent_policy_sessions_total", Kind: Counter, Component: "agent",
		Help: "Connections the node's policy rules decided (allowed, dropped or rejected), read from the policy flows' counters every policyStatsInterval (core/policystats): the node's total, per rule in stats.seine.io."}
	AgentPolicyPackets = Def{Name: "seine_agent_policy_packets_total", Kind: Counter, Component: "agent",
		Help: "Packets of the connections the node's policy rules decided, both directions (core/policystats): the node's total."}
	AgentPolicyBytes = Def{Name: "seine_agent_policy_bytes_total", Kind: Counter, Component: "agent",
		Help: "Bytes (Ethernet frames) of the connections the node's policy rules decided, both directions (core/policystats): the node's total."}
)

// The agent's metrics read on scrape (AgentCollector).
var (
	AgentLocalPods = Def{Name: "seine_agent_local_pods", Kind: Gauge, Component: "agent",
		Help: "Pods on this node with an interface on the bridge."}
	AgentNetworkPolicies = Def{Name: "seine_agent_networkpolicies", Kind: Gauge, Component: "agent",
		Help: "Internal NetworkPolicies the controller sent this node (those that apply to its pods)."}
	AgentPolicyRules = Def{Name: "seine_agent_networkpolicy_rules", Kind: Gauge, Component: "agent",
		Help: "NetworkPolicy rules installed on the bridge, by direction (ingress, egress).", Labels: []string{"direction"}}
	AgentAppliedToGroups = Def{Name: "seine_agent_applied_to_groups", Kind: Gauge, Component: "agent",
		Help: "AppliedToGroups the controller sent this node."}
	AgentAddressGroups = Def{Name: "seine_agent_address_groups", Kind: Gauge, Component: "agent",
		Help: "AddressGroups the controller sent this node."}
	AgentFlows = Def{Name: "seine_agent_ovs_flows", Kind: Gauge, Component: "agent",
		Help: "Flows in every table of the bridge (OpenFlow table stats)."}
	AgentTableFlows = Def{Name: "seine_agent_ovs_table_flows", Kind: Gauge, Component: "agent",
		Help: "Flows in one table of the bridge, by table id and pipeline table name (tables without flows are left out).", Labels: []string{"table_id", "table"}}
	AgentOpenFlowConnected = Def{Name: "seine_agent_openflow_connected", Kind: Gauge, Component: "agent",
		Help: "1 while the agent's OpenFlow connection to ovs-vswitchd is up, else 0."}
	AgentOVSDBConnected = Def{Name: "seine_agent_ovsdb_connected", Kind: Gauge, Component: "agent",
		Help: "1 while the agent's connection to ovsdb-server is up, else 0."}
	AgentMeterDrops = Def{Name: "seine_agent_ovs_meter_dropped_packets_total", Kind: Counter, Component: "agent",
		Help: "Packets an OpenFlow meter of the bridge dropped (its bands' counts), by meter id and reason (what the meter limits: " +
			"service_reject and policy_reject, the packet-ins of refused connections; policy_log, those of the policy audit log, whose drops go unlogged; dns_response, the DNS answers domain-name peers learn from, whose drops are lost and asked again).",
		Labels: []string{"meter", "reason"}}
	AgentConntrackEntries = Def{Name: "seine_agent_conntrack_entries", Kind: Gauge, Component: "agent",
		Help: "Connections in the datapath's connection tracker (dpctl/ct-get-nconns)."}
	AgentConntrackLimit = Def{Name: "seine_agent_conntrack_limit", Kind: Gauge, Component: "agent",
		Help: "Most connections the datapath's connection tracker holds (dpctl/ct-get-maxconns)."}
	AgentIfacePackets = Def{Name: "seine_agent_ovs_interface_packets_total", Kind: Counter, Component: "agent",
		Help: "Packets through one of the node's interfaces on the bridge (kind: tunnel, uplink, gateway, host), by direction (receive, transmit), " +
			"as the bridge counts them.", Labels: []string{"interface", "kind", "direction"}}
	AgentIfaceBytes = Def{Name: "seine_agent_ovs_interface_bytes_total", Kind: Counter, Component: "agent",
		Help: "Bytes through one of the node's interfaces on the bridge, by direction.", Labels: []string{"interface", "kind", "direction"}}
	AgentIfaceDrops = Def{Name: "seine_agent_ovs_interface_dropped_packets_total", Kind: Counter, Component: "agent",
		Help: "Packets one of the node's interfaces on the bridge dropped, by direction.", Labels: []string{"interface", "kind", "direction"}}
	AgentIfaceErrors = Def{Name: "seine_agent_ovs_interface_errors_total", Kind: Counter, Component: "agent",
		Help: "Errors of one of the node's interfaces on the bridge, by direction.", Labels: []string{"interface", "kind", "direction"}}
	AgentFlowExportSent = Def{Name: "seine_agent_flow_export_records_sent_total", Kind: Counter, Component: "agent", When: "flow export on",
		Help: "IPFIX flow records sent to the collector (flow export on)."}
	AgentFlowExportDropped = Def{Name: "seine_agent_flow_export_records_dropped_total", Kind: Counter, Component: "agent", When: "flow export on",
		Help: "IPFIX flow records dropped: the queue to the collector was full (the oldest go first, so memory stays bounded while the collector is away)."}
	AgentFlowExportUntracked = Def{Name: "seine_agent_flow_export_untracked_connections_total", Kind: Counter, Component: "agent", When: "flow export on",
		Help: "Connections the flow exporter did not follow because it already followed maxConnections, and denied connections beyond the 4,096 kept per poll interval."}
	AgentFlowExportPollErrors = Def{Name: "seine_agent_flow_export_poll_errors_total", Kind: Counter, Component: "agent", When: "flow export on",
		Help: "Reads of the datapath's connections for flow export that failed."}
	AgentFlowExportConnections = Def{Name: "seine_agent_flow_export_connections", Kind: Gauge, Component: "agent", When: "flow export on",
		Help: "Connections the flow exporter follows."}
	AgentFlowExportQueued = Def{Name: "seine_agent_flow_export_queued_records", Kind: Gauge, Component: "agent", When: "flow export on",
		Help: "IPFIX flow records waiting for the collector."}
	AgentFlowExportConnected = Def{Name: "seine_agent_flow_export_collector_connected", Kind: Gauge, Component: "agent", When: "flow export on",
		Help: "1 while the flow exporter is connected to its collector, else 0."}
	AgentScrapeErrors = Def{Name: "seine_agent_ovs_scrape_errors_total", Kind: Counter, Component: "agent",
		Help:   "Reads of OVS state for a scrape that failed or timed out, by source (tables, ports, meters, conntrack); their metrics are left out of that scrape.",
		Labels: []string{"source"}}
)

// The service proxy's metrics (core/agent/proxier).
var (
	ProxyProgrammingDuration = Def{Name: "seine_proxy_network_programming_duration_seconds", Kind: Histogram, Component: "agent",
		Help: "From the last-change-trigger-time of an EndpointSlice change to its flows installed on the node.",
		// kube-proxy's buckets: 0.25 s to 5 min, finer below 1 min; and
		// below 0.25 s, where Seine lives.
		Buckets: append(expBuckets(0.001, 8),
			append(prometheus.LinearBuckets(0.25, 0.25, 3), append(prometheus.LinearBuckets(1, 1, 59),
				append(prometheus.LinearBuckets(60, 5, 12), prometheus.LinearBuckets(120, 30, 7)...)...)...)...)}
	ProxySyncDuration = Def{Name: "seine_proxy_sync_duration_seconds", Kind: Histogram, Component: "agent",
		Help: "Time of one sync of the changed Services to the bridge.", Buckets: expBuckets(0.0005, 16)}
	ProxyServices = Def{Name: "seine_proxy_services_installed", Kind: Gauge, Component: "agent",
		Help: "Services whose flows the bridge holds."}
	ProxyRejected = Def{Name: "seine_proxy_rejected_connections_total", Kind: Counter, Component: "agent",
		Help: "Connections to a Service port without endpoints answered as refused."}
)

// The agent's OVSDB client (libovsdb) metrics, registered with namespace
// "seine" and subsystem "agent_ovsdb" (LibOVSDBNamespace). Its update
// counters are not registered: libovsdb counts only legacy "update"
// notifications, which today's OVS never sends its monitors
// (ovs/ovsdb neverCounted).
var (
	OVSDBDisconnects = Def{Name: "seine_agent_ovsdb_disconnects_total", Kind: Counter, Component: "agent", From: "libovsdb",
		Help: "Count of libovsdb disconnects encountered"}
	OVSDBMonitors = Def{Name: "seine_agent_ovsdb_monitors", Kind: Gauge, Component: "agent", From: "libovsdb",
		Help: "Number of running libovsdb ovsdb monitors", Labels: []string{"primary_model"}}
)

// LibOVSDBNamespace and LibOVSDBSubsystem name libovsdb's metrics
// (ovsdb.Config.Metrics).
const (
	LibOVSDBNamespace = "seine"
	LibOVSDBSubsystem = "agent_ovsdb"
)

func agentDefs() []Def {
	return []Def{AgentCNIRequests, AgentCNIDuration, AgentFlowOps, AgentFlowOpErrors, AgentFlowOpDuration, AgentFlowMods,
		AgentOpenFlowReconnects, AgentPacketIns, AgentPolicySessions, AgentPolicyPackets, AgentPolicyBytes, AgentLocalPods, AgentNetworkPolicies, AgentPolicyRules, AgentAppliedToGroups,
		AgentAddressGroups, AgentFlows, AgentTableFlows, AgentOpenFlowConnected, AgentOVSDBConnected, AgentMeterDrops,
		AgentConntrackEntries, AgentConntrackLimit, AgentIfacePackets, AgentIfaceBytes, AgentIfaceDrops, AgentIfaceErrors, AgentScrapeErrors,
		AgentFlowExportSent, AgentFlowExportDropped, AgentFlowExportUntracked, AgentFlowExportPollErrors,
		AgentFlowExportConnections, AgentFlowExportQueued, AgentFlowExportConnected}
}

func proxyDefs() []Def {
	return []Def{ProxyProgrammingDuration, ProxySyncDuration, ProxyServices, ProxyRejected}
}

func libovsdbDefs() []Def { return []Def{OVSDBDisconnects, OVSDBMonitors} }

// CNI commands and results, and flow operations: their series exist at
// zero from the start.
var (
	CNICommands     = []string{"ADD", "DEL", "CHECK", "STATUS", "GC"}
	FlowOperations  = []string{"add", "modify", "delete", "bundle", "delete_cookie"}
	PacketInReasons = []string{"service_reject", "policy_reject", "policy_log", "policy_denied", "traceflow", "dns_response", "unknown"}
)

// Agent holds the agent's event metrics.
type Agent struct {
	cniRequests  *prometheus.CounterVec
	cniDuration  *prometheus.HistogramVec
	flowOps      *prometheus.CounterVec
	flowOpErrors *prometheus.CounterVec
	flowOpDur    *prometheus.HistogramVec
	flowMods     *prometheus.CounterVec
	reconnects   prometheus.Counter
	packetIns    *prometheus.CounterVec
	policy       [3]prometheus.Counter // sessions, packets, bytes
}

// NewAgent creates the agent's event metrics and registers them with reg.
func NewAgent(reg prometheus.Registerer) (*Agent, error) {
	m := &Agent{
		cniRequests: AgentCNIRequests.CounterVec(), cniDuration: AgentCNIDuration.HistogramVec(),
		flowOps: AgentFlowOps.CounterVec(), flowOpErrors: AgentFlowOpErrors.CounterVec(),
		flowOpDur: AgentFlowOpDuration.HistogramVec(), flowMods: AgentFlowMods.CounterVec(),
		reconnects: AgentOpenFlowReconnects.Counter(), packetIns: AgentPacketIns.CounterVec(),
		policy: [3]prometheus.Counter{AgentPolicySessions.Counter(), AgentPolicyPackets.Counter(), AgentPolicyBytes.Counter()},
	}
	for _, c := range CNICommands {
		for _, r := range []string{"success", "error"} {
			m.cniRequests.WithLabelValues(c, r)
			m.cniDuration.WithLabelValues(c, r)
		}
	}
	for _, op := range FlowOperations {
		m.flowOps.WithLabelValues(op)
		m.flowOpErrors.WithLabelValues(op)
		m.flowOpDur.WithLabelValues(op)
		m.flowMods.WithLabelValues(op)
	}
	for _, r := range PacketInReasons {
		m.packetIns.WithLabelValues(r)
	}
	if err := register(reg, m.cniRequests, m.cniDuration, m.flowOps, m.flowOpErrors, m.flowOpDur, m.flowMods, m.reconnects, m.packetIns,
		m.policy[0], m.policy[1], m.policy[2]); err != nil {
		return nil, err
	}
	return m, nil
}

// CNIRequest records one answered CNI request.
func (m *Agent) CNIRequest(command string, d time.Duration, err error) {
	result := "success"
	if err != nil {
		result = "error"
	}
	m.cniRequests.WithLabelValues(command, result).Inc()
	m.cniDuration.WithLabelValues(command, result).Observe(d.Seconds())
}

// FlowOperation records one OpenFlow operation of msgs messages.
func (m *Agent) FlowOperation(op string, msgs int, d time.Duration, err error) {
	m.flowOps.WithLabelValues(op).Inc()
	m.flowOpDur.WithLabelValues(op).Observe(d.Seconds())
	if err != nil {
		m.flowOpErrors.WithLabelValues(op).Inc()
		return
	}
	m.flowMods.WithLabelValues(op).Add(float64(msgs))
}

// Reconnected records a connection to ovs-vswitchd after the first.
func (m *Agent) Reconnected() { m.reconnects.Inc() }

// PacketIn records a packet-in of the given reason (PacketInReasons).
func (m *Agent) PacketIn(reason string) { m.packetIns.WithLabelValues(reason).Inc() }

// PolicyTraffic records what the node's policy rules counted since the
// last read of their flows.
func (m *Agent) PolicyTraffic(sessions, packets, bytes uint64) {
	m.policy[0].Add(float64(sessions))
	m.policy[1].Add(float64(packets))
	m.policy[2].Add(float64(bytes))
}
