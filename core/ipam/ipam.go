// Package ipam allocates pod IPs for one node from the node's pod CIDRs
// (one IPv4, one IPv6, or one of each for dual stack). Every change is on
// disk before the call returns, so an agent crash or restart neither leaks
// an address nor hands one out twice. See README.md.
package ipam

import (
	"cmp"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"os"
	"slices"
	"sync"
)

var (
	// ErrExhausted is returned (wrapped) by Allocate when a pod CIDR has no
	// free address.
	ErrExhausted = errors.New("no free address in the pod CIDR")
	// ErrCIDRChanged is matched by the *CIDRChangedError Open returns.
	ErrCIDRChanged = errors.New("pod CIDR changed")
	// ErrCorrupt is returned (wrapped) by Open for a state file it cannot
	// trust. It is never reset silently: that could hand out addresses in use.
	ErrCorrupt = errors.New("IPAM state file is corrupt")
)

// Key identifies an attachment: one interface of one pod sandbox.
type Key struct {
	ContainerID string
	IfName      string
}

func (k Key) String() string { return k.ContainerID + "/" + k.IfName }

// Owner is an attachment with the pod it belongs to. Only Key identifies it;
// the pod namespace and name, and where the pod's network lives, are
// recorded for people and reconciliation.
type Owner struct {
	Key
	PodNamespace string
	PodName      string
	// NetNS is the pod's network namespace (CNI_NETNS: a path on Linux, an
	// HNS namespace GUID on Windows). With it a restarted agent whose OVS
	// database lost the pod's port can tell a running pod from a dead one.
	// Allocations recorded by older agents have none.
	NetNS string
}

// Allocation is an owner's addresses, one per pod CIDR, in the order of
// Options.PodCIDRs, each with the pod CIDR's prefix length (10.244.1.5/24).
type Allocation struct {
	Owner
	IPs []netip.Prefix
}

// Options configure Open.
type Options struct {
	// Dir holds the state file. It is created (0700) if missing and should
	// be on persistent storage, e.g. /var/lib/seine/ipam.
	Dir string
	// PodCIDRs are the node's pod CIDRs (Node.spec.podCIDRs): one, or one
	// per address family.
	PodCIDRs []netip.Prefix
	// ResetOnCIDRChange drops allocations recorded in a pod CIDR that is no
	// longer configured instead of failing with *CIDRChangedError. Only set
	// it after tearing down the pods that error listed.
	ResetOnCIDRChange bool
}

// CIDRChangedError says the state on disk holds allocations in pod CIDRs
// that differ from the configured ones.
type CIDRChangedError struct {
	Recorded   []netip.Prefix
	Configured []netip.Prefix
	// Stale are the allocations with an address outside the configured CIDRs.
	Stale []Allocation
}

func (e *CIDRChangedError) Error() string {
	return fmt.Sprintf("pod CIDR changed from %v to %v while %d allocations use the old one; tear those pods down and reopen with ResetOnCIDRChange",
		e.Recorded, e.Configured, len(e.Stale))
}

// Is makes errors.Is(err, ErrCIDRChanged) true.
func (e *CIDRChangedError) Is(target error) bool { return target == ErrCIDRChanged }

// Allocator hands out addresses. It is safe for concurrent use; changes
// are serialized and each one is durable before its call returns.
type Allocator struct {
	dir    string
	ranges []ipRange

	mu sync.Mutex
	st *state
}

// state is an immutable snapshot: a change builds a new one, writes it,
// and only then replaces the current one, so a failed write changes nothing.
type state struct {
	owners map[Key]*entry
	used   map[netip.Addr]Key
	inUse  []uint64     // per range
	cursor []netip.Addr // per range; the address allocated last
}

// entry is one owner's record; ips is indexed like Allocator.ranges (an
// invalid Addr where a pod CIDR was added after the allocation).
type entry struct {
	owner Owner
	ips   []netip.Addr
}

func (s *state) clone() *state {
	return &state{
		owners: maps.Clone(s.owners),
		used:   maps.Clone(s.used),
		inUse:  slices.Clone(s.inUse),
		cursor: slices.Clone(s.cursor),
	}
}

