package policy

import (
	"maps"
	"net/netip"
	"slices"

	controlplane "github.com/seine-cni/seine/core/apis/controlplane/v1beta1"
	"github.com/seine-cni/seine/core/pipeline"
	"github.com/seine-cni/seine/core/tiers"
)

// incState is what the last apply resolved, kept so that the next one
// resolves only the policies that changed: a policy whose object, or one of
// whose groups, is not the one resolved last time (compared by pointer:
// the watch decodes a new object for every change), that came or went, or
// whose AppliedToGroups list a local pod that came, went or changed. The
// node's sources must be those of last time; a change of them, the first
// apply and any apply after a failed one resolve everything (resolveFull).
type incState struct {
	// atgs and ags are the groups resolved, by name: the maps of a
	// State may be the caller's, changed in place after a Sync.
	atgs    map[string]*controlplane.AppliedToGroup
	ags     map[string]*controlplane.AddressGroup
	pods    []Pod
	sources []netip.Addr
	entries map[string]*policyEntry // by policy name
	// tiered is the entry of every tiered rule, by "<policy UID>/<key>"
	// (the allocator's key): whose priority a neighbour's insert moves.
	tiered          map[string]*policyEntry
	ingress, egress map[uint32]int // isolating policies by port
	gens            map[string]int64
	failed          map[string]Realization
	index           *pipeline.PolicyIndex
}

// policyEntry is one policy as resolved, with the objects it was
// resolved from.
type policyEntry struct {
	name string // the policy's key in the State
	np   *controlplane.NetworkPolicy
	atgs map[string]*controlplane.AppliedToGroup // nil: missing
	ags  map[string]*controlplane.AddressGroup
	res  policyResult // tiered rules with their priorities
}

// delta is what an incremental resolution changed: the old and new
// versions of the rules that changed (for narrowedTraffic, with the old
// and new isolation and sources), and the rules for the index.
type delta struct {
	old, cur pipeline.PolicySet
	update   []pipeline.PolicyRule
	remove   [][2]string
	moved    int
}

func newEntry(name string, np *controlplane.NetworkPolicy, s State, local map[string]Pod) *policyEntry {
	e := &policyEntry{name: name, np: np, atgs: map[string]*controlplane.AppliedToGroup{}, ags: map[string]*controlplane.AddressGroup{}}
	for _, g := range np.AppliedToGroups {
		e.atgs[g] = s.AppliedToGroups[g]
	}
	for _, r := range np.Rules {
		for _, g := range r.AppliedToGroups {
			e.atgs[g] = s.AppliedToGroups[g]
		}
		for _, g := range slices.Concat(r.From.AddressGroups, r.To.AddressGroups) {
			e.ags[g] = s.AddressGroups[g]
		}
	}
	e.res = resolveOne(name, np, s, local)
	return e
}

// current reports whether e does not use the groups named in atgs and ags
// (those that changed, or whose local pods did).
func (e *policyEntry) current(atgs, ags map[string]bool) bool {
	for g := range e.atgs {
		if atgs[g] {
			return false
		}
	}
	for g := range e.ags {
		if ags[g] {
			return false
		}
	}
	return true
}

func ruleKey(r *pipeline.PolicyRule) string { return r.Policy + "/" + r.Key }

func tableOf(r *pipeline.PolicyRule) tierTable { return tierTable{r.Direction, r.Tier} }

