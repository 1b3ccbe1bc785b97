package fqdn

import (
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"time"

	"golang.org/x/net/dns/dnsmessage"
)

// DefaultMinTTL is the floor under an answer's TTL. An answer with TTL 0
// (or 1) would otherwise expire before the pod that asked has sent its
// first packet to the address: the pod received the answer after the agent
// learned it, so the floor is what the pod has to open its connection.
// Established connections do not need the address any more (policy judges
// only a connection's first packet).
const DefaultMinTTL = 5 * time.Second

// DefaultMaxEntries bounds the (name, address) pairs a Cache holds: a pod
// answering itself a flood of names cannot grow the agent without bound.
const DefaultMaxEntries = 65536

// maxChain is how many CNAMEs a name may go through to its addresses.
const maxChain = 8

// ErrNotResponse is returned for a DNS message that is a query.
var ErrNotResponse = errors.New("dns message is not a response")

// Cache holds what the DNS answers said about the names that some pattern
// stands for: each name's addresses, each until its answer's TTL (at
// least MinTTL) has passed. Names no pattern matches are not kept. Not
// safe for concurrent use.
type Cache struct {
	// MinTTL is the floor under every answer's TTL (DefaultMinTTL if 0).
	MinTTL time.Duration
	// MaxEntries bounds the (name, address) pairs (DefaultMaxEntries if 0).
	MaxEntries int

	patterns map[Pattern]struct{}
	names    map[string]map[netip.Addr]time.Time // canonical name -> address -> expiry
	entries  int
	refused  uint64
}

// SetPatterns makes ps the patterns whose names the cache learns (whole
// desired state) and forgets what it knew of names none of them matches.
func (c *Cache) SetPatterns(ps []Pattern) {
	c.patterns = make(map[Pattern]struct{}, len(ps))
	for _, p := range ps {
		c.patterns[p] = struct{}{}
	}
	for n, as := range c.names {
		if !c.wanted(n) {
			c.entries -= len(as)
			delete(c.names, n)
		}
	}
}

// Patterns is the patterns the cache learns names for, sorted.
func (c *Cache) Patterns() []Pattern {
	out := slices.Collect(maps.Keys(c.patterns))
	slices.SortFunc(out, func(a, b Pattern) int { return strings.Compare(a.String(), b.String()) })
	return out
}

// wanted reports whether a pattern matches the canonical name n.
func (c *Cache) wanted(n string) bool {
	for p := range c.patterns {
		if p.Match(n) {
			return true
		}
	}
	return false
}

// matching is the patterns that match one of the names, sorted.
func (c *Cache) matching(names []string) []Pattern {
	var out []Pattern
	for p := range c.patterns {
		for _, n := range names {
			if p.Match(n) {
				out = append(out, p)
				break
			}
		}
	}
	slices.SortFunc(out, func(a, b Pattern) int { return strings.Compare(a.String(), b.String()) })
	return out
}

