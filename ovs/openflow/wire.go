package openflow

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// Version is the only OpenFlow version this package speaks: 1.5 (0x06).
const Version uint8 = 0x06

// OpenFlow 1.5 message types (ofp_type).
const (
	TypeHello            uint8 = 0
	TypeError            uint8 = 1
	TypeEchoRequest      uint8 = 2
	TypeEchoReply        uint8 = 3
	TypeExperimenter     uint8 = 4
	TypeFeaturesRequest  uint8 = 5
	TypeFeaturesReply    uint8 = 6
	TypeGetConfigRequest uint8 = 7
	TypeGetConfigReply   uint8 = 8
	TypeSetConfig        uint8 = 9
	TypePacketIn         uint8 = 10
	TypeFlowRemoved      uint8 = 11
	TypePortStatus       uint8 = 12
	TypePacketOut        uint8 = 13
	TypeFlowMod          uint8 = 14
	TypeGroupMod         uint8 = 15
	TypePortMod          uint8 = 16
	TypeTableMod         uint8 = 17
	TypeMultipartRequest uint8 = 18
	TypeMultipartReply   uint8 = 19
	TypeBarrierRequest   uint8 = 20
	TypeBarrierReply     uint8 = 21
	TypeMeterMod         uint8 = 29
	TypeBundleControl    uint8 = 33
	TypeBundleAdd        uint8 = 34
)

var typeNames = map[uint8]string{
	TypeHello: "hello", TypeError: "error", TypeEchoRequest: "echo_request",
	TypeEchoReply: "echo_reply", TypeExperimenter: "experimenter",
	TypeFeaturesRequest: "features_request", TypeFeaturesReply: "features_reply",
	TypeGetConfigRequest: "get_config_request", TypeGetConfigReply: "get_config_reply",
	TypeSetConfig: "set_config", TypePacketIn: "packet_in", TypeFlowRemoved: "flow_removed",
	TypePortStatus: "port_status", TypePacketOut: "packet_out", TypeFlowMod: "flow_mod",
	TypeGroupMod: "group_mod", TypePortMod: "port_mod", TypeTableMod: "table_mod",
	TypeMultipartRequest: "multipart_request", TypeMultipartReply: "multipart_reply",
	TypeBarrierRequest: "barrier_request", TypeBarrierReply: "barrier_reply",
	TypeMeterMod: "meter_mod", TypeBundleControl: "bundle_control", TypeBundleAdd: "bundle_add_message",
}

// TypeName returns the lower-case name of an OpenFlow message type.
func TypeName(t uint8) string {
	if n, ok := typeNames[t]; ok {
		return n
	}
	return fmt.Sprintf("type_%d", t)
}

// Vendor (experimenter) identifiers.
const (
	nxVendor  uint32 = 0x00002320 // Nicira
	ntrVendor uint32 = 0x0000154d // Netronome (group selection method)
)

// Reserved port numbers, as OpenFlow 1.5 carries them (32 bits).
const (
	PortMax        uint32 = 0xffffff00
	PortInPort     uint32 = 0xfffffff8
	PortTable      uint32 = 0xfffffff9
	PortNormal     uint32 = 0xfffffffa
	PortFlood      uint32 = 0xfffffffb
	PortAll        uint32 = 0xfffffffc
	PortController uint32 = 0xfffffffd
	PortLocal      uint32 = 0xfffffffe
	PortAny        uint32 = 0xffffffff
)

// Special buffer, group and table ids.
const (
	NoBuffer uint32 = 0xffffffff
	GroupAny uint32 = 0xffffffff
	GroupAll uint32 = 0xfffffffc
	TableAll uint8  = 0xff
	// ControllerMaxLenAll asks the switch to send the whole packet.
	ControllerMaxLenAll uint16 = 0xffff
)

const headerLen = 8

// MaxMessageLen is the largest OpenFlow message: the header's length field
// has 16 bits. A message inside a bundle-add (see MaxBundledLen) has 16
// bytes less.
const MaxMessageLen = 0xffff

// MaxBundledLen is the largest message a bundle-add can carry: the
// bundle-add's own header and fields take 16 bytes of MaxMessageLen.
const MaxBundledLen = MaxMessageLen - bundleAddOverhead

const bundleAddOverhead = headerLen + 8

// MaxFlowModLen is the longest flow-mod whose flow ovs-vswitchd can dump
// back: a flow's entry in a flow-stats reply is 48 bytes longer than its
// flow-mod (measured against OVS 3.1), and a longer flow is installed but
// silently left out of every dump, which breaks anything that reads the
// table back (the agent's replay and CNI CHECK). Flow-mods are refused
// past it.
const MaxFlowModLen = MaxMessageLen - 48

// MaxGroupModLen is the longest group-mod whose group ovs-vswitchd can
// describe back: its group-desc entry is 8 bytes longer. A group larger
// than that (see GroupMods) is installed fine, but OVS 3.1 answers a
// group-desc request for it with wrapped lengths that desynchronize the
// connection: read such a group's bucket count with GroupStats instead.
const MaxGroupModLen = MaxMessageLen - 8