// Open loads (or creates) the allocator state in opts.Dir for opts.PodCIDRs.
// It removes temp files of interrupted writes. If the recorded pod CIDRs
// differ from the configured ones, allocations in the old CIDRs make Open
// fail with a *CIDRChangedError unless opts.ResetOnCIDRChange is set; a
// changed CIDR with no allocations is adopted silently.
func Open(opts Options) (*Allocator, error) {
	if opts.Dir == "" {
		return nil, errors.New("ipam: no state directory")
	}
	if len(opts.PodCIDRs) == 0 || len(opts.PodCIDRs) > 2 {
		return nil, fmt.Errorf("ipam: want one or two pod CIDRs, got %d", len(opts.PodCIDRs))
	}
	a := &Allocator{dir: opts.Dir}
	for _, p := range opts.PodCIDRs {
		r, err := newRange(p)
		if err != nil {
			return nil, fmt.Errorf("ipam: %w", err)
		}
		for _, other := range a.ranges {
			if other.prefix.Addr().Is4() == p.Addr().Is4() {
				return nil, fmt.Errorf("ipam: pod CIDRs %s and %s are of the same address family", other.prefix, p)
			}
		}
		a.ranges = append(a.ranges, r)
	}
	if err := os.MkdirAll(opts.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("ipam: create state directory: %w", err)
	}
	if err := removeTempFiles(opts.Dir); err != nil {
		return nil, fmt.Errorf("ipam: %w", err)
	}
	fs, found, err := readState(opts.Dir)
	if err != nil {
		return nil, fmt.Errorf("ipam: %w", err)
	}
	st, changed, err := a.load(fs, opts.ResetOnCIDRChange)
	if err != nil {
		return nil, err
	}
	if !found || changed {
		if err := writeState(a.dir, a.encode(st)); err != nil {
			return nil, fmt.Errorf("ipam: %w", err)
		}
	}
	a.st = st
	return a, nil
}

// load checks the file state against the configured ranges and builds the
// in-memory state. changed reports that it differs from the file.
func (a *Allocator) load(fs fileState, reset bool) (st *state, changed bool, err error) {
	st = &state{
		owners: map[Key]*entry{},
		used:   map[netip.Addr]Key{},
		inUse:  make([]uint64, len(a.ranges)),
		cursor: make([]netip.Addr, len(a.ranges)),
	}
	corrupt := func(format string, args ...any) error {
		return fmt.Errorf("ipam: %w: %s: %s", ErrCorrupt, a.dir, fmt.Sprintf(format, args...))
	}
	var recorded []netip.Prefix
	for _, s := range fs.PodCIDRs {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return nil, false, corrupt("pod CIDR %q: %v", s, err)
		}
		recorded = append(recorded, p)
	}
	if !slices.Equal(recorded, a.prefixes()) {
		changed = true
	}
	// Cursors carry over for unchanged CIDRs only.
	for i, s := range fs.Cursors {
		if i >= len(recorded) || s == "" {
			continue
		}
		c, err := netip.ParseAddr(s)
		if err != nil {
			return nil, false, corrupt("cursor %q: %v", s, err)
		}
		if ri := a.rangeOf(c); ri >= 0 && a.ranges[ri].prefix == recorded[i] {
			st.cursor[ri] = c
		}
	}
	var stale []Allocation
	for _, rec := range fs.Allocations {
		k := Key{ContainerID: rec.ContainerID, IfName: rec.IfName}
		if k.ContainerID == "" || k.IfName == "" {
			return nil, false, corrupt("allocation %+v has no container ID or interface", rec)
		}
		if _, dup := st.owners[k]; dup {
			return nil, false, corrupt("attachment %s recorded twice", k)
		}
		e := &entry{owner: Owner{Key: k, PodNamespace: rec.PodNamespace, PodName: rec.PodName, NetNS: rec.NetNS}, ips: make([]netip.Addr, len(a.ranges))}
		var old []netip.Prefix
		isStale := false
		for _, s := range rec.IPs {
			ip, err := netip.ParseAddr(s)
			if err != nil {
				return nil, false, corrupt("address %q of %s: %v", s, k, err)
			}
			rp, inRecorded := containing(recorded, ip)
			if !inRecorded {
				return nil, false, corrupt("address %s of %s is outside the recorded pod CIDRs %v", ip, k, recorded)
			}
			old = append(old, netip.PrefixFrom(ip, rp.Bits()))
			ri := a.rangeOf(ip)
			if ri < 0 || a.ranges[ri].prefix != rp {
				// Its pod CIDR is no longer configured.
				isStale = true
				continue
			}
			if !a.ranges[ri].usable(ip) {
				return nil, false, corrupt("%s holds reserved address %s", k, ip)
			}
			if e.ips[ri].IsValid() {
				return nil, false, corrupt("%s has two addresses in %s", k, rp)
			}
			e.ips[ri] = ip
		}
		if isStale {
			stale = append(stale, Allocation{Owner: e.owner, IPs: old})
			continue
		}
		for ri, ip := range e.ips {
			if !ip.IsValid() {
				continue
			}
			if other, dup := st.used[ip]; dup {
				return nil, false, corrupt("address %s held by both %s and %s", ip, other, k)
			}
			st.used[ip] = k
			st.inUse[ri]++
		}
		st.owners[k] = e
	}
	if len(stale) > 0 {
		if !reset {
			return nil, false, fmt.Errorf("ipam: %w", &CIDRChangedError{Recorded: recorded, Configured: a.prefixes(), Stale: stale})
		}
		changed = true
	}
	return st, changed, nil
}

