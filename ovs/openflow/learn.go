package openflow

import (
	"fmt"
	"strconv"
	"strings"
)

const (
	learnFlagSendFlowRem   uint16 = 1 << 0
	learnFlagDeleteLearned uint16 = 1 << 1

	learnSrcField     uint16 = 0 << 13
	learnSrcImmediate uint16 = 1 << 13
	learnDstMatch     uint16 = 0 << 11
	learnDstLoad      uint16 = 1 << 11
	learnDstOutput    uint16 = 2 << 11
)

// Learn is the NXAST_LEARN action: it adds (or refreshes) a flow built from
// the packet being processed. The subset here is what session affinity and
// MAC learning need. Specs are appended in order with the methods below.
type Learn struct {
	TableID       uint8
	IdleTimeout   uint16
	HardTimeout   uint16
	Priority      uint16
	Cookie        uint64
	FinIdle       uint16
	FinHard       uint16
	DeleteLearned bool
	SendFlowRem   bool
	specs         []learnSpec
}

type learnSpec struct {
	kind     uint16 // src | dst bits
	nbits    uint16
	src, dst Subfield
	imm      []byte // immediate value, 2*ceil(n_bits/16) bytes
}

// NewLearn returns a learn action into table with the default priority.
func NewLearn(table uint8) *Learn { return &Learn{TableID: table, Priority: 0x8000} }

// MatchField makes the learned flow match dst equal to this packet's src
// (use the same subfield for both for the common NXM_OF_IP_SRC[] form).
func (l *Learn) MatchField(dst, src Subfield) *Learn {
	l.specs = append(l.specs, learnSpec{kind: learnSrcField | learnDstMatch, nbits: dst.NBits, src: src, dst: dst})
	return l
}

// MatchValue makes the learned flow match dst equal to an immediate value
// (e.g. eth_type=0x800).
func (l *Learn) MatchValue(dst Subfield, v uint64) *Learn {
	l.specs = append(l.specs, learnSpec{kind: learnSrcImmediate | learnDstMatch, nbits: dst.NBits, dst: dst, imm: immBytes(dst.NBits, v)})
	return l
}

// LoadField makes the learned flow load this packet's src into dst.
func (l *Learn) LoadField(src, dst Subfield) *Learn {
	l.specs = append(l.specs, learnSpec{kind: learnSrcField | learnDstLoad, nbits: dst.NBits, src: src, dst: dst})
	return l
}

// LoadValue makes the learned flow load an immediate value into dst.
func (l *Learn) LoadValue(dst Subfield, v uint64) *Learn {
	l.specs = append(l.specs, learnSpec{kind: learnSrcImmediate | learnDstLoad, nbits: dst.NBits, dst: dst, imm: immBytes(dst.NBits, v)})
	return l
}

// Output makes the learned flow output to the port held in src.
func (l *Learn) Output(src Subfield) *Learn {
	l.specs = append(l.specs, learnSpec{kind: learnSrcField | learnDstOutput, nbits: src.NBits, src: src})
	return l
}

func immBytes(nbits uint16, v uint64) []byte {
	n := 2 * ((int(nbits) + 15) / 16)
	b := make([]byte, n)
	putUintN(b, v)
	return b
}

func (l *Learn) appendTo(b []byte) []byte {
	start := len(b)
	b = appendNXHeader(b, nxastLearn)
	b = u16(b, l.IdleTimeout)
	b = u16(b, l.HardTimeout)
	b = u16(b, l.Priority)
	b = u64(b, l.Cookie)
	var flags uint16
	if l.SendFlowRem {
		flags |= learnFlagSendFlowRem
	}
	if l.DeleteLearned {
		flags |= learnFlagDeleteLearned
	}
	b = u16(b, flags)
	b = append(b, l.TableID, 0)
	b = u16(b, l.FinIdle)
	b = u16(b, l.FinHard)
	for _, s := range l.specs {
		b = u16(b, s.kind|s.nbits&0x7ff)
		if s.kind&learnSrcImmediate != 0 {
			b = append(b, s.imm...)
		} else {
			b = appendSubHeader(b, s.src.Field)
			b = u16(b, s.src.Ofs)
		}
		if s.kind&(3<<11) != learnDstOutput {
			b = appendSubHeader(b, s.dst.Field)
			b = u16(b, s.dst.Ofs)
		}
	}
	return finishAction(b, start)
}

