package openflow

import "fmt"

// groupModFixed is a group-mod's header and fixed fields.
const groupModFixed = headerLen + 16

// GroupMods returns the group-mods that give group g all its buckets with
// command GroupAdd, GroupModify or GroupAddOrModify, however many it has. One OpenFlow
// message holds at most 64 KiB, about 1,100 buckets of a typical service
// load-balancing group, so a larger group is split: the first message (the
// add or modify, with g's selection method) carries as many buckets as fit
// in MaxBundledLen, and GroupInsertBuckets messages at BucketLast carry the
// rest, each as full as fits. Sent together in one bundle (Conn.Bundle),
// they take effect at once: a Modify replaces the group's buckets
// atomically and no packet sees a partial group. A group that fits is one
// message.
//
// Bucket ids must be unique and at most BucketMax: OVS tells buckets apart
// by id when it inserts them.
//
// A group that needed more than one message cannot be read back with
// GroupDesc: OVS 3.1 answers with wrapped lengths and the connection
// desynchronizes (see MaxGroupModLen). GroupStats still counts its buckets
// (16 bytes a bucket, so up to about 4,000).
func GroupMods(command uint16, g *GroupEntry) ([]Message, error) {
	if command != GroupAdd && command != GroupModify && command != GroupAddOrModify {
		return nil, fmt.Errorf("group %d: GroupMods builds adds and modifies, not command %d", g.ID, command)
	}
	seen := make(map[uint32]bool, len(g.Buckets))
	for i := range g.Buckets {
		id := g.Buckets[i].ID
		if id > BucketMax {
			return nil, fmt.Errorf("group %d: bucket id %#x is above BucketMax", g.ID, id)
		}
		if seen[id] {
			return nil, fmt.Errorf("group %d: bucket id %d appears twice", g.ID, id)
		}
		seen[id] = true
	}
	first := len(g.appendProps(nil))
	var msgs []Message
	rest := g.Buckets
	for len(msgs) == 0 || len(rest) > 0 {
		room := MaxBundledLen - groupModFixed
		if len(msgs) == 0 {
			room -= first
		}
		n := 0
		for n < len(rest) {
			l := g.bucketLen(&rest[n])
			if l > room {
				break
			}
			room -= l
			n++
		}
		if n == 0 && len(rest) > 0 {
			return nil, fmt.Errorf("group %d: bucket %d alone (%d bytes) does not fit in one message: %w",
				g.ID, rest[0].ID, g.bucketLen(&rest[0]), ErrTooLarge)
		}
		part := *g
		part.Buckets = rest[:n:n]
		if len(msgs) == 0 {
			msgs = append(msgs, &GroupMod{Command: command, Group: &part})
		} else {
			msgs = append(msgs, InsertBuckets(&part, BucketLast))
		}
		rest = rest[n:]
	}
	return msgs, nil
}