// maxLen is the longest encoding of m that is sent: a flow-mod or a
// group-mod has the limits above; inside a bundle-add (bundled) every
// message has at most MaxBundledLen.
func maxLen(m Message, bundled bool) int {
	max := MaxMessageLen
	switch m.(type) {
	case *FlowMod:
		max = MaxFlowModLen
	case *GroupMod:
		max = MaxGroupModLen
	}
	if bundled {
		max = min(max, MaxBundledLen)
	}
	return max
}

// ErrTooLarge is wrapped by the error of a message that does not fit in
// MaxMessageLen (or, inside a bundle, MaxBundledLen). Nothing of such a
// message is sent: a length that wrapped would desynchronize the stream
// and the switch would drop the connection.
var ErrTooLarge = errors.New("openflow: message too large")

// Header is the fixed eight-byte OpenFlow header.
type Header struct {
	Version uint8
	Type    uint8
	Length  uint16
	Xid     uint32
}

// ErrShort is returned (wrapped) when a message or structure is truncated.
var ErrShort = errors.New("openflow: truncated data")

func errShort(what string, need, have int) error {
	return fmt.Errorf("%s: need %d bytes, have %d: %w", what, need, have, ErrShort)
}

// ParseHeader decodes the first eight bytes of b.
func ParseHeader(b []byte) (Header, error) {
	if len(b) < headerLen {
		return Header{}, errShort("header", headerLen, len(b))
	}
	return Header{Version: b[0], Type: b[1], Length: be.Uint16(b[2:]), Xid: be.Uint32(b[4:])}, nil
}

var be = binary.BigEndian

func appendHeader(b []byte, typ uint8, xid uint32) []byte {
	return append(b, Version, typ, 0, 0, byte(xid>>24), byte(xid>>16), byte(xid>>8), byte(xid))
}

// finishMessage stores the length of the message m that starts at
// b[start:]. A message longer than maxLen allows is cut off again
// (b[:start] is returned) with an error wrapping ErrTooLarge.
func finishMessage(b []byte, start int, m Message) ([]byte, error) {
	n := len(b) - start
	if max := maxLen(m, false); n > max {
		return b[:start], tooLarge(m, n, max)
	}
	be.PutUint16(b[start+2:], uint16(n))
	return b, nil
}

// tooLarge is the error for m, whose encoding took n bytes of at most max.
func tooLarge(m Message, n, max int) error {
	return fmt.Errorf("%s: %d bytes, at most %d fit in one message: %w", brief(m), n, max, ErrTooLarge)
}

// brief names m without its whole content (an oversized flow's actions
// would make a 100 KiB error).
func brief(m Message) string {
	switch m := m.(type) {
	case *FlowMod:
		f := m.Flow
		return fmt.Sprintf("flow_mod table=%d, %s with %d bytes of instructions",
			f.table, f.MatchString(), len(f.InstructionBytes()))
	case *GroupMod:
		return fmt.Sprintf("group_mod command=%d group_id=%d with %d buckets", m.Command, m.Group.ID, len(m.Group.Buckets))
	case *BundleAdd:
		return "bundle_add of " + brief(m.Message)
	}
	return TypeName(m.MsgType())
}

func pad8(b []byte, start int) []byte {
	for (len(b)-start)%8 != 0 {
		b = append(b, 0)
	}
	return b
}

func zeros(b []byte, n int) []byte {
	for i := 0; i < n; i++ {
		b = append(b, 0)
	}
	return b
}

func u16(b []byte, v uint16) []byte { return be.AppendUint16(b, v) }
func u32(b []byte, v uint32) []byte { return be.AppendUint32(b, v) }
func u64(b []byte, v uint64) []byte { return be.AppendUint64(b, v) }

// property is an OpenFlow TLV property (type, length, payload) padded to 8.
type property struct {
	typ  uint16
	data []byte
}

// parseProps splits b into properties; experimenter-style padding rules of
// ofp_prop_header apply (length excludes padding, padding to 8).
func parseProps(b []byte) ([]property, error) {
	var props []property
	for len(b) > 0 {
		if len(b) < 4 {
			return nil, errShort("property header", 4, len(b))
		}
		typ, l := be.Uint16(b), int(be.Uint16(b[2:]))
		if l < 4 || l > len(b) {
			return nil, fmt.Errorf("property type %d: bad length %d (have %d): %w", typ, l, len(b), ErrShort)
		}
		props = append(props, property{typ: typ, data: b[4:l]})
		padded := (l + 7) &^ 7
		if padded > len(b) {
			padded = len(b)
		}
		b = b[padded:]
	}
	return props, nil
}

func appendProp(b []byte, typ uint16, data []byte) []byte {
	start := len(b)
	b = u16(b, typ)
	b = u16(b, uint16(4+len(data)))
	b = append(b, data...)
	return pad8(b, start)
}
