package pipeline

import (
	"encoding/binary"
	"fmt"

	"github.com/seine-cni/seine/ovs/openflow"
)

// The tracer reads flows back from their wire encoding: matches are OXM
// TLVs, actions come from openflow.DecodeInstructions. ovs/openflow does
// not export its OXM decoder, so the tracer learns each field's header by
// encoding a match on it.

// tracedFields are the fields the tracer models. A flow matching any other
// field is refused by NewTracer.
var tracedFields = func() []*openflow.Field {
	fs := []*openflow.Field{
		openflow.FieldInPort, openflow.FieldMetadata, openflow.FieldEthDst, openflow.FieldEthSrc,
		openflow.FieldEthType, openflow.FieldIPDSCP, openflow.FieldIPECN, openflow.FieldIPProto,
		openflow.FieldIPSrc, openflow.FieldIPDst, openflow.FieldTCPSrc, openflow.FieldTCPDst,
		openflow.FieldUDPSrc, openflow.FieldUDPDst, openflow.FieldICMPType, openflow.FieldICMPCode,
		openflow.FieldARPOp, openflow.FieldARPSPA, openflow.FieldARPTPA, openflow.FieldARPSHA,
		openflow.FieldARPTHA, openflow.FieldTunID, openflow.FieldTCPFlags, openflow.FieldNwTTL,
		openflow.FieldTunSrc, openflow.FieldTunDst, openflow.FieldPktMark, openflow.FieldCTState,
		openflow.FieldCTZone, openflow.FieldCTMark, openflow.FieldCTLabel, openflow.FieldConjID, openflow.FieldSCTPSrc, openflow.FieldSCTPDst,
		openflow.FieldCTNwProto, openflow.FieldCTNwSrc, openflow.FieldCTNwDst, openflow.FieldCTTpSrc, openflow.FieldCTTpDst,
		openflow.FieldIPFrag,
	}
	for i := 0; i < 16; i++ {
		fs = append(fs, openflow.Reg(i))
	}
	return fs
}()

// fieldByHeader maps an OXM header (class and field, without mask bit and
// length) to its field.
var fieldByHeader = func() map[uint32]*openflow.Field {
	m := map[uint32]*openflow.Field{}
	for _, f := range tracedFields {
		b := openflow.NewMatch().Field(f, make([]byte, f.Bits()/8)).Bytes()
		m[binary.BigEndian.Uint32(b)&0xfffffe00] = f
	}
	return m
}()

// matchEntry is one field of a flow's match.
type matchEntry struct {
	f    *openflow.Field
	v, m []byte // m is nil for an exact match
}

// parseMatch decodes a flow's OXM TLVs.
func parseMatch(b []byte) ([]matchEntry, error) {
	var out []matchEntry
	for len(b) > 0 {
		if len(b) < 4 {
			return nil, fmt.Errorf("truncated OXM header")
		}
		h := binary.BigEndian.Uint32(b)
		n := int(h & 0xff)
		if 4+n > len(b) {
			return nil, fmt.Errorf("OXM %08x: length %d overruns the match", h, n)
		}
		body := b[4 : 4+n]
		b = b[4+n:]
		f, ok := fieldByHeader[h&0xfffffe00]
		if !ok {
			return nil, fmt.Errorf("OXM %08x: field not modelled by the tracer", h)
		}
		e := matchEntry{f: f, v: body}
		if h&0x100 != 0 {
			e.v, e.m = body[:n/2], body[n/2:]
		}
		if len(e.v) != int(f.Bits()/8) {
			return nil, fmt.Errorf("%s: %d bytes, want %d", f.Name(), len(e.v), f.Bits()/8)
		}
		out = append(out, e)
	}
	return out, nil
}

// fields is the packet and metadata state the tracer walks with. A field
// absent from the map does not exist for this packet (tcp_dst of an ARP
// packet): a match on it fails, as OVS's prerequisites make it.
type fields map[*openflow.Field][]byte

func (fs fields) clone() fields {
	c := make(fields, len(fs))
	for f, v := range fs {
		c[f] = append([]byte(nil), v...)
	}
	return c
}

func (fs fields) matches(es []matchEntry) bool {
	for _, e := range es {
		v, ok := fs[e.f]
		if !ok {
			return false
		}
		for i := range v {
			mask := byte(0xff)
			if e.m != nil {
				mask = e.m[i]
			}
			if v[i]&mask != e.v[i]&mask {
				return false
			}
		}
	}
	return true
}

// set writes v under mask (nil: whole field).
func (fs fields) set(f *openflow.Field, v, mask []byte) error {
	cur, ok := fs[f]
	if !ok {
		return fmt.Errorf("set_field %s: the packet has no such field", f.Name())
	}
	if len(v) != len(cur) {
		return fmt.Errorf("set_field %s: %d bytes, want %d", f.Name(), len(v), len(cur))
	}
	for i := range cur {
		m := byte(0xff)
		if mask != nil {
			m = mask[i]
		}
		cur[i] = cur[i]&^m | v[i]&m
	}
	return nil
}

func (fs fields) uint(f *openflow.Field) uint64 {
	var v uint64
	for _, c := range fs[f] {
		v = v<<8 | uint64(c)
	}
	return v
}

func (fs fields) setUint(f *openflow.Field, v uint64) {
	b := fs[f]
	for i := len(b) - 1; i >= 0; i-- {
		b[i] = byte(v)
		v >>= 8
	}
}

// bit returns bit i (0 is the least significant) of big-endian b.
func bit(b []byte, i uint16) byte { return b[len(b)-1-int(i/8)] >> (i % 8) & 1 }

func setBit(b []byte, i uint16, v byte) {
	idx := len(b) - 1 - int(i/8)
	b[idx] = b[idx]&^(1<<(i%8)) | v<<(i%8)
}

// readSub returns a subfield's value (up to 64 bits).
func (fs fields) readSub(s openflow.Subfield) (uint64, error) {
	b, ok := fs[s.Field]
	if !ok {
		return 0, fmt.Errorf("%s: the packet has no such field", s)
	}
	if s.NBits > 64 || int(s.Ofs+s.NBits) > 8*len(b) {
		return 0, fmt.Errorf("%s: out of range", s)
	}
	var v uint64
	for i := s.NBits; i > 0; i-- {
		v = v<<1 | uint64(bit(b, s.Ofs+i-1))
	}
	return v, nil
}

// move copies src into dst bit by bit.
func (fs fields) move(src, dst openflow.Subfield) error {
	sb, ok := fs[src.Field]
	if !ok {
		return fmt.Errorf("move: %s: the packet has no such field", src)
	}
	db, ok := fs[dst.Field]
	if !ok {
		return fmt.Errorf("move: %s: the packet has no such field", dst)
	}
	if int(src.Ofs+src.NBits) > 8*len(sb) || int(dst.Ofs+src.NBits) > 8*len(db) {
		return fmt.Errorf("move %s->%s: out of range", src, dst)
	}
	tmp := make([]byte, src.NBits)
	for i := uint16(0); i < src.NBits; i++ {
		tmp[i] = bit(sb, src.Ofs+i)
	}
	for i := uint16(0); i < src.NBits; i++ {
		setBit(db, dst.Ofs+i, tmp[i])
	}
	return nil
}