func decodeLearn(body []byte) (Action, error) {
	// body after the 10-byte NX header.
	if len(body) < 22 {
		return nil, errShort("learn", 22, len(body))
	}
	l := &Learn{
		IdleTimeout: be.Uint16(body), HardTimeout: be.Uint16(body[2:]),
		Priority: be.Uint16(body[4:]), Cookie: be.Uint64(body[6:]),
		TableID: body[16], FinIdle: be.Uint16(body[18:]), FinHard: be.Uint16(body[20:]),
	}
	flags := be.Uint16(body[14:])
	l.SendFlowRem, l.DeleteLearned = flags&learnFlagSendFlowRem != 0, flags&learnFlagDeleteLearned != 0
	r := body[22:]
	for len(r) >= 2 {
		h := be.Uint16(r)
		r = r[2:]
		if h == 0 {
			break // padding
		}
		s := learnSpec{kind: h &^ 0x7ff, nbits: h & 0x7ff}
		nbits := s.nbits
		if s.kind == learnSrcImmediate|learnDstOutput {
			return nil, fmt.Errorf("learn spec %04x: immediate output", h)
		}
		if s.kind&learnSrcImmediate != 0 {
			n := 2 * ((int(nbits) + 15) / 16)
			if len(r) < n {
				return nil, errShort("learn immediate", n, len(r))
			}
			s.imm, r = append([]byte(nil), r[:n]...), r[n:]
		} else {
			if len(r) < 6 {
				return nil, errShort("learn source", 6, len(r))
			}
			s.src = Subfield{Field: fieldForHeader(be.Uint32(r)), Ofs: be.Uint16(r[4:]), NBits: nbits}
			r = r[6:]
		}
		switch s.kind & (3 << 11) {
		case learnDstMatch, learnDstLoad:
			if len(r) < 6 {
				return nil, errShort("learn destination", 6, len(r))
			}
			s.dst = Subfield{Field: fieldForHeader(be.Uint32(r)), Ofs: be.Uint16(r[4:]), NBits: nbits}
			r = r[6:]
		case learnDstOutput:
		default:
			return nil, fmt.Errorf("learn spec %04x: reserved destination", h)
		}
		l.specs = append(l.specs, s)
	}
	return l, nil
}

func (l *Learn) String() string {
	var sb strings.Builder
	sb.WriteString("learn(table=" + strconv.Itoa(int(l.TableID)))
	if l.IdleTimeout != 0 {
		sb.WriteString(",idle_timeout=" + strconv.Itoa(int(l.IdleTimeout)))
	}
	if l.HardTimeout != 0 {
		sb.WriteString(",hard_timeout=" + strconv.Itoa(int(l.HardTimeout)))
	}
	if l.FinIdle != 0 {
		sb.WriteString(",fin_idle_timeout=" + strconv.Itoa(int(l.FinIdle)))
	}
	if l.FinHard != 0 {
		sb.WriteString(",fin_hard_timeout=" + strconv.Itoa(int(l.FinHard)))
	}
	if l.Priority != 0x8000 {
		sb.WriteString(",priority=" + strconv.Itoa(int(l.Priority)))
	}
	if l.SendFlowRem {
		sb.WriteString(",send_flow_rem")
	}
	if l.DeleteLearned {
		sb.WriteString(",delete_learned")
	}
	if l.Cookie != 0 {
		sb.WriteString(",cookie=" + cHex(l.Cookie))
	}
	for _, s := range l.specs {
		sb.WriteByte(',')
		switch s.kind {
		case learnSrcImmediate | learnDstMatch:
			if s.dst.Ofs == 0 && s.dst.NBits == s.dst.Field.Bits() {
				n := int(s.dst.Field.bytes)
				v := make([]byte, n)
				k := min(n, len(s.imm))
				copy(v[n-k:], s.imm[len(s.imm)-k:])
				sb.WriteString(s.dst.Field.name + "=" + formatValue(s.dst.Field, v, nil))
			} else {
				sb.WriteString(s.dst.String() + "=" + ovsHex(s.imm))
			}
		case learnSrcField | learnDstMatch:
			sb.WriteString(s.dst.String())
			if s.src.Field != s.dst.Field || s.src.Ofs != s.dst.Ofs {
				sb.WriteString("=" + s.src.String())
			}
		case learnSrcImmediate | learnDstLoad:
			sb.WriteString("load:" + ovsHex(s.imm) + "->" + s.dst.String())
		case learnSrcField | learnDstLoad:
			sb.WriteString("load:" + s.src.String() + "->" + s.dst.String())
		case learnSrcField | learnDstOutput:
			sb.WriteString("output:" + s.src.String())
		}
	}
	sb.WriteByte(')')
	return sb.String()
}

// LearnSpec is one decoded spec of a learn action: the learned flow matches
// Dst equal to this packet's Src (Match, no Value) or to Value (Match with
// Value), or loads Src or Value into Dst (Load), or outputs to the port in
// Src (Output). Value holds the immediate in ceil(bits/16)*2 bytes.
type LearnSpec struct {
	Match, Load, Output bool
	Src, Dst            Subfield
	Value               []byte
}

// Specs returns the action's specs in order.
func (l *Learn) Specs() []LearnSpec {
	out := make([]LearnSpec, 0, len(l.specs))
	for _, s := range l.specs {
		ls := LearnSpec{Src: s.src, Dst: s.dst}
		switch s.kind & (3 << 11) {
		case learnDstMatch:
			ls.Match = true
		case learnDstLoad:
			ls.Load = true
		case learnDstOutput:
			ls.Output = true
		}
		if s.kind&learnSrcImmediate != 0 {
			ls.Value = append([]byte(nil), s.imm...)
			ls.Src = Subfield{}
		}
		out = append(out, ls)
	}
	return out
}
