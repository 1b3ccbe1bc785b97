package openflow

import (
	"fmt"
	"strconv"
	"strings"
)

// Meter flags.
const (
	MeterKbps         uint16 = 1 << 0
	MeterPktps        uint16 = 1 << 1
	MeterBurst        uint16 = 1 << 2
	MeterCollectStats uint16 = 1 << 3
)

// Meter-mod commands.
const (
	MeterAdd    uint16 = 0
	MeterModify uint16 = 1
	MeterDelete uint16 = 2
)

// MeterBand is a drop band (the only band type the pipeline uses).
type MeterBand struct {
	Rate      uint32
	BurstSize uint32
}

// MeterEntry is a meter: flags (MeterKbps or MeterPktps, optionally
// MeterBurst and MeterCollectStats) and drop bands.
type MeterEntry struct {
	ID    uint32
	Flags uint16
	Bands []MeterBand
}

// MeterMod is an OFPT_METER_MOD message.
type MeterMod struct {
	Command uint16
	Meter   *MeterEntry
}

// AddMeter, ModifyMeter and DeleteMeter build meter-mods.
func AddMeter(m *MeterEntry) *MeterMod    { return &MeterMod{Command: MeterAdd, Meter: m} }
func ModifyMeter(m *MeterEntry) *MeterMod { return &MeterMod{Command: MeterModify, Meter: m} }
func DeleteMeter(id uint32) *MeterMod {
	return &MeterMod{Command: MeterDelete, Meter: &MeterEntry{ID: id}}
}

func (*MeterMod) MsgType() uint8 { return TypeMeterMod }

func (mm *MeterMod) appendBody(b []byte) []byte {
	b = u16(b, mm.Command)
	b = u16(b, mm.Meter.Flags)
	b = u32(b, mm.Meter.ID)
	return mm.Meter.appendBands(b)
}

func (m *MeterEntry) appendBands(b []byte) []byte {
	for _, band := range m.Bands {
		b = append(b, 0, 1, 0, 16) // OFPMBT_DROP, length 16
		b = u32(b, band.Rate)
		b = u32(b, band.BurstSize)
		b = zeros(b, 4)
	}
	return b
}

func decodeBands(b []byte) ([]MeterBand, error) {
	var out []MeterBand
	for len(b) > 0 {
		if len(b) < 12 {
			return nil, errShort("meter band", 12, len(b))
		}
		n := int(be.Uint16(b[2:]))
		if n < 12 || n > len(b) {
			return nil, fmt.Errorf("meter band length %d (have %d): %w", n, len(b), ErrShort)
		}
		out = append(out, MeterBand{Rate: be.Uint32(b[4:]), BurstSize: be.Uint32(b[8:])})
		b = b[n:]
	}
	return out, nil
}

func decodeMeterMod(body []byte) (*MeterMod, error) {
	if len(body) < 8 {
		return nil, errShort("meter_mod", 8, len(body))
	}
	m := &MeterEntry{Flags: be.Uint16(body[2:]), ID: be.Uint32(body[4:])}
	var err error
	if m.Bands, err = decodeBands(body[8:]); err != nil {
		return nil, err
	}
	return &MeterMod{Command: be.Uint16(body), Meter: m}, nil
}

// String renders the meter as "ovs-ofctl -O OpenFlow15 dump-meters" prints
// it (one line per band, as ovs-ofctl does).
func (m *MeterEntry) String() string {
	var sb strings.Builder
	sb.WriteString("meter=" + strconv.FormatUint(uint64(m.ID), 10))
	for _, f := range []struct {
		bit  uint16
		name string
	}{{MeterKbps, "kbps"}, {MeterPktps, "pktps"}, {MeterBurst, "burst"}, {MeterCollectStats, "stats"}} {
		if m.Flags&f.bit != 0 {
			sb.WriteString(" " + f.name)
		}
	}
	sb.WriteString(" bands=")
	for _, band := range m.Bands {
		sb.WriteString("\ntype=drop rate=" + strconv.FormatUint(uint64(band.Rate), 10))
		if m.Flags&MeterBurst != 0 {
			sb.WriteString(" burst_size=" + strconv.FormatUint(uint64(band.BurstSize), 10))
		}
	}
	return sb.String()
}
