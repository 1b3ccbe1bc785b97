package agent

import (
	"context"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/seine-cni/seine/cni"
	"github.com/seine-cni/seine/core/pipeline"
	"github.com/seine-cni/seine/core/traceflow"
	"github.com/seine-cni/seine/ovs/openflow"
)

// TestAgentMetrics: CNI requests are counted by command and result
// through the handler the CNI server uses, packet-ins by reason, a new
// connection to ovs-vswitchd as a reconnect, and a scrape reports the
// node's pods and the connections' state; the switch's own counters are
// the integration test's (TestMetricsOnRealOVS), the fake has none, which
// counts as a failed read.
func TestAgentMetrics(t *testing.T) {
	w := newWorld(t, twoNodesSlice()...)
	a, _ := w.start()
	waitReady(t, a)
	ctx := context.Background()
	h := meteredCNI{a}
	if _, err := h.Add(ctx, w.req(cni.CmdAdd, "c1", "web-0")); err != nil {
		t.Fatalf("ADD: %v", err)
	}
	bad := w.req(cni.CmdAdd, "", "web-1")
	if _, err := h.Add(ctx, bad); err == nil {
		t.Fatal("ADD without a container id succeeded")
	}
	if err := h.Del(ctx, w.req(cni.CmdDel, "c9", "gone")); err != nil {
		t.Fatalf("DEL of nothing: %v", err)
	}
	a.onPacketIn(&openflow.PacketIn{Userdata: []byte{pipeline.PacketInReject}})
	a.onPacketIn(&openflow.PacketIn{})
	a.onPacketIn(&openflow.PacketIn{Userdata: []byte{traceflow.PacketInTraceflow, 5, traceflow.KindDrop}})
	if err := w.sw.restart(ctx); err != nil {
		t.Fatal(err)
	}
	want := `
# HELP seine_agent_cni_requests_total CNI requests the agent answered, by command (ADD, DEL, CHECK, STATUS, GC) and result (success, error).
# TYPE seine_agent_cni_requests_total counter
seine_agent_cni_requests_total{command="ADD",result="error"} 1
seine_agent_cni_requests_total{command="ADD",result="success"} 1
seine_agent_cni_requests_total{command="CHECK",result="error"} 0
seine_agent_cni_requests_total{command="CHECK",result="success"} 0
seine_agent_cni_requests_total{command="DEL",result="error"} 0
seine_agent_cni_requests_total{command="DEL",result="success"} 1
seine_agent_cni_requests_total{command="GC",result="error"} 0
seine_agent_cni_requests_total{command="GC",result="success"} 0
seine_agent_cni_requests_total{command="STATUS",result="error"} 0
seine_agent_cni_requests_total{command="STATUS",result="success"} 0
# HELP seine_agent_packet_ins_total Packet-ins the agent received from its bridge, by reason: service_reject (a Service port without endpoints), policy_reject (a connection a tiered policy rule rejects), policy_log (a connection a rule with enableLogging decides, for the policy audit log; a denied one goes to flow export too), policy_denied (a connection policy denied, for flow export), traceflow (a Traceflow's tagged copy), dns_response (a DNS answer to a local pod, while rules name domain names), unknown.
# TYPE seine_agent_packet_ins_total counter
seine_agent_packet_ins_total{reason="dns_response"} 0
seine_agent_packet_ins_total{reason="policy_denied"} 0
seine_agent_packet_ins_total{reason="policy_log"} 0
seine_agent_packet_ins_total{reason="policy_reject"} 0
seine_agent_packet_ins_total{reason="service_reject"} 1
seine_agent_packet_ins_total{reason="traceflow"} 1
seine_agent_packet_ins_total{reason="unknown"} 1
# HELP seine_agent_openflow_reconnects_total Connections to ovs-vswitchd the agent made after its first (each replays the flow set).
# TYPE seine_agent_openflow_reconnects_total counter
seine_agent_openflow_reconnects_total 1
# HELP seine_agent_local_pods Pods on this node with an interface on the bridge.
# TYPE seine_agent_local_pods gauge
seine_agent_local_pods 1
`
	names := []string{"seine_agent_cni_requests_total", "seine_agent_packet_ins_total", "seine_agent_openflow_reconnects_total", "seine_agent_local_pods"}
	if err := testutil.GatherAndCompare(a.metrics, strings.NewReader(want), names...); err != nil {
		t.Error(err)
	}
	// The fake switch reads no stats: the scrape says so instead of
	// reporting zero flows.
	if n, err := testutil.GatherAndCount(a.metrics, "seine_agent_ovs_flows"); err != nil || n != 0 {
		t.Errorf("seine_agent_ovs_flows has %d series without table stats (%v)", n, err)
	}
}
