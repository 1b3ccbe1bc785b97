package traceflow

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"time"

	crd "github.com/seine-cni/seine/core/apis/crd/v1beta1"
	"github.com/seine-cni/seine/core/pipeline"
	"github.com/seine-cni/seine/ovs/openflow"
)

// maxPending bounds the live reports a node keeps while it waits for the
// tagging node's captured packet (packets tagged before the tagging flow
// was removed; a handful at most).
const maxPending = 32

// liveTrace is an agent's state of a live-traffic trace.
//
// The tagging node (status.sourceNode) arms the tagging flow once every
// node of the path installed its copies, takes its first report as the
// traced packet (its captured packet goes to the status), and removes the
// flow at once; packets it tagged meanwhile are reported too, so every
// other node keeps its reports until the captured packet tells it which
// one was traced (correlate). In droppedOnly mode only drops are reported,
// each node takes its first, and the flow stays until the trace ends.
type liveTrace struct {
	tagging     bool // this node tags the trace's packets
	droppedOnly bool
	armed       bool // the tagging flow is on the switch
	fired       bool // it tagged the traced packet: remove it
	taken       bool // this node's observations of the traced packet are in
	captured    *crd.CapturedPacket
	pending     []Report
}

// take says whether report r (a live packet of the trace) is the traced
// one on this node; a report that needs the tagging node's captured
// packet is kept for correlate. Called under the agent's lock.
func (l *liveTrace) take(r Report) bool {
	if l.taken {
		return false
	}
	if l.tagging || l.droppedOnly {
		l.taken, l.captured = true, capture(r.Packet)
		l.fired = l.tagging && !l.droppedOnly
		return true
	}
	if len(l.pending) < maxPending {
		l.pending = append(l.pending, r)
	}
	return false
}

// correlate finds, among the reports a node kept, the packet the tagging
// node captured, and turns it into this node's observations.
func (a *Agent) correlate(tf *crd.Traceflow, t *agentTrace) {
	want := resultOf(tf, tf.Status.SourceNode).CapturedPacket
	a.mu.Lock()
	l := &t.live
	if want == nil || l.taken || len(l.pending) == 0 {
		a.mu.Unlock()
		return
	}
	var hit *Report
	for i := range l.pending {
		if sameAs(l.pending[i].Packet, want) {
			hit = &l.pending[i]
			break
		}
	}
	if hit == nil {
		a.mu.Unlock()
		return
	}
	r := *hit
	l.taken, l.captured, l.pending = true, capture(r.Packet), nil
	cidrs := a.clusterCIDRs
	a.mu.Unlock()
	obs, _ := Observe(t.in, r, Node{ClusterCIDRs: cidrs, Policies: a.node.IsolatedBy, Rules: a.node.TieredRule})
	a.mu.Lock()
	t.obs = append(t.obs, obs...)
	a.mu.Unlock()
}

