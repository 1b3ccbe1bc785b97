package openflow

import (
	"fmt"
	"net"
	"net/netip"
	"strconv"
)

// OpenFlow 1.5 action types.
const (
	atOutput     uint16 = 0
	atPushVLAN   uint16 = 17
	atPopVLAN    uint16 = 18
	atGroup      uint16 = 22
	atDecNwTTL   uint16 = 24
	atSetField   uint16 = 25
	atCopyField  uint16 = 28
	atMeter      uint16 = 29
	atExperiment uint16 = 0xffff
)

// Nicira action subtypes.
const (
	nxastResubmit      uint16 = 1
	nxastRegMove       uint16 = 6
	nxastRegLoad       uint16 = 7
	nxastNote          uint16 = 8
	nxastResubmitTable uint16 = 14
	nxastOutputReg     uint16 = 15
	nxastLearn         uint16 = 16
	nxastDecTTL        uint16 = 18
	nxastController    uint16 = 20
	nxastOutputReg2    uint16 = 32
	nxastRegLoad2      uint16 = 33
	nxastConjunction   uint16 = 34
	nxastCT            uint16 = 35
	nxastNAT           uint16 = 36
	nxastController2   uint16 = 37
	nxastCTClear       uint16 = 43
	nxastResubmitCT    uint16 = 44
)

// Action is one decoded OpenFlow action or instruction. String returns the
// text ovs-ofctl prints for it; appendTo re-encodes it.
type Action interface {
	String() string
	appendTo(b []byte) []byte
}

// Actions builds the instructions of a flow: an apply-actions list plus the
// optional clear_actions, write_metadata and goto_table instructions.
// The zero value is an empty list; NewActions preallocates.
type Actions struct {
	apply     []byte
	clear     bool
	writeMeta bool
	meta      [2]uint64
	gotoTable uint16 // table+1; 0: no goto_table
}

// NewActions returns an empty action list (a flow with no actions drops).
func NewActions() *Actions { return &Actions{apply: make([]byte, 0, 64)} }

// Reset empties the list for reuse.
func (a *Actions) Reset() *Actions {
	a.apply = a.apply[:0]
	a.clear, a.writeMeta, a.gotoTable = false, false, 0
	return a
}

// Append adds already built or decoded actions.
func (a *Actions) Append(acts ...Action) *Actions {
	for _, x := range acts {
		switch v := x.(type) {
		case GotoTable:
			a.gotoTable = uint16(v) + 1
		case ClearActions:
			a.clear = true
		case WriteMetadata:
			a.writeMeta, a.meta = true, [2]uint64{v.Value, v.Mask}
		default:
			a.apply = x.appendTo(a.apply)
		}
	}
	return a
}

// Output sends the packet to port (a number or one of the Port* constants).
func (a *Actions) Output(port uint32) *Actions {
	a.apply = Output{Port: port}.appendTo(a.apply)
	return a
}

// OutputInPort sends the packet back where it came from.
func (a *Actions) OutputInPort() *Actions { return a.Output(PortInPort) }

// OutputLocal sends the packet to the bridge's local port.
func (a *Actions) OutputLocal() *Actions { return a.Output(PortLocal) }

// OutputController sends the packet to the controller with OFPAT_OUTPUT.
func (a *Actions) OutputController(maxLen uint16) *Actions {
	a.apply = Output{Port: PortController, MaxLen: maxLen}.appendTo(a.apply)
	return a
}

// OutputReg outputs to the port number held in a subfield (NXAST_OUTPUT_REG2).
func (a *Actions) OutputReg(src Subfield) *Actions {
	a.apply = OutputReg{Src: src}.appendTo(a.apply)
	return a
}

// Group sends the packet to a group.
func (a *Actions) Group(id uint32) *Actions {
	a.apply = Group(id).appendTo(a.apply)
	return a
}

// SetField sets field f to v (len(v) must be the field's length).
func (a *Actions) SetField(f *Field, v []byte) *Actions {
	a.apply = SetField{Field: f, Value: v}.appendTo(a.apply)
	return a
}

// SetFieldMasked sets the bits of f selected by mask to v (OF1.5 masked set_field).
func (a *Actions) SetFieldMasked(f *Field, v, mask []byte) *Actions {
	a.apply = SetField{Field: f, Value: v, Mask: mask}.appendTo(a.apply)
	return a
}

// SetFieldUint sets a field of up to 64 bits to v.
func (a *Actions) SetFieldUint(f *Field, v uint64) *Actions {
	var buf [16]byte
	n := int(f.bytes)
	putUintN(buf[:n], v)
	return a.SetField(f, buf[:n])
}

