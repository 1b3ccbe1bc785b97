package openflow

import (
	"fmt"
	"strconv"
	"strings"
)

// Group types.
const (
	GroupTypeAll      uint8 = 0
	GroupTypeSelect   uint8 = 1
	GroupTypeIndirect uint8 = 2
	GroupTypeFF       uint8 = 3
)

// Group-mod commands.
const (
	GroupAdd    uint16 = 0
	GroupModify uint16 = 1
	GroupDelete uint16 = 2
)

const (
	bucketAll        uint32 = 0xffffffff
	gbpWeight        uint16 = 0
	gbpWatchPort     uint16 = 1
	gbpWatchGroup    uint16 = 2
	gpExperimenter   uint16 = 0xffff
	ntrSelectionType uint32 = 1
)

// Bucket is one group bucket.
type Bucket struct {
	ID      uint32
	Weight  uint16 // select groups; 0 means the OpenFlow default of 1
	Actions *Actions
	acts    []byte // encoded actions when decoded
}

func (bk *Bucket) actionBytes() []byte {
	if bk.Actions != nil {
		return bk.Actions.apply
	}
	return bk.acts
}

// GroupEntry is a group entry. Select groups may name a selection method
// ("hash" or "dp_hash") and the fields hashed.
type GroupEntry struct {
	ID              uint32
	Type            uint8
	Buckets         []Bucket
	SelectionMethod string
	SelectionParam  uint64
	Fields          []*Field
}

// GroupMod is an OFPT_GROUP_MOD message.
type GroupMod struct {
	Command uint16
	Group   *GroupEntry
}

// AddGroup, ModifyGroup and DeleteGroup build group-mods.
func AddGroup(g *GroupEntry) *GroupMod    { return &GroupMod{Command: GroupAdd, Group: g} }
func ModifyGroup(g *GroupEntry) *GroupMod { return &GroupMod{Command: GroupModify, Group: g} }
func DeleteGroup(id uint32) *GroupMod {
	return &GroupMod{Command: GroupDelete, Group: &GroupEntry{ID: id}}
}

func (*GroupMod) MsgType() uint8 { return TypeGroupMod }

func (gm *GroupMod) appendBody(b []byte) []byte {
	g := gm.Group
	b = u16(b, gm.Command)
	b = append(b, g.Type, 0)
	b = u32(b, g.ID)
	lenAt := len(b)
	b = u16(b, 0)
	b = zeros(b, 2)
	b = u32(b, bucketAll)
	start := len(b)
	b = g.appendBuckets(b)
	be.PutUint16(b[lenAt:], uint16(len(b)-start))
	return g.appendProps(b)
}

func (g *GroupEntry) appendBuckets(b []byte) []byte {
	for i := range g.Buckets {
		bk := &g.Buckets[i]
		start := len(b)
		acts := bk.actionBytes()
		b = u16(b, 0)
		b = u16(b, uint16(len(acts)))
		b = u32(b, bk.ID)
		b = append(b, acts...)
		if g.Type == GroupTypeSelect {
			w := bk.Weight
			if w == 0 {
				w = 1
			}
			b = append(b, 0, byte(gbpWeight), 0, 8, byte(w>>8), byte(w), 0, 0)
		}
		be.PutUint16(b[start:], uint16(len(b)-start))
	}
	return b
}

func (g *GroupEntry) appendProps(b []byte) []byte {
	if g.SelectionMethod == "" {
		return b
	}
	start := len(b)
	b = u16(b, gpExperimenter)
	b = u16(b, 0)
	b = u32(b, ntrVendor)
	b = u32(b, ntrSelectionType)
	b = zeros(b, 4)
	var name [16]byte
	copy(name[:15], g.SelectionMethod)
	b = append(b, name[:]...)
	b = u64(b, g.SelectionParam)
	for _, f := range g.Fields {
		b = u32(b, f.oxm|uint32(f.bytes))
		for i := 0; i < int(f.bytes); i++ {
			b = append(b, 0xff)
		}
	}
	be.PutUint16(b[start+2:], uint16(len(b)-start))
	return pad8(b, start)
}

