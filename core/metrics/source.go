package metrics

import (
	"context"

	"github.com/seine-cni/seine/ovs/openflow"
)

// AgentSource is what AgentCollector reads on every scrape. The counts
// come from the agent's memory; the OVS reads go to the switch (one
// OpenFlow multipart request each, one unixctl call for conntrack) and are
// bounded by the collector's timeout.
type AgentSource interface {
	LocalPods() int
	PolicyCounts() PolicyCounts
	OpenFlowConnected() bool
	OVSDBConnected() bool
	// TableStats reads the bridge's OpenFlow table stats.
	TableStats(ctx context.Context) ([]openflow.TableStats, error)
	// Interfaces reads the counters of the node's own interfaces on the
	// bridge (tunnel, uplink, gateway, host), never the pods'.
	Interfaces(ctx context.Context) ([]InterfaceStats, error)
	// Meters reads the bridge's meter stats.
	Meters(ctx context.Context) ([]openflow.MeterStats, error)
	// Conntrack reads the datapath connection tracker's size and limit.
	Conntrack(ctx context.Context) (entries, limit int, err error)
	// FlowExport returns the flow exporter's counters; false while flow
	// export is off (its series are then left out).
	FlowExport() (FlowExportStats, bool)
}

// FlowExportStats are the flow exporter's counters (core/flowexport's
// Stats).
type FlowExportStats struct {
	RecordsSent, RecordsDropped      uint64
	UntrackedConnections, PollErrors uint64
	Connections, QueuedRecords       int
	CollectorConnected               bool
}

// PolicyCounts are the node's policy objects and installed rules.
type PolicyCounts struct {
	NetworkPolicies, AppliedToGroups, AddressGroups int
	IngressRules, EgressRules                       int
}

// InterfaceStats are one node interface's counters on the bridge.
type InterfaceStats struct {
	Name string
	// Kind is tunnel, uplink, gateway or host.
	Kind  string
	Stats openflow.PortStats
}
