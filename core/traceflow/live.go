package traceflow

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"net/netip"
	"time"

	"github.com/seine-cni/seine/core/pipeline"
	"github.com/seine-cni/seine/ovs/openflow"
)

// Live traffic: instead of injecting a packet, the tagging node marks the
// first packet of a new connection that matches the trace with the tag
// (TagFlow), and every node's copies report it as they do an injected
// one. The copies of a live trace also give the packet its DSCP back (0:
// only untagged packets are tagged) wherever it leaves the cluster's
// network or reaches its pod, so the real packet arrives as it was sent.
// See README.md, "Live traffic".

// Mode says how a trace's copies treat the tagged packet.
type Mode struct {
	// Live: the tagged packet is real traffic. A copy that outputs it
	// clears the tag, unless the packet goes on to another node of the
	// cluster: to the tunnel, or to the gateway, uplink or host towards
	// one of ClusterCIDRs (noEncap), where the next node needs the tag.
	Live         bool
	ClusterCIDRs []netip.Prefix
	// DroppedOnly: only the copies of drops and rejects send packet-ins;
	// the copies of outputs only clear the tag.
	DroppedOnly bool
}

// tagFlowID marks a live trace's tagging flow among its flows (cookie
// object ID tag|tagFlowID): it is removed on its own once it fired.
const tagFlowID = 0x100

// TagCookie is the cookie of trace tag's tagging flow in round r.
func TagCookie(r pipeline.Round, tag uint8) uint64 {
	return uint64(pipeline.NewCookie(r, pipeline.CategoryTraceflow, tagFlowID|uint64(tag)))
}

// TagSelector selects trace tag's tagging flow in every round.
func TagSelector(tag uint8) (cookie, mask uint64) {
	return TagCookie(0, tag), ^pipeline.RoundMask
}

// TagPriority is the priority of trace tag's tagging flow in
// ConntrackState: above every flow of the table (those match established
// connections, or invalid ones; a tagging flow only new ones), and of its
// own, so that two live traces of one node whose matches overlap never
// share one. Sharing it, OVS would pick either flow for a packet both
// match (and replace one by the other when their matches are equal), and
// the other trace could wait for a packet it never gets. A packet carries
// one tag, so it goes to the trace with the higher priority; that trace
// removes its flow once it has its packet and the next connection goes to
// the other. A trace that takes one packet ranks above every droppedOnly
// one, which keeps its flow until a packet is dropped and would otherwise
// take every packet from it.
func TagPriority(tag uint8, droppedOnly bool) uint16 {
	if droppedOnly {
		return tagPriorityBase + uint16(tag)
	}
	return tagPriorityBase + MaxTag + 1 + uint16(tag)
}

// tagPriorityBase is where the tagging flows' priorities start.
const tagPriorityBase = 1000

// LiveMatch is what a live trace's tagging flow matches; zero fields
// match anything.
type LiveMatch struct {
	InPort           uint32 // the source pod's OpenFlow port
	Src, Dst         netip.Addr
	Proto            uint8
	SrcPort, DstPort uint16
}

// TagFlow is a live trace's tagging flow. In ConntrackState (after
// conntrack, before the service proxy's DNAT: a Service is matched by its
// cluster IP), the first packet of a new connection that matches lm and
// carries DSCP 0 gets the tag, then meets ConntrackState again, where this
// flow no longer matches it, and goes its normal way. OVS removes the
// flow by itself after hard (at least 1 s), should its agent not. Its
// priority is TagPriority(tag, droppedOnly).
func TagFlow(lm LiveMatch, tag uint8, droppedOnly bool, cookie uint64, hard time.Duration) (*openflow.Flow, error) {
	if tag == 0 || tag > MaxTag {
		return nil, fmt.Errorf("tag %d out of range 1-%d", tag, MaxTag)
	}
	m := openflow.NewMatch().IP().
		CTState(openflow.CTTracked|openflow.CTNew, openflow.CTTracked|openflow.CTNew|openflow.CTInvalid).
		IPDSCP(0)
	if lm.InPort != 0 {
		m.InPort(lm.InPort)
	}
	if lm.Src.IsValid() {
		m.IPSrcAddr(lm.Src)
	}
	if lm.Dst.IsValid() {
		m.IPDstAddr(lm.Dst)
	}
	if lm.Proto != 0 {
		m.IPProto(lm.Proto)
	}
	switch {
	case lm.Proto == ProtoTCP:
		if lm.SrcPort != 0 {
			m.TCPSrc(lm.SrcPort)
		}
		if lm.DstPort != 0 {
			m.TCPDst(lm.DstPort)
		}
	case lm.Proto == ProtoUDP:
		if lm.SrcPort != 0 {
			m.UDPSrc(lm.SrcPort)
		}
		if lm.DstPort != 0 {
			m.UDPDst(lm.DstPort)
		}
	case lm.SrcPort != 0 || lm.DstPort != 0:
		return nil, fmt.Errorf("ports need TCP or UDP (protocol %d)", lm.Proto)
	}
	secs := max(1, min(int((hard+time.Second-1)/time.Second), 0xffff))
	a := openflow.NewActions().SetFieldUint(openflow.FieldIPDSCP, uint64(tag)).
		Resubmit(openflow.PortInPort, uint8(pipeline.ConntrackState))
	return openflow.NewFlow(uint8(pipeline.ConntrackState), TagPriority(tag, droppedOnly)).Cookie(cookie).
		HardTimeout(uint16(secs)).Match(m).Actions(a), nil
}

