package openflow

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

const (
	ctFlagCommit uint16 = 1 << 0
	ctFlagForce  uint16 = 1 << 1

	natFlagSrc        uint16 = 1 << 0
	natFlagDst        uint16 = 1 << 1
	natFlagPersistent uint16 = 1 << 2
	natFlagHash       uint16 = 1 << 3
	natFlagRandom     uint16 = 1 << 4

	natRangeIPv4Min  uint16 = 1 << 0
	natRangeIPv4Max  uint16 = 1 << 1
	natRangeIPv6Min  uint16 = 1 << 2
	natRangeIPv6Max  uint16 = 1 << 3
	natRangeProtoMin uint16 = 1 << 4
	natRangeProtoMax uint16 = 1 << 5
)

// CT is the NXAST_CT action. Build it with NewCT and its chained setters:
//
//	openflow.NewCT().Commit().Zone(65520).Table(2).NAT(openflow.NAT{Dst: true, IPMin: ip, PortMin: 8080})
type CT struct {
	commit, force bool
	zone          uint16
	zoneSrc       *Subfield
	table         uint8
	recirculate   bool // table is set; otherwise no recirculation
	alg           uint16
	nat           *NAT
	exec          []byte // encoded nested actions
}

// NewCT returns a ct action without commit, in zone 0, without recirculation.
// The zero CT is the same.
func NewCT() *CT { return &CT{} }

// Commit commits the connection.
func (c *CT) Commit() *CT { c.commit = true; return c }

// Force commits, replacing an existing connection in the other direction.
func (c *CT) Force() *CT { c.force = true; return c }

// Zone sets an immediate zone.
func (c *CT) Zone(z uint16) *CT { c.zone, c.zoneSrc = z, nil; return c }

// ZoneField takes the zone from a 16-bit subfield.
func (c *CT) ZoneField(sf Subfield) *CT { c.zoneSrc = &sf; return c }

// Table recirculates the packet to table t after conntrack.
func (c *CT) Table(t uint8) *CT { c.table, c.recirculate = t, true; return c }

// Alg sets an application layer gateway port (21 ftp, 69 tftp).
func (c *CT) Alg(port uint16) *CT { c.alg = port; return c }

// NAT adds a nat() clause.
func (c *CT) NAT(n NAT) *CT { c.nat = &n; return c }

// Exec sets the nested actions (set_field of ct_mark and ct_label).
func (c *CT) Exec(a *Actions) *CT { c.exec = append(c.exec[:0], a.apply...); return c }

func (c *CT) appendTo(b []byte) []byte {
	start := len(b)
	b = appendNXHeader(b, nxastCT)
	var flags uint16
	if c.commit {
		flags |= ctFlagCommit
	}
	if c.force {
		flags |= ctFlagForce
	}
	b = u16(b, flags)
	if c.zoneSrc != nil {
		b = appendSubHeader(b, c.zoneSrc.Field)
		b = u16(b, c.zoneSrc.ofsNBits())
	} else {
		b = u32(b, 0)
		b = u16(b, c.zone)
	}
	table := TableAll
	if c.recirculate {
		table = c.table
	}
	b = append(b, table, 0, 0, 0)
	b = u16(b, c.alg)
	if c.nat != nil {
		b = c.nat.appendTo(b)
	}
	b = append(b, c.exec...)
	be.PutUint16(b[start+2:], uint16(len(b)-start))
	return b
}

func decodeCT(body []byte) (Action, error) {
	// body: flags(2) zone_src(4) zone(2) table(1) pad(3) alg(2) actions...
	if len(body) < 14 {
		return nil, errShort("ct", 14, len(body))
	}
	c := &CT{table: body[8], recirculate: body[8] != TableAll, alg: be.Uint16(body[12:])}
	flags := be.Uint16(body)
	c.commit, c.force = flags&ctFlagCommit != 0, flags&ctFlagForce != 0
	if src := be.Uint32(body[2:]); src != 0 {
		sf := decodeOfsNBits(fieldForHeader(src), be.Uint16(body[6:]))
		c.zoneSrc = &sf
	} else {
		c.zone = be.Uint16(body[6:])
	}
	acts, err := DecodeActions(body[14:])
	if err != nil {
		return nil, fmt.Errorf("ct nested actions: %w", err)
	}
	for i, a := range acts {
		if n, ok := a.(*NAT); ok && i == 0 {
			c.nat = n
			continue
		}
		c.exec = a.appendTo(c.exec)
	}
	return c, nil
}

