package main

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	dto "github.com/prometheus/client_model/go"

	"github.com/seine-cni/seine/core/metrics"
	"github.com/seine-cni/seine/test/agenttest"
	"github.com/seine-cni/seine/test/ovsdaemon"
)

// TestMetricsOnRealOVS scrapes the agent's registry on a real node: the
// flows it reports are the bridge's (ovs-ofctl counts the same), the
// node's interfaces count the pod's ping to its gateway, the connection
// tracker answers, the CNI ADD that went through seine-cni and the socket
// is counted, and libovsdb's metrics are there.
func TestMetricsOnRealOVS(t *testing.T) {
	n := agenttest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	podNS := ovsdaemon.NewNetNS(t)
	rt := &libcni.RuntimeConf{
		ContainerID: "0123456789abcdef", NetNS: podNS, IfName: "eth0",
		Args: [][2]string{{"K8S_POD_NAMESPACE", "default"}, {"K8S_POD_NAME", "web-0"}},
	}
	if _, err := n.CNI.AddNetworkList(ctx, n.Config, rt); err != nil {
		t.Fatalf("ADD: %v", err)
	}
	mustRun(t, "nsenter", "--net="+podNS, "--", "ping", "-c", "3", "-i", "0.2", "-W", "2", "10.244.1.1")

	mfs, err := n.Metrics.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]*dto.MetricFamily{}
	for _, mf := range mfs {
		got[mf.GetName()] = mf
	}
	value := func(name string, labels ...string) float64 {
		t.Helper()
		mf := got[name]
		if mf == nil {
			t.Errorf("no %s", name)
			return -1
		}
	next:
		for _, m := range mf.GetMetric() {
			for i := 0; i+1 < len(labels); i += 2 {
				found := false
				for _, l := range m.GetLabel() {
					found = found || (l.GetName() == labels[i] && l.GetValue() == labels[i+1])
				}
				if !found {
					continue next
				}
			}
			return m.GetGauge().GetValue() + m.GetCounter().GetValue()
		}
		t.Errorf("no %s%v", name, labels)
		return -1
	}
	for _, c := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{"seine_agent_local_pods", nil, 1},
		{"seine_agent_openflow_connected", nil, 1},
		{"seine_agent_ovsdb_connected", nil, 1},
		{"seine_agent_cni_requests_total", []string{"command", "ADD", "result", "success"}, 1},
		{"seine_agent_ovs_scrape_errors_total", []string{"source", "tables"}, 0},
		{"seine_agent_ovs_scrape_errors_total", []string{"source", "conntrack"}, 0},
		{"seine_agent_ovsdb_disconnects_total", nil, 0},
	} {
		if v := value(c.name, c.labels...); v != c.want {
			t.Errorf("%s%v = %v, want %v", c.name, c.labels, v, c.want)
		}
	}
	flows, err := n.OVS.Ofctl(ctx, "-O", "OpenFlow15", "dump-flows", "br-int")
	if err != nil {
		t.Fatal(err)
	}
	lines := 0
	for _, l := range strings.Split(flows, "\n") {
		if strings.Contains(l, "actions=") {
			lines++
		}
	}
	// The agent installs nothing between the scrape and the dump.
	if v := value("seine_agent_ovs_flows"); v != float64(lines) || lines == 0 {
		t.Errorf("seine_agent_ovs_flows = %v, ovs-ofctl dumps %d flows", v, lines)
	}
	if v := value("seine_agent_ovs_table_flows", "table", "Classifier"); v <= 0 {
		t.Errorf("Classifier flows %v", v)
	}
	for _, kind := range []string{"tunnel", "uplink", "gateway", "host"} {
		value("seine_agent_ovs_interface_packets_total", "kind", kind, "direction", "receive")
	}
	// The pod's pings and ARP went out of the gateway port to the host.
	if v := value("seine_agent_ovs_interface_packets_total", "kind", "gateway", "direction", "transmit"); v < 3 {
		t.Errorf("gateway transmitted %v packets after 3 pings", v)
	}
	if v := value("seine_agent_conntrack_limit"); v <= 0 {
		t.Errorf("conntrack limit %v", v)
	}
	if v := value("seine_agent_conntrack_entries"); v < 0 {
		t.Errorf("conntrack entries %v", v)
	}
	if v := value("seine_agent_ovs_flow_mods_total", "operation", "bundle") + value("seine_agent_ovs_flow_mods_total", "operation", "add"); v < float64(lines) {
		t.Errorf("flow mods sent %v, fewer than the %d flows installed", v, lines)
	}
	if v := value("seine_agent_ovsdb_monitors"); v < 1 {
		t.Errorf("libovsdb monitors %v", v)
	}
	if t.Failed() {
		for _, d := range metrics.Catalog() {
			if mf := got[d.Name]; mf != nil {
				t.Logf("%s: %v", d.Name, mf.GetMetric())
			}
		}
	}
}
