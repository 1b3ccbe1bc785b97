package pipeline

import (
	"fmt"
	"net"
	"net/netip"
	"strings"

	"github.com/seine-cni/seine/ovs/openflow"
)

// maxDepth bounds resubmit recursion and goto chains, as OVS does.
const maxDepth = 64

// Trace sends p through the flows, starting in table 0.
func (t *Tracer) Trace(p Packet) (*Trace, error) {
	fs, err := p.fields()
	if err != nil {
		return nil, err
	}
	x := &run{t: t, fs: fs, invalid: p.CTInvalid, tr: &Trace{}, cur: map[uint16]*conn{}, curState: map[uint16]uint32{}}
	if p.LaterFragment {
		x.later, x.sport, x.dport = true, p.SrcPort, p.DstPort
	}
	if err := x.table(uint8(Classifier), 0); err != nil {
		return x.tr, fmt.Errorf("%w\n%s", err, x.tr)
	}
	if len(x.tr.Outputs) == 0 && x.tr.Dropped == "" {
		x.tr.Dropped = "no output"
	}
	return x.tr, nil
}

type run struct {
	t       *Tracer
	fs      fields
	invalid bool
	tr      *Trace
	steps   int
	// cur is the connection each zone's ct found or committed during this
	// trace, and curState its state then.
	cur      map[uint16]*conn
	curState map[uint16]uint32
	// later: the packet is a later fragment; sport and dport are its
	// datagram's ports, which only conntrack sees.
	later        bool
	sport, dport uint16
}

// lookup finds the flow of table tbl that matches, refusing to choose
// between two flows of the same priority that both match (OVS would pick
// one arbitrarily). Conjunctive flows (whose actions are conjunction(...))
// are matched the way OVS does: at the highest priority where the packet
// completes a conjunction, the conj_id flow of that conjunction matches;
// where it completes none, they are ignored and lower priorities are
// searched.
func (x *run) lookup(tbl uint8) (*tracedFlow, error) {
	fs := x.t.tables[tbl]
	for i := 0; i < len(fs); {
		prio := fs[i].flow.Priority()
		var hard []*tracedFlow
		conj := conjClauses{}
		for ; i < len(fs) && fs[i].flow.Priority() == prio; i++ {
			f := fs[i]
			if !x.fs.matches(f.match) {
				continue
			}
			if cs, ok := conjunctionsOf(f); ok {
				conj.add(cs)
				continue
			}
			hard = append(hard, f)
		}
		switch {
		case len(hard) > 1:
			return nil, fmt.Errorf("table %d: ambiguous match at priority %d:\n  %s\n  %s", tbl, prio, hard[0].flow, hard[1].flow)
		case len(hard) == 1 && len(conj) > 0:
			return nil, fmt.Errorf("table %d: %s matches at the priority of conjunctive flows, which is not modelled", tbl, hard[0].flow)
		case len(hard) == 1:
			return hard[0], nil
		}
		if f, err := x.conjunctionFlow(tbl, prio, conj); f != nil || err != nil {
			return f, err
		}
	}
	return nil, nil
}

// table runs the packet through table tbl and whatever it continues to.
func (x *run) table(tbl uint8, depth int) error {
	for {
		if depth > maxDepth || x.steps > 10*maxDepth {
			return fmt.Errorf("table %d: too many table lookups", tbl)
		}
		x.steps++
		f, err := x.lookup(tbl)
		if err != nil {
			return err
		}
		x.tr.Steps = append(x.tr.Steps, Step{Table: Table(tbl)})
		step := len(x.tr.Steps) - 1
		if f == nil {
			x.drop(fmt.Sprintf("no flow matched in table %d", tbl))
			return nil
		}
		x.tr.Steps[step].Flow = f.flow
		next, err := x.actions(tbl, step, f, depth)
		if err != nil {
			return fmt.Errorf("table %d, flow %s: %w", tbl, f.flow, err)
		}
		if next < 0 {
			if len(f.actions) == 0 {
				x.drop(fmt.Sprintf("drop in table %d", tbl))
			}
			return nil
		}
		if next <= int(tbl) {
			return fmt.Errorf("table %d: goto_table:%d goes backwards", tbl, next)
		}
		tbl = uint8(next)
	}
}

