package traceflow

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	crd "github.com/seine-cni/seine/core/apis/crd/v1beta1"
)

// ErrInvalid wraps every reason a Traceflow's spec is refused.
var ErrInvalid = errors.New("invalid traceflow")

// Validate checks a spec as the controller does before tagging it (the
// CRD's schema checks types and ranges; this checks what it cannot say).
func Validate(s crd.TraceflowSpec) error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s", ErrInvalid, fmt.Sprintf(format, args...))
	}
	if s.DroppedOnly && !s.LiveTraffic {
		return bad("droppedOnly needs liveTraffic: an injected packet is traced whatever happens to it")
	}
	srcPod := s.Source.Pod != ""
	if srcPod && s.Source.Namespace == "" {
		return bad("source pod needs a namespace")
	}
	if s.Source.IP != "" {
		if !s.LiveTraffic {
			return bad("source ip is for live traffic only: an injected packet comes from a pod")
		}
		if srcPod {
			return bad("source needs a pod or an ip, not both")
		}
		if a, err := netip.ParseAddr(s.Source.IP); err != nil || !a.Is4() {
			return bad("source ip %q: want an IPv4 address", s.Source.IP)
		}
	}
	if !s.LiveTraffic && !srcPod {
		return bad("source needs a namespace and a pod")
	}
	d := s.Destination
	n := 0
	for _, set := range []bool{d.Pod != "", d.Service != "", d.IP != ""} {
		if set {
			n++
		}
	}
	switch {
	case n > 1 || n == 0 && !s.LiveTraffic:
		return bad("destination needs exactly one of pod, service or ip (got %d)", n)
	case s.LiveTraffic && !srcPod && d.Pod == "":
		return bad("live traffic needs a source pod or a destination pod: the packet is tagged on its node")
	}
	if (d.Pod != "" || d.Service != "") && d.Namespace == "" {
		return bad("destination pod or service needs a namespace")
	}
	if d.IP != "" {
		a, err := netip.ParseAddr(d.IP)
		if err != nil {
			return bad("destination ip %q: %v", d.IP, err)
		}
		if !a.Is4() {
			return bad("destination ip %s: only IPv4 is traced", a)
		}
	}
	if s.LiveTraffic {
		p := s.Packet
		if p.TTL != 0 || p.Length != 0 || p.TCPFlags != 0 {
			return bad("ttl, length and tcpFlags describe an injected packet: live traffic is matched by protocol and ports only")
		}
		if (p.Protocol == "" || strings.EqualFold(p.Protocol, "ICMP")) && (p.SrcPort != 0 || p.DstPort != 0) {
			return bad("ports need a protocol with ports (TCP or UDP)")
		}
	}
	if _, err := Protocol(s.Packet.Protocol); err != nil {
		return bad("%v", err)
	}
	for name, v := range map[string]int32{"srcPort": s.Packet.SrcPort, "dstPort": s.Packet.DstPort} {
		if v < 0 || v > 65535 {
			return bad("%s %d out of range 0-65535", name, v)
		}
	}
	if t := s.Packet.TTL; t < 0 || t > 255 {
		return bad("ttl %d out of range 0-255", t)
	}
	if f := s.Packet.TCPFlags; f < 0 || f > 255 {
		return bad("tcpFlags %d out of range 0-255", f)
	}
	if l := s.Packet.Length; l < 0 || l > 1500 {
		return bad("length %d out of range 0-1500", l)
	}
	if t := s.Timeout; t != 0 && (t < crd.MinTimeout || t > crd.MaxTimeout) {
		return bad("timeout %d s out of range %d-%d", t, crd.MinTimeout, crd.MaxTimeout)
	}
	return nil
}

// Protocol maps the spec's protocol name to its number (TCP when empty;
// LiveProtocol says "any" for a live trace).
func Protocol(name string) (uint8, error) {
	switch strings.ToUpper(name) {
	case "", "TCP":
		return ProtoTCP, nil
	case "UDP":
		return ProtoUDP, nil
	case "ICMP":
		return ProtoICMP, nil
	}
	return 0, fmt.Errorf("protocol %q: want TCP, UDP or ICMP", name)
}