func containing(prefixes []netip.Prefix, ip netip.Addr) (netip.Prefix, bool) {
	for _, p := range prefixes {
		if p.Contains(ip) {
			return p, true
		}
	}
	return netip.Prefix{}, false
}

func (a *Allocator) prefixes() []netip.Prefix {
	out := make([]netip.Prefix, len(a.ranges))
	for i, r := range a.ranges {
		out[i] = r.prefix
	}
	return out
}

// rangeOf is the index of the configured range containing ip, or -1.
func (a *Allocator) rangeOf(ip netip.Addr) int {
	for i, r := range a.ranges {
		if r.prefix.Contains(ip) {
			return i
		}
	}
	return -1
}

// PodCIDRs are the configured pod CIDRs.
func (a *Allocator) PodCIDRs() []netip.Prefix { return a.prefixes() }

// Gateways are the gateway addresses, one per pod CIDR (10.244.1.1/24).
func (a *Allocator) Gateways() []netip.Prefix {
	out := make([]netip.Prefix, len(a.ranges))
	for i, r := range a.ranges {
		out[i] = netip.PrefixFrom(r.gateway, r.prefix.Bits())
	}
	return out
}

// Allocate returns an address in every pod CIDR for o. It is idempotent: an
// owner that already has addresses gets the same ones back (a retried ADD).
// A new address is the first free one after the one allocated last, so an
// address just released is not reused at once. When a pod CIDR is full it
// returns an error matching ErrExhausted and allocates nothing.
func (a *Allocator) Allocate(o Owner) (Allocation, error) {
	if o.ContainerID == "" || o.IfName == "" {
		return Allocation{}, fmt.Errorf("ipam: allocate: owner %+v needs a container ID and an interface name", o)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	cur := a.st.owners[o.Key]
	if cur != nil && !slices.ContainsFunc(cur.ips, func(ip netip.Addr) bool { return !ip.IsValid() }) {
		return a.allocation(cur), nil
	}
	next := a.st.clone()
	e := &entry{owner: o, ips: make([]netip.Addr, len(a.ranges))}
	if cur != nil {
		e.owner = cur.owner
		copy(e.ips, cur.ips)
	}
	for ri := range a.ranges {
		if e.ips[ri].IsValid() {
			continue
		}
		r := &a.ranges[ri]
		ip, ok := r.findFree(next.cursor[ri], next.inUse[ri], func(ip netip.Addr) bool { _, t := next.used[ip]; return t })
		if !ok {
			return Allocation{}, fmt.Errorf("ipam: allocate for %s: %s has no free address (%d in use): %w", o.Key, r.prefix, next.inUse[ri], ErrExhausted)
		}
		e.ips[ri] = ip
		next.used[ip] = o.Key
		next.inUse[ri]++
		next.cursor[ri] = ip
	}
	next.owners[o.Key] = e
	if err := a.commit(next); err != nil {
		return Allocation{}, fmt.Errorf("ipam: allocate for %s: %w", o.Key, err)
	}
	return a.allocation(e), nil
}

// Release frees k's addresses. Releasing an unknown owner is not an error.
func (a *Allocator) Release(k Key) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if _, ok := a.st.owners[k]; !ok {
		return nil
	}
	next := a.st.clone()
	next.remove(k)
	if err := a.commit(next); err != nil {
		return fmt.Errorf("ipam: release %s: %w", k, err)
	}
	return nil
}