// armLive installs the tagging flow on the tagging node, once, and
// removes it as soon as it tagged the traced packet.
func (a *Agent) armLive(ctx context.Context, tf *crd.Traceflow, t *agentTrace) error {
	a.mu.Lock()
	armed, fired := t.live.armed, t.live.fired
	a.mu.Unlock()
	switch {
	case armed && fired:
		err := a.node.Install(ctx, func(w Writer, _ *pipeline.NodeConfig, _ pipeline.Round) error {
			c, m := TagSelector(t.tag)
			return w.DeleteFlowsByCookie(ctx, c, m)
		})
		if err != nil {
			return fmt.Errorf("remove the tagging flow of tag %d: %w", t.tag, err)
		}
		a.mu.Lock()
		t.live.armed = false
		a.mu.Unlock()
		a.log.Info("traceflow live packet tagged; tagging flow removed", "traceflow", tf.Name, "tag", t.tag)
		return nil
	case armed || fired:
		return nil
	}
	start := tf.CreationTimestamp.Time
	if tf.Status.StartTime != nil {
		start = tf.Status.StartTime.Time
	}
	left := time.Until(start.Add(Timeout(tf.Spec)))
	if left <= 0 {
		return nil // the controller fails it
	}
	lm := LiveMatch{Src: t.in.SrcIP, Dst: t.in.DstIP, Proto: t.in.Proto, SrcPort: t.in.SrcPort, DstPort: t.in.DstPort}
	if s := tf.Spec.Source; s.Pod != "" {
		src, ok := a.node.LocalPod(s.Namespace, s.Pod, netip.Addr{})
		if !ok {
			return fmt.Errorf("source pod %s/%s has no port on this node", s.Namespace, s.Pod)
		}
		lm.InPort = src.Port
	}
	err := a.node.Install(ctx, func(w Writer, _ *pipeline.NodeConfig, r pipeline.Round) error {
		f, err := TagFlow(lm, t.tag, t.live.droppedOnly, TagCookie(r, t.tag), left)
		if err != nil {
			return err
		}
		if err := w.Bundle(ctx, openflow.AddFlow(f)); err != nil {
			return fmt.Errorf("install the tagging flow of tag %d: %w", t.tag, err)
		}
		a.mu.Lock()
		t.live.armed = true
		a.mu.Unlock()
		a.log.Info("traceflow live: tagging", "traceflow", tf.Name, "tag", t.tag, "flow", f.String())
		return nil
	})
	if err != nil {
		return err
	}
	// The connections the tagging flow is for may already have cached
	// flows (made before it, for their earlier new connections), which
	// would let the next ones pass untagged until ovs-vswitchd
	// revalidates them. Not flushing only delays the tagging: no retry.
	if err := a.node.FlushDatapath(ctx); err != nil {
		a.log.Warn("traceflow live: the datapath's cached flows not flushed after the tagging flow", "traceflow", tf.Name, "tag", t.tag, "err", err)
	}
	return nil
}

// liveInjected is what every node knows of a live trace's packets: the
// tag, and the protocol, addresses and ports it was asked for (any when
// unset).
func liveInjected(tf *crd.Traceflow) (Injected, error) {
	proto, err := LiveProtocol(tf.Spec.Packet.Protocol)
	if err != nil {
		return Injected{}, err
	}
	in := Injected{Tag: uint8(tf.Status.DataplaneTag), Live: true, Proto: proto,
		SrcPort: uint16(tf.Spec.Packet.SrcPort), DstPort: uint16(tf.Status.DstPort)}
	var errs []error
	for _, a := range []struct {
		s   string
		dst *netip.Addr
	}{{tf.Status.SrcIP, &in.SrcIP}, {tf.Status.DstIP, &in.DstIP}} {
		if a.s == "" {
			continue
		}
		v, err := netip.ParseAddr(a.s)
		errs = append(errs, err)
		*a.dst = v
	}
	if err := errors.Join(errs...); err != nil {
		return Injected{}, fmt.Errorf("traceflow %s status addresses: %w", tf.Name, err)
	}
	return in, nil
}

// capture is the status form of a reported packet.
func capture(p Packet) *crd.CapturedPacket {
	return &crd.CapturedPacket{SrcIP: p.SrcIP.String(), DstIP: p.DstIP.String(), Protocol: protoName(p.Proto),
		SrcPort: int32(p.SrcPort), DstPort: int32(p.DstPort), IPID: int32(p.ID), TTL: int32(p.TTL),
		Length: int32(p.Length), TCPFlags: int32(p.TCPFlags)}
}

// sameAs reports whether p is the captured packet (as another node saw
// it: its TTL may differ).
func sameAs(p Packet, c *crd.CapturedPacket) bool {
	return protoName(p.Proto) == c.Protocol && p.SrcIP.String() == c.SrcIP && p.DstIP.String() == c.DstIP &&
		int32(p.SrcPort) == c.SrcPort && int32(p.DstPort) == c.DstPort && int32(p.ID) == c.IPID
}

func protoName(p uint8) string {
	switch p {
	case ProtoTCP:
		return "TCP"
	case ProtoUDP:
		return "UDP"
	case ProtoICMP:
		return "ICMP"
	}
	return strconv.Itoa(int(p))
}
