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

// finishMessage stores the length of the message that starts at b[start:].
func finishMessage(b []byte, start int) []byte {
	be.PutUint16(b[start+2:], uint16(len(b)-start))
	return b
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