// LiveProtocol is the protocol a live trace matches: 0 (any) when empty.
func LiveProtocol(name string) (uint8, error) {
	if name == "" {
		return 0, nil
	}
	return Protocol(name)
}

// Timeout is the spec's timeout, or the default.
func Timeout(s crd.TraceflowSpec) time.Duration {
	if s.Timeout == 0 {
		return crd.DefaultTimeout * time.Second
	}
	return time.Duration(s.Timeout) * time.Second
}

// HasVerdict reports whether the node results hold a verdict: some node's
// last observation is anything but Forwarded (Delivered, Dropped, Rejected,
// ForwardedOutOfNetwork).
func HasVerdict(results []crd.NodeResult) bool {
	for _, r := range results {
		if n := len(r.Observations); n > 0 && r.Observations[n-1].Action != crd.ActionForwarded {
			return true
		}
	}
	return false
}

// Ended reports whether a trace is complete: a verdict (HasVerdict), and the
// source node's observations too, as every node reports on its own and the
// destination's Delivered can arrive first. A droppedOnly trace reports
// drops only, so the source node may rightly have nothing to say.
func Ended(s crd.TraceflowSpec, st crd.TraceflowStatus) bool {
	if !HasVerdict(st.Results) {
		return false
	}
	if st.SourceNode == "" || s.DroppedOnly {
		return true
	}
	i := slices.IndexFunc(st.Results, func(r crd.NodeResult) bool { return r.Node == st.SourceNode })
	return i >= 0 && len(st.Results[i].Observations) > 0
}

// Ready reports whether every node the injection waits for installed the
// trace's flows.
func Ready(st crd.TraceflowStatus) bool {
	if st.SourceNode == "" {
		return false
	}
	for _, n := range st.Nodes {
		i := slices.IndexFunc(st.Results, func(r crd.NodeResult) bool { return r.Node == n })
		if i < 0 || !st.Results[i].FlowsInstalled {
			return false
		}
	}
	return true
}

// readyWith is Ready with node's own flows counted as installed (the node
// knows they are before its acknowledgement is in the status).
func readyWith(st crd.TraceflowStatus, node string) bool {
	if st.SourceNode == "" {
		return false
	}
	for _, n := range st.Nodes {
		i := slices.IndexFunc(st.Results, func(r crd.NodeResult) bool { return r.Node == n })
		if n != node && (i < 0 || !st.Results[i].FlowsInstalled) {
			return false
		}
	}
	return true
}

// TimeoutReason says why a Traceflow did not finish in time: the nodes
// that never installed its flows, or else where the packet was last seen.
func TimeoutReason(s crd.TraceflowSpec, st crd.TraceflowStatus, after time.Duration) string {
	var missing []string
	for _, n := range st.Nodes {
		i := slices.IndexFunc(st.Results, func(r crd.NodeResult) bool { return r.Node == n })
		if i < 0 || !st.Results[i].FlowsInstalled {
			missing = append(missing, n)
		}
	}
	if len(missing) > 0 {
		return fmt.Sprintf("timed out after %s: node %s did not install the trace's flows (is its agent running?)", after, strings.Join(missing, ", "))
	}
	for _, r := range st.Results {
		if n := len(r.Observations); n > 0 {
			o := r.Observations[n-1]
			where := o.TunnelDstIP
			if where == "" {
				where = o.OutputPort
			}
			return fmt.Sprintf("timed out after %s: last seen on %s, %s %s to %s; the next node never reported it", after, r.Node, o.Component, o.Action, where)
		}
	}
	switch {
	case s.DroppedOnly:
		return fmt.Sprintf("timed out after %s: no matching live packet was dropped", after)
	case s.LiveTraffic:
		return fmt.Sprintf("timed out after %s: no live packet matched (a new connection from the source to the destination)", after)
	}
	return fmt.Sprintf("timed out after %s: the packet was injected but no node observed it", after)
}
