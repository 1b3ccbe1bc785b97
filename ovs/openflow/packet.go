package openflow

import (
	"fmt"
	"strings"
)

// PacketOut is an OpenFlow 1.5 packet-out: the packet enters the given
// actions as if received on InPort (carried as a match, OF1.5 style).
type PacketOut struct {
	InPort   uint32 // PortController when the packet has no ingress port
	BufferID uint32 // NoBuffer unless the switch buffered the packet
	Actions  *Actions
	Data     []byte
	acts     []byte // decoded actions
}

// NewPacketOut sends data into actions from inPort.
func NewPacketOut(inPort uint32, data []byte, a *Actions) *PacketOut {
	return &PacketOut{InPort: inPort, BufferID: NoBuffer, Actions: a, Data: data}
}

func (*PacketOut) MsgType() uint8 { return TypePacketOut }

func (p *PacketOut) actionBytes() []byte {
	if p.Actions != nil {
		return p.Actions.apply
	}
	return p.acts
}

func (p *PacketOut) appendBody(b []byte) []byte {
	acts := p.actionBytes()
	b = u32(b, p.BufferID)
	b = u16(b, uint16(len(acts)))
	b = zeros(b, 2)
	b = appendOFPMatch(b, NewMatch().InPort(p.InPort).Bytes())
	b = append(b, acts...)
	return append(b, p.Data...)
}

func decodePacketOut(body []byte) (*PacketOut, error) {
	if len(body) < 8 {
		return nil, errShort("packet_out", 8, len(body))
	}
	p := &PacketOut{BufferID: be.Uint32(body), InPort: PortController}
	alen := int(be.Uint16(body[4:]))
	oxm, rest, err := parseOFPMatch(body[8:])
	if err != nil {
		return nil, fmt.Errorf("packet_out: %w", err)
	}
	es, err := parseOXM(oxm)
	if err != nil {
		return nil, fmt.Errorf("packet_out match: %w", err)
	}
	if v, _, ok := matchView(es).uint(FieldInPort); ok {
		p.InPort = uint32(v)
	}
	if alen > len(rest) {
		return nil, fmt.Errorf("packet_out actions %d (have %d): %w", alen, len(rest), ErrShort)
	}
	p.acts = clone(rest[:alen])
	if _, err := DecodeActions(p.acts); err != nil {
		return nil, fmt.Errorf("packet_out actions: %w", err)
	}
	p.Data = clone(rest[alen:])
	return p, nil
}

// String describes the packet-out like ovs-ofctl's packet-out arguments.
func (p *PacketOut) String() string {
	acts, err := DecodeActions(p.actionBytes())
	s := "in_port=" + formatPort(p.InPort) + " actions="
	if err != nil {
		return s + "<" + err.Error() + ">"
	}
	return s + FormatActions(acts) + fmt.Sprintf(" data_len=%d", len(p.Data))
}

// NXT_PACKET_IN2 property types.
const (
	pinPacket       uint16 = 0
	pinFullLen      uint16 = 1
	pinBufferID     uint16 = 2
	pinTableID      uint16 = 3
	pinCookie       uint16 = 4
	pinReason       uint16 = 5
	pinMetadata     uint16 = 6
	pinUserdata     uint16 = 7
	pinContinuation uint16 = 8
)

// NoCookie is the cookie of a packet-in that no flow produced (OVS leaves
// the property out, e.g. for packets injected with packet-out).
const NoCookie = ^uint64(0)

// PacketIn is a decoded NXT_PACKET_IN2.
type PacketIn struct {
	Packet       []byte
	FullLen      uint32
	BufferID     uint32
	TableID      uint8
	Cookie       uint64
	Reason       uint8
	Metadata     []byte // OXM/NXM TLVs: in_port, registers, ct state, tunnel metadata ...
	Userdata     []byte
	Continuation []byte // opaque; present when the controller action paused
	metadata     matchView
}

func (*PacketIn) MsgType() uint8 { return TypeExperimenter }

func (p *PacketIn) appendBody(b []byte) []byte {
	b = u32(b, nxVendor)
	b = u32(b, nxtPacketIn2)
	b = appendProp(b, pinPacket, p.Packet)
	if p.FullLen != 0 {
		b = appendProp(b, pinFullLen, be.AppendUint32(nil, p.FullLen))
	}
	if p.BufferID != 0 && p.BufferID != NoBuffer {
		b = appendProp(b, pinBufferID, be.AppendUint32(nil, p.BufferID))
	}
	b = appendProp(b, pinTableID, []byte{p.TableID})
	if p.Cookie != NoCookie {
		b = appendProp(b, pinCookie, be.AppendUint64(make([]byte, 4), p.Cookie))
	}
	b = appendProp(b, pinReason, []byte{p.Reason})
	b = appendProp(b, pinMetadata, p.Metadata)
	if len(p.Userdata) > 0 {
		b = appendProp(b, pinUserdata, p.Userdata)
	}
	if len(p.Continuation) > 0 {
		b = appendProp(b, pinContinuation, p.Continuation)
	}
	return b
}