func (x *run) drop(why string) {
	if len(x.tr.Outputs) == 0 && x.tr.Dropped == "" {
		x.tr.Dropped = why
	}
}

func (x *run) note(step int, format string, args ...any) {
	x.tr.Steps[step].Notes = append(x.tr.Steps[step].Notes, fmt.Sprintf(format, args...))
}

// actions executes a flow's actions and returns the table to continue in
// (-1: none).
func (x *run) actions(tbl uint8, step int, f *tracedFlow, depth int) (int, error) {
	return x.exec(tbl, step, f.actions, depth)
}

// exec executes an action list (a flow's or a group bucket's).
func (x *run) exec(tbl uint8, step int, acts []openflow.Action, depth int) (int, error) {
	next := -1
	for _, a := range acts {
		switch a := a.(type) {
		case openflow.Output:
			x.output(step, a.Port)
		case openflow.OutputReg:
			v, err := x.fs.readSub(a.Src)
			if err != nil {
				return 0, err
			}
			if v > 0xffff {
				x.note(step, "output port %d is out of range", v)
				continue
			}
			x.output(step, portFromReg(uint32(v)))
		case openflow.SetField:
			if a.Field == openflow.FieldInPort16 && a.Mask == nil && len(a.Value) == 2 {
				// NXM's 16-bit in_port writes the in_port.
				x.fs.setUint(openflow.FieldInPort, uint64(a.Value[0])<<8|uint64(a.Value[1]))
				continue
			}
			if err := x.fs.set(a.Field, a.Value, a.Mask); err != nil {
				return 0, err
			}
		case openflow.Move:
			if err := x.fs.move(a.Src, a.Dst); err != nil {
				return 0, err
			}
		case openflow.DecTTL:
			ttl := x.fs.uint(openflow.FieldNwTTL)
			if ttl <= 1 {
				x.note(step, "dec_ttl: TTL %d expires", ttl)
				x.drop("TTL expired")
				return -1, nil
			}
			x.fs.setUint(openflow.FieldNwTTL, ttl-1)
		case openflow.Resubmit:
			if a.CT {
				return 0, fmt.Errorf("resubmit with ct is not modelled")
			}
			to := a.Table
			if to == openflow.TableAll {
				to = tbl
			}
			saved := x.fs.uint(openflow.FieldInPort)
			if a.Port != openflow.PortInPort {
				x.fs.setUint(openflow.FieldInPort, uint64(a.Port))
			}
			if err := x.table(to, depth+1); err != nil {
				return 0, err
			}
			x.fs.setUint(openflow.FieldInPort, saved)
		case openflow.GotoTable:
			next = int(a)
		case *openflow.CT:
			recirc, err := x.conntrack(step, a)
			if err != nil {
				return 0, err
			}
			if recirc >= 0 {
				if next >= 0 {
					return 0, fmt.Errorf("ct(table=%d) together with goto_table is not modelled", recirc)
				}
				next = recirc
			}
		case openflow.Group:
			recirc, err := x.group(tbl, step, uint32(a), depth)
			if err != nil {
				return 0, err
			}
			if recirc >= 0 {
				next = recirc
			}
		case openflow.Controller:
			x.packetIn(tbl, step, a)
		case *openflow.Learn:
			if err := x.learn(step, a); err != nil {
				return 0, err
			}
		case openflow.Note:
		default:
			return 0, fmt.Errorf("action %s is not modelled by the tracer", a)
		}
	}
	return next, nil
}

// output emits the packet as it is now, or notes why OVS would not.
func (x *run) output(step int, port uint32) {
	in := uint32(x.fs.uint(openflow.FieldInPort))
	switch {
	case port == openflow.PortInPort:
		port = in
	case port == in:
		x.note(step, "skipping output to the input port %s", portName(port))
		x.drop("output to the input port")
		return
	case port >= openflow.PortMax && port != openflow.PortLocal:
		x.note(step, "output to reserved port %s is not modelled", portName(port))
		return
	}
	var regs [16]uint32
	for i := range regs {
		regs[i] = uint32(x.fs.uint(openflow.Reg(i)))
	}
	x.tr.Outputs = append(x.tr.Outputs, Emitted{Port: port, Packet: x.fs.packet(), Regs: regs})
}