// liveOutputCopies are a live trace's copies of an output flow f (match m
// already carries the tag): at p+1 one that clears the tag, at p+2 those
// that keep it for packets going on to another node. ok is false when a
// neighbour of f at p+2 could overlap them.
func liveOutputCopies(f *openflow.Flow, m *openflow.Match, acts []openflow.Action, tag uint8, cookie uint64, mode Mode, ix flowIndex) ([]*openflow.Flow, bool) {
	p := int(f.Priority())
	if p+2 > 0xffff || ix.occupied(f.TableID(), p+2) {
		return nil, false
	}
	report := func(a *openflow.Actions) *openflow.Actions {
		if !mode.DroppedOnly {
			a.Append(openflow.Controller{Reason: openflow.ReasonAction, Userdata: userdata(tag, KindOutput, f.Priority())})
		}
		return a
	}
	clear := report(openflow.NewActions()).SetFieldUint(openflow.FieldIPDSCP, 0).Append(acts...)
	out := []*openflow.Flow{openflow.NewFlow(f.TableID(), uint16(p+1)).Cookie(cookie).Match(m).Actions(clear)}
	keep := func(mark pipeline.RegMark, dst netip.Prefix) {
		add := openflow.NewMatch().Reg(mark.Field.Reg, mark.Value<<mark.Field.Lo, mark.Field.Mask())
		if dst.IsValid() {
			add.IPDst(dst)
		}
		km, ok := mergeMatch(m.Bytes(), add.Bytes())
		if !ok {
			return // the flow never outputs there
		}
		out = append(out, openflow.NewFlow(f.TableID(), uint16(p+2)).Cookie(cookie).
			Match(openflow.MatchFromBytes(km)).Actions(report(openflow.NewActions()).Append(acts...)))
	}
	keep(pipeline.ToTunnelMark, netip.Prefix{})
	for _, c := range mode.ClusterCIDRs {
		if c.Addr().Is4() {
			for _, mark := range []pipeline.RegMark{pipeline.ToGatewayMark, pipeline.ToUplinkMark, pipeline.ToHostMark} {
				keep(mark, c)
			}
		}
	}
	return out, true
}

// mergeMatch adds the OXM fields of add to the match m. A field m has too
// is combined (a packet must match both): also a 32-bit register that m
// matches as half of a 64-bit one (OVS reports reg0 and reg1 together as
// xreg0, OXM_OF_PKT_REG0, in OpenFlow 1.5 flow stats). False when the two
// can never match together.
func mergeMatch(m, add []byte) ([]byte, bool) {
	out := append([]byte(nil), m...)
	for b := add; len(b) >= 4; {
		h := binary.BigEndian.Uint32(b)
		n := int(h & 0xff)
		tlv := b[:4+n]
		b = b[4+n:]
		v, mask := oxmValue(h, tlv[4:])
		merged := false
		for _, c := range candidates(h, len(v)) {
			i := findField(out, c.field)
			if i < 0 {
				continue
			}
			oh := binary.BigEndian.Uint32(out[i:])
			ov, om := oxmValue(oh, out[i+4:i+4+int(oh&0xff)])
			if len(ov) != c.width {
				return nil, false
			}
			for k := range v {
				j := c.offset + k
				if (ov[j]^v[k])&om[j]&mask[k] != 0 {
					return nil, false // never both
				}
				ov[j] = ov[j]&om[j] | v[k]&mask[k]
				om[j] |= mask[k]
			}
			t := binary.BigEndian.AppendUint32(nil, c.field|1<<8|uint32(2*c.width))
			t = append(append(t, ov...), om...)
			out = append(out[:i], append(t, out[i+4+int(oh&0xff):]...)...)
			merged = true
			break
		}
		if !merged {
			out = append(out, tlv...)
		}
	}
	return out, true
}

// candidate is where a field may already be in a match: a field header
// (without mask bit and length), and the offset and width of the whole
// field's value there.
type candidate struct {
	field         uint32
	offset, width int
}

const (
	classNXM1   = 0x0001
	classPktReg = 0x8001
)

func candidates(h uint32, n int) []candidate {
	field := h & 0xfffffe00
	cs := []candidate{{field, 0, n}}
	if class, f := h>>16, (h>>9)&0x7f; class == classNXM1 && f < 16 && n == 4 {
		cs = append(cs, candidate{classPktReg<<16 | (f/2)<<9, int(f%2) * 4, 8})
	}
	return cs
}

// oxmValue copies a TLV's value and mask (all ones without one).
func oxmValue(h uint32, body []byte) (v, mask []byte) {
	if h&0x100 == 0 {
		return append([]byte(nil), body...), bytes.Repeat([]byte{0xff}, len(body))
	}
	half := len(body) / 2
	return append([]byte(nil), body[:half]...), append([]byte(nil), body[half:]...)
}

// findField is the offset of the TLV of field (header without mask bit
// and length) in the OXM list m, or -1.
func findField(m []byte, field uint32) int {
	for i := 0; i+4 <= len(m); {
		h := binary.BigEndian.Uint32(m[i:])
		if h&0xfffffe00 == field {
			return i
		}
		i += 4 + int(h&0xff)
	}
	return -1
}
