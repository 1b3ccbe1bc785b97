package openflow

import (
	"fmt"
	"strings"
)

// Multipart types (OFPMP_*).
const (
	MultipartFlowDesc   uint16 = 1
	MultipartAggregate  uint16 = 2
	MultipartTable      uint16 = 3
	MultipartPortStats  uint16 = 4
	MultipartGroupStats uint16 = 6
	MultipartGroupDesc  uint16 = 7
	MultipartMeterStats uint16 = 9
	MultipartMeterDesc  uint16 = 10
	MultipartPortDesc   uint16 = 13

	multipartReplyMore uint16 = 1
)

// MultipartRequest is an OFPT_MULTIPART_REQUEST; build it with the *Request
// constructors.
type MultipartRequest struct {
	Type  uint16
	Flags uint16
	Body  []byte
}

func (*MultipartRequest) MsgType() uint8 { return TypeMultipartRequest }
func (m *MultipartRequest) appendBody(b []byte) []byte {
	b = u16(b, m.Type)
	b = u16(b, m.Flags)
	b = zeros(b, 4)
	return append(b, m.Body...)
}

// MultipartReply is one OFPT_MULTIPART_REPLY part.
type MultipartReply struct {
	Type  uint16
	Flags uint16
	Body  []byte
}

func (*MultipartReply) MsgType() uint8 { return TypeMultipartReply }
func (m *MultipartReply) appendBody(b []byte) []byte {
	b = u16(b, m.Type)
	b = u16(b, m.Flags)
	b = zeros(b, 4)
	return append(b, m.Body...)
}

// More reports whether more parts follow.
func (m *MultipartReply) More() bool { return m.Flags&multipartReplyMore != 0 }

func decodeMultipartRequest(body []byte) (*MultipartRequest, error) {
	if len(body) < 8 {
		return nil, errShort("multipart request", 8, len(body))
	}
	return &MultipartRequest{Type: be.Uint16(body), Flags: be.Uint16(body[2:]), Body: clone(body[8:])}, nil
}

func decodeMultipartReply(body []byte) (*MultipartReply, error) {
	if len(body) < 8 {
		return nil, errShort("multipart reply", 8, len(body))
	}
	return &MultipartReply{Type: be.Uint16(body), Flags: be.Uint16(body[2:]), Body: clone(body[8:])}, nil
}

// FlowStatsRequest asks for the flows in table (TableAll: every table) whose
// cookie equals cookie under cookieMask and that match covers (nil: all).
func FlowStatsRequest(table uint8, cookie, cookieMask uint64, m *Match) *MultipartRequest {
	return &MultipartRequest{Type: MultipartFlowDesc, Body: flowStatsBody(table, cookie, cookieMask, m)}
}

// AggregateRequest asks for aggregate counters over the same filter.
func AggregateRequest(table uint8, cookie, cookieMask uint64, m *Match) *MultipartRequest {
	return &MultipartRequest{Type: MultipartAggregate, Body: flowStatsBody(table, cookie, cookieMask, m)}
}

func flowStatsBody(table uint8, cookie, cookieMask uint64, m *Match) []byte {
	b := []byte{table, 0, 0, 0}
	b = u32(b, PortAny)
	b = u32(b, GroupAny)
	b = zeros(b, 4)
	b = u64(b, cookie)
	b = u64(b, cookieMask)
	var oxm []byte
	if m != nil {
		oxm = m.b
	}
	return appendOFPMatch(b, oxm)
}

// TableStatsRequest asks for per-table counters.
func TableStatsRequest() *MultipartRequest { return &MultipartRequest{Type: MultipartTable} }

// PortStatsRequest asks for counters of port (PortAny: all ports).
func PortStatsRequest(port uint32) *MultipartRequest {
	return &MultipartRequest{Type: MultipartPortStats, Body: zeros(u32(nil, port), 4)}
}

// PortDescRequest asks for the description of port (PortAny: all ports).
func PortDescRequest(port uint32) *MultipartRequest {
	return &MultipartRequest{Type: MultipartPortDesc, Body: zeros(u32(nil, port), 4)}
}

