package openflow

import (
	"fmt"
	"strconv"
	"strings"
)

// Flow-mod flags (OFPFF_*).
const (
	FlagSendFlowRem  uint16 = 1 << 0
	FlagCheckOverlap uint16 = 1 << 1
	FlagResetCounts  uint16 = 1 << 2
	FlagNoPktCounts  uint16 = 1 << 3
	FlagNoBytCounts  uint16 = 1 << 4
)

// DefaultPriority is OpenFlow's default flow priority (not printed by ovs-ofctl).
const DefaultPriority uint16 = 0x8000

// Flow is one flow entry: table, priority, cookie, timeouts, flags, match and
// instructions. It keeps the match and instructions in their wire encoding in
// one exact-size byte slice, so a cached flow costs about 48 bytes plus its
// encoded size. Build one with NewFlow and the chained setters; a Flow is
// immutable once handed to a connection.
type Flow struct {
	cookie   uint64
	buf      []byte // OXM TLVs (mlen bytes) followed by instructions
	mlen     uint32
	priority uint16
	idle     uint16
	hard     uint16
	flags    uint16
	table    uint8
}

// NewFlow starts a flow in table with priority.
func NewFlow(table uint8, priority uint16) *Flow {
	return &Flow{table: table, priority: priority}
}

// Cookie sets the flow cookie.
func (f *Flow) Cookie(c uint64) *Flow { f.cookie = c; return f }

// IdleTimeout sets the idle timeout in seconds.
func (f *Flow) IdleTimeout(s uint16) *Flow { f.idle = s; return f }

// HardTimeout sets the hard timeout in seconds.
func (f *Flow) HardTimeout(s uint16) *Flow { f.hard = s; return f }

// Flags sets OFPFF_* flags (FlagSendFlowRem, FlagResetCounts, ...).
func (f *Flow) Flags(fl uint16) *Flow { f.flags = fl; return f }

// Match sets the match, copying m's bytes.
func (f *Flow) Match(m *Match) *Flow {
	ins := f.buf[f.mlen:]
	buf := make([]byte, 0, len(m.b)+len(ins))
	buf = append(append(buf, m.b...), ins...)
	f.buf, f.mlen = buf, uint32(len(m.b))
	return f
}

// Actions sets the instructions, copying a's encoding.
func (f *Flow) Actions(a *Actions) *Flow {
	n := a.instructionsLen()
	buf := make([]byte, 0, int(f.mlen)+n)
	buf = append(buf, f.buf[:f.mlen]...)
	f.buf = a.appendInstructions(buf)
	return f
}

// TableID returns the flow's table.
func (f *Flow) TableID() uint8 { return f.table }

// Priority returns the flow's priority.
func (f *Flow) Priority() uint16 { return f.priority }

// CookieValue returns the flow's cookie.
func (f *Flow) CookieValue() uint64 { return f.cookie }

// MatchBytes returns the encoded OXM TLVs of the match.
func (f *Flow) MatchBytes() []byte { return f.buf[:f.mlen] }

// InstructionBytes returns the encoded instructions.
func (f *Flow) InstructionBytes() []byte { return f.buf[f.mlen:] }

// Key identifies a flow the way OpenFlow's strict commands do: table,
// priority and match.
func (f *Flow) Key() string {
	return strconv.Itoa(int(f.table)) + "/" + strconv.Itoa(int(f.priority)) + "/" + string(f.MatchBytes())
}

// MatchString renders the match with priority as ovs-ofctl does.
func (f *Flow) MatchString() string {
	es, err := parseOXM(f.MatchBytes())
	if err != nil {
		return "<bad match: " + err.Error() + ">"
	}
	return formatMatch(es, f.priority)
}

// ActionsString renders the instructions as ovs-ofctl does after "actions=".
func (f *Flow) ActionsString() string {
	acts, err := DecodeInstructions(f.InstructionBytes())
	if err != nil {
		return "<bad actions: " + err.Error() + ">"
	}
	return FormatActions(acts)
}

