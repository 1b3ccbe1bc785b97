package pipeline

import (
	"fmt"
	"hash/fnv"
	"net/netip"

	"github.com/seine-cni/seine/ovs/openflow"
)

// The tracer's model of what the service proxy's flows use: conntrack with
// NAT, marks and labels; select groups; learn; controller actions.

// conntrack runs the ct action and returns the table to recirculate to
// (-1: none). The connection state is visible only after recirculation, as
// in OVS. A new connection is committed with its NAT (the packet is
// translated at once); later packets of a committed connection are +est
// (the reverse of its reply tuple: +est+rpl) and, with nat, translated as
// the connection says. A second ct in the same zone during one trace finds
// the connection of the first, as OVS finds the one it cached in the
// packet's metadata.
func (x *run) conntrack(step int, a *openflow.CT) (int, error) {
	info, err := a.Info()
	if err != nil {
		return 0, err
	}
	if info.ZoneField != nil || info.Alg != 0 {
		return 0, fmt.Errorf("%s: zone from a field and ALGs are not modelled", a)
	}
	if _, ok := x.fs[openflow.FieldIPSrc]; !ok {
		return 0, fmt.Errorf("ct on a non-IP packet is not modelled")
	}
	zone := info.Zone
	k := x.connKey(zone)
	c, dir := x.cur[zone], 1
	if c == nil {
		dir = 0
		if c = x.t.conns[k]; c != nil {
			dir = 1
		} else if c = x.t.reply[k]; c != nil {
			dir = 2
		}
	}
	var state uint32 = openflow.CTTracked
	switch {
	case x.invalid:
		state |= openflow.CTInvalid
		c = nil
	case x.cur[zone] != nil:
		state = x.curState[zone]
	case dir == 1:
		state |= openflow.CTEstablished
	case dir == 2:
		state |= openflow.CTEstablished | openflow.CTReply
	default:
		state |= openflow.CTNew
	}
	if c != nil && info.NAT != nil && c.nat && x.cur[zone] == nil {
		to := c.reply.reverse()
		if dir == 2 {
			to = c.orig.reverse()
		}
		x.setTuple(to)
		x.note(step, "ct: zone %d translates to %s", zone, to)
	}
	if info.Commit && !x.invalid {
		if c == nil {
			c = &conn{orig: k}
			post := k
			if n := info.NAT; n != nil && (n.Src || n.Dst) {
				if n.Dst {
					post.dst = n.IPMin
					if n.PortMin != 0 {
						post.dport = n.PortMin
					}
				} else {
					post.src = n.IPMin
					if n.PortMin != 0 {
						post.sport = n.PortMin
					}
				}
				c.nat = true
				x.setTuple(post)
			}
			c.reply = post.reverse()
			x.t.conns[k], x.t.reply[c.reply] = c, c
			x.note(step, "ct: committed %s in zone %d (replies %s)", k, zone, c.reply)
		}
		if len(info.Exec) > 0 {
			if err := x.ctExec(c, info.Exec); err != nil {
				return 0, err
			}
		}
	}
	if c != nil {
		x.cur[zone], x.curState[zone] = c, state
	}
	if info.Table < 0 {
		return -1, nil
	}
	x.fs.setUint(openflow.FieldCTState, uint64(state))
	x.fs.setUint(openflow.FieldCTZone, uint64(zone))
	var mark uint32
	var label [16]byte
	if c != nil {
		mark, label = c.mark, c.label
	}
	x.fs.setUint(openflow.FieldCTMark, uint64(mark))
	copy(x.fs[openflow.FieldCTLabel], label[:])
	// The original direction's tuple (ct_nw_*, ct_tp_*): the connection's,
	// or the packet's own for a new one; also for a later fragment, whose
	// datagram conntrack reassembled.
	orig := k
	if c != nil {
		orig = c.orig
	}
	if x.invalid {
		orig = connKey{src: netip.IPv4Unspecified(), dst: netip.IPv4Unspecified()}
	}
	src, dst := orig.src.As4(), orig.dst.As4()
	x.fs.setUint(openflow.FieldCTNwProto, uint64(orig.proto))
	copy(x.fs[openflow.FieldCTNwSrc], src[:])
	copy(x.fs[openflow.FieldCTNwDst], dst[:])
	x.fs.setUint(openflow.FieldCTTpSrc, uint64(orig.sport))
	x.fs.setUint(openflow.FieldCTTpDst, uint64(orig.dport))
	x.note(step, "ct: zone %d finds %s, ct_mark=%#x; recirculate to table %d", zone, ctStateText(state), mark, info.Table)
	return info.Table, nil
}

// ctExec runs ct(exec(...)) on c: set_field and move into ct_mark and
// ct_label (the only fields OVS lets exec write).
func (x *run) ctExec(c *conn, acts []openflow.Action) error {
	saved := map[*openflow.Field][]byte{}
	for _, f := range []*openflow.Field{openflow.FieldCTMark, openflow.FieldCTLabel} {
		saved[f] = append([]byte(nil), x.fs[f]...)
	}
	x.fs.setUint(openflow.FieldCTMark, uint64(c.mark))
	copy(x.fs[openflow.FieldCTLabel], c.label[:])
	for _, a := range acts {
		switch a := a.(type) {
		case openflow.SetField:
			if a.Field != openflow.FieldCTMark && a.Field != openflow.FieldCTLabel {
				return fmt.Errorf("ct exec: %s", a)
			}
			if err := x.fs.set(a.Field, a.Value, a.Mask); err != nil {
				return err
			}
		case openflow.Move:
			if a.Dst.Field != openflow.FieldCTMark && a.Dst.Field != openflow.FieldCTLabel {
				return fmt.Errorf("ct exec: %s", a)
			}
			if err := x.fs.move(a.Src, a.Dst); err != nil {
				return err
			}
		default:
			return fmt.Errorf("ct exec action %s is not modelled", a)
		}
	}
	c.mark = uint32(x.fs.uint(openflow.FieldCTMark))
	copy(c.label[:], x.fs[openflow.FieldCTLabel])
	for f, v := range saved {
		copy(x.fs[f], v)
	}
	return nil
}

