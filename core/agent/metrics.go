package agent

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	current "github.com/containernetworking/cni/pkg/types/100"

	"github.com/seine-cni/seine/cni"
	"github.com/seine-cni/seine/cni/server"
	"github.com/seine-cni/seine/core/metrics"
	"github.com/seine-cni/seine/core/pipeline"
	"github.com/seine-cni/seine/core/traceflow"
	"github.com/seine-cni/seine/ovs/openflow"
)

// setupMetrics creates the agent's metrics in a.metrics: the event
// metrics (CNI, flow operations, packet-ins, reconnects) and the collector
// that reads the agent's and the switch's state on scrape (metricSource).
func (a *Agent) setupMetrics() error {
	m, err := metrics.NewAgent(a.metrics)
	if err != nil {
		return fmt.Errorf("agent metrics: %w", err)
	}
	a.m = m
	if _, err := metrics.NewAgentCollector(a.metrics, metricSource{a}); err != nil {
		return fmt.Errorf("agent metrics: %w", err)
	}
	return nil
}

// onConnectCounted is the Switch's onConnect: every connection after the
// first counts as a reconnect.
func (a *Agent) onConnectCounted(ctx context.Context, w FlowWriter) error {
	if a.connectedOnce.Swap(true) {
		a.m.Reconnected()
	}
	return a.onConnect(ctx, w)
}

// meteredCNI answers the runtime through the agent, counting and timing
// every request by command and result.
type meteredCNI struct{ a *Agent }

var _ server.Handler = meteredCNI{}

func (h meteredCNI) Add(ctx context.Context, r *cni.Request) (res *current.Result, err error) {
	defer h.observe("ADD", time.Now(), &err)
	return h.a.Add(ctx, r)
}

func (h meteredCNI) Del(ctx context.Context, r *cni.Request) (err error) {
	defer h.observe("DEL", time.Now(), &err)
	return h.a.Del(ctx, r)
}

func (h meteredCNI) Check(ctx context.Context, r *cni.Request) (err error) {
	defer h.observe("CHECK", time.Now(), &err)
	return h.a.Check(ctx, r)
}

func (h meteredCNI) Status(ctx context.Context, r *cni.Request) (err error) {
	defer h.observe("STATUS", time.Now(), &err)
	return h.a.Status(ctx, r)
}

func (h meteredCNI) GC(ctx context.Context, r *cni.Request, valid []cni.Attachment) (err error) {
	defer h.observe("GC", time.Now(), &err)
	return h.a.GC(ctx, r, valid)
}

func (h meteredCNI) observe(cmd string, start time.Time, err *error) {
	h.a.m.CNIRequest(cmd, time.Since(start), *err)
}

// packetInReason names a packet-in's reason for the metrics.
func packetInReason(pi *openflow.PacketIn) string {
	if len(pi.Userdata) > 0 && pi.Userdata[0] == pipeline.PacketInReject {
		return "service_reject"
	}
	if len(pi.Userdata) > 0 && pi.Userdata[0] == traceflow.PacketInTraceflow {
		return "traceflow"
	}
	if len(pi.Userdata) > 0 && pi.Userdata[0] == pipeline.PacketInPolicyReject {
		return "policy_reject"
	}
	if len(pi.Userdata) > 0 && pi.Userdata[0] == pipeline.PacketInPolicyLog {
		return "policy_log"
	}
	if len(pi.Userdata) > 0 && pi.Userdata[0] == pipeline.PacketInPolicyDenied {
		return "policy_denied"
	}
	if len(pi.Userdata) > 0 && pi.Userdata[0] == pipeline.PacketInDNSResponse {
		return "dns_response"
	}
	return "unknown"
}

// metricSource is what the agent's collector reads on scrape.
type metricSource struct{ a *Agent }

func (s metricSource) LocalPods() int {
	s.a.mu.Lock()
	defer s.a.mu.Unlock()
	return len(s.a.pods)
}

func (s metricSource) PolicyCounts() metrics.PolicyCounts { return s.a.policy.Counts() }

func (s metricSource) OpenFlowConnected() bool {
	c, ok := s.a.sw.(interface{ Connected() bool })
	return ok && c.Connected()
}

func (s metricSource) OVSDBConnected() bool {
	c, ok := s.a.db.(interface{ Connected() bool })
	return ok && c.Connected()
}

