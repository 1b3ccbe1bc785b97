package traceflow

import (
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"

	crd "github.com/seine-cni/seine/core/apis/crd/v1beta1"
)

// Verdict is a finished Traceflow's outcome in one line: where the packet
// ended and how, or why the trace failed ("" while it runs).
func Verdict(tf *crd.Traceflow) string {
	switch tf.Status.Phase {
	case crd.Failed:
		return "Failed: " + tf.Status.Reason
	case crd.Succeeded:
	default:
		return ""
	}
	for _, r := range PathOrder(tf) {
		n := len(r.Observations)
		if n == 0 || r.Observations[n-1].Action == crd.ActionForwarded {
			continue
		}
		o := r.Observations[n-1]
		s := fmt.Sprintf("%s on %s", o.Action, r.Node)
		switch {
		case o.NetworkPolicy != "":
			s += fmt.Sprintf(" by NetworkPolicy %s (%s, rule %q)", o.NetworkPolicy, o.ComponentInfo, o.Rule)
		case o.Action == crd.ActionDropped || o.Action == crd.ActionRejected:
			s += fmt.Sprintf(" by %s in table %s", o.Component, o.Table)
			if o.ComponentInfo != "" {
				s += " (" + o.ComponentInfo + ")"
			}
		}
		return "Succeeded: " + s
	}
	return "Succeeded"
}

// PathOrder is the node results in the order the packet met the nodes:
// the tagging (source) node, the other nodes of status.nodes, then any
// other node that reported.
func PathOrder(tf *crd.Traceflow) []crd.NodeResult {
	rank := func(node string) int {
		if node == tf.Status.SourceNode {
			return -1
		}
		if i := slices.Index(tf.Status.Nodes, node); i >= 0 {
			return i
		}
		return len(tf.Status.Nodes)
	}
	out := slices.Clone(tf.Status.Results)
	slices.SortStableFunc(out, func(a, b crd.NodeResult) int { return rank(a.Node) - rank(b.Node) })
	return out
}

// Render writes a Traceflow for people: what was traced, the verdict, and
// hop by hop what each node observed.
func Render(w io.Writer, tf *crd.Traceflow) error {
	s := tf.Spec
	src := s.Source.IP
	if s.Source.Pod != "" {
		src = s.Source.Namespace + "/" + s.Source.Pod
	}
	if src == "" {
		src = "any source"
	}
	dst := s.Destination.IP
	switch {
	case s.Destination.Pod != "":
		dst = s.Destination.Namespace + "/" + s.Destination.Pod
	case s.Destination.Service != "":
		dst = "service " + s.Destination.Namespace + "/" + s.Destination.Service
	case dst == "":
		dst = "any destination"
	}
	kind := "injected packet"
	switch {
	case s.DroppedOnly:
		kind = "live traffic, drops only"
	case s.LiveTraffic:
		kind = "live traffic"
	}
	proto := strings.ToUpper(s.Packet.Protocol)
	if proto == "" && !s.LiveTraffic {
		proto = "TCP"
	}
	st := tf.Status
	fmt.Fprintf(w, "Traceflow %s: %s -> %s (%s)\n", tf.Name, src, dst, kind)
	if st.SrcIP != "" || st.DstIP != "" {
		port := ""
		if st.DstPort != 0 {
			port = fmt.Sprintf(":%d", st.DstPort)
		}
		fmt.Fprintf(w, "  packet: %s %s -> %s%s, tag %d\n", strings.TrimSpace(proto+" "), orAny(st.SrcIP), orAny(st.DstIP), port, st.DataplaneTag)
	}
	if v := Verdict(tf); v != "" {
		fmt.Fprintf(w, "  verdict: %s\n", v)
	} else {
		fmt.Fprintf(w, "  phase: %s %s\n", st.Phase, st.Reason)
	}
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	for _, r := range PathOrder(tf) {
		fmt.Fprintf(tw, "%s\n", r.Node)
		if c := r.CapturedPacket; c != nil {
			fmt.Fprintf(tw, "  captured\t%s %s:%d -> %s:%d\tid %#x ttl %d len %d flags %#x\n", c.Protocol, c.SrcIP, c.SrcPort, c.DstIP, c.DstPort, c.IPID, c.TTL, c.Length, c.TCPFlags)
		}
		if len(r.Observations) == 0 {
			fmt.Fprintf(tw, "  (no observation)\t\t\n")
		}
		for i, o := range r.Observations {
			fmt.Fprintf(tw, "  %d. %s\t%s\t%s\t%s\n", i+1, o.Component, o.Table, o.Action, details(o))
		}
	}
	return tw.Flush()
}

func orAny(s string) string {
	if s == "" {
		return "any"
	}
	return s
}

// details is what an observation says beyond component, table and action.
func details(o crd.Observation) string {
	var d []string
	if o.ComponentInfo != "" && o.ComponentInfo != o.Table {
		d = append(d, o.ComponentInfo)
	}
	if o.NetworkPolicy != "" {
		d = append(d, "policy "+o.NetworkPolicy)
	}
	if o.Rule != "" {
		d = append(d, "rule "+o.Rule)
	}
	if o.TranslatedDstIP != "" {
		t := "DNAT to " + o.TranslatedDstIP
		if o.TranslatedDstPort != 0 {
			t += fmt.Sprintf(":%d", o.TranslatedDstPort)
		}
		d = append(d, t)
	}
	if o.TranslatedSrcIP != "" {
		d = append(d, "SNAT to "+o.TranslatedSrcIP)
	}
	if o.TunnelDstIP != "" {
		d = append(d, "tunnel to "+o.TunnelDstIP)
	}
	if o.OutputPort != "" {
		d = append(d, "port "+o.OutputPort)
	}
	return strings.Join(d, ", ")
}
