package agent

import (
	"time"

	"github.com/seine-cni/seine/core/auditlog"
	"github.com/seine-cni/seine/core/flowexport"
	"github.com/seine-cni/seine/core/internal/inet"
	"github.com/seine-cni/seine/core/pipeline"
	"github.com/seine-cni/seine/ovs/openflow"
)

// The policy audit log (core/tiers/README.md, "enableLogging"): the conj_id
// flow of a rule with enableLogging sends each connection's first packet
// to the agent through meter PolicyLogMeter (a flood is cut there, and
// counted), with userdata naming the rule (pipeline.PolicyLogUserdata).
// The agent names the policy, the rule and the pods from its last policy
// state and queues one entry; the log's own goroutine writes it
// (core/auditlog: bounded queue, rotated file). The OpenFlow reader never
// waits: parsing and two map reads, then a non-blocking send.

// Flow export shares the mechanism: with flowExport on, every Drop or
// Reject rule and an isolated pod's default drop send their connections'
// first packet the same way (pipeline.PolicySet.ExportDenied; userdata
// PacketInPolicyDenied unless the rule logs too), and the agent hands the
// denied ones to the exporter (flowexport.Exporter.Denied: one record
// per 5-tuple per poll interval).

// handlePolicyLog takes a logged or denied connection's packet-in; it
// reports whether the packet-in was one.
func (a *Agent) handlePolicyLog(pi *openflow.PacketIn) bool {
	info, ok := pipeline.ParsePolicyLogUserdata(pi.Userdata)
	if !ok {
		return false
	}
	x := a.flowExporter.Load()
	deny := x != nil && (info.Action == pipeline.ActionDrop || info.Action == pipeline.ActionReject)
	if (!info.Log || a.audit == nil) && !deny {
		return true
	}
	proto, src, dst, err := auditlog.ParseFrame(pi.Packet)
	if err != nil {
		a.log.Debug("policy audit log: a packet-in that is not IPv4", "err", err)
		return true
	}
	now := time.Now()
	if deny {
		d := flowexport.Denial{Time: now, Proto: proto, Src: src, Dst: dst, Bytes: ipLength(pi.Packet),
			Ingress: info.Direction == pipeline.PolicyIngress}
		d.Policy = flowexport.Policy{Type: flowexport.PolicyK8s} // an isolated pod's default drop
		if info.Policy != "" {
			d.Policy = exportedPolicy(a.policy.RuleOf(info.Policy, info.Key))
		}
		d.Policy.Action = exportedAction(info.Action)
		x.Denied(d)
	}
	if !info.Log || a.audit == nil {
		return true
	}
	e := auditlog.Entry{
		Time: now, Action: info.Action.String(), Protocol: proto, Src: src, Dst: dst,
		Direction: "Ingress",
	}
	if info.Direction == pipeline.PolicyEgress {
		e.Direction = "Egress"
	}
	e.Policy, e.Rule = a.policy.DescribeRule(info.Policy, info.Key)
	e.SrcPod, e.DstPod = a.policy.Endpoint(src.Addr()), a.policy.Endpoint(dst.Addr())
	if !a.audit.Log(e) {
		a.log.Debug("policy audit log: queue full, entry dropped", "dropped", a.audit.Dropped())
	}
	return true
}

// ipLength is the IPv4 total length of an Ethernet frame (with or without
// one 802.1Q tag); 0 when it has none.
func ipLength(b []byte) uint64 {
	_, ip, err := inet.EtherPayload(b)
	if err != nil || len(ip) < 4 {
		return 0
	}
	return uint64(ip[2])<<8 | uint64(ip[3])
}