// setTuple rewrites the packet's addresses and ports to k.
func (x *run) setTuple(k connKey) {
	src, dst := k.src.As4(), k.dst.As4()
	copy(x.fs[openflow.FieldIPSrc], src[:])
	copy(x.fs[openflow.FieldIPDst], dst[:])
	if x.later { // no transport header: the first fragment carries it
		x.sport, x.dport = k.sport, k.dport
		return
	}
	switch k.proto {
	case ProtoTCP:
		x.fs.setUint(openflow.FieldTCPSrc, uint64(k.sport))
		x.fs.setUint(openflow.FieldTCPDst, uint64(k.dport))
	case ProtoUDP:
		x.fs.setUint(openflow.FieldUDPSrc, uint64(k.sport))
		x.fs.setUint(openflow.FieldUDPDst, uint64(k.dport))
	}
}

// group runs one bucket of a select group and returns the table its
// actions recirculate to (-1: none).
func (x *run) group(tbl uint8, step int, id uint32, depth int) (int, error) {
	g, ok := x.t.groups[id]
	if !ok {
		return 0, fmt.Errorf("group %d does not exist", id)
	}
	if g.Type != openflow.GroupTypeSelect {
		return 0, fmt.Errorf("group %d: only select groups are modelled", id)
	}
	if len(g.Buckets) == 0 {
		x.note(step, "group %d has no buckets", id)
		x.drop(fmt.Sprintf("empty group %d", id))
		return -1, nil
	}
	i := x.t.Select(g, x.fs.packet())
	if i < 0 || i >= len(g.Buckets) {
		return 0, fmt.Errorf("group %d: bucket %d of %d selected", id, i, len(g.Buckets))
	}
	acts, err := g.Buckets[i].ActionList()
	if err != nil {
		return 0, fmt.Errorf("group %d bucket %d: %w", id, i, err)
	}
	x.note(step, "group %d: bucket %d", id, g.Buckets[i].ID)
	return x.exec(tbl, step, acts, depth+1)
}

// hashBucket picks a bucket by a hash of the packet's 5-tuple.
func hashBucket(g *openflow.GroupEntry, p Packet) int {
	h := fnv.New32a()
	src, dst := p.IPSrc.As4(), p.IPDst.As4()
	h.Write(src[:])
	h.Write(dst[:])
	h.Write([]byte{p.IPProto, byte(p.SrcPort >> 8), byte(p.SrcPort), byte(p.DstPort >> 8), byte(p.DstPort)})
	return int(h.Sum32() % uint32(len(g.Buckets)))
}

// packetIn records a controller action.
func (x *run) packetIn(tbl uint8, step int, c openflow.Controller) {
	pi := PacketIn{Table: Table(tbl), Userdata: c.Userdata, MeterID: c.MeterID, Paused: c.Pause, Packet: x.fs.packet()}
	for i := range pi.Regs {
		pi.Regs[i] = uint32(x.fs.uint(openflow.Reg(i)))
	}
	x.tr.PacketIns = append(x.tr.PacketIns, pi)
	if c.Pause {
		// The tracer goes on as if the agent resumed the packet at once.
		x.note(step, "packet-in to the controller, paused until it resumes (userdata %x, meter %d)", c.Userdata, c.MeterID)
		return
	}
	x.note(step, "packet-in to the controller (userdata %x, meter %d)", c.Userdata, c.MeterID)
}

// learn adds the flow the action describes, from the packet's fields now,
// to the tracer's tables (replacing one with the same match).
func (x *run) learn(step int, l *openflow.Learn) error {
	m, a := openflow.NewMatch(), openflow.NewActions()
	for _, s := range l.Specs() {
		var v uint64
		if s.Value != nil {
			for _, c := range s.Value {
				v = v<<8 | uint64(c)
			}
		} else {
			var err error
			if v, err = x.fs.readSub(s.Src); err != nil {
				return fmt.Errorf("learn: %w", err)
			}
		}
		val, mask := subfieldBytes(s.Dst, v)
		switch {
		case s.Match && s.Dst.Ofs == 0 && s.Dst.NBits == s.Dst.Field.Bits():
			m.Field(s.Dst.Field, val)
		case s.Match:
			m.FieldMasked(s.Dst.Field, val, mask)
		case s.Load:
			a.SetFieldMasked(s.Dst.Field, val, mask)
		default:
			return fmt.Errorf("learn output specs are not modelled")
		}
	}
	f := openflow.NewFlow(l.TableID, l.Priority).Cookie(l.Cookie).IdleTimeout(l.IdleTimeout).
		HardTimeout(l.HardTimeout).Match(m).Actions(a)
	if err := x.t.AddFlows(f); err != nil {
		return fmt.Errorf("learn: %w", err)
	}
	x.note(step, "learned table=%d, %s", l.TableID, f)
	return nil
}

// subfieldBytes places v at the subfield's offset in a value and mask of
// the whole field's width.
func subfieldBytes(s openflow.Subfield, v uint64) (val, mask []byte) {
	n := int(s.Field.Bits() / 8)
	val, mask = make([]byte, n), make([]byte, n)
	for i := uint16(0); i < s.NBits; i++ {
		setBit(mask, s.Ofs+i, 1)
		setBit(val, s.Ofs+i, byte(v>>i&1))
	}
	return val, mask
}
