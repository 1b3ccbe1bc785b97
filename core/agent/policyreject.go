package agent

import (
	"context"

	"github.com/seine-cni/seine/core/agent/proxier"
	"github.com/seine-cni/seine/core/pipeline"
	"github.com/seine-cni/seine/ovs/openflow"
)

// Tiered policy's Reject (core/tiers/README.md): the rule's flow sends the
// connection's first packet to the agent through meter PolicyRejectMeter;
// the agent answers as a host with nothing listening would (a TCP RST, an
// ICMP port unreachable: proxier.RejectReply, the service proxy's answer
// to a Service without endpoints) and sends the answer back into the
// pipeline with pipeline.PolicyRejectActions, which routes it to the
// client wherever it is. The same on Linux and Windows nodes.

// policyRejectQueue bounds the answers waiting: the meter already bounds
// the rate; a burst beyond the queue is dropped and the client retries.
const policyRejectQueue = 256

// handlePolicyReject takes a rejected connection's packet-in; it reports
// whether the packet-in was one. It never blocks: the OpenFlow reader
// must not wait on the switch.
func (a *Agent) handlePolicyReject(pi *openflow.PacketIn) bool {
	if len(pi.Userdata) == 0 || pi.Userdata[0] != pipeline.PacketInPolicyReject {
		return false
	}
	select {
	case a.policyRejects <- pi:
	default:
	}
	return true
}

// answerPolicyRejects answers the queued rejected connections until ctx
// ends.
func (a *Agent) answerPolicyRejects(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case pi := <-a.policyRejects:
			reply, err := proxier.RejectReply(pi.Packet)
			if err != nil {
				a.log.Debug("not answering a rejected packet", "err", err)
				continue
			}
			out := openflow.NewPacketOut(openflow.PortController, reply, pipeline.PolicyRejectActions())
			err = a.sw.Do(ctx, func(w FlowWriter) error {
				aw, ok := w.(applier)
				if !ok {
					return nil
				}
				return aw.Apply(ctx, out)
			})
			if err != nil && ctx.Err() == nil {
				a.log.Warn("answering a rejected connection", "err", err)
			}
		}
	}
}

// applier sends messages outside a bundle (meters, packet-outs).
type applier interface {
	Apply(ctx context.Context, msgs ...openflow.Message) error
}

// installPolicyMeters installs the meters of the policy flows before a
// replay's bundle (OVS refuses meter mods inside bundles).
func installPolicyMeters(ctx context.Context, w FlowWriter) error {
	return installMeters(ctx, w, pipeline.PolicyMeters())
}

// installMeters modifies the meters, or adds those that do not exist.
func installMeters(ctx context.Context, w FlowWriter, meters []*openflow.MeterEntry) error {
	aw, ok := w.(applier)
	if !ok {
		return nil
	}
	for _, m := range meters {
		if err := aw.Apply(ctx, openflow.ModifyMeter(m)); err != nil {
			if err := aw.Apply(ctx, openflow.AddMeter(m)); err != nil {
				return err
			}
		}
	}
	return nil
}
