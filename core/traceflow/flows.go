package traceflow

import (
	"encoding/binary"
	"fmt"

	"github.com/seine-cni/seine/core/pipeline"
	"github.com/seine-cni/seine/ovs/openflow"
)

// PacketInTraceflow is the first byte of the userdata of a tagged copy's
// packet-in (the proxy's reject uses 1, pipeline.PacketInReject). The
// userdata is {PacketInTraceflow, tag, kind, priority (2 bytes)}: the
// priority is the copied flow's, which names the tiered rule that dropped
// or rejected the packet (a packet-in carries neither the flow's priority
// nor its conj_id).
const PacketInTraceflow byte = 2

// userdata is the userdata of a copy of a flow at priority prio.
func userdata(tag, kind byte, prio uint16) []byte {
	return []byte{PacketInTraceflow, tag, kind, byte(prio >> 8), byte(prio)}
}

// What the copied flow did with the packet (the third userdata byte).
const (
	KindDrop   byte = 0 // no actions
	KindOutput byte = 1 // output to a port
	KindReject byte = 2 // the proxy's reject (a controller action)
)

// Observed reports whether table's terminal flows get tagged copies:
// every table where a packet can leave the pipeline, except the
// Classifier (whose outputs carry uplink and tunnel frames, never a pod's
// inner packet) and the ARP responder. Tables added later (policy tiers)
// are observed without a change here.
func Observed(table uint8) bool {
	return table != uint8(pipeline.Classifier) && table != uint8(pipeline.ARPResponder)
}

// Cookie is the cookie of trace tag's flows in round r.
func Cookie(r pipeline.Round, tag uint8) uint64 {
	return uint64(pipeline.NewCookie(r, pipeline.CategoryTraceflow, uint64(tag)))
}

// Selector selects the flows of tag in every round (its copies and a live
// trace's tagging flow), for deleting them (a restart may have left them
// under an older round).
func Selector(tag uint8) (cookie, mask uint64) {
	return uint64(pipeline.NewCookie(0, pipeline.CategoryTraceflow, uint64(tag))), ^pipeline.RoundMask &^ tagFlowID
}

// copySelector selects the copies of tag in every round (not a live
// trace's tagging flow).
func copySelector(tag uint8) (cookie, mask uint64) {
	return uint64(pipeline.NewCookie(0, pipeline.CategoryTraceflow, uint64(tag))), ^pipeline.RoundMask
}

// AllSelector selects every trace's flows in every round.
func AllSelector() (cookie, mask uint64) {
	return uint64(pipeline.NewCookie(0, pipeline.CategoryTraceflow, 0)), pipeline.CategoryMask &^ pipeline.RoundMask
}

// TaggedFlows returns, for every terminal flow of base (a flow that drops,
// outputs or rejects rather than continue in another table) in an observed
// table, a copy that matches IPv4 packets carrying tag as their DSCP, one
// priority higher, and does what the original does after sending the
// packet to the controller: a tagged packet takes exactly the path an
// untagged one takes, and the agent learns where it ended. Untagged
// traffic never matches a copy. Copies of flows of other traces (or of
// earlier copies of this one) are never made.
//
// A copy at priority p+1 wins exactly where its original does, unless
// another flow of the table at p+1 overlaps the original; such a flow
// (and one at the highest priority) gets no copy rather than shadow its
// neighbour: it is returned in skipped, and a packet it decides is not
// observed (the trace then times out saying where it was last seen).
func TaggedFlows(base []*openflow.Flow, tag uint8, cookie uint64) (copies, skipped []*openflow.Flow, err error) {
	return Copies(base, tag, cookie, Mode{})
}

// Copies is TaggedFlows for a trace of mode: a live trace's copies that
// output a packet also clear its tag where it stays on this node or
// leaves the cluster's network (live.go), and a droppedOnly trace's
// report only drops and rejects.
func Copies(base []*openflow.Flow, tag uint8, cookie uint64, mode Mode) (copies, skipped []*openflow.Flow, err error) {
	if tag == 0 || tag > MaxTag {
		return nil, nil, fmt.Errorf("tag %d out of range 1-%d", tag, MaxTag)
	}
	ix := baseIndex{prio: map[[2]int]bool{}, resub: map[uint8]bool{}} // of the non-trace flows
	for _, f := range base {
		if pipeline.Cookie(f.CookieValue()).Category() == pipeline.CategoryTraceflow {
			continue // a live trace's tagging flow resubmits to its own table
		}
		ix.prio[[2]int{int(f.TableID()), int(f.Priority())}] = true
		tables, err := resubmits(f)
		if err != nil {
			return nil, nil, err
		}
		for _, t := range tables {
			ix.resub[t] = true
		}
	}
	for _, f := range base {
		c, skip, err := copiesOf(f, tag, cookie, mode, ix)
		if err != nil {
			return nil, nil, err
		}
		if skip {
			skipped = append(skipped, f)
		}
		copies = append(copies, c...)
	}
	return copies, skipped, nil
}

