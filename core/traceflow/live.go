package traceflow

import (
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

// TagPriority is the tagging flow's priority in ConntrackState: above
// every flow of the table (those match established connections, or
// invalid ones; the tagging flow only new ones).
const TagPriority = 1000

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
// flow by itself after hard (at least 1 s), should its agent not.
func TagFlow(lm LiveMatch, tag uint8, cookie uint64, hard time.Duration) (*openflow.Flow, error) {
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
	return openflow.NewFlow(uint8(pipeline.ConntrackState), TagPriority).Cookie(cookie).
		HardTimeout(uint16(secs)).Match(m).Actions(a), nil
}

// liveOutputCopies are a live trace's copies of an output flow f (match m
// already carries the tag): at p+1 one that clears the tag, at p+2 those
// that keep it for packets going on to another node. ok is false when a
// neighbour of f at p+2 could overlap them.
func liveOutputCopies(f *openflow.Flow, m *openflow.Match, acts []openflow.Action, tag uint8, cookie uint64, mode Mode, prio map[[2]int]bool) ([]*openflow.Flow, bool) {
	p := int(f.Priority())
	if p+2 > 0xffff || prio[[2]int{int(f.TableID()), p + 2}] {
		return nil, false
	}
	report := func(a *openflow.Actions) *openflow.Actions {
		if !mode.DroppedOnly {
			a.Append(openflow.Controller{Reason: openflow.ReasonAction, Userdata: []byte{PacketInTraceflow, tag, KindOutput}})
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
// is combined (both fixed 4-byte values: a packet must match both); false
// when the two can never match together, or cannot be combined.
func mergeMatch(m, add []byte) ([]byte, bool) {
	out := append([]byte(nil), m...)
	for b := add; len(b) >= 4; {
		h := binary.BigEndian.Uint32(b)
		n := int(h & 0xff)
		tlv := b[:4+n]
		b = b[4+n:]
		i := findField(out, h&0xfffffe00)
		if i < 0 {
			out = append(out, tlv...)
			continue
		}
		oh := binary.BigEndian.Uint32(out[i:])
		v1, m1, ok1 := value32(oh, out[i+4:])
		v2, m2, ok2 := value32(h, tlv[4:])
		if !ok1 || !ok2 || (v1^v2)&m1&m2 != 0 {
			return nil, false
		}
		v, mask := v1&m1|v2&m2, m1|m2
		merged := binary.BigEndian.AppendUint32(nil, h&0xfffffe00|1<<8|8)
		merged = binary.BigEndian.AppendUint32(merged, v)
		merged = binary.BigEndian.AppendUint32(merged, mask)
		out = append(out[:i], append(merged, out[i+4+int(oh&0xff):]...)...)
	}
	return out, true
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

// value32 is a 4-byte OXM value and its mask (all ones without one).
func value32(h uint32, body []byte) (v, mask uint32, ok bool) {
	switch {
	case h&0x100 == 0 && h&0xff == 4 && len(body) >= 4:
		return binary.BigEndian.Uint32(body), ^uint32(0), true
	case h&0x100 != 0 && h&0xff == 8 && len(body) >= 8:
		return binary.BigEndian.Uint32(body), binary.BigEndian.Uint32(body[4:]), true
	}
	return 0, 0, false
}