// GroupStatsRequest asks for counters of group (GroupAll: all groups).
func GroupStatsRequest(group uint32) *MultipartRequest {
	return &MultipartRequest{Type: MultipartGroupStats, Body: zeros(u32(nil, group), 4)}
}

// GroupDescRequest asks for group definitions (GroupAll: all groups).
func GroupDescRequest(group uint32) *MultipartRequest {
	return &MultipartRequest{Type: MultipartGroupDesc, Body: zeros(u32(nil, group), 4)}
}

// MeterStatsRequest asks for meter counters (MeterAll: all meters).
func MeterStatsRequest(meter uint32) *MultipartRequest {
	return &MultipartRequest{Type: MultipartMeterStats, Body: zeros(u32(nil, meter), 4)}
}

// MeterDescRequest asks for meter configurations (MeterAll: all meters).
func MeterDescRequest(meter uint32) *MultipartRequest {
	return &MultipartRequest{Type: MultipartMeterDesc, Body: zeros(u32(nil, meter), 4)}
}

// MeterAll selects every meter in meter multipart requests.
const MeterAll uint32 = 0xffffffff

// Stats are the OXS counters of a flow or an aggregate.
type Stats struct {
	DurationSec  uint32
	DurationNsec uint32
	IdleSec      uint32
	FlowCount    uint32
	PacketCount  uint64
	ByteCount    uint64
}

// parseOXS reads an ofp_oxs_stat and returns the rest after its padding.
func parseOXS(b []byte) (Stats, []byte, error) {
	var s Stats
	if len(b) < 4 {
		return s, nil, errShort("oxs stat", 4, len(b))
	}
	n := int(be.Uint16(b[2:]))
	padded := (n + 7) &^ 7
	if n < 4 || padded > len(b) {
		return s, nil, fmt.Errorf("oxs stat length %d (have %d): %w", n, len(b), ErrShort)
	}
	r := b[4:n]
	for len(r) >= 4 {
		h := be.Uint32(r)
		l := int(h & 0xff)
		if 4+l > len(r) {
			return s, nil, fmt.Errorf("oxs entry %08x length %d: %w", h, l, ErrShort)
		}
		v := r[4 : 4+l]
		r = r[4+l:]
		if h>>16 != 0x8002 {
			continue
		}
		switch (h >> 9) & 0x7f {
		case 0:
			if l == 8 {
				s.DurationSec, s.DurationNsec = be.Uint32(v), be.Uint32(v[4:])
			}
		case 1:
			if l == 8 {
				s.IdleSec = be.Uint32(v)
			}
		case 3:
			if l == 4 {
				s.FlowCount = be.Uint32(v)
			}
		case 4:
			if l == 8 {
				s.PacketCount = be.Uint64(v)
			}
		case 5:
			if l == 8 {
				s.ByteCount = be.Uint64(v)
			}
		}
	}
	return s, b[padded:], nil
}

// FlowStats is one entry of a flow stats reply.
type FlowStats struct {
	Flow *Flow
	Stats
}

// ParseFlowStats decodes the concatenated bodies of flow-desc replies.
func ParseFlowStats(b []byte) ([]FlowStats, error) {
	var out []FlowStats
	for len(b) > 0 {
		if len(b) < 24 {
			return nil, errShort("flow desc", 24, len(b))
		}
		n := int(be.Uint16(b))
		if n < 24 || n > len(b) {
			return nil, fmt.Errorf("flow desc length %d (have %d): %w", n, len(b), ErrShort)
		}
		e := b[:n]
		b = b[n:]
		f := &Flow{table: e[4], priority: be.Uint16(e[6:]), idle: be.Uint16(e[8:]),
			hard: be.Uint16(e[10:]), flags: be.Uint16(e[12:]), cookie: be.Uint64(e[16:])}
		oxm, rest, err := parseOFPMatch(e[24:])
		if err != nil {
			return nil, fmt.Errorf("flow desc: %w", err)
		}
		if _, err := parseOXM(oxm); err != nil {
			return nil, fmt.Errorf("flow desc match: %w", err)
		}
		st, ins, err := parseOXS(rest)
		if err != nil {
			return nil, fmt.Errorf("flow desc stats: %w", err)
		}
		if _, err := DecodeInstructions(ins); err != nil {
			return nil, fmt.Errorf("flow desc instructions: %w", err)
		}
		f.buf = append(append(make([]byte, 0, len(oxm)+len(ins)), oxm...), ins...)
		f.mlen = uint32(len(oxm))
		out = append(out, FlowStats{Flow: f, Stats: st})
	}
	return out, nil
}