// String renders the flow exactly as
// "ovs-ofctl -O OpenFlow15 dump-flows --no-stats" prints it (without the
// leading space).
func (f *Flow) String() string {
	var sb strings.Builder
	if f.cookie != 0 {
		sb.WriteString("cookie=0x" + strconv.FormatUint(f.cookie, 16) + ", ")
	}
	if f.table != 0 {
		sb.WriteString("table=" + strconv.Itoa(int(f.table)) + ", ")
	}
	if f.idle != 0 {
		sb.WriteString("idle_timeout=" + strconv.Itoa(int(f.idle)) + ", ")
	}
	if f.hard != 0 {
		sb.WriteString("hard_timeout=" + strconv.Itoa(int(f.hard)) + ", ")
	}
	sb.WriteString(formatFlowFlags(f.flags))
	if m := f.MatchString(); m != "" {
		sb.WriteString(m)
		sb.WriteByte(' ')
	}
	sb.WriteString("actions=")
	sb.WriteString(f.ActionsString())
	return sb.String()
}

func formatFlowFlags(fl uint16) string {
	var sb strings.Builder
	for _, x := range []struct {
		bit  uint16
		name string
	}{{FlagSendFlowRem, "send_flow_rem "}, {FlagCheckOverlap, "check_overlap "}, {FlagResetCounts, "reset_counts "},
		{FlagNoPktCounts, "no_packet_counts "}, {FlagNoBytCounts, "no_byte_counts "}} {
		if fl&x.bit != 0 {
			sb.WriteString(x.name)
		}
	}
	return sb.String()
}

// Flow-mod commands.
const (
	FlowAdd          uint8 = 0
	FlowModify       uint8 = 1
	FlowModifyStrict uint8 = 2
	FlowDelete       uint8 = 3
	FlowDeleteStrict uint8 = 4
)

var commandNames = [...]string{"add", "modify", "modify_strict", "delete", "delete_strict"}

// FlowMod is an OFPT_FLOW_MOD message.
type FlowMod struct {
	Command    uint8
	Flow       *Flow
	CookieMask uint64 // for modify/delete: which cookie bits must match
	OutPort    uint32 // delete filter (PortAny: none)
	OutGroup   uint32 // delete filter (GroupAny: none)
	BufferID   uint32
}

// AddFlow returns a flow-mod that adds (or replaces) f.
func AddFlow(f *Flow) *FlowMod {
	return &FlowMod{Command: FlowAdd, Flow: f, OutPort: PortAny, OutGroup: GroupAny, BufferID: NoBuffer}
}

// ModifyFlowStrict replaces the actions of the flow with f's table, priority and match.
func ModifyFlowStrict(f *Flow) *FlowMod {
	fm := AddFlow(f)
	fm.Command = FlowModifyStrict
	return fm
}

// ModifyFlows replaces the actions of every flow in f's table that f's match
// covers (and whose cookie matches under cookieMask).
func ModifyFlows(f *Flow, cookieMask uint64) *FlowMod {
	fm := AddFlow(f)
	fm.Command, fm.CookieMask = FlowModify, cookieMask
	return fm
}

// DeleteFlowStrict deletes exactly the flow with f's table, priority and match.
func DeleteFlowStrict(f *Flow) *FlowMod {
	fm := AddFlow(f)
	fm.Command = FlowDeleteStrict
	return fm
}

// DeleteFlows deletes the flows in table (TableAll: every table) that match
// covers (nil: all) and whose cookie equals cookie under cookieMask.
func DeleteFlows(table uint8, m *Match, cookie, cookieMask uint64) *FlowMod {
	f := NewFlow(table, 0).Cookie(cookie)
	if m != nil {
		f.Match(m)
	}
	fm := AddFlow(f)
	fm.Command, fm.CookieMask = FlowDelete, cookieMask
	return fm
}

// MsgType implements Message.
func (fm *FlowMod) MsgType() uint8 { return TypeFlowMod }

// flowModLen is the encoded length of a flow-mod of f, header included.
func (f *Flow) flowModLen() int {
	return headerLen + 40 + (4+int(f.mlen)+7)&^7 + len(f.InstructionBytes())
}

