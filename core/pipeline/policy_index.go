package pipeline

import (
	"cmp"
	"fmt"
	"maps"
	"net/netip"
	"reflect"
	"slices"

	"github.com/seine-cni/seine/ovs/openflow"
)

// PolicyIndex keeps the flows of a PolicySet (PolicyFlows under round 0)
// while its rules come, change and go one at a time, so that a change
// costs the work of the rules it touches: their own flows (conj_id and
// metric) and the clause flows they share with others (a clause shared by many rules is
// rendered again whole), not every rule of the node. Changed names the
// flows (by Flow.Key) that may differ since ClearChanged.
//
// Flows() always equals PolicyFlows of the rules, isolation and node
// sources it was given, conjunction IDs included: a rule takes its
// PolicyConjID when that is free and no collision depends on it; when one
// does (a new rule whose ID another holds, or a rule whose ID another's
// probe passed), the index rebuilds itself whole, which is rare (31-bit
// IDs). It is not safe for concurrent use.
type PolicyIndex struct {
	sources       []netip.Addr
	ingIso, egIso map[uint32]bool
	rules         map[policyRuleRef]*indexedRule
	ids           map[uint32]policyRuleRef
	probed        map[uint32]int // how many probe chains pass through an ID
	clauses       map[clauseKey]*clauseFlow
	clauseFlows   map[clauseKey][]string // keys of the flows a clause renders
	tables        map[Table]int          // rules with flows, by table
	tableFlows    map[Table][]string     // keys of a tier table's own flows
	flows         map[string]*openflow.Flow
	dirty         map[clauseKey]bool
	changed       map[string]bool
	rebuilds      int // whole rebuilds after a collision (for tests)
	exportDenied  bool
}

type policyRuleRef struct{ policy, key string }

type indexedRule struct {
	rule PolicyRule
	id   uint32
	part rulePart
}

// NewPolicyIndex indexes s.
func NewPolicyIndex(s PolicySet) (*PolicyIndex, error) {
	x := &PolicyIndex{}
	if err := x.build(s); err != nil {
		return nil, err
	}
	return x, nil
}

// build indexes s from scratch, as PolicyFlows builds it; every flow that
// differs from before is marked changed.
func (x *PolicyIndex) build(s PolicySet) error {
	old := x.flows
	*x = PolicyIndex{
		sources: sortedAddrs(s.NodeSources), ingIso: map[uint32]bool{}, egIso: map[uint32]bool{},
		rules: map[policyRuleRef]*indexedRule{}, ids: map[uint32]policyRuleRef{}, probed: map[uint32]int{},
		clauses: map[clauseKey]*clauseFlow{}, clauseFlows: map[clauseKey][]string{},
		tables: map[Table]int{}, tableFlows: map[Table][]string{},
		flows: map[string]*openflow.Flow{}, dirty: map[clauseKey]bool{}, changed: x.changed,
		exportDenied: s.ExportDenied,
	}
	if x.changed == nil {
		x.changed = map[string]bool{}
	}
	b := &builder{cookie: NewCookie(0, CategoryPolicy, 0)}
	est := func() *openflow.Match {
		return match().IP().CTState(openflow.CTTracked, openflow.CTTracked|openflow.CTNew)
	}
	b.add(EgressPolicy, prioPolicyBypass, est(), gotoT(L3Forwarding))
	b.add(IngressPolicy, prioPolicyBypass, est(), gotoT(ConntrackCommit))
	for _, a := range x.sources {
		if a.Unmap().Is4() {
			b.add(IngressPolicy, prioPolicyNode, match().IP().IPSrcAddr(a), gotoT(ConntrackCommit))
		}
	}
	for _, f := range b.flows {
		x.flows[f.Key()] = f
	}
	x.SetIsolated(s.IngressIsolated, s.EgressIsolated)
	rules := slices.Clone(s.Rules)
	slices.SortFunc(rules, func(a, b PolicyRule) int {
		return cmp.Or(cmp.Compare(a.Policy, b.Policy), cmp.Compare(a.Key, b.Key))
	})
	for i := range rules {
		ru := &rules[i]
		ref := policyRuleRef{ru.Policy, ru.Key}
		if x.rules[ref] != nil {
			return badPolicyf("rule %q of policy %s appears twice", ru.Key, ru.Policy)
		}
		base := PolicyConjID(ru.Policy, ru.Key)
		id := base
		for _, used := x.ids[id]; used; _, used = x.ids[id] {
			x.probed[id]++
			id = id%0x7fffffff + 1
		}
		if err := x.addRule(ru, id); err != nil {
			return err
		}
	}
	if err := x.flush(); err != nil {
		return err
	}
	for k, f := range old {
		if nf := x.flows[k]; nf == nil || !sameFlow(f, nf) {
			x.changed[k] = true
		}
	}
	for k := range x.flows {
		if old[k] == nil {
			x.changed[k] = true
		}
	}
	return nil
}

