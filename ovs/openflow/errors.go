package openflow

import (
	"errors"
	"fmt"
)

// Error types (OFPET_*) that callers commonly branch on.
const (
	ErrTypeHelloFailed     uint16 = 0
	ErrTypeBadRequest      uint16 = 1
	ErrTypeBadAction       uint16 = 2
	ErrTypeBadInstruction  uint16 = 3
	ErrTypeBadMatch        uint16 = 4
	ErrTypeFlowModFailed   uint16 = 5
	ErrTypeGroupModFailed  uint16 = 6
	ErrTypeMeterModFailed  uint16 = 12
	ErrTypeBundleFailed    uint16 = 17
	ErrTypeExperimenter    uint16 = 0xffff
	errCodeBundleMsgFailed uint16 = 13
)

// ErrorMsg is an OFPT_ERROR message as received.
type ErrorMsg struct {
	Type         uint16
	Code         uint16
	Experimenter uint32 // set when Type is ErrTypeExperimenter
	Data         []byte // usually the start of the failed request
}

func (*ErrorMsg) MsgType() uint8 { return TypeError }
func (e *ErrorMsg) appendBody(b []byte) []byte {
	b = u16(b, e.Type)
	b = u16(b, e.Code)
	if e.Type == ErrTypeExperimenter {
		b = u32(b, e.Experimenter)
	}
	return append(b, e.Data...)
}

func decodeErrorMsg(body []byte) (*ErrorMsg, error) {
	if len(body) < 4 {
		return nil, errShort("error", 4, len(body))
	}
	e := &ErrorMsg{Type: be.Uint16(body), Code: be.Uint16(body[2:])}
	body = body[4:]
	if e.Type == ErrTypeExperimenter {
		if len(body) < 4 {
			return nil, errShort("experimenter error", 4, len(body))
		}
		e.Experimenter, body = be.Uint32(body), body[4:]
	}
	e.Data = clone(body)
	return e, nil
}

// Name returns the symbolic name OVS uses for the error (OFPBAC_BAD_OUT_GROUP).
func (e *ErrorMsg) Name() string {
	if e.Type == ErrTypeExperimenter {
		if e.Experimenter == nxVendor {
			if n, ok := nxErrorNames[e.Code]; ok {
				return n
			}
		}
		return fmt.Sprintf("experimenter_0x%x_error_%d", e.Experimenter, e.Code)
	}
	if n, ok := stdErrorNames[uint32(e.Type)<<16|uint32(e.Code)]; ok {
		return n
	}
	return fmt.Sprintf("error_type_%d_code_%d", e.Type, e.Code)
}

// Error is the Go error for an OFPT_ERROR reply. Request names the request
// that failed (its type and, for flow-mods, the flow text).
type Error struct {
	Msg     *ErrorMsg
	Request string
	// Failed holds errors for individual messages of a failed bundle, in
	// the order the switch reported them.
	Failed []*Error
}

func (e *Error) Error() string {
	s := "openflow: " + e.Msg.Name()
	if e.Request != "" {
		s += " for " + e.Request
	}
	const maxListed = 5
	for i, f := range e.Failed {
		if i == maxListed {
			s += fmt.Sprintf("; and %d more", len(e.Failed)-maxListed)
			break
		}
		s += "; " + f.Msg.Name()
		if f.Request != "" {
			s += " for " + f.Request
		}
	}
	return s
}

// Is lets errors.Is match an *Error against an *ErrorMsg-shaped target
// created with ErrorCode.
func (e *Error) Is(target error) bool {
	t, ok := target.(*codeError)
	return ok && t.typ == e.Msg.Type && t.code == e.Msg.Code
}

type codeError struct{ typ, code uint16 }

func (c *codeError) Error() string {
	return (&ErrorMsg{Type: c.typ, Code: c.code}).Name()
}

// ErrorCode returns a target for errors.Is that matches OpenFlow errors of
// the given type and code, e.g. errors.Is(err, ErrorCode(ErrTypeBadAction, 9)).
func ErrorCode(typ, code uint16) error { return &codeError{typ, code} }

// ErrBundleFailed matches (errors.Is) a bundle commit that failed because
// one of its messages failed.
var ErrBundleFailed = ErrorCode(ErrTypeBundleFailed, errCodeBundleMsgFailed)

// ErrClosed is returned by operations on a closed or broken connection.
var ErrClosed = errors.New("openflow: connection closed")
