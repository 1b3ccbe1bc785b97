package pipeline

import (
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/seine-cni/seine/ovs/openflow"
)

// Packet is what the tracer sends through the flows: Ethernet plus either
// ARP or IPv4 with an optional TCP/UDP/SCTP/ICMP header, and the metadata a
// packet can arrive with (tunnel fields when it comes from a tunnel port).
type Packet struct {
	InPort         uint32
	EthSrc, EthDst net.HardwareAddr
	EthType        uint16 // EthIPv4 or EthARP

	ARPOp          uint16
	ARPSPA, ARPTPA netip.Addr
	ARPSHA, ARPTHA net.HardwareAddr

	IPSrc, IPDst     netip.Addr
	IPProto          uint8
	TTL              uint8
	DSCP             uint8  // the Traceflow tag rides here
	SrcPort, DstPort uint16 // TCP, UDP and SCTP
	TCPFlags         uint16
	ICMPType         uint8
	ICMPCode         uint8

	TunSrc, TunDst netip.Addr
	TunID          uint64

	// CTInvalid makes conntrack find the packet invalid (a stray segment).
	CTInvalid bool
	// LaterFragment makes the packet a non-first fragment of its datagram
	// (nw_frag=later): the flow tables see no transport ports (0, as in
	// every fragment under OVS's default "normal" fragment handling), while
	// conntrack, which reassembles the datagram first, sees SrcPort and
	// DstPort (ct_tp_src, ct_tp_dst, as OVS gives them from 3.1.7 on). The
	// tracer does not model reassembly itself: the trace is the fragment's
	// own walk.
	LaterFragment bool
}

// Ethernet types and IP protocols the tracer knows.
const (
	EthIPv4 uint16 = 0x0800
	EthARP  uint16 = 0x0806

	ProtoICMP uint8 = 1
	ProtoTCP  uint8 = 6
	ProtoUDP  uint8 = 17
)

// TCPPacket is a TCP SYN from src to dst with TTL 64.
func TCPPacket(inPort uint32, ethSrc, ethDst net.HardwareAddr, src, dst netip.Addr, sport, dport uint16) Packet {
	return Packet{InPort: inPort, EthSrc: ethSrc, EthDst: ethDst, EthType: EthIPv4, IPSrc: src, IPDst: dst,
		IPProto: ProtoTCP, TTL: 64, SrcPort: sport, DstPort: dport, TCPFlags: 0x002}
}

// UDPPacket is a UDP datagram from src to dst with TTL 64.
func UDPPacket(inPort uint32, ethSrc, ethDst net.HardwareAddr, src, dst netip.Addr, sport, dport uint16) Packet {
	return Packet{InPort: inPort, EthSrc: ethSrc, EthDst: ethDst, EthType: EthIPv4, IPSrc: src, IPDst: dst,
		IPProto: ProtoUDP, TTL: 64, SrcPort: sport, DstPort: dport}
}

// SCTPPacket is an SCTP packet (an INIT: a new association) from src to dst
// with TTL 64. Tracing it needs no SCTP in any kernel.
func SCTPPacket(inPort uint32, ethSrc, ethDst net.HardwareAddr, src, dst netip.Addr, sport, dport uint16) Packet {
	return Packet{InPort: inPort, EthSrc: ethSrc, EthDst: ethDst, EthType: EthIPv4, IPSrc: src, IPDst: dst,
		IPProto: ProtoSCTP, TTL: 64, SrcPort: sport, DstPort: dport}
}

// ARPRequest is a broadcast "who has target, tell sender".
func ARPRequest(inPort uint32, mac net.HardwareAddr, sender, target netip.Addr) Packet {
	return Packet{InPort: inPort, EthSrc: mac, EthDst: broadcastMAC, EthType: EthARP, ARPOp: 1,
		ARPSPA: sender, ARPTPA: target, ARPSHA: mac, ARPTHA: make(net.HardwareAddr, 6)}
}

var broadcastMAC = net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}

// Tracer walks a flow set the way ovs-vswitchd would for one packet, with
// a simple model of conntrack: connections committed by one trace are
// established for the next (the reverse tuple is +rpl), with their NAT,
// ct_mark and ct_label. Conjunctive matches are modelled as OVS does them
// (see lookup). Select groups run one bucket (Select picks it), learn adds
// its flow to the tracer's tables for later traces, and controller actions
// are recorded as packet-ins. Anything else it does not model makes Trace
// fail rather than guess.
type Tracer struct {
	tables map[uint8][]*tracedFlow
	conns  map[connKey]*conn // by zone and original tuple
	reply  map[connKey]*conn // by zone and the tuple of reply packets
	groups map[uint32]*openflow.GroupEntry
	// Select picks the bucket of a select group for a packet; the default
	// hashes the packet's 5-tuple, as dp_hash does.
	Select func(g *openflow.GroupEntry, p Packet) int
}