// connKey is the packet's 5-tuple in zone.
func (x *run) connKey(zone uint16) connKey {
	k := connKey{zone: zone, proto: uint8(x.fs.uint(openflow.FieldIPProto)),
		src: netip.AddrFrom4([4]byte(x.fs[openflow.FieldIPSrc])), dst: netip.AddrFrom4([4]byte(x.fs[openflow.FieldIPDst]))}
	switch k.proto {
	case ProtoTCP:
		k.sport, k.dport = uint16(x.fs.uint(openflow.FieldTCPSrc)), uint16(x.fs.uint(openflow.FieldTCPDst))
	case ProtoUDP:
		k.sport, k.dport = uint16(x.fs.uint(openflow.FieldUDPSrc)), uint16(x.fs.uint(openflow.FieldUDPDst))
	case ProtoSCTP:
		k.sport, k.dport = uint16(x.fs.uint(openflow.FieldSCTPSrc)), uint16(x.fs.uint(openflow.FieldSCTPDst))
	}
	if x.later {
		k.sport, k.dport = x.sport, x.dport
	}
	return k
}

func (k connKey) reverse() connKey {
	k.src, k.dst, k.sport, k.dport = k.dst, k.src, k.dport, k.sport
	return k
}

func (k connKey) String() string {
	return fmt.Sprintf("proto=%d %s:%d->%s:%d", k.proto, k.src, k.sport, k.dst, k.dport)
}

func ctStateText(s uint32) string {
	var sb strings.Builder
	for _, b := range []struct {
		bit  uint32
		name string
	}{{openflow.CTNew, "new"}, {openflow.CTEstablished, "est"}, {openflow.CTRelated, "rel"},
		{openflow.CTReply, "rpl"}, {openflow.CTInvalid, "inv"}, {openflow.CTTracked, "trk"}} {
		if s&b.bit != 0 {
			sb.WriteString("+" + b.name)
		}
	}
	return sb.String()
}

// fields turns the packet into the tracer's field map.
func (p Packet) fields() (fields, error) {
	if p.LaterFragment {
		p.SrcPort, p.DstPort, p.TCPFlags = 0, 0, 0
	}
	fs := fields{}
	put := func(f *openflow.Field, v []byte) { fs[f] = append([]byte(nil), v...) }
	putUint := func(f *openflow.Field, v uint64) {
		fs[f] = make([]byte, f.Bits()/8)
		fs.setUint(f, v)
	}
	mac := func(m net.HardwareAddr) []byte {
		if len(m) != 6 {
			return make([]byte, 6)
		}
		return m
	}
	addr := func(a netip.Addr) []byte {
		if !a.IsValid() {
			return make([]byte, 4)
		}
		v := a.Unmap().As4()
		return v[:]
	}
	putUint(openflow.FieldInPort, uint64(p.InPort))
	put(openflow.FieldEthSrc, mac(p.EthSrc))
	put(openflow.FieldEthDst, mac(p.EthDst))
	putUint(openflow.FieldEthType, uint64(p.EthType))
	for _, f := range []*openflow.Field{openflow.FieldMetadata, openflow.FieldPktMark, openflow.FieldTunID,
		openflow.FieldCTState, openflow.FieldCTZone, openflow.FieldCTMark, openflow.FieldConjID,
		openflow.FieldCTNwProto, openflow.FieldCTNwSrc, openflow.FieldCTNwDst, openflow.FieldCTTpSrc, openflow.FieldCTTpDst} {
		putUint(f, 0)
	}
	fs[openflow.FieldCTLabel] = make([]byte, 16)
	for i := 0; i < 16; i++ {
		putUint(openflow.Reg(i), 0)
	}
	putUint(openflow.FieldTunID, p.TunID)
	put(openflow.FieldTunSrc, addr(p.TunSrc))
	put(openflow.FieldTunDst, addr(p.TunDst))
	switch p.EthType {
	case EthARP:
		putUint(openflow.FieldARPOp, uint64(p.ARPOp))
		put(openflow.FieldARPSPA, addr(p.ARPSPA))
		put(openflow.FieldARPTPA, addr(p.ARPTPA))
		put(openflow.FieldARPSHA, mac(p.ARPSHA))
		put(openflow.FieldARPTHA, mac(p.ARPTHA))
	case EthIPv4:
		if !p.IPSrc.Unmap().Is4() || !p.IPDst.Unmap().Is4() {
			return nil, fmt.Errorf("IPv4 packet needs IPv4 source and destination")
		}
		put(openflow.FieldIPSrc, addr(p.IPSrc))
		put(openflow.FieldIPDst, addr(p.IPDst))
		putUint(openflow.FieldIPProto, uint64(p.IPProto))
		putUint(openflow.FieldNwTTL, uint64(p.TTL))
		putUint(openflow.FieldIPDSCP, uint64(p.DSCP))
		putUint(openflow.FieldIPECN, 0)
		putUint(openflow.FieldIPFrag, 0)
		if p.LaterFragment {
			putUint(openflow.FieldIPFrag, uint64(openflow.NwFragAny|openflow.NwFragLater))
		}
		switch p.IPProto {
		case ProtoTCP:
			putUint(openflow.FieldTCPSrc, uint64(p.SrcPort))
			putUint(openflow.FieldTCPDst, uint64(p.DstPort))
			putUint(openflow.FieldTCPFlags, uint64(p.TCPFlags))
		case ProtoUDP:
			putUint(openflow.FieldUDPSrc, uint64(p.SrcPort))
			putUint(openflow.FieldUDPDst, uint64(p.DstPort))
		case ProtoSCTP:
			putUint(openflow.FieldSCTPSrc, uint64(p.SrcPort))
			putUint(openflow.FieldSCTPDst, uint64(p.DstPort))
		case ProtoICMP:
			putUint(openflow.FieldICMPType, uint64(p.ICMPType))
			putUint(openflow.FieldICMPCode, uint64(p.ICMPCode))
		}
	default:
		return nil, fmt.Errorf("ethertype %#04x is not modelled", p.EthType)
	}
	return fs, nil
}