func appendOFPMatch(b []byte, oxm []byte) []byte {
	start := len(b)
	b = u16(b, 1) // OFPMT_OXM
	b = u16(b, uint16(4+len(oxm)))
	b = append(b, oxm...)
	return pad8(b, start)
}

func (fm *FlowMod) appendBody(b []byte) []byte {
	f := fm.Flow
	b = u64(b, f.cookie)
	b = u64(b, fm.CookieMask)
	b = append(b, f.table, fm.Command)
	b = u16(b, f.idle)
	b = u16(b, f.hard)
	b = u16(b, f.priority)
	b = u32(b, fm.BufferID)
	b = u32(b, fm.OutPort)
	b = u32(b, fm.OutGroup)
	b = u16(b, f.flags)
	b = u16(b, 0) // importance
	b = appendOFPMatch(b, f.MatchBytes())
	return append(b, f.InstructionBytes()...)
}

// parseOFPMatch reads an ofp_match (type OXM) and returns the TLVs and the
// rest of b after the padded match.
func parseOFPMatch(b []byte) (oxm, rest []byte, err error) {
	if len(b) < 4 {
		return nil, nil, errShort("ofp_match", 4, len(b))
	}
	if t := be.Uint16(b); t != 1 {
		return nil, nil, fmt.Errorf("ofp_match type %d, want OXM (1)", t)
	}
	n := int(be.Uint16(b[2:]))
	padded := (n + 7) &^ 7
	if n < 4 || padded > len(b) {
		return nil, nil, fmt.Errorf("ofp_match length %d (have %d): %w", n, len(b), ErrShort)
	}
	return b[4:n], b[padded:], nil
}

func decodeFlowMod(body []byte) (*FlowMod, error) {
	if len(body) < 40 {
		return nil, errShort("flow_mod", 40, len(body))
	}
	f := &Flow{
		cookie: be.Uint64(body), table: body[16], idle: be.Uint16(body[18:]),
		hard: be.Uint16(body[20:]), priority: be.Uint16(body[22:]), flags: be.Uint16(body[36:]),
	}
	fm := &FlowMod{
		Command: body[17], Flow: f, CookieMask: be.Uint64(body[8:]),
		BufferID: be.Uint32(body[24:]), OutPort: be.Uint32(body[28:]), OutGroup: be.Uint32(body[32:]),
	}
	oxm, rest, err := parseOFPMatch(body[40:])
	if err != nil {
		return nil, fmt.Errorf("flow_mod: %w", err)
	}
	if _, err := parseOXM(oxm); err != nil {
		return nil, fmt.Errorf("flow_mod match: %w", err)
	}
	if _, err := DecodeInstructions(rest); err != nil {
		return nil, fmt.Errorf("flow_mod instructions: %w", err)
	}
	f.buf = append(append(make([]byte, 0, len(oxm)+len(rest)), oxm...), rest...)
	f.mlen = uint32(len(oxm))
	return fm, nil
}

// String describes the flow-mod for logs and errors, e.g.
// "add table=1, priority=200,tcp actions=drop".
func (fm *FlowMod) String() string {
	name := "command_" + strconv.Itoa(int(fm.Command))
	if int(fm.Command) < len(commandNames) {
		name = commandNames[fm.Command]
	}
	f := fm.Flow
	if fm.Command == FlowDelete || fm.Command == FlowDeleteStrict {
		s := name + " table=" + strconv.Itoa(int(f.table))
		sep := " "
		if fm.Command == FlowDeleteStrict {
			s += " priority=" + strconv.Itoa(int(f.priority))
			sep = ","
		}
		if es, err := parseOXM(f.MatchBytes()); err == nil {
			if m := formatMatch(es, DefaultPriority); m != "" {
				s += sep + m
			}
		}
		if fm.CookieMask != 0 {
			s += fmt.Sprintf(" cookie=0x%x/0x%x", f.cookie, fm.CookieMask)
		}
		return s
	}
	s := f.String()
	if f.table == 0 {
		s = "table=0, " + s
	}
	return name + " " + s
}
