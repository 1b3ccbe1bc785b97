package openflow

import "fmt"

// Bundle control types.
const (
	BundleOpenRequest    uint16 = 0
	BundleOpenReply      uint16 = 1
	BundleCloseRequest   uint16 = 2
	BundleCloseReply     uint16 = 3
	BundleCommitRequest  uint16 = 4
	BundleCommitReply    uint16 = 5
	BundleDiscardRequest uint16 = 6
	BundleDiscardReply   uint16 = 7
)

// Bundle flags.
const (
	BundleAtomic  uint16 = 1 << 0
	BundleOrdered uint16 = 1 << 1
)

// BundleControl is an OFPT_BUNDLE_CONTROL message.
type BundleControl struct {
	BundleID uint32
	Type     uint16
	Flags    uint16
}

func (*BundleControl) MsgType() uint8 { return TypeBundleControl }
func (c *BundleControl) appendBody(b []byte) []byte {
	b = u32(b, c.BundleID)
	b = u16(b, c.Type)
	return u16(b, c.Flags)
}

func decodeBundleControl(body []byte) (*BundleControl, error) {
	if len(body) < 8 {
		return nil, errShort("bundle_control", 8, len(body))
	}
	return &BundleControl{BundleID: be.Uint32(body), Type: be.Uint16(body[4:]), Flags: be.Uint16(body[6:])}, nil
}

// BundleAdd is an OFPT_BUNDLE_ADD_MESSAGE carrying one message. The inner
// message is sent with the same xid as the add message, as OVS requires.
type BundleAdd struct {
	BundleID uint32
	Flags    uint16
	Message  Message
	xid      uint32 // inner xid when decoded
}

func (*BundleAdd) MsgType() uint8 { return TypeBundleAdd }

func (a *BundleAdd) appendBody(b []byte) []byte {
	// The inner header's xid is patched by appendBundleAdd; when marshalled
	// on its own the inner xid is the decoded one. An inner message that
	// does not fit makes the whole bundle-add too long, which
	// finishMessage refuses.
	b = u32(b, a.BundleID)
	b = u16(b, 0)
	b = u16(b, a.Flags)
	start := len(b)
	b = appendHeader(b, a.Message.MsgType(), a.xid)
	b = a.Message.appendBody(b)
	if n := len(b) - start; n <= MaxMessageLen {
		be.PutUint16(b[start+2:], uint16(n))
	}
	return b
}

// appendBundleAdd encodes a bundle-add of m with xid for both headers. A
// message longer than MaxBundledLen (or its type's own limit, see maxLen)
// is refused with an error wrapping ErrTooLarge, and b is returned as it
// was.
func appendBundleAdd(b []byte, bundleID uint32, flags uint16, m Message, xid uint32) ([]byte, error) {
	start := len(b)
	b = appendHeader(b, TypeBundleAdd, xid)
	b = u32(b, bundleID)
	b = u16(b, 0)
	b = u16(b, flags)
	inner := len(b)
	b = appendHeader(b, m.MsgType(), xid)
	b = m.appendBody(b)
	if n, max := len(b)-inner, maxLen(m, true); n > max {
		return b[:start], tooLarge(m, n, max)
	}
	be.PutUint16(b[inner+2:], uint16(len(b)-inner))
	be.PutUint16(b[start+2:], uint16(len(b)-start))
	return b, nil
}

func decodeBundleAdd(body []byte) (*BundleAdd, error) {
	if len(body) < 8+headerLen {
		return nil, errShort("bundle_add_message", 8+headerLen, len(body))
	}
	h, m, err := Unmarshal(body[8:])
	if err != nil {
		return nil, fmt.Errorf("bundled message: %w", err)
	}
	return &BundleAdd{BundleID: be.Uint32(body), Flags: be.Uint16(body[6:]), Message: m, xid: h.Xid}, nil
}