func decodePacketIn2(data []byte) (*PacketIn, error) {
	props, err := parseProps(data)
	if err != nil {
		return nil, fmt.Errorf("packet_in2: %w", err)
	}
	p := &PacketIn{BufferID: NoBuffer, Cookie: NoCookie}
	for _, pr := range props {
		d := pr.data
		switch pr.typ {
		case pinPacket:
			p.Packet = clone(d)
		case pinFullLen:
			if len(d) < 4 {
				return nil, errShort("packet_in2 full_len", 4, len(d))
			}
			p.FullLen = be.Uint32(d)
		case pinBufferID:
			if len(d) < 4 {
				return nil, errShort("packet_in2 buffer_id", 4, len(d))
			}
			p.BufferID = be.Uint32(d)
		case pinTableID:
			if len(d) < 1 {
				return nil, errShort("packet_in2 table_id", 1, 0)
			}
			p.TableID = d[0]
		case pinCookie:
			if len(d) == 12 {
				d = d[4:]
			}
			if len(d) < 8 {
				return nil, errShort("packet_in2 cookie", 8, len(d))
			}
			p.Cookie = be.Uint64(d)
		case pinReason:
			if len(d) < 1 {
				return nil, errShort("packet_in2 reason", 1, 0)
			}
			p.Reason = d[0]
		case pinMetadata:
			p.Metadata = clone(d)
			es, err := parseOXM(p.Metadata)
			if err != nil {
				return nil, fmt.Errorf("packet_in2 metadata: %w", err)
			}
			p.metadata = es
		case pinUserdata:
			p.Userdata = clone(d)
		case pinContinuation:
			p.Continuation = clone(d)
		}
	}
	return p, nil
}

// Field returns the value (and mask, usually nil) of a metadata field.
func (p *PacketIn) Field(f *Field) (v, mask []byte, ok bool) { return p.metadata.get(f) }

// Reg returns register reg<i> from the metadata (0 when absent: OVS omits
// zero registers, and sends pairs of registers as 64-bit xregs).
func (p *PacketIn) Reg(i int) uint32 {
	val, _ := p.metadata.regs()
	return val[i]
}

// InPort returns the ingress port from the metadata.
func (p *PacketIn) InPort() uint32 {
	if v, _, ok := p.metadata.uint(FieldInPort); ok {
		return uint32(v)
	}
	v, _, _ := p.metadata.uint(FieldInPort16)
	return port32(uint16(v))
}

// CTState returns the conntrack state bits from the metadata.
func (p *PacketIn) CTState() uint32 {
	v, _, _ := p.metadata.uint(FieldCTState)
	return uint32(v)
}

// String summarises the packet-in in ovs-ofctl style.
func (p *PacketIn) String() string {
	var sb strings.Builder
	fmt.Fprintf(&sb, "NXT_PACKET_IN2 total_len=%d table_id=%d cookie=0x%x reason=%s", len(p.Packet), p.TableID, p.Cookie, reasonName(p.Reason))
	if m := formatMatch(p.metadata, DefaultPriority); m != "" {
		sb.WriteString(" " + m)
	}
	if len(p.Userdata) > 0 {
		sb.WriteString(" userdata=" + formatHexArg(p.Userdata))
	}
	if len(p.Continuation) > 0 {
		sb.WriteString(" continuation.len=" + fmt.Sprint(len(p.Continuation)))
	}
	return sb.String()
}

// Resume is NXT_RESUME: it continues the pipeline that a paused controller
// action (Controller.Pause) stopped, from the action after it, with every
// register, the conntrack state and the action set as they were. It
// carries the packet-in back as OVS sent it (the continuation is opaque).
type Resume struct{ PacketIn *PacketIn }

func (*Resume) MsgType() uint8 { return TypeExperimenter }

func (r *Resume) appendBody(b []byte) []byte {
	start := len(b)
	b = r.PacketIn.appendBody(b)
	be.PutUint32(b[start+4:], nxtResume)
	return b
}