// resolveFull resolves c.state whole, like resolve, and keeps what it
// resolved for the next apply (nil when a table ran out of priorities:
// the next apply resolves everything again).
func (c *Controller) resolveFull(pods []Pod, sources []netip.Addr) (resolved, *incState) {
	s := *c.state
	local := localPods(pods)
	inc := &incState{
		atgs: maps.Clone(s.AppliedToGroups), ags: maps.Clone(s.AddressGroups), pods: pods, sources: slices.Clone(sources),
		entries: make(map[string]*policyEntry, len(s.NetworkPolicies)), tiered: map[string]*policyEntry{},
		ingress: map[uint32]int{}, egress: map[uint32]int{}, gens: map[string]int64{}, failed: map[string]Realization{},
	}
	r := resolved{orders: map[string]tiers.Order{}}
	for _, name := range sortedKeys(s.NetworkPolicies) {
		np := s.NetworkPolicies[name]
		if np == nil {
			continue
		}
		e := newEntry(name, np, s, local)
		inc.add(name, e)
		r.problems = append(r.problems, e.res.problems...)
		maps.Copy(r.orders, e.res.orders)
		r.set.Rules = append(r.set.Rules, e.res.rules...)
	}
	if _, err := c.prios.assign(&r.set, r.orders); err != nil {
		r.problems = append(r.problems, err.Error())
		inc = nil
	} else {
		prio := map[string]uint16{}
		for i := range r.set.Rules {
			if ru := &r.set.Rules[i]; ru.Tier != pipeline.TierNone {
				prio[ruleKey(ru)] = ru.Priority
			}
		}
		for _, e := range inc.entries {
			for i := range e.res.rules {
				if ru := &e.res.rules[i]; ru.Tier != pipeline.TierNone {
					ru.Priority = prio[ruleKey(ru)]
				}
			}
		}
	}
	r.gens, r.failed = map[string]int64{}, map[string]Realization{}
	ing, eg := map[uint32]bool{}, map[uint32]bool{}
	for name, e := range entriesOf(s, local, inc) {
		if e.res.realized {
			r.gens[name] = e.np.Generation
		}
		if e.res.failed != nil {
			r.failed[name] = *e.res.failed
		}
		for _, p := range e.res.ingress {
			ing[p] = true
		}
		for _, p := range e.res.egress {
			eg[p] = true
		}
	}
	r.set.IngressIsolated, r.set.EgressIsolated = sortedSet(ing), sortedSet(eg)
	r.set.NodeSources = slices.Clone(sources)
	return r, inc
}

// entriesOf are inc's entries, or when inc is nil the policies of s
// resolved again (only for their status and isolation).
func entriesOf(s State, local map[string]Pod, inc *incState) map[string]*policyEntry {
	if inc != nil {
		return inc.entries
	}
	out := map[string]*policyEntry{}
	for name, np := range s.NetworkPolicies {
		if np != nil {
			out[name] = newEntry(name, np, s, local)
		}
	}
	return out
}

// add counts e in inc under name.
func (inc *incState) add(name string, e *policyEntry) {
	inc.entries[name] = e
	for i := range e.res.rules {
		if ru := &e.res.rules[i]; ru.Tier != pipeline.TierNone {
			inc.tiered[ruleKey(ru)] = e
		}
	}
	for _, p := range e.res.ingress {
		inc.ingress[p]++
	}
	for _, p := range e.res.egress {
		inc.egress[p]++
	}
	if e.res.realized {
		inc.gens[name] = e.np.Generation
	}
	if e.res.failed != nil {
		inc.failed[name] = *e.res.failed
	}
}

// drop takes the entry of name out of inc.
func (inc *incState) drop(name string) {
	e := inc.entries[name]
	if e == nil {
		return
	}
	delete(inc.entries, name)
	for i := range e.res.rules {
		if ru := &e.res.rules[i]; ru.Tier != pipeline.TierNone && inc.tiered[ruleKey(ru)] == e {
			delete(inc.tiered, ruleKey(ru))
		}
	}
	for _, p := range e.res.ingress {
		if inc.ingress[p]--; inc.ingress[p] == 0 {
			delete(inc.ingress, p)
		}
	}
	for _, p := range e.res.egress {
		if inc.egress[p]--; inc.egress[p] == 0 {
			delete(inc.egress, p)
		}
	}
	delete(inc.gens, name)
	delete(inc.failed, name)
}