// Load writes v into a subfield (set_field with a mask), the OF1.5 form of
// load:v->NXM_NX_REG0[lo..hi].
func (a *Actions) Load(dst Subfield, v uint64) *Actions {
	var val, mask [16]byte
	n := int(dst.Field.bytes)
	setBits(val[:n], dst.Ofs, dst.NBits, v)
	setBits(mask[:n], dst.Ofs, dst.NBits, ^uint64(0))
	return a.SetFieldMasked(dst.Field, val[:n], mask[:n])
}

// SetReg sets register reg<i> to v.
func (a *Actions) SetReg(i int, v uint32) *Actions { return a.SetFieldUint(Reg(i), uint64(v)) }

// SetEthSrc rewrites the Ethernet source.
func (a *Actions) SetEthSrc(mac net.HardwareAddr) *Actions { return a.SetField(FieldEthSrc, mac) }

// SetEthDst rewrites the Ethernet destination.
func (a *Actions) SetEthDst(mac net.HardwareAddr) *Actions { return a.SetField(FieldEthDst, mac) }

// SetIPSrc rewrites the IPv4 source.
func (a *Actions) SetIPSrc(ip netip.Addr) *Actions {
	v := ip.As4()
	return a.SetField(FieldIPSrc, v[:])
}

// SetIPDst rewrites the IPv4 destination.
func (a *Actions) SetIPDst(ip netip.Addr) *Actions {
	v := ip.As4()
	return a.SetField(FieldIPDst, v[:])
}

// SetTunDst sets the tunnel destination for a flow-based tunnel port.
func (a *Actions) SetTunDst(ip netip.Addr) *Actions {
	v := ip.As4()
	return a.SetField(FieldTunDst, v[:])
}

// SetTunID sets the tunnel key (VNI).
func (a *Actions) SetTunID(id uint64) *Actions { return a.SetFieldUint(FieldTunID, id) }

// SetVlanVID sets the VLAN id (OFPVID_PRESENT is added).
func (a *Actions) SetVlanVID(vid uint16) *Actions {
	return a.SetFieldUint(FieldVlanVID, uint64(vid|0x1000))
}

// Move copies src into dst (OF1.5 copy_field, printed as move:).
func (a *Actions) Move(src, dst Subfield) *Actions {
	a.apply = Move{Src: src, Dst: dst}.appendTo(a.apply)
	return a
}

// Resubmit re-searches table (TableAll for the current one) as if the packet
// came in on port (PortInPort for unchanged).
func (a *Actions) Resubmit(port uint32, table uint8) *Actions {
	a.apply = Resubmit{Port: port, Table: table}.appendTo(a.apply)
	return a
}

// ResubmitCT is Resubmit using the conntrack original-direction tuple
// (NXAST_RESUBMIT_TABLE_CT); the flow must match a valid ct_state.
func (a *Actions) ResubmitCT(port uint32, table uint8) *Actions {
	a.apply = Resubmit{Port: port, Table: table, CT: true}.appendTo(a.apply)
	return a
}

// GotoTable continues processing in table t (an instruction, always last).
func (a *Actions) GotoTable(t uint8) *Actions { a.gotoTable = uint16(t) + 1; return a }

// ClearActions clears the action set (an instruction).
func (a *Actions) ClearActions() *Actions { a.clear = true; return a }

// WriteMetadata writes the metadata field under mask (an instruction).
func (a *Actions) WriteMetadata(v, mask uint64) *Actions {
	a.writeMeta, a.meta = true, [2]uint64{v, mask}
	return a
}

// Conjunction makes the flow clause k (1-based) of n of conjunction id.
func (a *Actions) Conjunction(id uint32, k, n uint8) *Actions {
	a.apply = Conjunction{ID: id, Clause: k, NClauses: n}.appendTo(a.apply)
	return a
}

// DecTTL decrements the IP TTL (OFPAT_DEC_NW_TTL).
func (a *Actions) DecTTL() *Actions { a.apply = DecTTL{}.appendTo(a.apply); return a }

// PushVLAN pushes a VLAN header with the given TPID.
func (a *Actions) PushVLAN(ethertype uint16) *Actions {
	a.apply = PushVLAN(ethertype).appendTo(a.apply)
	return a
}

// PopVLAN pops the outer VLAN header.
func (a *Actions) PopVLAN() *Actions { a.apply = PopVLAN{}.appendTo(a.apply); return a }