// flowIndex tells copiesOf about the other flows of the switch.
type flowIndex interface {
	// occupied: a flow (not a trace's) sits in table at priority prio.
	occupied(table uint8, prio int) bool
	// resubmitted: a flow resubmits to table. A drop in such a table
	// returns to the caller, which goes on: its flows end nothing and get
	// no copy.
	resubmitted(table uint8) bool
}

type baseIndex struct {
	prio  map[[2]int]bool
	resub map[uint8]bool
}

func (ix baseIndex) occupied(table uint8, prio int) bool { return ix.prio[[2]int{int(table), prio}] }
func (ix baseIndex) resubmitted(table uint8) bool        { return ix.resub[table] }

// resubmits lists the tables f's actions resubmit to.
func resubmits(f *openflow.Flow) ([]uint8, error) {
	acts, err := openflow.DecodeInstructions(f.InstructionBytes())
	if err != nil {
		return nil, fmt.Errorf("table %d flow %s: %w", f.TableID(), f.MatchString(), err)
	}
	var out []uint8
	for _, a := range acts {
		if r, ok := a.(openflow.Resubmit); ok {
			t := r.Table
			if t == openflow.TableAll {
				t = f.TableID()
			}
			out = append(out, t)
		}
	}
	return out, nil
}

// copiesOf is trace tag's copies of f (none when f ends nothing, is a
// trace's own, or is not IPv4); skipped when f gets none because a
// neighbour one (a live output copy: two) priority up could overlap them.
func copiesOf(f *openflow.Flow, tag uint8, cookie uint64, mode Mode, ix flowIndex) (copies []*openflow.Flow, skipped bool, err error) {
	if ix.resubmitted(f.TableID()) || !Observed(f.TableID()) || pipeline.Cookie(f.CookieValue()).Category() == pipeline.CategoryTraceflow {
		return nil, false, nil
	}
	acts, err := openflow.DecodeInstructions(f.InstructionBytes())
	if err != nil {
		return nil, false, fmt.Errorf("table %d flow %s: %w", f.TableID(), f.MatchString(), err)
	}
	kind, ok := terminal(acts)
	if !ok {
		return nil, false, nil
	}
	m, ok := taggedMatch(f.MatchBytes(), tag)
	if !ok {
		return nil, false, nil // not IPv4
	}
	if f.Priority() == 0xffff || ix.occupied(f.TableID(), int(f.Priority())+1) {
		return nil, true, nil // a neighbour one priority up could overlap this flow
	}
	if mode.Live && kind == KindOutput {
		live, ok := liveOutputCopies(f, m, acts, tag, cookie, mode, ix)
		return live, !ok, nil
	}
	a := openflow.NewActions()
	if !mode.DroppedOnly || kind != KindOutput {
		a.Append(openflow.Controller{Reason: openflow.ReasonAction, Userdata: userdata(tag, kind, f.Priority())})
	}
	a.Append(acts...)
	return []*openflow.Flow{openflow.NewFlow(f.TableID(), f.Priority()+1).Cookie(cookie).Match(m).Actions(a)}, false, nil
}

// terminal reports whether the actions end the packet's way through the
// pipeline, and what they do with it.
func terminal(acts []openflow.Action) (byte, bool) {
	kind := KindDrop
	for _, a := range acts {
		switch a := a.(type) {
		case openflow.GotoTable, openflow.Resubmit, openflow.Group, openflow.Conjunction, *openflow.Learn:
			return 0, false
		case *openflow.CT:
			if info, err := a.Info(); err != nil || info.Table >= 0 {
				return 0, false
			}
		case openflow.Output, openflow.OutputReg:
			kind = KindOutput
		case openflow.Controller:
			if kind == KindDrop {
				kind = KindReject
			}
		}
	}
	return kind, true
}

// OXM headers (without the has-mask bit and length) of the fields
// taggedMatch looks for.
const (
	oxmEthType = 0x80000a00
	nxmEthType = 0x00000600
	oxmIPDSCP  = 0x80001000
)

// taggedMatch is the match m plus ip_dscp=tag, with eth_type=IPv4 put
// first when m has no eth_type (ip_dscp needs it as a prerequisite). It
// is false when m matches another eth_type or already matches ip_dscp.
func taggedMatch(m []byte, tag uint8) (*openflow.Match, bool) {
	hasIP := false
	for b := m; len(b) >= 4; {
		h := binary.BigEndian.Uint32(b)
		n := int(h & 0xff)
		if 4+n > len(b) {
			return nil, false
		}
		switch h & 0xfffffe00 {
		case oxmEthType, nxmEthType:
			if n < 2 || binary.BigEndian.Uint16(b[4:]) != 0x0800 {
				return nil, false
			}
			hasIP = true
		case oxmIPDSCP:
			return nil, false
		}
		b = b[4+n:]
	}
	out := openflow.NewMatch()
	if !hasIP {
		out.IP()
	}
	return openflow.MatchFromBytes(append(out.Bytes(), m...)).IPDSCP(tag), true
}