func decodeBuckets(b []byte) ([]Bucket, error) {
	var out []Bucket
	for len(b) > 0 {
		if len(b) < 8 {
			return nil, errShort("bucket", 8, len(b))
		}
		n, alen := int(be.Uint16(b)), int(be.Uint16(b[2:]))
		if n < 8 || n > len(b) || 8+alen > n {
			return nil, fmt.Errorf("bucket length %d actions %d (have %d): %w", n, alen, len(b), ErrShort)
		}
		bk := Bucket{ID: be.Uint32(b[4:]), acts: clone(b[8 : 8+alen])}
		if _, err := DecodeActions(bk.acts); err != nil {
			return nil, fmt.Errorf("bucket %d: %w", bk.ID, err)
		}
		props, err := parseProps(b[8+alen : n])
		if err != nil {
			return nil, fmt.Errorf("bucket %d properties: %w", bk.ID, err)
		}
		for _, p := range props {
			if p.typ == gbpWeight && len(p.data) >= 2 {
				bk.Weight = be.Uint16(p.data)
			}
		}
		out = append(out, bk)
		b = b[n:]
	}
	return out, nil
}

func decodeGroupProps(g *GroupEntry, b []byte) error {
	props, err := parseProps(b)
	if err != nil {
		return fmt.Errorf("group properties: %w", err)
	}
	for _, p := range props {
		if p.typ != gpExperimenter || len(p.data) < 36 {
			continue
		}
		if v := be.Uint32(p.data); v != ntrVendor && v != 0x1540 || be.Uint32(p.data[4:]) != ntrSelectionType {
			continue
		}
		name := p.data[12:28]
		if i := strings.IndexByte(string(name), 0); i >= 0 {
			name = name[:i]
		}
		g.SelectionMethod = string(name)
		g.SelectionParam = be.Uint64(p.data[28:])
		es, err := parseOXM(p.data[36:])
		if err != nil {
			return fmt.Errorf("selection fields: %w", err)
		}
		for _, e := range es {
			g.Fields = append(g.Fields, e.f)
		}
	}
	return nil
}

func decodeGroupMod(body []byte) (*GroupMod, error) {
	if len(body) < 16 {
		return nil, errShort("group_mod", 16, len(body))
	}
	g := &GroupEntry{Type: body[2], ID: be.Uint32(body[4:])}
	blen := int(be.Uint16(body[8:]))
	if 16+blen > len(body) {
		return nil, fmt.Errorf("group_mod bucket array %d (have %d): %w", blen, len(body)-16, ErrShort)
	}
	var err error
	if g.Buckets, err = decodeBuckets(body[16 : 16+blen]); err != nil {
		return nil, err
	}
	if err := decodeGroupProps(g, body[16+blen:]); err != nil {
		return nil, err
	}
	return &GroupMod{Command: be.Uint16(body), Group: g}, nil
}

// String renders the group as "ovs-ofctl -O OpenFlow15 dump-groups" prints it.
func (g *GroupEntry) String() string {
	var sb strings.Builder
	sb.WriteString("group_id=" + strconv.FormatUint(uint64(g.ID), 10))
	types := [...]string{"all", "select", "indirect", "ff", "unknown"}
	sb.WriteString(",type=" + types[min(int(g.Type), 4)])
	if g.SelectionMethod != "" {
		sb.WriteString(",selection_method=" + g.SelectionMethod)
		if g.SelectionParam != 0 {
			sb.WriteString(",selection_method_param=" + strconv.FormatUint(g.SelectionParam, 10))
		}
		names := make([]string, len(g.Fields))
		for i, f := range g.Fields {
			names[i] = f.name
		}
		if len(names) == 1 {
			sb.WriteString(",fields=" + names[0])
		} else if len(names) > 1 {
			sb.WriteString(",fields(" + strings.Join(names, ",") + ")")
		}
	}
	for i := range g.Buckets {
		bk := &g.Buckets[i]
		sb.WriteString(",bucket=bucket_id:" + strconv.FormatUint(uint64(bk.ID), 10) + ",")
		w, def := bk.Weight, uint16(0)
		if g.Type == GroupTypeSelect {
			def = 1
			if w == 0 {
				w = 1
			}
		}
		if w != def {
			sb.WriteString("weight:" + strconv.Itoa(int(w)) + ",")
		}
		acts, err := DecodeActions(bk.actionBytes())
		if err != nil {
			sb.WriteString("actions=<" + err.Error() + ">")
			continue
		}
		sb.WriteString("actions=" + FormatActions(acts))
	}
	return sb.String()
}
