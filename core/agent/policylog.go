package agent

import (
	"time"

	"github.com/seine-cni/seine/core/auditlog"
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

// handlePolicyLog takes a logged connection's packet-in; it reports whether
// the packet-in was one.
func (a *Agent) handlePolicyLog(pi *openflow.PacketIn) bool {
	info, ok := pipeline.ParsePolicyLogUserdata(pi.Userdata)
	if !ok {
		return false
	}
	if a.audit == nil {
		return true
	}
	proto, src, dst, err := auditlog.ParseFrame(pi.Packet)
	if err != nil {
		a.log.Debug("policy audit log: a packet-in that is not IPv4", "err", err)
		return true
	}
	e := auditlog.Entry{
		Time: time.Now(), Action: info.Action.String(), Protocol: proto, Src: src, Dst: dst,
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