// packet turns the field map back into a Packet.
func (fs fields) packet() Packet {
	mac := func(f *openflow.Field) net.HardwareAddr { return append(net.HardwareAddr(nil), fs[f]...) }
	addr := func(f *openflow.Field) netip.Addr {
		if b, ok := fs[f]; ok {
			return netip.AddrFrom4([4]byte(b))
		}
		return netip.Addr{}
	}
	p := Packet{
		InPort: uint32(fs.uint(openflow.FieldInPort)), EthSrc: mac(openflow.FieldEthSrc),
		EthDst: mac(openflow.FieldEthDst), EthType: uint16(fs.uint(openflow.FieldEthType)),
		TunID: fs.uint(openflow.FieldTunID),
	}
	if tun := addr(openflow.FieldTunDst); !tun.IsUnspecified() {
		p.TunSrc, p.TunDst = addr(openflow.FieldTunSrc), tun
	}
	switch p.EthType {
	case EthARP:
		p.ARPOp = uint16(fs.uint(openflow.FieldARPOp))
		p.ARPSPA, p.ARPTPA = addr(openflow.FieldARPSPA), addr(openflow.FieldARPTPA)
		p.ARPSHA, p.ARPTHA = mac(openflow.FieldARPSHA), mac(openflow.FieldARPTHA)
	case EthIPv4:
		p.IPSrc, p.IPDst = addr(openflow.FieldIPSrc), addr(openflow.FieldIPDst)
		p.IPProto, p.TTL = uint8(fs.uint(openflow.FieldIPProto)), uint8(fs.uint(openflow.FieldNwTTL))
		p.DSCP = uint8(fs.uint(openflow.FieldIPDSCP))
		switch p.IPProto {
		case ProtoTCP:
			p.SrcPort, p.DstPort = uint16(fs.uint(openflow.FieldTCPSrc)), uint16(fs.uint(openflow.FieldTCPDst))
			p.TCPFlags = uint16(fs.uint(openflow.FieldTCPFlags))
		case ProtoUDP:
			p.SrcPort, p.DstPort = uint16(fs.uint(openflow.FieldUDPSrc)), uint16(fs.uint(openflow.FieldUDPDst))
		case ProtoSCTP:
			p.SrcPort, p.DstPort = uint16(fs.uint(openflow.FieldSCTPSrc)), uint16(fs.uint(openflow.FieldSCTPDst))
		case ProtoICMP:
			p.ICMPType, p.ICMPCode = uint8(fs.uint(openflow.FieldICMPType)), uint8(fs.uint(openflow.FieldICMPCode))
		}
	}
	return p
}