// ParseAggregate decodes an aggregate reply body.
func ParseAggregate(b []byte) (Stats, error) {
	s, _, err := parseOXS(b)
	return s, err
}

// TableStats is one entry of a table stats reply.
type TableStats struct {
	TableID      uint8
	ActiveCount  uint32
	LookupCount  uint64
	MatchedCount uint64
}

// ParseTableStats decodes table stats replies.
func ParseTableStats(b []byte) ([]TableStats, error) {
	var out []TableStats
	for ; len(b) >= 24; b = b[24:] {
		out = append(out, TableStats{TableID: b[0], ActiveCount: be.Uint32(b[4:]),
			LookupCount: be.Uint64(b[8:]), MatchedCount: be.Uint64(b[16:])})
	}
	if len(b) != 0 {
		return nil, errShort("table stats", 24, len(b))
	}
	return out, nil
}

// PortStats is one entry of a port stats reply.
type PortStats struct {
	PortNo               uint32
	DurationSec          uint32
	RxPackets, TxPackets uint64
	RxBytes, TxBytes     uint64
	RxDropped, TxDropped uint64
	RxErrors, TxErrors   uint64
}

// ParsePortStats decodes OF1.4+ port stats replies.
func ParsePortStats(b []byte) ([]PortStats, error) {
	var out []PortStats
	for len(b) > 0 {
		if len(b) < 80 {
			return nil, errShort("port stats", 80, len(b))
		}
		n := int(be.Uint16(b))
		if n < 80 || n > len(b) {
			return nil, fmt.Errorf("port stats length %d (have %d): %w", n, len(b), ErrShort)
		}
		c := func(i int) uint64 { return be.Uint64(b[16+8*i:]) }
		out = append(out, PortStats{PortNo: be.Uint32(b[4:]), DurationSec: be.Uint32(b[8:]),
			RxPackets: c(0), TxPackets: c(1), RxBytes: c(2), TxBytes: c(3),
			RxDropped: c(4), TxDropped: c(5), RxErrors: c(6), TxErrors: c(7)})
		b = b[n:]
	}
	return out, nil
}

// PortDesc is one entry of a port description reply.
type PortDesc struct {
	PortNo uint32
	HWAddr [6]byte
	Name   string
	Config uint32
	State  uint32
}

// ParsePortDesc decodes OF1.4+ port description replies.
func ParsePortDesc(b []byte) ([]PortDesc, error) {
	var out []PortDesc
	for len(b) > 0 {
		if len(b) < 40 {
			return nil, errShort("port desc", 40, len(b))
		}
		n := int(be.Uint16(b[4:]))
		if n < 40 || n > len(b) {
			return nil, fmt.Errorf("port desc length %d (have %d): %w", n, len(b), ErrShort)
		}
		name := string(b[16:32])
		if i := strings.IndexByte(name, 0); i >= 0 {
			name = name[:i]
		}
		out = append(out, PortDesc{PortNo: be.Uint32(b), HWAddr: [6]byte(b[8:14]), Name: name,
			Config: be.Uint32(b[32:]), State: be.Uint32(b[36:])})
		b = b[n:]
	}
	return out, nil
}

// GroupStats is one entry of a group stats reply.
type GroupStats struct {
	GroupID     uint32
	RefCount    uint32
	PacketCount uint64
	ByteCount   uint64
	DurationSec uint32
	Buckets     []BucketCounter
}

