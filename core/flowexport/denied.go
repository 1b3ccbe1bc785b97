package flowexport

import (
	"net/netip"
	"time"
)

// Denied connections never reach conntrack: the pipeline sends the first
// packet of each one policy denies to the agent (pipeline
// PolicySet.ExportDenied, through the policy log's meter), and the agent
// hands it to Denied. The attempts of one 5-tuple within a poll interval
// (a client's retransmitted SYNs are new to conntrack each time) make one
// record, exported at the next poll with flowEndReason 3 (RFC 5102: the
// end of the flow was detected, here by the drop) and the rule that
// denied it (action Drop or Reject).

// Denial is one denied packet, as the agent read it from a packet-in.
type Denial struct {
	Time     time.Time
	Proto    uint8
	Src, Dst netip.AddrPort
	// Bytes is the packet's IP length.
	Bytes uint64
	// Ingress is true when the destination's side denied it (the policy
	// goes in the record's ingress fields), false for the source's.
	Ingress bool
	// Policy is the rule that denied it; an isolated pod's default drop
	// names no policy (Type PolicyK8s, Action ActionDrop).
	Policy Policy
}

// MaxDenied bounds the denied 5-tuples kept between two polls; more are
// not exported and counted with the untracked connections. The policy
// log's meter (100 packets/s) keeps a node far below it at the default
// poll interval.
const MaxDenied = 4096

type denyKey struct {
	proto    uint8
	src, dst netip.AddrPort
	ingress  bool
}

type denied struct {
	first, last    time.Time
	packets, bytes uint64
	policy         Policy
}

// Denied records a denied packet; it never blocks on the collector (the
// agent's OpenFlow reader calls it). It reports false when the packet was
// beyond MaxDenied and not kept.
func (x *Exporter) Denied(d Denial) bool {
	k := denyKey{proto: d.Proto, src: d.Src, dst: d.Dst, ingress: d.Ingress}
	x.denyMu.Lock()
	defer x.denyMu.Unlock()
	if x.denials == nil {
		x.denials = make(map[denyKey]*denied)
	}
	e := x.denials[k]
	if e == nil {
		if len(x.denials) >= MaxDenied {
			x.denyDropped++
			return false
		}
		e = &denied{first: d.Time, policy: d.Policy}
		x.denials[k] = e
	}
	e.last = d.Time
	e.packets++
	e.bytes += d.Bytes
	return true
}

// takeDenied returns the records of the denials since the last call.
func (x *Exporter) takeDenied() []Record {
	x.denyMu.Lock()
	pending := x.denials
	x.denials = nil
	x.denyMu.Unlock()
	if len(pending) == 0 {
		return nil
	}
	out := make([]Record, 0, len(pending))
	for k, e := range pending {
		out = append(out, x.table.deniedRecord(k, e))
	}
	return out
}

// deniedRecord is the record of one denied 5-tuple: its attempts' packets
// and bytes (those the meter let through to the agent: a floor), its ends
// named like a tracked connection's, the denying rule on its side.
func (t *Table) deniedRecord(k denyKey, e *denied) Record {
	r := Record{
		Start: e.first, End: e.last, EndReason: EndOfFlow, Proto: k.proto,
		Src: k.src.Addr(), Dst: k.dst.Addr(), SrcPort: k.src.Port(), DstPort: k.dst.Port(),
		Counted: true, Packets: e.packets, Bytes: e.bytes, PacketsDelta: e.packets, BytesDelta: e.bytes,
	}
	c := Conn{Proto: k.proto,
		Orig:  Tuple{Src: r.Src, Dst: r.Dst, SrcPort: r.SrcPort, DstPort: r.DstPort},
		Reply: Tuple{Src: r.Dst, Dst: r.Src, SrcPort: r.DstPort, DstPort: r.SrcPort},
	}
	t.enrich(&r, &c)
	if k.ingress {
		r.Ingress = e.policy
	} else {
		r.Egress = e.policy
	}
	return r
}
