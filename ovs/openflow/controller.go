package openflow

import (
	"fmt"
	"strconv"
	"strings"
)

// Packet-in reasons (OFPR_*).
const (
	ReasonNoMatch     uint8 = 0
	ReasonAction      uint8 = 1
	ReasonInvalidTTL  uint8 = 2
	ReasonActionSet   uint8 = 3
	ReasonGroup       uint8 = 4
	ReasonPacketOut   uint8 = 5
	reasonUnspecified       = 0xff
)

var reasonNames = map[uint8]string{
	ReasonNoMatch: "no_match", ReasonAction: "action", ReasonInvalidTTL: "invalid_ttl",
	ReasonActionSet: "action_set", ReasonGroup: "group", ReasonPacketOut: "packet_out",
}

func reasonName(r uint8) string {
	if n, ok := reasonNames[r]; ok {
		return n
	}
	return strconv.Itoa(int(r))
}

// NXAST_CONTROLLER2 property types.
const (
	nxac2MaxLen       uint16 = 0
	nxac2ControllerID uint16 = 1
	nxac2Reason       uint16 = 2
	nxac2Userdata     uint16 = 3
	nxac2Pause        uint16 = 4
	nxac2MeterID      uint16 = 5
)

// Controller is the NXAST_CONTROLLER2 action: send the packet to the
// controller as NXT_PACKET_IN2 with optional userdata, and optionally pause
// the pipeline (a continuation). Zero MaxLen means the whole packet; the zero
// Reason is OFPR_NO_MATCH, so set ReasonAction explicitly where wanted.
type Controller struct {
	MaxLen       uint16 // 0 or ControllerMaxLenAll: whole packet
	ControllerID uint16
	Reason       uint8
	Userdata     []byte
	Pause        bool
	MeterID      uint32
}

func (c Controller) maxLen() uint16 {
	if c.MaxLen == 0 {
		return ControllerMaxLenAll
	}
	return c.MaxLen
}

func (c Controller) appendTo(b []byte) []byte {
	start := len(b)
	b = appendNXHeader(b, nxastController2)
	b = zeros(b, 6)
	// 16-bit properties carry two bytes of padding inside their length,
	// as Open vSwitch encodes them.
	var p [4]byte
	if ml := c.maxLen(); ml != ControllerMaxLenAll {
		be.PutUint16(p[:], ml)
		b = appendProp(b, nxac2MaxLen, p[:4])
	}
	if c.ControllerID != 0 {
		be.PutUint16(p[:], c.ControllerID)
		b = appendProp(b, nxac2ControllerID, p[:4])
	}
	if c.Reason != ReasonAction {
		b = appendProp(b, nxac2Reason, []byte{c.Reason})
	}
	if len(c.Userdata) > 0 {
		b = appendProp(b, nxac2Userdata, c.Userdata)
	}
	if c.Pause {
		b = appendProp(b, nxac2Pause, nil)
	}
	if c.MeterID != 0 {
		be.PutUint32(p[:], c.MeterID)
		b = appendProp(b, nxac2MeterID, p[:4])
	}
	return finishAction(b, start)
}

func decodeController2(body []byte) (Action, error) {
	// body starts after the 10-byte NX header; skip the 6 pad bytes.
	if len(body) < 6 {
		return nil, errShort("controller2", 6, len(body))
	}
	props, err := parseProps(body[6:])
	if err != nil {
		return nil, fmt.Errorf("controller2 properties: %w", err)
	}
	c := Controller{MaxLen: ControllerMaxLenAll, Reason: ReasonAction}
	for _, p := range props {
		switch p.typ {
		case nxac2MaxLen:
			if len(p.data) < 2 {
				return nil, errShort("controller2 max_len", 2, len(p.data))
			}
			c.MaxLen = be.Uint16(p.data)
		case nxac2ControllerID:
			if len(p.data) < 2 {
				return nil, errShort("controller2 id", 2, len(p.data))
			}
			c.ControllerID = be.Uint16(p.data)
		case nxac2Reason:
			if len(p.data) < 1 {
				return nil, errShort("controller2 reason", 1, 0)
			}
			c.Reason = p.data[0]
		case nxac2Userdata:
			c.Userdata = append([]byte(nil), p.data...)
		case nxac2Pause:
			c.Pause = true
		case nxac2MeterID:
			if len(p.data) < 4 {
				return nil, errShort("controller2 meter_id", 4, len(p.data))
			}
			c.MeterID = be.Uint32(p.data)
		}
	}
	return c, nil
}

func (c Controller) String() string {
	ml := c.maxLen()
	if c.Reason == ReasonAction && c.ControllerID == 0 && len(c.Userdata) == 0 && !c.Pause && c.MeterID == 0 {
		return "CONTROLLER:" + strconv.Itoa(int(ml))
	}
	var parts []string
	if c.Reason != ReasonAction {
		parts = append(parts, "reason="+reasonName(c.Reason))
	}
	if ml != ControllerMaxLenAll {
		parts = append(parts, "max_len="+strconv.Itoa(int(ml)))
	}
	if c.ControllerID != 0 {
		parts = append(parts, "id="+strconv.Itoa(int(c.ControllerID)))
	}
	if len(c.Userdata) > 0 {
		parts = append(parts, "userdata="+formatHexArg(c.Userdata))
	}
	if c.Pause {
		parts = append(parts, "pause")
	}
	if c.MeterID != 0 {
		parts = append(parts, "meter_id="+strconv.FormatUint(uint64(c.MeterID), 10))
	}
	return "controller(" + strings.Join(parts, ",") + ")"
}