// Note adds an NXAST_NOTE with opaque data (OVS pads it with zeros).
func (a *Actions) Note(data []byte) *Actions { a.apply = Note(data).appendTo(a.apply); return a }

// Meter applies meter id (OF1.5 meter action).
func (a *Actions) Meter(id uint32) *Actions { a.apply = Meter(id).appendTo(a.apply); return a }

// Controller sends the packet to the controller with NXAST_CONTROLLER2.
func (a *Actions) Controller(c Controller) *Actions { a.apply = c.appendTo(a.apply); return a }

// CT runs the packet through conntrack.
func (a *Actions) CT(ct *CT) *Actions { a.apply = ct.appendTo(a.apply); return a }

// Learn adds a learn action.
func (a *Actions) Learn(l *Learn) *Actions { a.apply = l.appendTo(a.apply); return a }

// CTClear clears the conntrack state of the packet.
func (a *Actions) CTClear() *Actions { a.apply = CTClear{}.appendTo(a.apply); return a }

// Instruction types.
const (
	itGotoTable     uint16 = 1
	itWriteMetadata uint16 = 2
	itWriteActions  uint16 = 3
	itApplyActions  uint16 = 4
	itClearActions  uint16 = 5
	itMeter         uint16 = 6
)

// appendInstructions encodes the instruction list in the order OVS keeps it.
func (a *Actions) appendInstructions(b []byte) []byte {
	if len(a.apply) > 0 {
		b = u16(b, itApplyActions)
		b = u16(b, uint16(8+len(a.apply)))
		b = zeros(b, 4)
		b = append(b, a.apply...)
	}
	if a.clear {
		b = append(b, 0, byte(itClearActions), 0, 8, 0, 0, 0, 0)
	}
	if a.writeMeta {
		b = append(b, 0, byte(itWriteMetadata), 0, 24, 0, 0, 0, 0)
		b = u64(b, a.meta[0])
		b = u64(b, a.meta[1])
	}
	if a.gotoTable > 0 {
		b = append(b, 0, byte(itGotoTable), 0, 8, byte(a.gotoTable-1), 0, 0, 0)
	}
	return b
}

func (a *Actions) instructionsLen() int {
	n := 0
	if len(a.apply) > 0 {
		n += 8 + len(a.apply)
	}
	if a.clear {
		n += 8
	}
	if a.writeMeta {
		n += 24
	}
	if a.gotoTable > 0 {
		n += 8
	}
	return n
}

// String renders the actions as ovs-ofctl prints them after "actions=".
func (a *Actions) String() string {
	acts, err := DecodeInstructions(a.appendInstructions(nil))
	if err != nil {
		return "<bad actions: " + err.Error() + ">"
	}
	return FormatActions(acts)
}

func putUintN(b []byte, v uint64) {
	for i := len(b) - 1; i >= 0 && i >= len(b)-8; i-- {
		b[i] = byte(v)
		v >>= 8
	}
}

// setBits ORs the low nbits of v into b (big-endian) at bit offset ofs from
// the least significant end.
func setBits(b []byte, ofs, nbits uint16, v uint64) {
	for i := uint16(0); i < nbits && i < 64; i++ {
		if v&(1<<i) == 0 {
			continue
		}
		bit := ofs + i
		idx := len(b) - 1 - int(bit/8)
		if idx >= 0 {
			b[idx] |= 1 << (bit % 8)
		}
	}
}

func appendNXHeader(b []byte, subtype uint16) []byte {
	b = u16(b, atExperiment)
	b = u16(b, 0) // length, fixed by finishAction
	b = u32(b, nxVendor)
	return u16(b, subtype)
}

// finishAction pads the action that starts at b[start:] to 8 bytes and
// stores its length.
func finishAction(b []byte, start int) []byte {
	b = pad8(b, start)
	be.PutUint16(b[start+2:], uint16(len(b)-start))
	return b
}

// Output is OFPAT_OUTPUT.
type Output struct {
	Port   uint32
	MaxLen uint16
}

func (o Output) appendTo(b []byte) []byte {
	b = append(b, 0, 0, 0, 16)
	b = u32(b, o.Port)
	b = u16(b, o.MaxLen)
	return zeros(b, 6)
}

func (o Output) String() string {
	s := formatPort(o.Port)
	if o.Port < PortMax {
		s = "output:" + s
	}
	if o.Port == PortController {
		s += ":" + strconv.Itoa(int(o.MaxLen))
	}
	return s
}