// Learn reads a DNS response (the UDP payload) received at now and keeps
// the addresses it gives for the names patterns match. Only what the
// answer section says about a question's name counts: its A and AAAA
// records, and those of the names its CNAME chain leads to (at most 8
// hops), every name of the chain getting the addresses; a record about a
// name nobody asked is ignored. A name keeps an address for the smallest
// TTL on its way to it (its CNAMEs' and the address record's), raised to
// MinTTL. A response with an error code
// (NXDOMAIN, SERVFAIL) teaches nothing. Learn returns the patterns whose
// address sets grew (a known address only gets a later expiry).
func (c *Cache) Learn(now time.Time, msg []byte) ([]Pattern, error) {
	var p dnsmessage.Parser
	h, err := p.Start(msg)
	if err != nil {
		return nil, fmt.Errorf("parse dns response: %w", err)
	}
	if !h.Response {
		return nil, ErrNotResponse
	}
	qs, err := p.AllQuestions()
	if err != nil {
		return nil, fmt.Errorf("parse dns questions: %w", err)
	}
	if h.RCode != dnsmessage.RCodeSuccess || len(c.patterns) == 0 {
		return nil, nil
	}
	type addrTTL struct {
		addr netip.Addr
		ttl  uint32
	}
	type target struct {
		name string
		ttl  uint32
	}
	addrs := map[string][]addrTTL{}
	cnames := map[string]target{}
	for {
		rh, err := p.AnswerHeader()
		if errors.Is(err, dnsmessage.ErrSectionDone) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("parse dns answer: %w", err)
		}
		name := Canonical(rh.Name.String())
		switch rh.Type {
		case dnsmessage.TypeA:
			r, err := p.AResource()
			if err != nil {
				return nil, fmt.Errorf("parse dns A record: %w", err)
			}
			addrs[name] = append(addrs[name], addrTTL{netip.AddrFrom4(r.A), rh.TTL})
		case dnsmessage.TypeAAAA:
			r, err := p.AAAAResource()
			if err != nil {
				return nil, fmt.Errorf("parse dns AAAA record: %w", err)
			}
			addrs[name] = append(addrs[name], addrTTL{netip.AddrFrom16(r.AAAA), rh.TTL})
		case dnsmessage.TypeCNAME:
			r, err := p.CNAMEResource()
			if err != nil {
				return nil, fmt.Errorf("parse dns CNAME record: %w", err)
			}
			cnames[name] = target{Canonical(r.CNAME.String()), rh.TTL}
		default:
			if err := p.SkipAnswer(); err != nil {
				return nil, fmt.Errorf("parse dns answer: %w", err)
			}
		}
	}
	floor := c.MinTTL
	if floor <= 0 {
		floor = DefaultMinTTL
	}
	var grew []string
	for _, q := range qs {
		if q.Class != dnsmessage.ClassINET || (q.Type != dnsmessage.TypeA && q.Type != dnsmessage.TypeAAAA) {
			continue
		}
		// chain[i]'s TTL bound: the smallest TTL of the CNAMEs from it on.
		chain, bound := []string{Canonical(q.Name.String())}, []uint32{1<<32 - 1}
		for hop := 0; ; hop++ {
			cur := chain[len(chain)-1]
			for _, a := range addrs[cur] {
				for i, n := range chain {
					exp := now.Add(max(time.Duration(min(bound[i], a.ttl))*time.Second, floor))
					if c.wanted(n) && c.add(n, a.addr.Unmap(), exp) {
						grew = append(grew, n)
					}
				}
			}
			next, ok := cnames[cur]
			if !ok || hop == maxChain || slices.Contains(chain, next.name) {
				break
			}
			for i := range bound {
				bound[i] = min(bound[i], next.ttl)
			}
			chain, bound = append(chain, next.name), append(bound, 1<<32-1)
		}
	}
	return c.matching(grew), nil
}

// add keeps addr for the canonical name n until exp (or a later expiry it
// had) and reports whether the address is new for the name.
func (c *Cache) add(n string, addr netip.Addr, exp time.Time) bool {
	as := c.names[n]
	if old, ok := as[addr]; ok {
		if exp.After(old) {
			as[addr] = exp
		}
		return false
	}
	limit := c.MaxEntries
	if limit <= 0 {
		limit = DefaultMaxEntries
	}
	if c.entries >= limit {
		c.refused++
		return false
	}
	if as == nil {
		as = map[netip.Addr]time.Time{}
		if c.names == nil {
			c.names = map[string]map[netip.Addr]time.Time{}
		}
		c.names[n] = as
	}
	as[addr] = exp
	c.entries++
	return true
}

// Addrs is the addresses of every name p matches that have not expired at
// now, sorted.
func (c *Cache) Addrs(p Pattern, now time.Time) []netip.Addr {
	var out []netip.Addr
	for n, as := range c.names {
		if !p.Match(n) {
			continue
		}
		for a, exp := range as {
			if exp.After(now) {
				out = append(out, a)
			}
		}
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return slices.Compact(out)
}

// Expire forgets every address whose time has come at now and returns the
// patterns that matched one of their names (their sets may have shrunk;
// another name may still hold the address).
func (c *Cache) Expire(now time.Time) []Pattern {
	var gone []string
	for n, as := range c.names {
		for a, exp := range as {
			if !exp.After(now) {
				delete(as, a)
				c.entries--
				if len(gone) == 0 || gone[len(gone)-1] != n {
					gone = append(gone, n)
				}
			}
		}
		if len(as) == 0 {
			delete(c.names, n)
		}
	}
	return c.matching(gone)
}

// NextExpiry is the earliest time an address expires, false if the cache
// is empty.
func (c *Cache) NextExpiry() (time.Time, bool) {
	var first time.Time
	for _, as := range c.names {
		for _, exp := range as {
			if first.IsZero() || exp.Before(first) {
				first = exp
			}
		}
	}
	return first, !first.IsZero()
}

// Len is the number of (name, address) pairs held.
func (c *Cache) Len() int { return c.entries }

// Refused is how many new (name, address) pairs were not kept because the
// cache held MaxEntries.
func (c *Cache) Refused() uint64 { return c.refused }