// switchStats is what the collector reads from the switch; *openflow.Conn
// implements it.
type switchStats interface {
	TableStats(ctx context.Context) ([]openflow.TableStats, error)
	PortDesc(ctx context.Context, port uint32) ([]openflow.PortDesc, error)
	PortStats(ctx context.Context, port uint32) ([]openflow.PortStats, error)
	MeterStats(ctx context.Context, meter uint32) ([]openflow.MeterStats, error)
}

// withStats runs fn on the live connection, without waiting for one.
func (s metricSource) withStats(ctx context.Context, fn func(switchStats) error) error {
	return s.a.sw.DoNow(ctx, func(w FlowWriter) error {
		st, ok := w.(switchStats)
		if !ok {
			return fmt.Errorf("openflow connection %T reads no stats", w)
		}
		return fn(st)
	})
}

func (s metricSource) TableStats(ctx context.Context) (out []openflow.TableStats, err error) {
	err = s.withStats(ctx, func(st switchStats) error {
		out, err = st.TableStats(ctx)
		return err
	})
	return out, err
}

func (s metricSource) Meters(ctx context.Context) (out []openflow.MeterStats, err error) {
	err = s.withStats(ctx, func(st switchStats) error {
		out, err = st.MeterStats(ctx, openflow.MeterAll)
		return err
	})
	return out, err
}

// nodeInterfaces names the node's own ports on the bridge by kind; empty
// before node setup.
func (a *Agent) nodeInterfaces() map[string]string {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.node == nil {
		return nil
	}
	kinds := map[string]string{}
	if a.mode != pipeline.NoEncap {
		kinds[TunnelPort] = "tunnel"
	}
	st := a.nodeState
	for _, p := range []struct{ name, kind string }{{st.Uplink.Name, "uplink"}, {st.Gateway.Name, "gateway"}, {st.Host.Name, "host"}} {
		if p.name != "" {
			kinds[p.name] = p.kind
		}
	}
	return kinds
}

func (s metricSource) Interfaces(ctx context.Context) (out []metrics.InterfaceStats, err error) {
	kinds := s.a.nodeInterfaces()
	if len(kinds) == 0 {
		return nil, nil
	}
	err = s.withStats(ctx, func(st switchStats) error {
		descs, err := st.PortDesc(ctx, openflow.PortAny)
		if err != nil {
			return err
		}
		stats, err := st.PortStats(ctx, openflow.PortAny)
		if err != nil {
			return err
		}
		byPort := make(map[uint32]openflow.PortStats, len(stats))
		for _, p := range stats {
			byPort[p.PortNo] = p
		}
		for _, d := range descs {
			kind, ok := kinds[d.Name]
			if p, have := byPort[d.PortNo]; ok && have {
				out = append(out, metrics.InterfaceStats{Name: d.Name, Kind: kind, Stats: p})
			}
		}
		return nil
	})
	return out, err
}

// FlowExport reads the flow exporter's counters while it runs.
func (s metricSource) FlowExport() (metrics.FlowExportStats, bool) {
	x := s.a.flowExporter.Load()
	if x == nil {
		return metrics.FlowExportStats{}, false
	}
	st := x.Stats()
	return metrics.FlowExportStats{
		RecordsSent: st.RecordsSent, RecordsDropped: st.RecordsDropped,
		UntrackedConnections: st.ConnectionsDropped, PollErrors: st.PollErrors,
		Connections: st.Connections, QueuedRecords: st.Queued, CollectorConnected: st.CollectorConnected,
	}, true
}

// Conntrack asks ovs-vswitchd for its datapath's connection count and
// limit. The kernel datapath answers too (through its netlink API).
func (s metricSource) Conntrack(ctx context.Context) (entries, limit int, err error) {
	c, err := s.a.vswitchd(ctx)
	if err != nil {
		return 0, 0, err
	}
	defer c.Close()
	get := func(method string) (int, error) {
		out, err := c.Call(ctx, method)
		if err != nil {
			return 0, fmt.Errorf("%s: %w", method, err)
		}
		n, err := strconv.Atoi(strings.TrimSpace(out))
		if err != nil {
			return 0, fmt.Errorf("%s: unexpected answer %q", method, out)
		}
		return n, nil
	}
	if entries, err = get("dpctl/ct-get-nconns"); err != nil {
		return 0, 0, err
	}
	if limit, err = get("dpctl/ct-get-maxconns"); err != nil {
		return 0, 0, err
	}
	return entries, limit, nil
}
