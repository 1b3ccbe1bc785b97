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

// Group-mod commands (OpenFlow 1.5).
const (
	GroupAdd    uint16 = 0
	GroupModify uint16 = 1
	GroupDelete uint16 = 2
	// GroupInsertBuckets adds the message's buckets to an existing group
	// at CommandBucketID (BucketFirst, BucketLast or before a bucket id).
	GroupInsertBuckets uint16 = 3
	// GroupRemoveBuckets removes the bucket CommandBucketID (BucketFirst,
	// BucketLast, BucketAll or a bucket id) from an existing group.
	GroupRemoveBuckets uint16 = 5
	// GroupAddOrModify (OVS's OFPGC11_ADD_OR_MOD) adds the group or, if it
	// exists, replaces it: it lets a caller that does not know what the
	// switch holds (after a reconnect, or a bundle whose outcome is
	// unknown) install a group idempotently.
	GroupAddOrModify uint16 = 0x8000
)

// Bucket positions a GroupMod's CommandBucketID may name besides a bucket
// id (which is at most BucketMax).
const (
	BucketMax   uint32 = 0xffffff00
	BucketFirst uint32 = 0xfffffffd
	BucketLast  uint32 = 0xfffffffe
	BucketAll   uint32 = 0xffffffff
)

const (
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

// ActionList decodes the bucket's actions.
func (bk *Bucket) ActionList() ([]Action, error) { return DecodeActions(bk.actionBytes()) }

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
	// CommandBucketID is where GroupInsertBuckets inserts and what
	// GroupRemoveBuckets removes; the other commands always send
	// BucketAll, as OpenFlow 1.5 requires.
	CommandBucketID uint32
}

// AddGroup, ModifyGroup and DeleteGroup build group-mods.
func AddGroup(g *GroupEntry) *GroupMod    { return &GroupMod{Command: GroupAdd, Group: g} }
func ModifyGroup(g *GroupEntry) *GroupMod { return &GroupMod{Command: GroupModify, Group: g} }
func DeleteGroup(id uint32) *GroupMod {
	return &GroupMod{Command: GroupDelete, Group: &GroupEntry{ID: id}}
}

// InsertBuckets adds g's buckets to the existing group g.ID (of type
// g.Type) at "at": BucketFirst, BucketLast, or before the bucket with that
// id. g's selection method is not sent (OVS refuses it here; the group
// keeps its own).
func InsertBuckets(g *GroupEntry, at uint32) *GroupMod {
	return &GroupMod{Command: GroupInsertBuckets, Group: g, CommandBucketID: at}
}

// RemoveBuckets removes the bucket "which" (a bucket id, BucketFirst,
// BucketLast or BucketAll) from the existing group id of type typ.
func RemoveBuckets(id uint32, typ uint8, which uint32) *GroupMod {
	return &GroupMod{Command: GroupRemoveBuckets, Group: &GroupEntry{ID: id, Type: typ}, CommandBucketID: which}
}

func (*GroupMod) MsgType() uint8 { return TypeGroupMod }

// commandBucketID is what the message carries in command_bucket_id.
func (gm *GroupMod) commandBucketID() uint32 {
	if gm.Command == GroupInsertBuckets || gm.Command == GroupRemoveBuckets {
		return gm.CommandBucketID
	}
	return BucketAll
}

func (gm *GroupMod) appendBody(b []byte) []byte {
	g := gm.Group
	b = u16(b, gm.Command)
	b = append(b, g.Type, 0)
	b = u32(b, g.ID)
	lenAt := len(b)
	b = u16(b, 0)
	b = zeros(b, 2)
	b = u32(b, gm.commandBucketID())
	start := len(b)
	b = g.appendBuckets(b)
	// A bucket array past 64 KiB makes the message too long, which
	// finishMessage refuses; the wrapped length is never sent.
	be.PutUint16(b[lenAt:], uint16(len(b)-start))
	if gm.Command == GroupInsertBuckets || gm.Command == GroupRemoveBuckets {
		return b
	}
	return g.appendProps(b)
}

// BucketBytes is the wire encoding of the group's buckets: two groups with
// equal bytes (and type) forward alike, so a caller can compare or
// fingerprint groups without rendering them.
func (g *GroupEntry) BucketBytes() []byte { return g.appendBuckets(nil) }

func (g *GroupEntry) appendBuckets(b []byte) []byte {
	for i := range g.Buckets {
		b = g.appendBucket(b, &g.Buckets[i])
	}
	return b
}

// bucketLen is the encoded length of bk in a group of g's type.
func (g *GroupEntry) bucketLen(bk *Bucket) int {
	n := 8 + len(bk.actionBytes())
	if g.Type == GroupTypeSelect {
		n += 8
	}
	return n
}

func (g *GroupEntry) appendBucket(b []byte, bk *Bucket) []byte {
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
	return &GroupMod{Command: be.Uint16(body), Group: g, CommandBucketID: be.Uint32(body[12:])}, nil
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
