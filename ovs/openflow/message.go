package openflow

import (
	"fmt"
)

// Message is an OpenFlow message body; the connection adds the header.
type Message interface {
	MsgType() uint8
	appendBody(b []byte) []byte
}

// AppendMessage appends m, with an OpenFlow 1.5 header carrying xid, to b.
// A message longer than MaxMessageLen is refused with an error wrapping
// ErrTooLarge, and b is returned as it was.
func AppendMessage(b []byte, m Message, xid uint32) ([]byte, error) {
	start := len(b)
	b = appendHeader(b, m.MsgType(), xid)
	b = m.appendBody(b)
	return finishMessage(b, start, m)
}

// Marshal encodes m with xid; see AppendMessage.
func Marshal(m Message, xid uint32) ([]byte, error) { return AppendMessage(nil, m, xid) }

// Unmarshal decodes one complete message. Unknown types decode as *Raw.
// It never panics on malformed input.
func Unmarshal(b []byte) (Header, Message, error) {
	h, err := ParseHeader(b)
	if err != nil {
		return h, nil, err
	}
	if int(h.Length) < headerLen || int(h.Length) > len(b) {
		return h, nil, fmt.Errorf("message length %d (have %d): %w", h.Length, len(b), ErrShort)
	}
	body := b[headerLen:h.Length]
	var m Message
	switch h.Type {
	case TypeHello:
		m, err = decodeHello(body)
	case TypeError:
		m, err = decodeErrorMsg(body)
	case TypeEchoRequest:
		m = &EchoRequest{Data: clone(body)}
	case TypeEchoReply:
		m = &EchoReply{Data: clone(body)}
	case TypeFeaturesRequest:
		m = &FeaturesRequest{}
	case TypeFeaturesReply:
		m, err = decodeFeaturesReply(body)
	case TypeSetConfig:
		if len(body) < 4 {
			return h, nil, errShort("set_config", 4, len(body))
		}
		m = &SetConfig{Flags: be.Uint16(body), MissSendLen: be.Uint16(body[2:])}
	case TypeBarrierRequest:
		m = &BarrierRequest{}
	case TypeBarrierReply:
		m = &BarrierReply{}
	case TypeFlowMod:
		m, err = decodeFlowMod(body)
	case TypeGroupMod:
		m, err = decodeGroupMod(body)
	case TypeMeterMod:
		m, err = decodeMeterMod(body)
	case TypePacketOut:
		m, err = decodePacketOut(body)
	case TypeBundleControl:
		m, err = decodeBundleControl(body)
	case TypeBundleAdd:
		m, err = decodeBundleAdd(body)
	case TypeMultipartRequest:
		m, err = decodeMultipartRequest(body)
	case TypeMultipartReply:
		m, err = decodeMultipartReply(body)
	case TypeExperimenter:
		m, err = decodeExperimenter(body)
	default:
		m = &Raw{Type: h.Type, Body: clone(body)}
	}
	if err != nil {
		return h, nil, fmt.Errorf("decode %s: %w", TypeName(h.Type), err)
	}
	return h, m, nil
}

func clone(b []byte) []byte { return append([]byte(nil), b...) }

// Raw is a message this package does not decode.
type Raw struct {
	Type uint8
	Body []byte
}

func (r *Raw) MsgType() uint8             { return r.Type }
func (r *Raw) appendBody(b []byte) []byte { return append(b, r.Body...) }

// Encoded is m encoded once, to be sent later (alone or in a bundle) as
// it is: a message built long before it is sent, among many others, takes
// its wire size in memory instead of its object graph (a select group of
// ten buckets: 1.3 kB against 2.7 kB). m is checked against the limit of
// its own type inside a bundle (MaxGroupModLen, MaxFlowModLen,
// MaxBundledLen), so an Encoded message that is too large is refused here.
// Describe decodes it again to name it in an error.
func Encoded(m Message) (*Raw, error) {
	b := m.appendBody(nil)
	if n, max := headerLen+len(b), maxLen(m, true); n > max {
		return nil, tooLarge(m, n, max)
	}
	// A copy: the buffer appendBody grew holds up to twice the bytes.
	return &Raw{Type: m.MsgType(), Body: clone(b)}, nil
}

// Decoded is the message an Encoded one was made from, decoded again
// (what a switch reads); any other message is returned as it is, and so
// is a Raw of a type this package does not decode.
func Decoded(m Message) Message {
	r, ok := m.(*Raw)
	if !ok {
		return m
	}
	b, err := Marshal(r, 0)
	if err != nil {
		return m
	}
	if _, d, err := Unmarshal(b); err == nil {
		return d
	}
	return m
}

// Hello carries the version bitmap element.
type Hello struct {
	// Versions is the bitmap of supported versions (bit n: version n).
	Versions uint32
}

