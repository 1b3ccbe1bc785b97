package openflow

import (
	"fmt"
	"sort"
	"strings"
)

// DecodeActions decodes an OpenFlow 1.5 action list. Actions this package
// does not know are kept as RawAction.
func DecodeActions(b []byte) ([]Action, error) {
	var out []Action
	for len(b) > 0 {
		if len(b) < 4 {
			return nil, errShort("action header", 4, len(b))
		}
		typ, n := be.Uint16(b), int(be.Uint16(b[2:]))
		if n < 8 || n%8 != 0 || n > len(b) {
			return nil, fmt.Errorf("action type %d: bad length %d (have %d): %w", typ, n, len(b), ErrShort)
		}
		a, err := decodeAction(typ, b[:n])
		if err != nil {
			return nil, err
		}
		out = append(out, a)
		b = b[n:]
	}
	return out, nil
}

func decodeAction(typ uint16, a []byte) (Action, error) {
	switch typ {
	case atOutput:
		if len(a) < 16 {
			return nil, errShort("output", 16, len(a))
		}
		return Output{Port: be.Uint32(a[4:]), MaxLen: be.Uint16(a[8:])}, nil
	case atGroup:
		return Group(be.Uint32(a[4:])), nil
	case atMeter:
		return Meter(be.Uint32(a[4:])), nil
	case atDecNwTTL:
		return DecTTL{}, nil
	case atPushVLAN:
		return PushVLAN(be.Uint16(a[4:])), nil
	case atPopVLAN:
		return PopVLAN{}, nil
	case atSetField:
		es, err := parseOXM(trimOXMPad(a[4:]))
		if err != nil {
			return nil, fmt.Errorf("set_field: %w", err)
		}
		if len(es) != 1 {
			return nil, fmt.Errorf("set_field: %d fields, want 1", len(es))
		}
		return SetField{Field: es[0].f, Value: es[0].v, Mask: es[0].m}, nil
	case atCopyField:
		if len(a) < 20 {
			return nil, errShort("copy_field", 20, len(a))
		}
		nbits, sofs, dofs := be.Uint16(a[4:]), be.Uint16(a[6:]), be.Uint16(a[8:])
		src, rest, err := pullSubHeader(a[12:])
		if err != nil {
			return nil, fmt.Errorf("copy_field source: %w", err)
		}
		dst, _, err := pullSubHeader(rest)
		if err != nil {
			return nil, fmt.Errorf("copy_field destination: %w", err)
		}
		return Move{Src: Subfield{src, sofs, nbits}, Dst: Subfield{dst, dofs, nbits}}, nil
	case atExperiment:
		return decodeNX(a)
	}
	return RawAction(append([]byte(nil), a...)), nil
}

// trimOXMPad drops the zero padding after a single OXM TLV.
func trimOXMPad(b []byte) []byte {
	if len(b) < 4 {
		return b
	}
	n := 4 + int(be.Uint32(b)&0xff)
	if n <= len(b) {
		return b[:n]
	}
	return b
}

// pullSubHeader reads a 4-byte (or 8-byte experimenter) field header.
func pullSubHeader(b []byte) (*Field, []byte, error) {
	if len(b) < 4 {
		return nil, nil, errShort("field header", 4, len(b))
	}
	h := be.Uint32(b)
	if h>>16 == 0xffff {
		if len(b) < 8 {
			return nil, nil, errShort("experimenter field header", 8, len(b))
		}
		return fieldForHeader(h), b[8:], nil
	}
	return fieldForHeader(h), b[4:], nil
}