// OutputReg is NXAST_OUTPUT_REG2.
type OutputReg struct {
	Src    Subfield
	MaxLen uint16
}

func (o OutputReg) appendTo(b []byte) []byte {
	start := len(b)
	b = appendNXHeader(b, nxastOutputReg2)
	b = u16(b, o.Src.ofsNBits())
	b = u16(b, o.MaxLen)
	b = appendSubHeader(b, o.Src.Field)
	return finishAction(b, start)
}

func (o OutputReg) String() string { return "output:" + o.Src.String() }

// Group is OFPAT_GROUP.
type Group uint32

func (g Group) appendTo(b []byte) []byte {
	b = append(b, 0, byte(atGroup), 0, 8)
	return u32(b, uint32(g))
}

func (g Group) String() string { return "group:" + strconv.FormatUint(uint64(g), 10) }

// SetField is the OF1.5 set_field action, optionally masked.
type SetField struct {
	Field *Field
	Value []byte
	Mask  []byte // nil: whole field
}

func (s SetField) appendTo(b []byte) []byte {
	start := len(b)
	b = append(b, 0, byte(atSetField), 0, 0)
	if s.Mask == nil || allOnes(s.Mask) {
		b = u32(b, s.Field.oxm|uint32(len(s.Value)))
		b = append(b, s.Value...)
	} else {
		b = u32(b, s.Field.oxm|1<<8|uint32(2*len(s.Value)))
		for i := range s.Value {
			b = append(b, s.Value[i]&s.Mask[i])
		}
		b = append(b, s.Mask...)
	}
	return finishAction(b, start)
}

func (s SetField) String() string {
	return "set_field:" + formatValue(s.Field, s.Value, s.Mask) + "->" + s.Field.name
}

// Move is OF1.5 copy_field (decoded also from NXAST_REG_MOVE).
type Move struct{ Src, Dst Subfield }

func (m Move) appendTo(b []byte) []byte {
	start := len(b)
	b = append(b, 0, byte(atCopyField), 0, 0)
	b = u16(b, m.Dst.NBits)
	b = u16(b, m.Src.Ofs)
	b = u16(b, m.Dst.Ofs)
	b = zeros(b, 2)
	b = appendSubHeader(b, m.Src.Field)
	b = appendSubHeader(b, m.Dst.Field)
	return finishAction(b, start)
}

func (m Move) String() string { return "move:" + m.Src.String() + "->" + m.Dst.String() }

// Resubmit is NXAST_RESUBMIT_TABLE (or _CT).
type Resubmit struct {
	Port  uint32 // PortInPort: unchanged
	Table uint8  // TableAll: current table
	CT    bool
}

func (r Resubmit) appendTo(b []byte) []byte {
	sub := nxastResubmitTable
	if r.CT {
		sub = nxastResubmitCT
	}
	start := len(b)
	b = appendNXHeader(b, sub)
	b = u16(b, port16(r.Port))
	b = append(b, r.Table)
	return finishAction(b, start)
}

func (r Resubmit) String() string {
	port := port32(port16(r.Port))
	if port != PortInPort && r.Table == TableAll && !r.CT {
		return "resubmit:" + formatPort(port)
	}
	s := "resubmit("
	if port != PortInPort {
		s += formatPort(port)
	}
	s += ","
	if r.Table != TableAll {
		s += strconv.Itoa(int(r.Table))
	}
	if r.CT {
		s += ",ct"
	}
	return s + ")"
}

// port16 converts an OF1.5 port number to the 16-bit form Nicira actions use.
func port16(p uint32) uint16 {
	if p >= PortMax {
		return uint16(p - PortMax + 0xff00)
	}
	return uint16(p)
}

func port32(p uint16) uint32 {
	if p >= 0xff00 {
		return uint32(p) - 0xff00 + PortMax
	}
	return uint32(p)
}

// GotoTable is the goto_table instruction.
type GotoTable uint8

func (g GotoTable) appendTo(b []byte) []byte {
	return append(b, 0, byte(itGotoTable), 0, 8, byte(g), 0, 0, 0)
}
func (g GotoTable) String() string { return "goto_table:" + strconv.Itoa(int(g)) }

// ClearActions is the clear_actions instruction.
type ClearActions struct{}

func (ClearActions) appendTo(b []byte) []byte {
	return append(b, 0, byte(itClearActions), 0, 8, 0, 0, 0, 0)
}
func (ClearActions) String() string { return "clear_actions" }

// WriteMetadata is the write_metadata instruction.
type WriteMetadata struct{ Value, Mask uint64 }

