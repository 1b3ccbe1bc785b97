package pipeline

import (
	"fmt"
	"hash/fnv"
	"net/netip"
)

// Round numbers one run of the agent. Every flow carries the round that
// installed it in the top 16 bits of its cookie, so a restarted agent adds
// its whole flow set under round r+1 (flows with an unchanged match and
// priority are replaced in place, taking the new cookie) and then deletes
// what is left of round r by cookie and RoundMask: no packet ever meets a
// missing flow. Rounds wrap at 2^16; only adjacent rounds ever coexist.
type Round uint16

// Next returns the round after r. Round 0 is skipped: learned flows
// (CategoryAffinity) carry it and belong to no round.
func (r Round) Next() Round {
	if r+1 == 0 {
		return 1
	}
	return r + 1
}

// Category says which part of the desired state a flow comes from.
type Category uint8

// Flow categories. Service, Policy and Traceflow are reserved for the
// issues that fill the reserved tables.
const (
	CategoryPipeline  Category = 1 // table defaults and conntrack: fixed for every node
	CategoryNode      Category = 2 // this node: gateway, host, tunnel, uplink, pod CIDRs
	CategoryPod       Category = 3 // one local pod (ID: PodID)
	CategoryPeer      Category = 4 // one peer node (ID: PeerID)
	CategoryService   Category = 5
	CategoryPolicy    Category = 6
	CategoryTraceflow Category = 7
	// CategoryAffinity marks the flows session affinity learns (ID:
	// AffinityID). The agent never deletes them by round: they outlive
	// replays, and go with their endpoint or their Service.
	CategoryAffinity Category = 8
	// CategoryDNS is the DNS answers' way to the agent while domain-name
	// peers exist (DNSInterceptFlows): one fixed flow, replaced by round.
	CategoryDNS Category = 9
)

func (c Category) String() string {
	switch c {
	case CategoryPipeline:
		return "pipeline"
	case CategoryNode:
		return "node"
	case CategoryPod:
		return "pod"
	case CategoryPeer:
		return "peer"
	case CategoryService:
		return "service"
	case CategoryPolicy:
		return "policy"
	case CategoryTraceflow:
		return "traceflow"
	case CategoryAffinity:
		return "affinity"
	case CategoryDNS:
		return "dns"
	}
	return fmt.Sprintf("category(%d)", uint8(c))
}

// Cookie layout: round (16 bits) | category (8 bits) | object ID (40 bits).
const (
	roundShift    = 48
	categoryShift = 40
	idBits        = 40

	// RoundMask selects the round of a cookie.
	RoundMask uint64 = 0xffff << roundShift
	// CategoryMask selects round and category.
	CategoryMask uint64 = RoundMask | 0xff<<categoryShift
	// ObjectMask selects the whole cookie: round, category and object.
	ObjectMask uint64 = ^uint64(0)
	idMask     uint64 = 1<<idBits - 1
)

// Cookie is a flow cookie built from a round, a category and an object ID.
type Cookie uint64

// NewCookie builds a cookie; id is truncated to 40 bits.
func NewCookie(r Round, c Category, id uint64) Cookie {
	return Cookie(uint64(r)<<roundShift | uint64(c)<<categoryShift | id&idMask)
}

// Round returns the round of the cookie.
func (c Cookie) Round() Round { return Round(c >> roundShift) }

// Category returns the category of the cookie.
func (c Cookie) Category() Category { return Category(c >> categoryShift) }

// ID returns the 40-bit object ID of the cookie.
func (c Cookie) ID() uint64 { return uint64(c) & idMask }

func (c Cookie) String() string {
	return fmt.Sprintf("round=%d,%s,id=%#x", c.Round(), c.Category(), c.ID())
}

// RoundSelector returns the cookie and mask that select every flow of
// round r, for deleting the previous round after a restart.
func RoundSelector(r Round) (cookie, mask uint64) {
	return uint64(NewCookie(r, 0, 0)), RoundMask
}

// CategorySelector selects every flow of a category in round r.
func CategorySelector(r Round, c Category) (cookie, mask uint64) {
	return uint64(NewCookie(r, c, 0)), CategoryMask
}

// ObjectSelector selects the flows of one object (a pod, a peer) in round
// r, for deleting them with one flow-mod. IDs are 40-bit hashes: two
// objects collide with probability about n²/2^41, and then a delete by
// cookie would take the other object's flows too, so callers that cannot
// accept that delete with DeleteFlowStrict instead.
func ObjectSelector(r Round, c Category, id uint64) (cookie, mask uint64) {
	return uint64(NewCookie(r, c, id)), ObjectMask
}

// PodID is the object ID of a pod's flows.
func PodID(namespace, name string) uint64 { return hashID("pod/" + namespace + "/" + name) }

// ServiceID is the object ID of a Service's flows (key namespace/name).
func ServiceID(key string) uint64 { return hashID("svc/" + key) }

// AffinityID is the object ID of the flows learned for one endpoint of
// one Service port (its ID as ServicePortIDs gives it).
func AffinityID(portID uint32, ep netip.AddrPort) uint64 {
	return hashID(fmt.Sprintf("aff/%d/%s", portID, ep))
}

// PeerID is the object ID of a peer node's flows.
func PeerID(node string) uint64 { return hashID("node/" + node) }

func hashID(s string) uint64 {
	h := fnv.New64a()
	h.Write([]byte(s))
	return h.Sum64() & idMask
}