func sameFlow(a, b *openflow.Flow) bool {
	return a.CookieValue() == b.CookieValue() && string(a.InstructionBytes()) == string(b.InstructionBytes())
}

// addRule indexes ru under conjunction ID id.
func (x *PolicyIndex) addRule(ru *PolicyRule, id uint32) error {
	part, err := ruleParts(ru, id, 0, x.exportDenied)
	if err != nil {
		return err
	}
	ref := policyRuleRef{ru.Policy, ru.Key}
	x.rules[ref] = &indexedRule{rule: *ru, id: id, part: part}
	x.ids[id] = ref
	for _, c := range part.clauses {
		cf := x.clauses[c.key]
		if cf == nil {
			cf = &clauseFlow{key: c.key, owners: map[uint32]string{}}
			x.clauses[c.key] = cf
		}
		if _, seen := cf.owners[c.conj.ID]; !seen {
			cf.conjs = append(cf.conjs, c.conj)
		}
		cf.owners[c.conj.ID] = ru.Policy
		x.dirty[c.key] = true
	}
	if len(part.own) > 0 {
		for _, f := range part.own {
			x.setFlow(f)
		}
		if x.tables[part.table]++; x.tables[part.table] == 1 {
			x.setTableFlows(part.table)
		}
	}
	return nil
}

// removeRule takes ir out of the index.
func (x *PolicyIndex) removeRule(ir *indexedRule) {
	delete(x.rules, policyRuleRef{ir.rule.Policy, ir.rule.Key})
	delete(x.ids, ir.id)
	for _, c := range ir.part.clauses {
		cf := x.clauses[c.key]
		if cf == nil {
			continue
		}
		if _, ok := cf.owners[c.conj.ID]; ok {
			delete(cf.owners, c.conj.ID)
			cf.conjs = slices.DeleteFunc(cf.conjs, func(o openflow.Conjunction) bool { return o.ID == c.conj.ID })
		}
		x.dirty[c.key] = true
	}
	if len(ir.part.own) > 0 {
		for _, f := range ir.part.own {
			x.deleteFlow(f.Key())
		}
		if x.tables[ir.part.table]--; x.tables[ir.part.table] == 0 {
			delete(x.tables, ir.part.table)
			for _, k := range x.tableFlows[ir.part.table] {
				x.deleteFlow(k)
			}
			delete(x.tableFlows, ir.part.table)
		}
	}
}

// setTableFlows adds the flows a tier table holds once it has rules.
func (x *PolicyIndex) setTableFlows(t Table) {
	if t != EgressTier && t != EgressBaseline && t != IngressTier && t != IngressBaseline {
		return
	}
	b := &builder{cookie: NewCookie(0, CategoryPolicy, 0)}
	tierTableFlows(b, t, x.sources)
	var keys []string
	for _, f := range b.flows {
		keys = append(keys, x.setFlow(f))
	}
	x.tableFlows[t] = keys
}

func (x *PolicyIndex) setFlow(f *openflow.Flow) string {
	k := f.Key()
	x.flows[k] = f
	x.changed[k] = true
	return k
}

func (x *PolicyIndex) deleteFlow(k string) {
	delete(x.flows, k)
	x.changed[k] = true
}

// flush renders the clauses that changed.
func (x *PolicyIndex) flush() error {
	for k := range x.dirty {
		for _, fk := range x.clauseFlows[k] {
			x.deleteFlow(fk)
		}
		delete(x.clauseFlows, k)
		cf := x.clauses[k]
		if cf == nil || len(cf.conjs) == 0 {
			delete(x.clauses, k)
			continue
		}
		fs, err := cf.render(0)
		if err != nil {
			return err
		}
		keys := make([]string, 0, len(fs))
		for _, f := range fs {
			keys = append(keys, x.setFlow(f))
		}
		x.clauseFlows[k] = keys
	}
	clear(x.dirty)
	return nil
}

// Update replaces the rules of set (by Policy and Key; a rule equal to the
// indexed one changes nothing) and removes the rules named in remove (as
// "Policy", "Key" pairs; absent ones are ignored). On error the index must
// be rebuilt (Reset) before it is used again.
func (x *PolicyIndex) Update(set []PolicyRule, remove [][2]string) error {
	for _, r := range remove {
		ir := x.rules[policyRuleRef{r[0], r[1]}]
		if ir == nil {
			continue
		}
		if x.probed[ir.id] > 0 {
			return x.rebuildWith(set, remove)
		}
		x.removeRule(ir)
	}
	for i := range set {
		ru := &set[i]
		ref := policyRuleRef{ru.Policy, ru.Key}
		if ir := x.rules[ref]; ir != nil {
			if sameRuleInput(&ir.rule, ru) {
				continue
			}
			if x.probed[ir.id] > 0 {
				return x.rebuildWith(set[i:], nil)
			}
			x.removeRule(ir)
		}
		id := PolicyConjID(ru.Policy, ru.Key)
		if _, used := x.ids[id]; used {
			return x.rebuildWith(set[i:], nil)
		}
		if err := x.addRule(ru, id); err != nil {
			return err
		}
	}
	return x.flush()
}