func (w WriteMetadata) appendTo(b []byte) []byte {
	b = append(b, 0, byte(itWriteMetadata), 0, 24, 0, 0, 0, 0)
	b = u64(b, w.Value)
	return u64(b, w.Mask)
}

func (w WriteMetadata) String() string {
	s := "write_metadata:" + cHex(w.Value)
	if w.Mask != ^uint64(0) {
		s += "/" + cHex(w.Mask)
	}
	return s
}

// Conjunction is NXAST_CONJUNCTION; Clause is 1-based as in the text form.
type Conjunction struct {
	ID       uint32
	Clause   uint8
	NClauses uint8
}

func (c Conjunction) appendTo(b []byte) []byte {
	start := len(b)
	b = appendNXHeader(b, nxastConjunction)
	b = append(b, c.Clause-1, c.NClauses)
	b = u32(b, c.ID)
	return finishAction(b, start)
}

func (c Conjunction) String() string {
	return fmt.Sprintf("conjunction(%d,%d/%d)", c.ID, c.Clause, c.NClauses)
}

// DecTTL is OFPAT_DEC_NW_TTL.
type DecTTL struct{}

func (DecTTL) appendTo(b []byte) []byte { return append(b, 0, byte(atDecNwTTL), 0, 8, 0, 0, 0, 0) }
func (DecTTL) String() string           { return "dec_ttl" }

// PushVLAN is OFPAT_PUSH_VLAN with its TPID.
type PushVLAN uint16

func (p PushVLAN) appendTo(b []byte) []byte {
	return append(b, 0, byte(atPushVLAN), 0, 8, byte(p>>8), byte(p), 0, 0)
}
func (p PushVLAN) String() string { return "push_vlan:" + cHex(uint64(p)) }

// PopVLAN is OFPAT_POP_VLAN.
type PopVLAN struct{}

func (PopVLAN) appendTo(b []byte) []byte { return append(b, 0, byte(atPopVLAN), 0, 8, 0, 0, 0, 0) }
func (PopVLAN) String() string           { return "pop_vlan" }

// Note is NXAST_NOTE.
type Note []byte

func (n Note) appendTo(b []byte) []byte {
	start := len(b)
	b = appendNXHeader(b, nxastNote)
	b = append(b, n...)
	if len(b)-start < 16 {
		b = zeros(b, 16-(len(b)-start))
	}
	return finishAction(b, start)
}

func (n Note) String() string { return "note:" + formatHexArg(n) }

// formatHexArg is OVS's format_hex_arg: bytes as dotted hex pairs.
func formatHexArg(b []byte) string {
	s := make([]byte, 0, 3*len(b))
	for i, c := range b {
		if i > 0 {
			s = append(s, '.')
		}
		s = append(s, "0123456789abcdef"[c>>4], "0123456789abcdef"[c&15])
	}
	return string(s)
}

// Meter is the OF1.5 meter action.
type Meter uint32

func (m Meter) appendTo(b []byte) []byte {
	b = append(b, 0, byte(atMeter), 0, 8)
	return u32(b, uint32(m))
}
func (m Meter) String() string { return "meter:" + strconv.FormatUint(uint64(m), 10) }

// CTClear is NXAST_CT_CLEAR.
type CTClear struct{}

func (CTClear) appendTo(b []byte) []byte {
	start := len(b)
	return finishAction(appendNXHeader(b, nxastCTClear), start)
}
func (CTClear) String() string { return "ct_clear" }

// WriteActions is the write_actions instruction (decoded only).
type WriteActions []Action

func (w WriteActions) appendTo(b []byte) []byte {
	start := len(b)
	b = append(b, 0, byte(itWriteActions), 0, 0, 0, 0, 0, 0)
	for _, a := range w {
		b = a.appendTo(b)
	}
	be.PutUint16(b[start+2:], uint16(len(b)-start))
	return b
}

func (w WriteActions) String() string { return "write_actions(" + FormatActions(w) + ")" }

// RawAction is an action this package does not decode; it round-trips
// its bytes.
type RawAction []byte

func (r RawAction) appendTo(b []byte) []byte { return append(b, r...) }
func (r RawAction) String() string {
	if len(r) >= 10 && be.Uint16(r) == atExperiment {
		return fmt.Sprintf("experimenter(vendor=0x%x,subtype=%d)", be.Uint32(r[4:]), be.Uint16(r[8:]))
	}
	if len(r) >= 2 {
		return fmt.Sprintf("action(type=%d)", be.Uint16(r))
	}
	return "action(?)"
}