func (*Hello) MsgType() uint8 { return TypeHello }
func (h *Hello) appendBody(b []byte) []byte {
	b = u16(b, 1) // OFPHET_VERSIONBITMAP
	b = u16(b, 8)
	return u32(b, h.Versions)
}

func decodeHello(body []byte) (*Hello, error) {
	h := &Hello{}
	for len(body) >= 4 {
		typ, n := be.Uint16(body), int(be.Uint16(body[2:]))
		if n < 4 || n > len(body) {
			return nil, fmt.Errorf("hello element length %d: %w", n, ErrShort)
		}
		if typ == 1 && n >= 8 {
			h.Versions = be.Uint32(body[4:])
		}
		body = body[(n+7)&^7 : min((n+7)&^7, len(body))]
	}
	return h, nil
}

// EchoRequest asks the peer to echo Data.
type EchoRequest struct{ Data []byte }

func (*EchoRequest) MsgType() uint8               { return TypeEchoRequest }
func (e *EchoRequest) appendBody(b []byte) []byte { return append(b, e.Data...) }

// EchoReply answers an EchoRequest.
type EchoReply struct{ Data []byte }

func (*EchoReply) MsgType() uint8               { return TypeEchoReply }
func (e *EchoReply) appendBody(b []byte) []byte { return append(b, e.Data...) }

// FeaturesRequest asks for the switch features.
type FeaturesRequest struct{}

func (*FeaturesRequest) MsgType() uint8             { return TypeFeaturesRequest }
func (*FeaturesRequest) appendBody(b []byte) []byte { return b }

// FeaturesReply describes the switch.
type FeaturesReply struct {
	DatapathID   uint64
	NBuffers     uint32
	NTables      uint8
	AuxiliaryID  uint8
	Capabilities uint32
}

func (*FeaturesReply) MsgType() uint8 { return TypeFeaturesReply }
func (f *FeaturesReply) appendBody(b []byte) []byte {
	b = u64(b, f.DatapathID)
	b = u32(b, f.NBuffers)
	b = append(b, f.NTables, f.AuxiliaryID, 0, 0)
	b = u32(b, f.Capabilities)
	return u32(b, 0)
}

func decodeFeaturesReply(body []byte) (*FeaturesReply, error) {
	if len(body) < 24 {
		return nil, errShort("features_reply", 24, len(body))
	}
	return &FeaturesReply{DatapathID: be.Uint64(body), NBuffers: be.Uint32(body[8:]),
		NTables: body[12], AuxiliaryID: body[13], Capabilities: be.Uint32(body[16:])}, nil
}

// SetConfig sets switch configuration (miss_send_len).
type SetConfig struct {
	Flags       uint16
	MissSendLen uint16
}

func (*SetConfig) MsgType() uint8 { return TypeSetConfig }
func (s *SetConfig) appendBody(b []byte) []byte {
	b = u16(b, s.Flags)
	return u16(b, s.MissSendLen)
}

// BarrierRequest asks the switch to finish everything sent before it.
type BarrierRequest struct{}

func (*BarrierRequest) MsgType() uint8             { return TypeBarrierRequest }
func (*BarrierRequest) appendBody(b []byte) []byte { return b }

// BarrierReply answers a BarrierRequest.
type BarrierReply struct{}

func (*BarrierReply) MsgType() uint8             { return TypeBarrierReply }
func (*BarrierReply) appendBody(b []byte) []byte { return b }

// Nicira experimenter message subtypes.
const (
	nxtSetPacketInFormat uint32 = 16
	nxtResume            uint32 = 28
	nxtPacketIn2         uint32 = 30
	nxpifNXTPacketIn2    uint32 = 2
)

// Experimenter is an OFPT_EXPERIMENTER message (Nicira extensions use it).
type Experimenter struct {
	Vendor  uint32
	Subtype uint32
	Data    []byte
}

func (*Experimenter) MsgType() uint8 { return TypeExperimenter }
func (e *Experimenter) appendBody(b []byte) []byte {
	b = u32(b, e.Vendor)
	b = u32(b, e.Subtype)
	return append(b, e.Data...)
}

// SetPacketInFormat asks for NXT_PACKET_IN2 packet-ins.
func SetPacketInFormat() *Experimenter {
	return &Experimenter{Vendor: nxVendor, Subtype: nxtSetPacketInFormat, Data: []byte{0, 0, 0, byte(nxpifNXTPacketIn2)}}
}

func decodeExperimenter(body []byte) (Message, error) {
	if len(body) < 8 {
		return nil, errShort("experimenter", 8, len(body))
	}
	e := &Experimenter{Vendor: be.Uint32(body), Subtype: be.Uint32(body[4:]), Data: clone(body[8:])}
	if e.Vendor == nxVendor && e.Subtype == nxtPacketIn2 {
		return decodePacketIn2(e.Data)
	}
	return e, nil
}