// rebuildWith rebuilds the index from its rules with set in and remove out:
// conjunction IDs that depend on each other are assigned again in order.
func (x *PolicyIndex) rebuildWith(set []PolicyRule, remove [][2]string) error {
	all := make(map[policyRuleRef]PolicyRule, len(x.rules)+len(set))
	for ref, ir := range x.rules {
		all[ref] = ir.rule
	}
	for _, r := range remove {
		delete(all, policyRuleRef{r[0], r[1]})
	}
	for _, ru := range set {
		all[policyRuleRef{ru.Policy, ru.Key}] = ru
	}
	n := x.rebuilds + 1
	defer func() { x.rebuilds = n }()
	return x.build(x.set(slices.Collect(maps.Values(all))))
}

// set is the PolicySet of rules with the index's isolation and sources.
func (x *PolicyIndex) set(rules []PolicyRule) PolicySet {
	return PolicySet{Rules: rules, IngressIsolated: sortedSet(x.ingIso), EgressIsolated: sortedSet(x.egIso), NodeSources: x.sources,
		ExportDenied: x.exportDenied}
}

// Reset rebuilds the index from s.
func (x *PolicyIndex) Reset(s PolicySet) error { return x.build(s) }

// SetIsolated makes ingress and egress the isolated pods' ports.
func (x *PolicyIndex) SetIsolated(ingress, egress []uint32) {
	sync := func(have map[uint32]bool, want []uint32, flow func(uint32) *openflow.Flow) {
		w := make(map[uint32]bool, len(want))
		for _, p := range want {
			w[p] = true
			if !have[p] {
				have[p] = true
				x.setFlow(flow(p))
			}
		}
		for p := range have {
			if !w[p] {
				delete(have, p)
				x.deleteFlow(flow(p).Key())
			}
		}
	}
	cookie := NewCookie(0, CategoryPolicy, 0)
	sync(x.egIso, egress, func(p uint32) *openflow.Flow { return isolationFlow(EgressPolicy, p, cookie, x.exportDenied) })
	sync(x.ingIso, ingress, func(p uint32) *openflow.Flow { return isolationFlow(IngressPolicy, p, cookie, x.exportDenied) })
}

// SetNodeSources makes sources the node's own addresses; a change
// rebuilds the index (it is rare: the gateway's address).
func (x *PolicyIndex) SetNodeSources(sources []netip.Addr) error {
	if s := sortedAddrs(sources); !slices.Equal(s, x.sources) {
		rules := make([]PolicyRule, 0, len(x.rules))
		for _, ir := range x.rules {
			rules = append(rules, ir.rule)
		}
		set := x.set(rules)
		set.NodeSources = s
		return x.build(set)
	}
	return nil
}

// Changed returns the keys (Flow.Key) of the flows added, replaced or
// removed since the last ClearChanged; Flow tells which.
func (x *PolicyIndex) Changed() []string { return slices.Collect(maps.Keys(x.changed)) }

// ClearChanged forgets the changes.
func (x *PolicyIndex) ClearChanged() { clear(x.changed) }

// Flow returns the flow of key k, or nil when the index has none. The flow
// belongs to the index: a caller may set its cookie (the round), nothing
// else.
func (x *PolicyIndex) Flow(k string) *openflow.Flow { return x.flows[k] }

// Len is the number of flows.
func (x *PolicyIndex) Len() int { return len(x.flows) }

// Flows returns every flow, sorted as PolicyFlows sorts them.
func (x *PolicyIndex) Flows() []*openflow.Flow {
	out := slices.Collect(maps.Values(x.flows))
	sortPolicyFlows(out)
	return out
}

// sameRuleInput reports whether two rules give the same flows.
func sameRuleInput(a, b *PolicyRule) bool {
	return a.Direction == b.Direction && a.Tier == b.Tier && a.Action == b.Action && a.Priority == b.Priority &&
		a.Log == b.Log && slices.Equal(a.Targets, b.Targets) && slices.Equal(a.Services, b.Services) &&
		reflect.DeepEqual(a.Peers, b.Peers)
}

func sortedSet(m map[uint32]bool) []uint32 {
	out := slices.Collect(maps.Keys(m))
	slices.Sort(out)
	return out
}

func badPolicyf(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrBadPolicy}, args...)...)
}