// ReleaseAllExcept frees every allocation whose key is not in keep, in one
// durable change, and returns what it freed. The agent calls it for CNI GC
// and after a restart, with the attachments that still exist.
func (a *Allocator) ReleaseAllExcept(keep []Key) ([]Allocation, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	keepSet := make(map[Key]bool, len(keep))
	for _, k := range keep {
		keepSet[k] = true
	}
	next := a.st.clone()
	var freed []Allocation
	for k, e := range a.st.owners {
		if !keepSet[k] {
			freed = append(freed, a.allocation(e))
			next.remove(k)
		}
	}
	if len(freed) == 0 {
		return nil, nil
	}
	if err := a.commit(next); err != nil {
		return nil, fmt.Errorf("ipam: release all but %d: %w", len(keep), err)
	}
	sortAllocations(freed)
	return freed, nil
}

// Lookup returns k's allocation.
func (a *Allocator) Lookup(k Key) (Allocation, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	e, ok := a.st.owners[k]
	if !ok {
		return Allocation{}, false
	}
	return a.allocation(e), true
}

// List returns every allocation, ordered by address.
func (a *Allocator) List() []Allocation {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := make([]Allocation, 0, len(a.st.owners))
	for _, e := range a.st.owners {
		out = append(out, a.allocation(e))
	}
	sortAllocations(out)
	return out
}

func sortAllocations(as []Allocation) {
	slices.SortFunc(as, func(x, y Allocation) int {
		for i := 0; i < len(x.IPs) && i < len(y.IPs); i++ {
			if c := x.IPs[i].Addr().Compare(y.IPs[i].Addr()); c != 0 {
				return c
			}
		}
		return cmp.Or(cmp.Compare(len(x.IPs), len(y.IPs)), cmp.Compare(x.Key.String(), y.Key.String()))
	})
}

func (s *state) remove(k Key) {
	e := s.owners[k]
	delete(s.owners, k)
	for ri, ip := range e.ips {
		if ip.IsValid() {
			delete(s.used, ip)
			s.inUse[ri]--
		}
	}
}

// commit makes next durable and then current.
func (a *Allocator) commit(next *state) error {
	if err := writeState(a.dir, a.encode(next)); err != nil {
		return err
	}
	a.st = next
	return nil
}

func (a *Allocator) allocation(e *entry) Allocation {
	al := Allocation{Owner: e.owner}
	for ri, ip := range e.ips {
		if ip.IsValid() {
			al.IPs = append(al.IPs, netip.PrefixFrom(ip, a.ranges[ri].prefix.Bits()))
		}
	}
	return al
}

func (a *Allocator) encode(st *state) *fileState {
	fs := &fileState{Version: stateVersion, Allocations: []fileRecord{}}
	for ri, r := range a.ranges {
		fs.PodCIDRs = append(fs.PodCIDRs, r.prefix.String())
		fs.Cursors = append(fs.Cursors, addrString(st.cursor[ri]))
	}
	entries := slices.Collect(maps.Values(st.owners))
	slices.SortFunc(entries, func(x, y *entry) int { return cmp.Compare(x.owner.Key.String(), y.owner.Key.String()) })
	for _, e := range entries {
		rec := fileRecord{ContainerID: e.owner.ContainerID, IfName: e.owner.IfName, PodNamespace: e.owner.PodNamespace, PodName: e.owner.PodName, NetNS: e.owner.NetNS}
		for _, ip := range e.ips {
			if ip.IsValid() {
				rec.IPs = append(rec.IPs, ip.String())
			}
		}
		fs.Allocations = append(fs.Allocations, rec)
	}
	return fs
}