func (inc *incState) isolated() (ingress, egress []uint32) {
	return sortedKeys32(inc.ingress), sortedKeys32(inc.egress)
}

func sortedKeys32(m map[uint32]int) []uint32 {
	out := slices.Collect(maps.Keys(m))
	slices.Sort(out)
	return out
}

// resolveDelta brings inc to c.state, resolving only the policies that
// changed, and returns the whole resolution and what changed. ok is false
// when it cannot (the node's sources changed, a table ran out of
// priorities): then inc may be half updated and must be dropped.
func (c *Controller) resolveDelta(inc *incState, pods []Pod, sources []netip.Addr) (r resolved, d delta, ok bool) {
	if !slices.Equal(inc.sources, sources) {
		return r, d, false
	}
	s := *c.state
	// The groups that changed, and the policies that did or use them. A
	// local pod that came, went or changed changes the targets of the
	// policies whose AppliedToGroups list it.
	atgs, ags := changedKeys(inc.atgs, s.AppliedToGroups), changedKeys(inc.ags, s.AddressGroups)
	if moved := changedPods(inc.pods, pods); len(moved) > 0 {
		for name, g := range s.AppliedToGroups {
			if g != nil && slices.ContainsFunc(g.Members, func(m controlplane.GroupMember) bool {
				return moved[m.Pod.Namespace+"/"+m.Pod.Name]
			}) {
				atgs[name] = true
			}
		}
	}
	names := map[string]bool{}
	kept := 0 // entries whose policy s still has
	for name, np := range s.NetworkPolicies {
		e := inc.entries[name]
		if np != nil && (e == nil || e.np != np) {
			names[name] = true
		}
		if np != nil && e != nil {
			kept++
		}
	}
	if kept < len(inc.entries) {
		for name := range inc.entries {
			if s.NetworkPolicies[name] == nil {
				names[name] = true
			}
		}
	}
	if len(atgs)+len(ags) > 0 {
		for name, e := range inc.entries {
			if !names[name] && !e.current(atgs, ags) {
				names[name] = true
			}
		}
	}
	local := localPods(pods)
	d.old.IngressIsolated, d.old.EgressIsolated = inc.isolated()
	d.old.NodeSources, d.cur.NodeSources = sources, sources
	olds := map[string]*policyEntry{}
	news := map[string]*policyEntry{}
	for name := range names {
		olds[name] = inc.entries[name]
		if np := s.NetworkPolicies[name]; np != nil {
			news[name] = newEntry(name, np, s, local)
		}
	}
	// Priorities: the tiered rules that went or came, table by table.
	type change struct {
		remove []string
		add    []tiers.Rule
	}
	byTable := map[tierTable]*change{}
	at := func(t tierTable) *change {
		if byTable[t] == nil {
			byTable[t] = &change{}
		}
		return byTable[t]
	}
	for name := range names {
		now := map[string]tierTable{}
		if e := news[name]; e != nil {
			for i := range e.res.rules {
				if ru := &e.res.rules[i]; ru.Tier != pipeline.TierNone {
					now[ruleKey(ru)] = tableOf(ru)
					at(tableOf(ru)).add = append(at(tableOf(ru)).add, tiers.Rule{Key: ruleKey(ru), Order: e.res.orders[ruleKey(ru)]})
				}
			}
		}
		if e := olds[name]; e != nil {
			for i := range e.res.rules {
				if ru := &e.res.rules[i]; ru.Tier != pipeline.TierNone {
					if t, ok := now[ruleKey(ru)]; !ok || t != tableOf(ru) {
						at(tableOf(ru)).remove = append(at(tableOf(ru)).remove, ruleKey(ru))
					}
				}
			}
		}
	}
	moved := map[string]uint16{}
	for t, ch := range byTable {
		got, n, err := c.prios.allocator(t).Apply(ch.remove, ch.add)
		if err != nil {
			return r, d, false
		}
		d.moved += n
		for k, v := range got {
			moved[k] = v
		}
	}
	// Apply the changes: entries first, then the priorities of the rules
	// that moved, in their entries (new or kept).
	for name := range names {
		inc.drop(name)
		if e := olds[name]; e != nil {
			d.old.Rules = append(d.old.Rules, e.res.rules...)
			for i := range e.res.rules {
				d.remove = append(d.remove, [2]string{e.res.rules[i].Policy, e.res.rules[i].Key})
			}
		}
	}
	for name, e := range news {
		for i := range e.res.rules {
			if ru := &e.res.rules[i]; ru.Tier != pipeline.TierNone {
				p, _ := c.prios.allocator(tableOf(ru)).Priority(ruleKey(ru))
				ru.Priority = 2 * p
			}
		}
		inc.add(name, e)
		r.problems = append(r.problems, e.res.problems...)
	}
	for k, p := range moved {
		e := inc.tiered[k]
		if e == nil || news[e.name] == e {
			continue // new: its priority is set above
		}
		for i := range e.res.rules {
			if ru := &e.res.rules[i]; ruleKey(ru) == k {
				d.old.Rules = append(d.old.Rules, *ru)
				ru.Priority = 2 * p
				d.cur.Rules = append(d.cur.Rules, *ru)
				d.update = append(d.update, *ru)
			}
		}
	}
	for _, e := range news {
		d.cur.Rules = append(d.cur.Rules, e.res.rules...)
		d.update = append(d.update, e.res.rules...)
	}
	// A rule of a new entry is no rule to remove.
	updated := map[[2]string]bool{}
	for _, ru := range d.update {
		updated[[2]string{ru.Policy, ru.Key}] = true
	}
	d.remove = slices.DeleteFunc(d.remove, func(k [2]string) bool { return updated[k] })
	d.cur.IngressIsolated, d.cur.EgressIsolated = inc.isolated()
	for g := range atgs {
		if v, ok := s.AppliedToGroups[g]; ok {
			inc.atgs[g] = v
		} else {
			delete(inc.atgs, g)
		}
	}
	for g := range ags {
		if v, ok := s.AddressGroups[g]; ok {
			inc.ags[g] = v
		} else {
			delete(inc.ags, g)
		}
	}
	inc.pods = pods

	r.set.Rules = make([]pipeline.PolicyRule, 0, len(inc.tiered)+len(inc.entries))
	for _, e := range inc.entries {
		r.set.Rules = append(r.set.Rules, e.res.rules...)
	}
	r.set.IngressIsolated, r.set.EgressIsolated = d.cur.IngressIsolated, d.cur.EgressIsolated
	r.set.NodeSources = slices.Clone(sources)
	r.gens, r.failed = maps.Clone(inc.gens), maps.Clone(inc.failed)
	return r, d, true
}

// changedKeys names the keys whose value is not the same pointer in a and
// b (added, removed or replaced).
func changedKeys[V comparable](a, b map[string]V) map[string]bool {
	out := map[string]bool{}
	for k, v := range b {
		if w, ok := a[k]; !ok || w != v {
			out[k] = true
		}
	}
	for k := range a {
		if _, ok := b[k]; !ok {
			out[k] = true
		}
	}
	return out
}

// changedPods names ("namespace/name") the pods that are in one list and
// not the other, or in both with another port or other addresses.
func changedPods(a, b []Pod) map[string]bool {
	was := make(map[string]Pod, len(a))
	for _, p := range a {
		was[p.Namespace+"/"+p.Name] = p
	}
	out := map[string]bool{}
	for _, p := range b {
		k := p.Namespace + "/" + p.Name
		if o, ok := was[k]; !ok || o.OFPort != p.OFPort || !slices.Equal(o.IPs, p.IPs) {
			out[k] = true
		}
		delete(was, k)
	}
	for k := range was {
		out[k] = true
	}
	return out
}