func (c *CT) String() string {
	var parts []string
	if c.commit {
		parts = append(parts, "commit")
	}
	if c.force {
		parts = append(parts, "force")
	}
	if c.recirculate {
		parts = append(parts, "table="+strconv.Itoa(int(c.table)))
	}
	if c.zoneSrc != nil {
		parts = append(parts, "zone="+c.zoneSrc.String())
	} else if c.zone != 0 {
		parts = append(parts, "zone="+strconv.Itoa(int(c.zone)))
	}
	if c.nat != nil {
		parts = append(parts, c.nat.String())
	}
	if len(c.exec) > 0 {
		acts, err := DecodeActions(c.exec)
		if err != nil {
			parts = append(parts, "exec(<"+err.Error()+">)")
		} else {
			parts = append(parts, "exec("+FormatActions(acts)+")")
		}
	}
	switch c.alg {
	case 0:
	case 21:
		parts = append(parts, "alg=ftp")
	case 69:
		parts = append(parts, "alg=tftp")
	default:
		parts = append(parts, "alg="+strconv.Itoa(int(c.alg)))
	}
	return "ct(" + strings.Join(parts, ",") + ")"
}

// NAT is the nat() clause of ct. Exactly one of Src and Dst may be set; with
// neither, the action only reverses NAT done by an existing connection.
// Zero addresses and ports are left out.
type NAT struct {
	Src, Dst         bool
	IPMin, IPMax     netip.Addr
	PortMin, PortMax uint16
	Persistent       bool
	Hash, Random     bool
}

func (n *NAT) appendTo(b []byte) []byte {
	start := len(b)
	b = appendNXHeader(b, nxastNAT)
	var flags, present uint16
	if n.Src {
		flags |= natFlagSrc
	}
	if n.Dst {
		flags |= natFlagDst
	}
	if n.Persistent {
		flags |= natFlagPersistent
	}
	if n.Hash {
		flags |= natFlagHash
	}
	if n.Random {
		flags |= natFlagRandom
	}
	b = zeros(b, 2)
	b = u16(b, flags)
	presentAt := len(b)
	b = u16(b, 0)
	hasRange := false
	if n.IPMin.Is4() {
		hasRange = true
		if !n.IPMin.IsUnspecified() {
			a := n.IPMin.As4()
			b, present = append(b, a[:]...), present|natRangeIPv4Min
		}
		if n.IPMax.Is4() && !n.IPMax.IsUnspecified() {
			a := n.IPMax.As4()
			b, present = append(b, a[:]...), present|natRangeIPv4Max
		}
	} else if n.IPMin.Is6() {
		hasRange = true
		if !n.IPMin.IsUnspecified() {
			a := n.IPMin.As16()
			b, present = append(b, a[:]...), present|natRangeIPv6Min
		}
		if n.IPMax.Is6() && !n.IPMax.IsUnspecified() {
			a := n.IPMax.As16()
			b, present = append(b, a[:]...), present|natRangeIPv6Max
		}
	}
	if hasRange {
		if n.PortMin != 0 {
			b, present = u16(b, n.PortMin), present|natRangeProtoMin
		}
		if n.PortMax != 0 {
			b, present = u16(b, n.PortMax), present|natRangeProtoMax
		}
	}
	be.PutUint16(b[presentAt:], present)
	return finishAction(b, start)
}