// BucketCounter counts what one bucket forwarded.
type BucketCounter struct{ PacketCount, ByteCount uint64 }

// ParseGroupStats decodes group stats replies.
func ParseGroupStats(b []byte) ([]GroupStats, error) {
	var out []GroupStats
	for len(b) > 0 {
		if len(b) < 40 {
			return nil, errShort("group stats", 40, len(b))
		}
		n := int(be.Uint16(b))
		if n < 40 || n > len(b) {
			return nil, fmt.Errorf("group stats length %d (have %d): %w", n, len(b), ErrShort)
		}
		g := GroupStats{GroupID: be.Uint32(b[4:]), RefCount: be.Uint32(b[8:]),
			PacketCount: be.Uint64(b[16:]), ByteCount: be.Uint64(b[24:]), DurationSec: be.Uint32(b[32:])}
		for r := b[40:n]; len(r) >= 16; r = r[16:] {
			g.Buckets = append(g.Buckets, BucketCounter{be.Uint64(r), be.Uint64(r[8:])})
		}
		out = append(out, g)
		b = b[n:]
	}
	return out, nil
}

// ParseGroupDesc decodes OF1.5 group description replies.
func ParseGroupDesc(b []byte) ([]*GroupEntry, error) {
	var out []*GroupEntry
	for len(b) > 0 {
		if len(b) < 16 {
			return nil, errShort("group desc", 16, len(b))
		}
		n, blen := int(be.Uint16(b)), int(be.Uint16(b[8:]))
		if n < 16 || n > len(b) || 16+blen > n {
			return nil, fmt.Errorf("group desc length %d buckets %d (have %d): %w", n, blen, len(b), ErrShort)
		}
		g := &GroupEntry{Type: b[2], ID: be.Uint32(b[4:])}
		var err error
		if g.Buckets, err = decodeBuckets(b[16 : 16+blen]); err != nil {
			return nil, err
		}
		if err := decodeGroupProps(g, b[16+blen:n]); err != nil {
			return nil, err
		}
		out = append(out, g)
		b = b[n:]
	}
	return out, nil
}

// MeterStats is one entry of a meter stats reply.
type MeterStats struct {
	MeterID     uint32
	FlowCount   uint32
	PacketCount uint64
	ByteCount   uint64
	DurationSec uint32
	Bands       []BucketCounter
}

// ParseMeterStats decodes meter stats replies.
func ParseMeterStats(b []byte) ([]MeterStats, error) {
	var out []MeterStats
	for len(b) > 0 {
		if len(b) < 40 {
			return nil, errShort("meter stats", 40, len(b))
		}
		n := int(be.Uint16(b[4:]))
		if n < 40 || n > len(b) {
			return nil, fmt.Errorf("meter stats length %d (have %d): %w", n, len(b), ErrShort)
		}
		m := MeterStats{MeterID: be.Uint32(b), FlowCount: be.Uint32(b[12:]),
			PacketCount: be.Uint64(b[16:]), ByteCount: be.Uint64(b[24:]), DurationSec: be.Uint32(b[32:])}
		for r := b[40:n]; len(r) >= 16; r = r[16:] {
			m.Bands = append(m.Bands, BucketCounter{be.Uint64(r), be.Uint64(r[8:])})
		}
		out = append(out, m)
		b = b[n:]
	}
	return out, nil
}

// ParseMeterDesc decodes meter configuration replies.
func ParseMeterDesc(b []byte) ([]*MeterEntry, error) {
	var out []*MeterEntry
	for len(b) > 0 {
		if len(b) < 8 {
			return nil, errShort("meter config", 8, len(b))
		}
		n := int(be.Uint16(b))
		if n < 8 || n > len(b) {
			return nil, fmt.Errorf("meter config length %d (have %d): %w", n, len(b), ErrShort)
		}
		m := &MeterEntry{Flags: be.Uint16(b[2:]), ID: be.Uint32(b[4:])}
		var err error
		if m.Bands, err = decodeBands(b[8:n]); err != nil {
			return nil, err
		}
		out = append(out, m)
		b = b[n:]
	}
	return out, nil
}