func decodeNX(a []byte) (Action, error) {
	if len(a) < 10 {
		return nil, errShort("experimenter action", 10, len(a))
	}
	if be.Uint32(a[4:]) != nxVendor {
		return RawAction(append([]byte(nil), a...)), nil
	}
	sub, body := be.Uint16(a[8:]), a[10:]
	switch sub {
	case nxastResubmit, nxastResubmitTable, nxastResubmitCT:
		if len(body) < 3 {
			return nil, errShort("resubmit", 3, len(body))
		}
		r := Resubmit{Port: port32(be.Uint16(body)), Table: body[2], CT: sub == nxastResubmitCT}
		if sub == nxastResubmit {
			r.Table = TableAll
		}
		return r, nil
	case nxastRegMove:
		if len(body) < 6 {
			return nil, errShort("reg_move", 6, len(body))
		}
		nbits, sofs, dofs := be.Uint16(body), be.Uint16(body[2:]), be.Uint16(body[4:])
		src, rest, err := pullSubHeader(body[6:])
		if err != nil {
			return nil, fmt.Errorf("reg_move source: %w", err)
		}
		dst, _, err := pullSubHeader(rest)
		if err != nil {
			return nil, fmt.Errorf("reg_move destination: %w", err)
		}
		return Move{Src: Subfield{src, sofs, nbits}, Dst: Subfield{dst, dofs, nbits}}, nil
	case nxastRegLoad:
		if len(body) < 14 {
			return nil, errShort("reg_load", 14, len(body))
		}
		dst := decodeOfsNBits(fieldForHeader(be.Uint32(body[2:])), be.Uint16(body))
		return loadToSetField(dst, be.Uint64(body[6:])), nil
	case nxastOutputReg, nxastOutputReg2:
		if sub == nxastOutputReg {
			if len(body) < 8 {
				return nil, errShort("output_reg", 8, len(body))
			}
			src := decodeOfsNBits(fieldForHeader(be.Uint32(body[2:])), be.Uint16(body))
			return OutputReg{Src: src, MaxLen: be.Uint16(body[6:])}, nil
		}
		if len(body) < 8 {
			return nil, errShort("output_reg2", 8, len(body))
		}
		f, _, err := pullSubHeader(body[4:])
		if err != nil {
			return nil, fmt.Errorf("output_reg2: %w", err)
		}
		return OutputReg{Src: decodeOfsNBits(f, be.Uint16(body)), MaxLen: be.Uint16(body[2:])}, nil
	case nxastNote:
		return Note(append([]byte(nil), body...)), nil
	case nxastDecTTL:
		return DecTTL{}, nil
	case nxastConjunction:
		if len(body) < 6 {
			return nil, errShort("conjunction", 6, len(body))
		}
		return Conjunction{Clause: body[0] + 1, NClauses: body[1], ID: be.Uint32(body[2:])}, nil
	case nxastController:
		if len(body) < 6 {
			return nil, errShort("controller", 6, len(body))
		}
		return Controller{MaxLen: be.Uint16(body), ControllerID: be.Uint16(body[2:]), Reason: body[4]}, nil
	case nxastController2:
		return decodeController2(body)
	case nxastCT:
		return decodeCT(body)
	case nxastNAT:
		return decodeNAT(body)
	case nxastCTClear:
		return CTClear{}, nil
	case nxastLearn:
		return decodeLearn(body)
	}
	return RawAction(append([]byte(nil), a...)), nil
}

// loadToSetField turns a reg_load into the masked set_field OVS shows in
// OpenFlow 1.5.
func loadToSetField(dst Subfield, v uint64) SetField {
	n := int(dst.Field.bytes)
	if n == 0 {
		n = 8
	}
	val, mask := make([]byte, n), make([]byte, n)
	setBits(val, dst.Ofs, dst.NBits, v)
	setBits(mask, dst.Ofs, dst.NBits, ^uint64(0))
	return SetField{Field: dst.Field, Value: val, Mask: mask}
}

// DecodeInstructions decodes an OpenFlow 1.5 instruction list into a flat
// action list (apply-actions expanded in place, the other instructions as
// GotoTable, ClearActions, WriteMetadata, WriteActions and Meter values), in
// the order ovs-ofctl prints them.
func DecodeInstructions(b []byte) ([]Action, error) {
	type inst struct {
		rank int
		acts []Action
	}
	var insts []inst
	for len(b) > 0 {
		if len(b) < 4 {
			return nil, errShort("instruction header", 4, len(b))
		}
		typ, n := be.Uint16(b), int(be.Uint16(b[2:]))
		if n < 8 || n > len(b) {
			return nil, fmt.Errorf("instruction type %d: bad length %d (have %d): %w", typ, n, len(b), ErrShort)
		}
		body := b[:n]
		b = b[n:]
		switch typ {
		case itApplyActions:
			acts, err := DecodeActions(body[8:])
			if err != nil {
				return nil, fmt.Errorf("apply_actions: %w", err)
			}
			rank := 1
			if len(acts) > 0 {
				if _, ok := acts[0].(Meter); ok {
					// a meter action leads, like the meter instruction
					insts = append(insts, inst{0, acts[:1]})
					acts = acts[1:]
				}
			}
			insts = append(insts, inst{rank, acts})
		case itWriteActions:
			acts, err := DecodeActions(body[8:])
			if err != nil {
				return nil, fmt.Errorf("write_actions: %w", err)
			}
			insts = append(insts, inst{3, []Action{WriteActions(acts)}})
		case itClearActions:
			insts = append(insts, inst{2, []Action{ClearActions{}}})
		case itGotoTable:
			insts = append(insts, inst{5, []Action{GotoTable(body[4])}})
		case itWriteMetadata:
			if n < 24 {
				return nil, errShort("write_metadata", 24, n)
			}
			insts = append(insts, inst{4, []Action{WriteMetadata{be.Uint64(body[8:]), be.Uint64(body[16:])}}})
		case itMeter:
			insts = append(insts, inst{0, []Action{Meter(be.Uint32(body[4:]))}})
		default:
			return nil, fmt.Errorf("unknown instruction type %d", typ)
		}
	}
	sort.SliceStable(insts, func(i, j int) bool { return insts[i].rank < insts[j].rank })
	var out []Action
	for _, in := range insts {
		out = append(out, in.acts...)
	}
	return out, nil
}

// FormatActions renders actions as ovs-ofctl prints them after "actions="
// ("drop" for none).
func FormatActions(acts []Action) string {
	if len(acts) == 0 {
		return "drop"
	}
	parts := make([]string, len(acts))
	for i, a := range acts {
		parts[i] = a.String()
	}
	return strings.Join(parts, ",")
}

// EncodeInstructions encodes decoded actions back into instructions.
func EncodeInstructions(acts []Action) []byte {
	a := NewActions()
	a.Append(acts...)
	return a.appendInstructions(nil)
}
