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
	prio := map[[2]int]bool{} // table, priority of the non-trace flows
	for _, f := range base {
		if pipeline.Cookie(f.CookieValue()).Category() != pipeline.CategoryTraceflow {
			prio[[2]int{int(f.TableID()), int(f.Priority())}] = true
		}
	}
	// A drop in a table reached by resubmit returns to the caller, which
	// goes on: such tables end nothing, and their flows get no copy.
	resubmitted := map[uint8]bool{}
	for _, f := range base {
		if pipeline.Cookie(f.CookieValue()).Category() == pipeline.CategoryTraceflow {
			continue // a live trace's tagging flow resubmits to its own table
		}
		acts, err := openflow.DecodeInstructions(f.InstructionBytes())
		if err != nil {
			return nil, nil, fmt.Errorf("table %d flow %s: %w", f.TableID(), f.MatchString(), err)
		}
		for _, a := range acts {
			if r, ok := a.(openflow.Resubmit); ok {
				t := r.Table
				if t == openflow.TableAll {
					t = f.TableID()
				}
				resubmitted[t] = true
			}
		}
	}
	for _, f := range base {
		if resubmitted[f.TableID()] || !Observed(f.TableID()) || pipeline.Cookie(f.CookieValue()).Category() == pipeline.CategoryTraceflow {
			continue
		}
		acts, err := openflow.DecodeInstructions(f.InstructionBytes())
		if err != nil {
			return nil, nil, fmt.Errorf("table %d flow %s: %w", f.TableID(), f.MatchString(), err)
		}
		kind, ok := terminal(acts)
		if !ok {
			continue
		}
		m, ok := taggedMatch(f.MatchBytes(), tag)
		if !ok {
			continue // not IPv4
		}
		if f.Priority() == 0xffff || prio[[2]int{int(f.TableID()), int(f.Priority()) + 1}] {
			// A neighbour one priority up could overlap this flow.
			skipped = append(skipped, f)
			continue
		}
		if mode.Live && kind == KindOutput {
			live, ok := liveOutputCopies(f, m, acts, tag, cookie, mode, prio)
			if !ok {
				skipped = append(skipped, f)
				continue
			}
			copies = append(copies, live...)
			continue
		}
		a := openflow.NewActions()
		if !mode.DroppedOnly || kind != KindOutput {
			a.Append(openflow.Controller{Reason: openflow.ReasonAction, Userdata: userdata(tag, kind, f.Priority())})
		}
		a.Append(acts...)
		copies = append(copies, openflow.NewFlow(f.TableID(), f.Priority()+1).Cookie(cookie).Match(m).Actions(a))
	}
	return copies, skipped, nil
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