type tracedFlow struct {
	flow    *openflow.Flow
	match   []matchEntry
	actions []openflow.Action
}

// conn is a committed connection: its original tuple, the tuple its reply
// packets carry (the reverse of the original after NAT), its mark and label.
type conn struct {
	orig, reply connKey
	nat         bool
	mark        uint32
	label       [16]byte
}

type connKey struct {
	zone         uint16
	proto        uint8
	src, dst     netip.Addr
	sport, dport uint16
}

// NewTracer decodes flows for tracing.
func NewTracer(flows []*openflow.Flow) (*Tracer, error) {
	t := &Tracer{tables: map[uint8][]*tracedFlow{}, conns: map[connKey]*conn{}, reply: map[connKey]*conn{},
		groups: map[uint32]*openflow.GroupEntry{}, Select: hashBucket}
	if err := t.AddFlows(flows...); err != nil {
		return nil, err
	}
	return t, nil
}

// AddFlows adds flows to the tracer's tables; a flow with the table,
// priority and match of one it has replaces it, as in OVS.
func (t *Tracer) AddFlows(flows ...*openflow.Flow) error {
	for _, f := range flows {
		m, err := parseMatch(f.MatchBytes())
		if err != nil {
			return fmt.Errorf("flow %s: %w", f, err)
		}
		acts, err := openflow.DecodeInstructions(f.InstructionBytes())
		if err != nil {
			return fmt.Errorf("flow %s: %w", f, err)
		}
		tf := &tracedFlow{flow: f, match: m, actions: acts}
		fs := t.tables[f.TableID()]
		id := flowKey(f)
		i := slices.IndexFunc(fs, func(o *tracedFlow) bool { return flowKey(o.flow) == id })
		if i >= 0 {
			fs[i] = tf
			continue
		}
		fs = append(fs, tf)
		slices.SortStableFunc(fs, func(a, b *tracedFlow) int { return int(b.flow.Priority()) - int(a.flow.Priority()) })
		t.tables[f.TableID()] = fs
	}
	return nil
}

// AddGroups makes groups known to the tracer (replacing any with their ID).
func (t *Tracer) AddGroups(groups ...*openflow.GroupEntry) {
	for _, g := range groups {
		t.groups[g.ID] = g
	}
}

// Flows returns the flows of a table, highest priority first (learned
// flows included).
func (t *Tracer) Flows(table Table) []*openflow.Flow {
	var out []*openflow.Flow
	for _, f := range t.tables[uint8(table)] {
		out = append(out, f.flow)
	}
	return out
}

// flowKey identifies a flow as OVS does: table, priority and match.
func flowKey(f *openflow.Flow) string {
	return fmt.Sprintf("%d/%d/%x", f.TableID(), f.Priority(), f.MatchBytes())
}

// Step is one table lookup of a trace.
type Step struct {
	Table Table
	Flow  *openflow.Flow // nil: no flow matched (table miss)
	Notes []string       // what the actions did that the flow text does not say
}

// Emitted is a packet that left through a port, as it was then.
type Emitted struct {
	Port   uint32
	Packet Packet
	// Regs are the registers at output time (reg0..reg15).
	Regs [16]uint32
}

// PacketIn is a packet a controller action sent to the agent.
type PacketIn struct {
	Table    Table
	Userdata []byte
	MeterID  uint32
	// Paused: the pipeline waits for the controller to resume the packet
	// (the trace goes on as if it did).
	Paused bool
	Packet Packet
	// Regs are the registers when the packet was sent (reg0..reg15).
	Regs [16]uint32
}

// Trace is the path of one packet and what came out.
type Trace struct {
	Steps   []Step
	Outputs []Emitted
	// PacketIns are the packets sent to the controller.
	PacketIns []PacketIn
	// Dropped says why processing ended without output ("" if it output).
	Dropped string
}

// Tables returns the tables the packet visited, in order.
func (tr *Trace) Tables() []Table {
	out := make([]Table, len(tr.Steps))
	for i, s := range tr.Steps {
		out[i] = s.Table
	}
	return out
}

// Output returns the only output of the trace; ok is false if there were
// none or several.
func (tr *Trace) Output() (Emitted, bool) {
	if len(tr.Outputs) != 1 {
		return Emitted{}, false
	}
	return tr.Outputs[0], true
}

func (tr *Trace) String() string {
	var sb strings.Builder
	for _, s := range tr.Steps {
		if s.Flow == nil {
			fmt.Fprintf(&sb, "%3d %-16s (miss)\n", uint8(s.Table), s.Table)
		} else {
			fmt.Fprintf(&sb, "%3d %-16s %s\n", uint8(s.Table), s.Table, s.Flow)
		}
		for _, n := range s.Notes {
			fmt.Fprintf(&sb, "    %s\n", n)
		}
	}
	for _, o := range tr.Outputs {
		fmt.Fprintf(&sb, "=> output to %s: %s\n", portName(o.Port), o.Packet)
	}
	for _, p := range tr.PacketIns {
		fmt.Fprintf(&sb, "=> packet-in from table %d (userdata %x, meter %d): %s\n", uint8(p.Table), p.Userdata, p.MeterID, p.Packet)
	}
	if tr.Dropped != "" {
		fmt.Fprintf(&sb, "=> dropped: %s\n", tr.Dropped)
	}
	return sb.String()
}