func decodeNAT(body []byte) (Action, error) {
	if len(body) < 6 {
		return nil, errShort("nat", 6, len(body))
	}
	flags, present := be.Uint16(body[2:]), be.Uint16(body[4:])
	n := &NAT{
		Src: flags&natFlagSrc != 0, Dst: flags&natFlagDst != 0,
		Persistent: flags&natFlagPersistent != 0, Hash: flags&natFlagHash != 0,
		Random: flags&natFlagRandom != 0,
	}
	r := body[6:]
	take := func(k int) ([]byte, error) {
		if len(r) < k {
			return nil, errShort("nat range", k, len(r))
		}
		v := r[:k]
		r = r[k:]
		return v, nil
	}
	var err error
	var v []byte
	if present&natRangeIPv4Min != 0 {
		if v, err = take(4); err != nil {
			return nil, err
		}
		n.IPMin = netip.AddrFrom4([4]byte(v))
	}
	if present&natRangeIPv4Max != 0 {
		if v, err = take(4); err != nil {
			return nil, err
		}
		n.IPMax = netip.AddrFrom4([4]byte(v))
	}
	if present&natRangeIPv6Min != 0 {
		if v, err = take(16); err != nil {
			return nil, err
		}
		n.IPMin = netip.AddrFrom16([16]byte(v))
	}
	if present&natRangeIPv6Max != 0 {
		if v, err = take(16); err != nil {
			return nil, err
		}
		n.IPMax = netip.AddrFrom16([16]byte(v))
	}
	if present&natRangeProtoMin != 0 {
		if v, err = take(2); err != nil {
			return nil, err
		}
		n.PortMin = be.Uint16(v)
	}
	if present&natRangeProtoMax != 0 {
		if v, err = take(2); err != nil {
			return nil, err
		}
		n.PortMax = be.Uint16(v)
	}
	return n, nil
}

func (n *NAT) String() string {
	if !n.Src && !n.Dst {
		return "nat"
	}
	s := "nat("
	if n.Src {
		s += "src"
	} else {
		s += "dst"
	}
	if n.IPMin.IsValid() {
		s += "="
		if n.IPMin.Is4() {
			s += n.IPMin.String()
			if n.IPMax.IsValid() && n.IPMax != n.IPMin {
				s += "-" + n.IPMax.String()
			}
		} else {
			s += bracket6(n.IPMin, n.PortMin != 0)
			if n.IPMax.IsValid() && n.IPMax != n.IPMin {
				s += "-" + bracket6(n.IPMax, n.PortMin != 0)
			}
		}
		if n.PortMin != 0 {
			s += ":" + strconv.Itoa(int(n.PortMin))
			if n.PortMax != 0 && n.PortMax != n.PortMin {
				s += "-" + strconv.Itoa(int(n.PortMax))
			}
		}
		if n.Persistent {
			s += ",persistent"
		}
		if n.Hash {
			s += ",hash"
		}
		if n.Random {
			s += ",random"
		}
	}
	return s + ")"
}

func bracket6(a netip.Addr, withPort bool) string {
	if withPort {
		return "[" + a.String() + "]"
	}
	return a.String()
}

// CTInfo is a decoded ct action's content, for readers of flows such as
// packet tracers. Table is -1 without recirculation; ZoneField is set when
// the zone comes from a field; Exec are the nested actions.
type CTInfo struct {
	Commit, Force bool
	Zone          uint16
	ZoneField     *Subfield
	Table         int
	Alg           uint16
	NAT           *NAT
	Exec          []Action
}

// Info returns the action's content.
func (c *CT) Info() (CTInfo, error) {
	i := CTInfo{Commit: c.commit, Force: c.force, Zone: c.zone, ZoneField: c.zoneSrc, Table: -1, Alg: c.alg, NAT: c.nat}
	if c.recirculate {
		i.Table = int(c.table)
	}
	if len(c.exec) > 0 {
		acts, err := DecodeActions(c.exec)
		if err != nil {
			return i, fmt.Errorf("ct nested actions: %w", err)
		}
		i.Exec = acts
	}
	return i, nil
}