func portName(p uint32) string {
	switch p {
	case openflow.PortLocal:
		return "LOCAL"
	case openflow.PortController:
		return "CONTROLLER"
	}
	return strconv.FormatUint(uint64(p), 10)
}

func (p Packet) String() string {
	var sb strings.Builder
	fmt.Fprintf(&sb, "in_port=%s,dl_src=%s,dl_dst=%s", portName(p.InPort), p.EthSrc, p.EthDst)
	switch p.EthType {
	case EthARP:
		fmt.Fprintf(&sb, ",arp,arp_op=%d,arp_spa=%s,arp_tpa=%s,arp_sha=%s,arp_tha=%s", p.ARPOp, p.ARPSPA, p.ARPTPA, p.ARPSHA, p.ARPTHA)
	case EthIPv4:
		fmt.Fprintf(&sb, ",ip,nw_src=%s,nw_dst=%s,nw_proto=%d,nw_ttl=%d", p.IPSrc, p.IPDst, p.IPProto, p.TTL)
		switch p.IPProto {
		case ProtoTCP, ProtoUDP, ProtoSCTP:
			fmt.Fprintf(&sb, ",tp_src=%d,tp_dst=%d", p.SrcPort, p.DstPort)
		case ProtoICMP:
			fmt.Fprintf(&sb, ",icmp_type=%d,icmp_code=%d", p.ICMPType, p.ICMPCode)
		}
	default:
		fmt.Fprintf(&sb, ",dl_type=0x%04x", p.EthType)
	}
	if p.TunDst.IsValid() {
		fmt.Fprintf(&sb, ",tun_src=%s,tun_dst=%s,tun_id=%#x", p.TunSrc, p.TunDst, p.TunID)
	}
	return sb.String()
}

// OVSFlow renders the packet in ovs-ofctl flow syntax, the form
// "ovs-appctl ofproto/trace <bridge> <flow>" takes, so the same packet can
// be traced by the tracer and by ovs-vswitchd.
func (p Packet) OVSFlow() string {
	var sb strings.Builder
	fmt.Fprintf(&sb, "in_port=%s", portName(p.InPort))
	if p.TunDst.IsValid() {
		fmt.Fprintf(&sb, ",tun_src=%s,tun_dst=%s,tun_id=%#x", p.TunSrc, p.TunDst, p.TunID)
	}
	switch {
	case p.EthType == EthARP:
		fmt.Fprintf(&sb, ",arp,dl_src=%s,dl_dst=%s,arp_op=%d,arp_spa=%s,arp_tpa=%s,arp_sha=%s,arp_tha=%s",
			p.EthSrc, p.EthDst, p.ARPOp, p.ARPSPA, p.ARPTPA, p.ARPSHA, p.ARPTHA)
		return sb.String()
	case p.EthType != EthIPv4:
		fmt.Fprintf(&sb, ",dl_src=%s,dl_dst=%s,dl_type=0x%04x", p.EthSrc, p.EthDst, p.EthType)
		return sb.String()
	case p.IPProto == ProtoTCP:
		sb.WriteString(",tcp")
	case p.IPProto == ProtoUDP:
		sb.WriteString(",udp")
	case p.IPProto == ProtoSCTP:
		sb.WriteString(",sctp")
	case p.IPProto == ProtoICMP:
		sb.WriteString(",icmp")
	default:
		fmt.Fprintf(&sb, ",ip,nw_proto=%d", p.IPProto)
	}
	fmt.Fprintf(&sb, ",dl_src=%s,dl_dst=%s,nw_src=%s,nw_dst=%s,nw_ttl=%d", p.EthSrc, p.EthDst, p.IPSrc, p.IPDst, p.TTL)
	switch p.IPProto {
	case ProtoTCP:
		fmt.Fprintf(&sb, ",tcp_src=%d,tcp_dst=%d,tcp_flags=%#x", p.SrcPort, p.DstPort, p.TCPFlags)
	case ProtoUDP:
		fmt.Fprintf(&sb, ",udp_src=%d,udp_dst=%d", p.SrcPort, p.DstPort)
	case ProtoSCTP:
		fmt.Fprintf(&sb, ",sctp_src=%d,sctp_dst=%d", p.SrcPort, p.DstPort)
	case ProtoICMP:
		fmt.Fprintf(&sb, ",icmp_type=%d,icmp_code=%d", p.ICMPType, p.ICMPCode)
	}
	return sb.String()
}
